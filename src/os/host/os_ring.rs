//! One NET_RING as NetAdapterCx allocates it, for code that plays the OS
//! side by hand rather than through the model ([`super::netadapter`], which
//! adds its own ownership checks): the unit tests of the ring helpers and of
//! the data path, and the benchmark's direct cell.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::alloc::{Layout, alloc_zeroed, dealloc};

use crate::netcx::ring::{NetRing, element_at, range_count};

/// A ring with the real layout: 64-aligned, zeroed, header written,
/// elements `stride` apart from offset 64. Indices are the OS side's to
/// move with [`OsRing::set_end`]; the driver moves BeginIndex and
/// NextIndex.
pub struct OsRing {
    base: NonNull<u8>,
    layout: Layout,
    mask: u32,
}

impl OsRing {
    /// A ring of `count` elements (a power of two) `stride` bytes apart.
    /// Panics on a geometry NET_RING cannot have (host tooling only).
    pub fn new(stride: u16, count: u32) -> Self {
        let size = NetRing::allocation_size(stride, count).expect("a NET_RING geometry");
        let layout = Layout::from_size_align(size, 64).expect("a NET_RING layout");
        // SAFETY: the layout has a non-zero size (at least 128 bytes).
        let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("out of memory");
        // SAFETY: fresh, 64-aligned, as large as allocation_size says, and
        // not handed to any driver yet.
        unsafe { NetRing::init(base.as_ptr().cast(), stride, count) };
        Self { base, layout, mask: count - 1 }
    }

    pub fn ring(&self) -> *mut NetRing {
        self.base.as_ptr().cast()
    }

    /// The index mask (element count − 1).
    pub fn mask(&self) -> u32 {
        self.mask
    }

    pub fn begin(&self) -> u32 {
        // SAFETY: the header is live; BeginIndex is an atomic both sides use.
        unsafe { (*self.ring()).begin_index.load(Ordering::Acquire) }
    }

    pub fn end(&self) -> u32 {
        // SAFETY: as above; only the OS side writes EndIndex.
        unsafe { (*self.ring()).end_index.load(Ordering::Relaxed) }
    }

    /// Hands elements over up to `end` (masked; Release: after they were
    /// written).
    pub fn set_end(&self, end: u32) {
        // SAFETY: as above.
        unsafe { (*self.ring()).end_index.store(end & self.mask, Ordering::Release) };
    }

    /// Elements the OS may write: not in `[BeginIndex, EndIndex)`, less the
    /// one that keeps a full ring from looking empty.
    pub fn room(&self) -> u32 {
        self.mask - range_count(self.mask, self.begin(), self.end())
    }

    /// Element `index` (masked): an address only; reading or writing it is
    /// the caller's, for an element the OS side owns.
    pub fn element<T>(&self, index: u32) -> *mut T {
        // SAFETY: the header was written by `new` and the allocation holds
        // every element; only an address is computed.
        unsafe { element_at(self.ring(), index & self.mask).cast() }
    }

    /// The byte at `offset` of the allocation (header included).
    pub fn byte(&self, offset: usize) -> u8 {
        assert!(offset < self.layout.size(), "offset {offset} outside the ring");
        // SAFETY: in bounds of the allocation, which is initialised (zeroed).
        unsafe { self.base.as_ptr().add(offset).read() }
    }

    /// The OS writes `value` over `len` bytes from `offset`.
    pub fn fill(&self, offset: usize, len: usize, value: u8) {
        assert!(offset + len <= self.layout.size(), "bytes outside the ring");
        // SAFETY: in bounds; the caller plays the OS side, which owns these
        // bytes (outside any driver view).
        unsafe { self.base.as_ptr().add(offset).write_bytes(value, len) };
    }
}

impl Drop for OsRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.base.as_ptr(), self.layout) };
    }
}
