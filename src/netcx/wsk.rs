//! The Winsock Kernel structures the data path reads and writes
//! (wdk-abi-facts.md §4): buffers, buffer lists and receive indications.
//! The dispatch tables belong to the Windows binding layer.
//!
//! WSK owns an indication list from WskReceiveFromEvent until the driver
//! hands the same list to WskRelease; the driver may read it (and, for a
//! retained unicast datagram, write its buffer) in between, never after.

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr::NonNull;

use super::mdl::Mdl;

// §4: SOCKADDR is 16 bytes, align 2.
const _: () = assert!(size_of::<SockAddr>() == 16 && align_of::<SockAddr>() == 2);
const _: () = assert!(offset_of!(SockAddr, sa_family) == 0 && offset_of!(SockAddr, sa_data) == 2);
// §4: WSK_BUF is 24 bytes: Mdl @0, Offset @8, Length @16.
const _: () = assert!(size_of::<WskBuf>() == 24 && align_of::<WskBuf>() == 8);
const _: () = assert!(offset_of!(WskBuf, mdl) == 0);
const _: () = assert!(offset_of!(WskBuf, offset) == 8);
const _: () = assert!(offset_of!(WskBuf, length) == 16);
// §4: WSK_BUF_LIST is 32 bytes: Next @0, Buffer @8.
const _: () = assert!(size_of::<WskBufList>() == 32 && align_of::<WskBufList>() == 8);
const _: () = assert!(offset_of!(WskBufList, next) == 0 && offset_of!(WskBufList, buffer) == 8);
// §4: WSK_DATA_INDICATION is 32 bytes: Next @0, Buffer @8.
const _: () = assert!(size_of::<WskDataIndication>() == 32 && align_of::<WskDataIndication>() == 8);
const _: () = assert!(offset_of!(WskDataIndication, next) == 0 && offset_of!(WskDataIndication, buffer) == 8);
// §4: WSK_DATAGRAM_INDICATION is 56 bytes with these offsets.
const _: () = assert!(size_of::<WskDatagramIndication>() == 56 && align_of::<WskDatagramIndication>() == 8);
const _: () = assert!(offset_of!(WskDatagramIndication, next) == 0);
const _: () = assert!(offset_of!(WskDatagramIndication, buffer) == 8);
const _: () = assert!(offset_of!(WskDatagramIndication, buffer) + offset_of!(WskBuf, offset) == 16);
const _: () = assert!(offset_of!(WskDatagramIndication, buffer) + offset_of!(WskBuf, length) == 24);
const _: () = assert!(offset_of!(WskDatagramIndication, control_info) == 32);
const _: () = assert!(offset_of!(WskDatagramIndication, control_info_length) == 40);
const _: () = assert!(offset_of!(WskDatagramIndication, remote_address) == 48);

/// AF_INET (§4).
pub const AF_INET: u16 = 2;
/// AF_INET6 (§4).
pub const AF_INET6: u16 = 23;

/// SOCKADDR: the common head of every socket address; `sa_family` says
/// which one (SOCKADDR_IN, 16 bytes, or SOCKADDR_IN6, 28) it really is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    pub sa_family: u16,
    pub sa_data: [u8; 14],
}

/// WSK_BUF: `length` bytes starting `offset` bytes into an MDL chain.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskBuf {
    pub mdl: *mut Mdl,
    pub offset: u32,
    pub length: usize,
}

/// WSK_BUF_LIST: one datagram of a WskSendMessages batch.
#[repr(C)]
#[derive(Debug)]
pub struct WskBufList {
    pub next: *mut WskBufList,
    pub buffer: WskBuf,
}

/// WSK_DATA_INDICATION: received stream data (TCP transport).
#[repr(C)]
#[derive(Debug)]
pub struct WskDataIndication {
    pub next: *mut WskDataIndication,
    pub buffer: WskBuf,
}

/// WSK_DATAGRAM_INDICATION: one received datagram of the list
/// WskReceiveFromEvent delivers.
#[repr(C)]
#[derive(Debug)]
pub struct WskDatagramIndication {
    pub next: *mut WskDatagramIndication,
    pub buffer: WskBuf,
    /// PCMSGHDR: ancillary data, if requested.
    pub control_info: *const c_void,
    pub control_info_length: u32,
    pub remote_address: *mut SockAddr,
}

/// Loop guard for walking an indication list. WSK documents no limit on
/// the datagrams of one WskReceiveFromEvent; this bound only stops a
/// corrupted or cyclic list from hanging a DPC. It sits far above any batch
/// one receive event delivers in practice (tens of datagrams), so reaching it
/// means the list is bad, not that traffic is heavy.
pub const MAX_DATAGRAMS_PER_INDICATION: usize = 4096;

/// One datagram of an indication list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The list node; the whole list is released at once, by its head.
    pub indication: NonNull<WskDatagramIndication>,
    /// First MDL of the chain holding the datagram.
    pub mdl: NonNull<Mdl>,
    /// Where the datagram starts in the chain.
    pub offset: u32,
    /// Its length in bytes.
    pub length: usize,
    /// The sender (may be null if WSK did not supply it).
    pub remote_address: *mut SockAddr,
}

/// What is wrong with a node of an indication list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndicationError {
    /// A datagram with no buffer: skipped, the walk goes on.
    NullMdl,
    /// More than [`MAX_DATAGRAMS_PER_INDICATION`] nodes: the walk stops.
    TooManyDatagrams,
}

/// Iterator over the datagrams of an indication list; see [`datagrams`].
#[derive(Debug)]
pub struct Datagrams {
    next: *mut WskDatagramIndication,
    visited: usize,
}

/// Walks the list WskReceiveFromEvent delivered, one datagram at a time,
/// visiting at most [`MAX_DATAGRAMS_PER_INDICATION`] nodes.
///
/// # Safety
/// `list` is null or a node of an indication list WSK delivered and the
/// driver has not yet passed to WskRelease; the list is not released, and
/// its nodes not modified, while the iterator is in use. The yielded
/// pointers stay valid exactly as long as the list is retained.
pub unsafe fn datagrams(list: *mut WskDatagramIndication) -> Datagrams {
    Datagrams { next: list, visited: 0 }
}

impl Iterator for Datagrams {
    type Item = Result<Datagram, IndicationError>;

    fn next(&mut self) -> Option<Self::Item> {
        let indication = NonNull::new(self.next)?;
        if self.visited == MAX_DATAGRAMS_PER_INDICATION {
            self.next = core::ptr::null_mut();
            return Some(Err(IndicationError::TooManyDatagrams));
        }
        self.visited += 1;
        // SAFETY: the list is retained, not yet passed to WskRelease, and
        // nobody modifies its nodes while the driver walks it (the contract
        // of `datagrams`), so reading this node is reading WSK memory the
        // driver may read.
        let node = unsafe { indication.as_ref() };
        self.next = node.next;
        let Some(mdl) = NonNull::new(node.buffer.mdl) else {
            return Some(Err(IndicationError::NullMdl));
        };
        Some(Ok(Datagram {
            indication,
            mdl,
            offset: node.buffer.offset,
            length: node.buffer.length,
            remote_address: node.remote_address,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netcx::mdl::flags;
    use core::ptr;

    fn mdl_over(buf: &mut [u8]) -> Mdl {
        // One pointer for both fields: a second as_mut_ptr would invalidate the first.
        let va = buf.as_mut_ptr().cast();
        Mdl {
            next: ptr::null_mut(),
            size: 48,
            mdl_flags: flags::SOURCE_IS_NONPAGED_POOL,
            process: ptr::null_mut(),
            mapped_system_va: va,
            start_va: va,
            byte_count: buf.len() as u32,
            byte_offset: 0,
        }
    }

    fn node(mdl: *mut Mdl, offset: u32, length: usize, from: *mut SockAddr) -> WskDatagramIndication {
        WskDatagramIndication {
            next: ptr::null_mut(),
            buffer: WskBuf { mdl, offset, length },
            control_info: ptr::null(),
            control_info_length: 0,
            remote_address: from,
        }
    }

    #[test]
    fn walks_a_three_datagram_list_in_order() {
        let mut bufs = [[0u8; 64], [1u8; 64], [2u8; 64]];
        let [b0, b1, b2] = &mut bufs;
        let mut mdls = [mdl_over(b0), mdl_over(b1), mdl_over(b2)];
        let mut from = [SockAddr { sa_family: AF_INET, ..Default::default() }; 3];
        from[2].sa_family = AF_INET6;
        let mdl_ptrs: std::vec::Vec<*mut Mdl> = mdls.iter_mut().map(|m| m as *mut Mdl).collect();
        let from_ptrs: std::vec::Vec<*mut SockAddr> = from.iter_mut().map(|a| a as *mut SockAddr).collect();
        let mut nodes = [
            node(mdl_ptrs[0], 0, 64, from_ptrs[0]),
            node(mdl_ptrs[1], 4, 60, from_ptrs[1]),
            node(mdl_ptrs[2], 8, 20, from_ptrs[2]),
        ];
        let base = nodes.as_mut_ptr();
        // SAFETY: the nodes are one array; linking them only writes into it.
        unsafe {
            (*base).next = base.add(1);
            (*base.add(1)).next = base.add(2);
        }

        // SAFETY: the list, its MDLs and addresses live on this stack frame and
        // nothing modifies them during the walk.
        let walked: std::vec::Vec<_> = unsafe { datagrams(base) }.map(Result::unwrap).collect();
        assert_eq!(walked.len(), 3);
        for (i, d) in walked.iter().enumerate() {
            assert_eq!(d.indication.as_ptr(), base.wrapping_add(i));
            assert_eq!(d.mdl.as_ptr(), mdl_ptrs[i]);
            assert_eq!(d.remote_address, from_ptrs[i]);
        }
        assert_eq!((walked[1].offset, walked[1].length), (4, 60));
        assert_eq!((walked[2].offset, walked[2].length), (8, 20));
        // SAFETY: the sender address is alive on this frame.
        assert_eq!(unsafe { (*walked[2].remote_address).sa_family }, AF_INET6);
        // The zero-copy view of datagram 2: 20 bytes at offset 8 of its buffer.
        // SAFETY: the MDL is alive on this frame.
        let at = unsafe { walked[2].mdl.as_ref() }.mapped_range(walked[2].offset, walked[2].length).unwrap();
        // SAFETY: `at` points inside bufs[2], which is alive and not borrowed.
        assert_eq!(unsafe { at.read() }, 2);
    }

    #[test]
    fn an_empty_list_yields_nothing() {
        // SAFETY: a null list is never read.
        assert_eq!(unsafe { datagrams(ptr::null_mut()) }.count(), 0);
    }

    #[test]
    fn a_datagram_without_buffer_is_reported_and_skipped() {
        let mut buf = [0u8; 16];
        let mut m = mdl_over(&mut buf);
        let mut nodes = [node(ptr::null_mut(), 0, 0, ptr::null_mut()), node(&mut m, 0, 16, ptr::null_mut())];
        let base = nodes.as_mut_ptr();
        // SAFETY: both nodes are in one array.
        unsafe { (*base).next = base.add(1) };
        // SAFETY: the list lives on this frame, unmodified during the walk.
        let mut walk = unsafe { datagrams(base) };
        assert_eq!(walk.next(), Some(Err(IndicationError::NullMdl)));
        assert_eq!(walk.next().unwrap().unwrap().length, 16);
        assert_eq!(walk.next(), None);
    }

    #[test]
    fn a_cyclic_list_stops_at_the_bound() {
        let mut buf = [0u8; 16];
        let mut m = mdl_over(&mut buf);
        let mut looped = node(&mut m, 0, 16, ptr::null_mut());
        let p: *mut WskDatagramIndication = &mut looped;
        // SAFETY: `p` points to `looped`, alive on this frame.
        unsafe { (*p).next = p };
        // SAFETY: the (cyclic) list lives on this frame, unmodified during the walk.
        let mut walk = unsafe { datagrams(p) };
        assert_eq!(walk.by_ref().take(MAX_DATAGRAMS_PER_INDICATION).filter(Result::is_ok).count(), 4096);
        assert_eq!(walk.next(), Some(Err(IndicationError::TooManyDatagrams)));
        assert_eq!(walk.next(), None);
    }
}
