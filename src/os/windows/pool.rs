//! Nonpaged pool as the global allocator, for Windows builds without the
//! `wdk` feature (where `wdk-alloc` would provide it).
//!
//! Declarations from the DDI docs (wdm.h): `ExAllocatePool2(POOL_FLAGS,
//! SIZE_T, ULONG) -> PVOID`, `ExFreePoolWithTag(PVOID, ULONG)`,
//! `POOL_FLAG_NON_PAGED = 0x40`; pool blocks are 16-byte aligned on x64.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

const POOL_FLAG_NON_PAGED: u64 = 0x0000_0000_0000_0040;
/// Pool tag "Ovpn" as it reads in `!pool` (little-endian bytes 'O','v','p','n').
const POOL_TAG: u32 = u32::from_le_bytes(*b"Ovpn");
/// x64 pool allocations are aligned to 16 bytes.
const POOL_ALIGNMENT: usize = 16;

unsafe extern "system" {
    fn ExAllocatePool2(flags: u64, number_of_bytes: usize, tag: u32) -> *mut c_void;
    fn ExFreePoolWithTag(p: *mut c_void, tag: u32);
}

struct NonPagedPool;

// SAFETY: GlobalAlloc contract: blocks come from ExAllocatePool2, which
// returns null or a fresh block of at least the size asked, 16-byte aligned;
// larger alignments are refused with null rather than served misaligned.
unsafe impl GlobalAlloc for NonPagedPool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > POOL_ALIGNMENT {
            return core::ptr::null_mut();
        }
        // SAFETY: plain FFI call; any size is valid and failure returns null.
        unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, layout.size(), POOL_TAG).cast() }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with the same tag and is freed once.
        unsafe { ExFreePoolWithTag(ptr.cast(), POOL_TAG) }
    }
}

#[global_allocator]
static GLOBAL_ALLOCATOR: NonPagedPool = NonPagedPool;
