//! MDL, the kernel's memory descriptor list (wdk-abi-facts.md §4.1), and
//! the address helpers `wdm.h` provides as macros.
//!
//! The driver never builds or maps MDLs here: it only reads those WSK hands
//! it with a datagram indication, to find the indicated bytes.

use core::ffi::c_void;
use core::mem::offset_of;

// §4.1: MDL is 48 bytes, align 8, with the page array right after it.
const _: () = assert!(size_of::<Mdl>() == 48);
const _: () = assert!(align_of::<Mdl>() == 8);
const _: () = assert!(offset_of!(Mdl, next) == 0);
const _: () = assert!(offset_of!(Mdl, size) == 8);
const _: () = assert!(offset_of!(Mdl, mdl_flags) == 10);
const _: () = assert!(offset_of!(Mdl, process) == 16);
const _: () = assert!(offset_of!(Mdl, mapped_system_va) == 24);
const _: () = assert!(offset_of!(Mdl, start_va) == 32);
const _: () = assert!(offset_of!(Mdl, byte_count) == 40);
const _: () = assert!(offset_of!(Mdl, byte_offset) == 44);

/// MdlFlags bits (§4.1). Only the two that tell whether `MappedSystemVa` is
/// usable matter to the data path; the rest are listed so a flags dump can be
/// read.
pub mod flags {
    pub const MAPPED_TO_SYSTEM_VA: u16 = 0x0001;
    pub const PAGES_LOCKED: u16 = 0x0002;
    pub const SOURCE_IS_NONPAGED_POOL: u16 = 0x0004;
    pub const ALLOCATED_FIXED_SIZE: u16 = 0x0008;
    pub const PARTIAL: u16 = 0x0010;
    pub const PARTIAL_HAS_BEEN_MAPPED: u16 = 0x0020;
    pub const IO_PAGE_READ: u16 = 0x0040;
    pub const WRITE_OPERATION: u16 = 0x0080;
    /// Shares its value with PARENT_MAPPED_SYSTEM_VA.
    pub const LOCKED_PAGE_TABLES: u16 = 0x0100;
    pub const PARENT_MAPPED_SYSTEM_VA: u16 = 0x0100;
    pub const FREE_EXTRA_PTES: u16 = 0x0200;
    pub const DESCRIBES_AWE: u16 = 0x0400;
    pub const IO_SPACE: u16 = 0x0800;
    pub const NETWORK_HEADER: u16 = 0x1000;
    pub const MAPPING_CAN_FAIL: u16 = 0x2000;
    /// Shares its value with ALLOCATED_MUST_SUCCEED.
    pub const PAGE_CONTENTS_INVARIANT: u16 = 0x4000;
    pub const ALLOCATED_MUST_SUCCEED: u16 = 0x4000;
    pub const INTERNAL: u16 = 0x8000;
}

/// MDL: describes one virtually contiguous buffer; `next` chains buffers
/// that together hold one datagram.
#[repr(C)]
#[derive(Debug)]
pub struct Mdl {
    /// Next MDL of the chain, or null.
    pub next: *mut Mdl,
    /// Size of this MDL including its page array (CSHORT).
    pub size: i16,
    /// MdlFlags (CSHORT in C, used only as bits, hence unsigned here).
    pub mdl_flags: u16,
    pub process: *mut c_void,
    /// System-space address of the described bytes, valid only when
    /// [`Mdl::system_address`] says so.
    pub mapped_system_va: *mut c_void,
    /// Page-aligned virtual address the buffer starts in.
    pub start_va: *mut c_void,
    /// Length of the described buffer in bytes.
    pub byte_count: u32,
    /// Offset of the buffer from `start_va`.
    pub byte_offset: u32,
}

impl Mdl {
    /// MmGetMdlVirtualAddress: the buffer's address in the context that
    /// built the MDL (not necessarily system space).
    pub fn virtual_address(&self) -> *mut u8 {
        self.start_va.cast::<u8>().wrapping_add(self.byte_offset as usize)
    }

    /// The system-space address MmGetSystemAddressForMdlSafe would return
    /// without mapping anything: `MappedSystemVa` when the MDL is already
    /// mapped or describes nonpaged pool, else `None` (the caller would have
    /// to map it, which the RX path does not do at DISPATCH_LEVEL).
    pub fn system_address(&self) -> Option<*mut u8> {
        let usable = flags::MAPPED_TO_SYSTEM_VA | flags::SOURCE_IS_NONPAGED_POOL;
        if self.mdl_flags & usable != 0 && !self.mapped_system_va.is_null() {
            Some(self.mapped_system_va.cast())
        } else {
            None
        }
    }

    /// The system address of `[offset, offset + length)` of this MDL's
    /// buffer, if the range lies entirely within it and the MDL is mapped:
    /// the zero-copy case. `None` means the bytes are elsewhere in the chain
    /// or unmapped, and the caller copies. Only computes an address.
    pub fn mapped_range(&self, offset: u32, length: usize) -> Option<*mut u8> {
        let end = (offset as usize).checked_add(length)?;
        if end > self.byte_count as usize {
            return None;
        }
        Some(self.system_address()?.wrapping_add(offset as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr;

    fn mdl_over(buf: &mut [u8], flags: u16) -> Mdl {
        // One pointer for both fields: a second as_mut_ptr would invalidate the first.
        let va = buf.as_mut_ptr().cast();
        Mdl {
            next: ptr::null_mut(),
            size: 48,
            mdl_flags: flags,
            process: ptr::null_mut(),
            mapped_system_va: va,
            start_va: va,
            byte_count: buf.len() as u32,
            byte_offset: 0,
        }
    }

    #[test]
    fn system_address_needs_a_mapping_flag() {
        let mut buf = [0u8; 64];
        let base = buf.as_mut_ptr();
        assert_eq!(mdl_over(&mut buf, 0).system_address(), None);
        assert_eq!(mdl_over(&mut buf, flags::PAGES_LOCKED).system_address(), None);
        assert_eq!(mdl_over(&mut buf, flags::MAPPED_TO_SYSTEM_VA).system_address(), Some(base));
        assert_eq!(mdl_over(&mut buf, flags::SOURCE_IS_NONPAGED_POOL).system_address(), Some(base));
    }

    #[test]
    fn mapped_range_stays_inside_the_buffer() {
        let mut buf = [0u8; 64];
        let base = buf.as_mut_ptr();
        let m = mdl_over(&mut buf, flags::MAPPED_TO_SYSTEM_VA);
        assert_eq!(m.mapped_range(0, 64), Some(base));
        assert_eq!(m.mapped_range(60, 4), Some(base.wrapping_add(60)));
        assert_eq!(m.mapped_range(60, 5), None);
        assert_eq!(m.mapped_range(u32::MAX, usize::MAX), None);
        assert_eq!(mdl_over(&mut buf, 0).mapped_range(0, 1), None);
    }

    #[test]
    fn virtual_address_adds_the_byte_offset() {
        let mut buf = [0u8; 64];
        let mut m = mdl_over(&mut buf, 0);
        m.byte_offset = 10;
        assert_eq!(m.virtual_address(), buf.as_mut_ptr().wrapping_add(10));
    }
}
