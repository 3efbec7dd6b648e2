//! NET_RING and NET_RING_COLLECTION (wdk-abi-facts.md §1) with the index
//! arithmetic `ring.h` only ships as inline C, and [`RingView`], the typed
//! handle the queues use.
//!
//! # Ownership
//! The driver owns the elements in `[BeginIndex, EndIndex)` (Microsoft Learn,
//! "Introduction to net rings"). NetAdapterCx hands elements over by moving
//! EndIndex forward and takes them back when the driver moves BeginIndex
//! forward. NextIndex is the driver's own. Indices are always masked:
//! `BeginIndex == EndIndex` means the driver owns nothing, so it owns at most
//! NumberOfElements − 1.
//!
//! # Why the indices are atomics
//! NetAdapterCx itself only moves EndIndex, and only reads BeginIndex, from
//! the queue's poll context, between calls into the driver, so in the real
//! OS the driver never races it. But EndIndex is still written by code the
//! compiler cannot see, and the host model plays the OS from another thread.
//! Atomics say exactly what happens: EndIndex is loaded with Acquire (the OS
//! wrote the elements before publishing them), BeginIndex/NextIndex are
//! stored with Release (the driver's element writes happen before the OS can
//! see them returned), and the driver's own reads of BeginIndex/NextIndex are
//! Relaxed because it is their only writer. `AtomicU32` has the layout of
//! `UINT32`, and on x64 these loads and stores are plain `mov`s, so this
//! costs nothing over volatile, which would order nothing and leave the host
//! model's cross-thread access a data race.
//!
//! No `&NetRing` is ever formed: the elements start inside the struct (at
//! offset 64, within its 128 bytes) and a reference to the header would
//! overlap element memory the driver writes. Fields are reached through raw
//! pointers.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::offset_of;
use core::ptr::{NonNull, addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, Ordering};

use super::extension::{Extension, ExtensionPayload};
use super::fragment::NetFragment;
use super::packet::NetPacket;
use super::sealed::Sealed;

/// Offset of element 0: SYSTEM_CACHE_ALIGNMENT_SIZE (§1.1).
pub const NET_RING_ELEMENTS_OFFSET: usize = 64;
/// NetRingTypePacket: index of the packet ring in the collection (§1.2).
pub const NET_RING_TYPE_PACKET: usize = 0;
/// NetRingTypeFragment: index of the fragment ring in the collection (§1.2).
pub const NET_RING_TYPE_FRAGMENT: usize = 1;

// §1.1: NET_RING is 128 bytes, align 64, with these offsets.
const _: () = assert!(size_of::<NetRing>() == 128);
const _: () = assert!(align_of::<NetRing>() == 64);
const _: () = assert!(offset_of!(NetRing, os_reserved1) == 0);
const _: () = assert!(offset_of!(NetRing, element_stride) == 2);
const _: () = assert!(offset_of!(NetRing, number_of_elements) == 4);
const _: () = assert!(offset_of!(NetRing, element_index_mask) == 8);
const _: () = assert!(offset_of!(NetRing, end_index) == 12);
const _: () = assert!(offset_of!(NetRing, os_reserved2) == 16);
const _: () = assert!(offset_of!(NetRing, begin_index) == 48);
const _: () = assert!(offset_of!(NetRing, next_index) == 52);
const _: () = assert!(offset_of!(NetRing, scratch) == 56);
const _: () = assert!(offset_of!(NetRing, buffer) == NET_RING_ELEMENTS_OFFSET);
// The atomics are UINT32 in C.
const _: () = assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
// §1.2/§1.3: Rings[0] and Rings[1] are pointers at 0 and 8 in every SDK; the
// mirror stops there (see NetRingCollection).
const _: () = assert!(size_of::<NetRingCollection>() == 16);
const _: () = assert!(align_of::<NetRingCollection>() == 8);
const _: () = assert!(NET_RING_TYPE_PACKET == 0 && NET_RING_TYPE_FRAGMENT == 1);

/// NET_RING. Only ever handled as `*mut NetRing` (see the module docs);
/// elements continue past `size_of::<NetRing>()`.
#[repr(C, align(64))]
pub struct NetRing {
    /// OSReserved1: the OS's.
    os_reserved1: u16,
    /// ElementStride: byte distance between elements. Read-only for the driver.
    pub element_stride: u16,
    /// NumberOfElements: a power of two, > 1. Read-only for the driver.
    pub number_of_elements: u32,
    /// ElementIndexMask: NumberOfElements − 1. Read-only for the driver.
    pub element_index_mask: u32,
    /// EndIndex: moved forward by NetAdapterCx only.
    pub end_index: AtomicU32,
    /// The OSReserved0/OSReserved2 union: the OS's.
    os_reserved2: [*mut c_void; 4],
    /// BeginIndex: moved forward by the driver only.
    pub begin_index: AtomicU32,
    /// NextIndex: the driver's own.
    pub next_index: AtomicU32,
    /// Scratch: the driver's own.
    pub scratch: *mut c_void,
    /// Buffer: element 0 starts here.
    buffer: [u8; 1],
}

impl NetRing {
    /// Bytes to allocate (aligned to 64) for a ring of `number_of_elements`
    /// elements `element_stride` apart: the OS side's job, here for the host
    /// model. `None` on overflow.
    pub const fn allocation_size(element_stride: u16, number_of_elements: u32) -> Option<usize> {
        let Some(elements) = (element_stride as usize).checked_mul(number_of_elements as usize) else {
            return None;
        };
        let Some(total) = elements.checked_add(NET_RING_ELEMENTS_OFFSET) else {
            return None;
        };
        Some(if total < size_of::<NetRing>() { size_of::<NetRing>() } else { total })
    }

    /// Writes a fresh header, all indices 0, as NetAdapterCx does before
    /// handing a ring out. For the OS side (host model, tests).
    ///
    /// # Safety
    /// `ring` is valid for writes of the 64-byte header, aligned to 64, and
    /// not yet handed to any [`RingView`]. Element memory is not touched.
    pub unsafe fn init(ring: *mut NetRing, element_stride: u16, number_of_elements: u32) {
        // SAFETY: the ring is not yet shared (caller's contract), so the OS
        // side owns all of it. Fields are written one by one: writing a whole
        // NetRing would also write its trailing bytes, which are element
        // memory, as uninitialised padding.
        unsafe {
            addr_of_mut!((*ring).os_reserved1).write(0);
            addr_of_mut!((*ring).element_stride).write(element_stride);
            addr_of_mut!((*ring).number_of_elements).write(number_of_elements);
            addr_of_mut!((*ring).element_index_mask).write(number_of_elements.wrapping_sub(1));
            addr_of_mut!((*ring).end_index).write(AtomicU32::new(0));
            addr_of_mut!((*ring).os_reserved2).write([core::ptr::null_mut(); 4]);
            addr_of_mut!((*ring).begin_index).write(AtomicU32::new(0));
            addr_of_mut!((*ring).next_index).write(AtomicU32::new(0));
            addr_of_mut!((*ring).scratch).write(core::ptr::null_mut());
        }
    }
}

/// NetRingIncrementIndex: the index after `index`.
pub const fn increment_index(mask: u32, index: u32) -> u32 {
    index.wrapping_add(1) & mask
}

/// NetRingAdvanceIndex for a forward distance: `index + distance`, masked.
pub const fn advance_index(mask: u32, index: u32, distance: u32) -> u32 {
    index.wrapping_add(distance) & mask
}

/// NetRingGetRangeCount: elements in `[begin, end)`, going forward with
/// wrap-around.
pub const fn range_count(mask: u32, begin: u32, end: u32) -> u32 {
    end.wrapping_sub(begin) & mask
}

/// NetRingGetElementAtIndex: the address of element `index` (masked to the
/// ring): `ring + 64 + (index & mask) × ElementStride`.
///
/// # Safety
/// `ring` points to a live NET_RING whose header is initialised and whose
/// allocation holds NumberOfElements elements of ElementStride bytes from
/// offset 64, with ElementIndexMask = NumberOfElements − 1. Only the address
/// is computed; whether the element may be touched is the ownership rule's
/// business.
pub unsafe fn element_at(ring: *mut NetRing, index: u32) -> *mut u8 {
    // SAFETY: the header fields are written by the OS before the ring is
    // handed out and never change afterwards (caller's contract); reading
    // them through raw places forms no reference to element memory.
    let (stride, mask) =
        unsafe { (addr_of!((*ring).element_stride).read(), addr_of!((*ring).element_index_mask).read()) };
    let offset = NET_RING_ELEMENTS_OFFSET + (index & mask) as usize * stride as usize;
    // SAFETY: a masked index is below NumberOfElements, so the element lies
    // inside the ring's allocation (caller's contract).
    unsafe { ring.cast::<u8>().add(offset) }
}

/// NET_RING_COLLECTION, as far as a driver may read it: Rings[0] (packets)
/// and Rings[1] (fragments). Newer SDKs append a data-buffer ring, but an OS
/// running NetAdapterCx 2.0 hands out a 2-entry collection (§1.3), so the
/// mirror is the 16-byte prefix every version shares. The OS owns the
/// collection; drivers only receive pointers to it.
#[repr(C)]
#[derive(Debug)]
pub struct NetRingCollection {
    rings: [*mut NetRing; 2],
}

impl NetRingCollection {
    /// A collection as the OS side (host model) builds it.
    pub const fn new(packet: *mut NetRing, fragment: *mut NetRing) -> Self {
        Self { rings: [packet, fragment] }
    }

    /// NetRingCollectionGetPacketRing.
    pub const fn packet_ring(&self) -> *mut NetRing {
        self.rings[NET_RING_TYPE_PACKET]
    }

    /// NetRingCollectionGetFragmentRing.
    pub const fn fragment_ring(&self) -> *mut NetRing {
        self.rings[NET_RING_TYPE_FRAGMENT]
    }
}

/// A ring element type: NET_PACKET or NET_FRAGMENT. Sealed, because
/// [`RingView`] hands out references of this type into OS memory.
pub trait RingElement: Sealed {}
impl Sealed for NetPacket {}
impl RingElement for NetPacket {}
impl Sealed for NetFragment {}
impl RingElement for NetFragment {}

/// Why a ring or an index operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The ring (or collection) pointer is null.
    NullRing,
    /// The ring is not 64-byte aligned.
    Misaligned,
    /// NumberOfElements is not a power of two greater than 1.
    NotPowerOfTwo,
    /// ElementIndexMask is not NumberOfElements − 1.
    MaskMismatch,
    /// ElementStride is smaller than the element type.
    StrideTooSmall,
    /// ElementStride would misalign elements of the element type.
    StrideMisaligned,
    /// The index is larger than ElementIndexMask: not a ring index at all.
    IndexOutOfRing,
    /// The element is not in `[BeginIndex, EndIndex)`: the OS owns it.
    NotOwned,
    /// A new BeginIndex/NextIndex, or a range bound, is not within
    /// `[BeginIndex, EndIndex]`: indices only move forward, never past
    /// EndIndex.
    OutsideOwnedRange,
}

/// A forward run of ring indices, wrapping at the mask. Holds no borrow of
/// the ring, so elements can be fetched mutably while iterating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRange {
    mask: u32,
    next: u32,
    remaining: u32,
}

impl IndexRange {
    /// `[begin, end)` on a ring with `mask`.
    pub const fn new(mask: u32, begin: u32, end: u32) -> Self {
        Self { mask, next: begin & mask, remaining: range_count(mask, begin, end) }
    }

    pub const fn len(&self) -> u32 {
        self.remaining
    }

    pub const fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Iterator for IndexRange {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.remaining == 0 {
            return None;
        }
        let index = self.next;
        self.next = increment_index(self.mask, index);
        self.remaining -= 1;
        Some(index)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for IndexRange {}

/// One ring of a queue, typed by its element, for the driver side.
///
/// Element access is checked against the ownership rule at run time: only
/// elements in `[BeginIndex, EndIndex)` are handed out, and BeginIndex and
/// NextIndex only move forward within that range.
pub struct RingView<T: RingElement> {
    ring: NonNull<NetRing>,
    mask: u32,
    stride: usize,
    _element: PhantomData<*mut T>,
}

impl<T: RingElement> core::fmt::Debug for RingView<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingView")
            .field("ring", &self.ring)
            .field("mask", &self.mask)
            .field("stride", &self.stride)
            .field("begin", &self.begin())
            .field("next", &self.next())
            .field("end", &self.end())
            .finish()
    }
}

// SAFETY: NetAdapterCx serializes a queue's callbacks (Advance, Cancel,
// SetNotificationEnabled and the returns of that queue's buffers), so the
// view moves from one CPU to the next but is never used by two at once: it
// is Send, not Sync.
unsafe impl<T: RingElement> Send for RingView<T> {}

impl<T: RingElement> RingView<T> {
    /// Takes a ring the OS handed out, after checking its header.
    ///
    /// # Safety
    /// The OS handed us `ring` (Net{Rx,Tx}QueueGetRingCollection) as a ring
    /// of `T`: it stays allocated, with NumberOfElements elements of
    /// ElementStride bytes from offset 64, until the queue is destroyed, and
    /// the view is not used after that. Its header does not change while the
    /// view exists. Only this view (one per ring) acts as the driver on it.
    pub unsafe fn from_raw(ring: *mut NetRing) -> Result<Self, RingError> {
        let ring = NonNull::new(ring).ok_or(RingError::NullRing)?;
        if !ring.is_aligned() {
            return Err(RingError::Misaligned);
        }
        let p = ring.as_ptr();
        // SAFETY: the header is initialised and stable (caller's contract);
        // raw-place reads form no reference overlapping element memory.
        let (stride, count, mask) = unsafe {
            (
                addr_of!((*p).element_stride).read(),
                addr_of!((*p).number_of_elements).read(),
                addr_of!((*p).element_index_mask).read(),
            )
        };
        if !count.is_power_of_two() || count < 2 {
            return Err(RingError::NotPowerOfTwo);
        }
        if mask != count - 1 {
            return Err(RingError::MaskMismatch);
        }
        let stride = usize::from(stride);
        if stride < size_of::<T>() {
            return Err(RingError::StrideTooSmall);
        }
        // Element 0 sits at offset 64 of a 64-aligned ring, so the stride
        // alone decides every element's alignment.
        if stride % align_of::<T>() != 0 {
            return Err(RingError::StrideMisaligned);
        }
        Ok(Self { ring, mask, stride, _element: PhantomData })
    }

    pub fn as_ptr(&self) -> *mut NetRing {
        self.ring.as_ptr()
    }

    /// ElementIndexMask.
    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// NumberOfElements.
    pub fn number_of_elements(&self) -> u32 {
        self.mask + 1
    }

    fn begin_index(&self) -> &AtomicU32 {
        // SAFETY: the ring is live until queue destroy (from_raw's contract);
        // the reference covers only the 4-byte atomic, which tolerates the
        // OS's concurrent access, and no element memory.
        unsafe { &*addr_of!((*self.ring.as_ptr()).begin_index) }
    }

    fn next_index(&self) -> &AtomicU32 {
        // SAFETY: as for begin_index: a live ring, a reference to one atomic.
        unsafe { &*addr_of!((*self.ring.as_ptr()).next_index) }
    }

    fn end_index(&self) -> &AtomicU32 {
        // SAFETY: as for begin_index: a live ring, a reference to one atomic
        // that the OS writes concurrently, which an atomic permits.
        unsafe { &*addr_of!((*self.ring.as_ptr()).end_index) }
    }

    /// BeginIndex. The driver is its only writer: Relaxed.
    pub fn begin(&self) -> u32 {
        self.begin_index().load(Ordering::Relaxed)
    }

    /// NextIndex. The driver is its only writer: Relaxed.
    pub fn next(&self) -> u32 {
        self.next_index().load(Ordering::Relaxed)
    }

    /// EndIndex, written by the OS after it filled the elements it hands
    /// over: Acquire.
    pub fn end(&self) -> u32 {
        self.end_index().load(Ordering::Acquire)
    }

    /// Elements the driver owns now: `[BeginIndex, EndIndex)`.
    pub fn owned(&self) -> IndexRange {
        IndexRange::new(self.mask, self.begin(), self.end())
    }

    /// Whether the driver owns element `index` now.
    pub fn owns(&self, index: u32) -> bool {
        let begin = self.begin();
        index <= self.mask && range_count(self.mask, begin, index) < range_count(self.mask, begin, self.end())
    }

    /// `[from, to)`, both within `[BeginIndex, EndIndex]` with `from` not
    /// after `to`.
    pub fn range(&self, from: u32, to: u32) -> Result<IndexRange, RingError> {
        if from > self.mask || to > self.mask {
            return Err(RingError::IndexOutOfRing);
        }
        let begin = self.begin();
        let owned = range_count(self.mask, begin, self.end());
        let (from_pos, to_pos) = (range_count(self.mask, begin, from), range_count(self.mask, begin, to));
        if to_pos > owned || from_pos > to_pos {
            return Err(RingError::OutsideOwnedRange);
        }
        Ok(IndexRange::new(self.mask, from, to))
    }

    /// The drain section `[BeginIndex, NextIndex)`: posted and finished.
    pub fn drain_section(&self) -> Result<IndexRange, RingError> {
        self.range(self.begin(), self.next())
    }

    /// The post section `[NextIndex, EndIndex)`: owned, not yet posted.
    pub fn post_section(&self) -> Result<IndexRange, RingError> {
        self.range(self.next(), self.end())
    }

    /// Moves BeginIndex forward to `index`, returning `[old, index)` to the
    /// OS. Release: element writes happen before the OS sees them returned.
    pub fn set_begin(&mut self, index: u32) -> Result<(), RingError> {
        self.range(self.begin(), index)?;
        self.begin_index().store(index, Ordering::Release);
        Ok(())
    }

    /// Sets NextIndex to `index` within `[BeginIndex, EndIndex]`.
    pub fn set_next(&mut self, index: u32) -> Result<(), RingError> {
        self.range(self.begin(), index)?;
        self.next_index().store(index, Ordering::Release);
        Ok(())
    }

    /// The address of element `index` (masked), whoever owns it. Computing
    /// it is safe; touching it is governed by the ownership rule.
    pub fn element_ptr(&self, index: u32) -> NonNull<T> {
        let offset = NET_RING_ELEMENTS_OFFSET + (index & self.mask) as usize * self.stride;
        // SAFETY: from_raw's contract: the allocation holds mask + 1 elements
        // of `stride` bytes from offset 64, and the index is masked.
        unsafe { self.ring.cast::<u8>().add(offset).cast() }
    }

    fn check_owned(&self, index: u32) -> Result<(), RingError> {
        if index > self.mask {
            return Err(RingError::IndexOutOfRing);
        }
        if !self.owns(index) {
            return Err(RingError::NotOwned);
        }
        Ok(())
    }

    /// Element `index`, if the driver owns it.
    pub fn get(&self, index: u32) -> Result<&T, RingError> {
        self.check_owned(index)?;
        // SAFETY: the driver owns [BeginIndex, EndIndex) of this ring, so the
        // OS neither reads nor writes the element while the driver holds it;
        // the element is aligned and initialised (the OS zeroes or fills
        // elements before handing them over); the borrow of `self` keeps
        // BeginIndex from moving past it meanwhile.
        Ok(unsafe { self.element_ptr(index).as_ref() })
    }

    /// Element `index` for writing, if the driver owns it.
    pub fn get_mut(&mut self, index: u32) -> Result<&mut T, RingError> {
        self.check_owned(index)?;
        // SAFETY: as in `get`: the driver owns [BeginIndex, EndIndex) of this
        // ring; the exclusive borrow of the only view makes this the only
        // reference to the element.
        Ok(unsafe { self.element_ptr(index).as_mut() })
    }

    /// Extension `P` of element `index`, if the driver owns the element.
    pub fn extension<P: ExtensionPayload<Element = T>>(&self, ext: &Extension<P>, index: u32) -> Result<&P, RingError> {
        self.check_owned(index)?;
        // SAFETY: an extension element belongs to whoever owns the ring
        // element of the same index, and the driver owns [BeginIndex,
        // EndIndex) of this ring; `index` is within the ring, so inside the
        // extension's storage (Extension::from_queried's contract).
        Ok(unsafe { ext.element(index).as_ref() })
    }

    /// Extension `P` of element `index` for writing, if the driver owns it.
    pub fn extension_mut<P: ExtensionPayload<Element = T>>(
        &mut self,
        ext: &Extension<P>,
        index: u32,
    ) -> Result<&mut P, RingError> {
        self.check_owned(index)?;
        // SAFETY: as in `extension`: the driver owns [BeginIndex, EndIndex)
        // of this ring and with it the extension elements of those indices;
        // the exclusive borrow of the view makes this the only reference.
        Ok(unsafe { ext.element(index).as_mut() })
    }
}

/// The two rings of one queue.
#[derive(Debug)]
pub struct QueueRings {
    pub packets: RingView<NetPacket>,
    pub fragments: RingView<NetFragment>,
}

impl QueueRings {
    /// Takes both rings of a queue's collection.
    ///
    /// # Safety
    /// `collection` is what Net{Rx,Tx}QueueGetRingCollection returned for a
    /// queue that lives until the views are dropped, and
    /// [`RingView::from_raw`]'s contract holds for both of its rings.
    pub unsafe fn from_collection(collection: *const NetRingCollection) -> Result<Self, RingError> {
        if collection.is_null() {
            return Err(RingError::NullRing);
        }
        // SAFETY: the OS owns the collection and does not change it while
        // the queue lives; Rings[0] and Rings[1] exist in every version.
        let collection = unsafe { &*collection };
        // SAFETY: both rings come from the OS for this queue (caller's
        // contract), the packet ring holding NET_PACKETs and the fragment
        // ring NET_FRAGMENTs.
        let (packets, fragments) =
            unsafe { (RingView::from_raw(collection.packet_ring())?, RingView::from_raw(collection.fragment_ring())?) };
        Ok(Self { packets, fragments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netcx::extension::{NetExtension, NetFragmentReturnContext, NetFragmentVirtualAddress};
    use crate::os::host::os_ring::OsRing;

    fn view<T: RingElement>(ring: &OsRing) -> RingView<T> {
        // SAFETY: `ring` outlives every view a test makes, its header is
        // valid, and each test uses one view per ring.
        unsafe { RingView::from_raw(ring.ring()) }.unwrap()
    }

    #[test]
    fn index_math_wraps_at_the_mask() {
        let mask = 7;
        assert_eq!(increment_index(mask, 6), 7);
        assert_eq!(increment_index(mask, 7), 0);
        assert_eq!(advance_index(mask, 6, 3), 1);
        assert_eq!(advance_index(mask, 7, 8), 7);
        assert_eq!(range_count(mask, 2, 5), 3);
        assert_eq!(range_count(mask, 6, 2), 4);
        assert_eq!(range_count(mask, 5, 5), 0);
        assert_eq!(range_count(mask, 0, 7), 7);
        let all: std::vec::Vec<u32> = IndexRange::new(mask, 6, 2).collect();
        assert_eq!(all, [6, 7, 0, 1]);
        assert!(IndexRange::new(mask, 3, 3).is_empty());
    }

    #[test]
    fn header_has_the_facts_layout() {
        let r = OsRing::new(16, 8);
        // §1.1: ElementStride @2 (u16), NumberOfElements @4, ElementIndexMask @8.
        assert_eq!([r.byte(2), r.byte(3)], [16, 0]);
        assert_eq!(r.byte(4), 8);
        assert_eq!(r.byte(8), 7);
        r.set_end(5);
        assert_eq!(r.byte(12), 5);
        assert_eq!(NetRing::allocation_size(16, 2), Some(128));
        assert_eq!(NetRing::allocation_size(24, 8), Some(64 + 192));
    }

    #[test]
    fn elements_are_stepped_by_the_stride_not_the_element_size() {
        let r = OsRing::new(24, 8);
        let v = view::<NetPacket>(&r);
        let base = r.ring().cast::<u8>();
        for i in 0..8u32 {
            let expect = base.wrapping_add(64 + 24 * i as usize);
            assert_eq!(v.element_ptr(i).as_ptr().cast::<u8>(), expect);
            // SAFETY: the test ring is live and its header valid.
            assert_eq!(unsafe { element_at(r.ring(), i) }, expect);
        }
        // Indices are masked: 9 is element 1.
        assert_eq!(v.element_ptr(9), v.element_ptr(1));
        // SAFETY: as above.
        assert_eq!(unsafe { element_at(r.ring(), 9) }, base.wrapping_add(64 + 24));
    }

    #[test]
    fn bad_headers_are_refused() {
        // SAFETY (whole block): each ring is live and only its header is read.
        unsafe {
            assert_eq!(RingView::<NetPacket>::from_raw(core::ptr::null_mut()).unwrap_err(), RingError::NullRing);
            let odd = core::ptr::without_provenance_mut::<NetRing>(64 + 8);
            assert_eq!(RingView::<NetPacket>::from_raw(odd).unwrap_err(), RingError::Misaligned);
            let r = OsRing::new(16, 6);
            assert_eq!(RingView::<NetPacket>::from_raw(r.ring()).unwrap_err(), RingError::NotPowerOfTwo);
            let r = OsRing::new(16, 1);
            assert_eq!(RingView::<NetPacket>::from_raw(r.ring()).unwrap_err(), RingError::NotPowerOfTwo);
            let r = OsRing::new(16, 8);
            addr_of_mut!((*r.ring()).element_index_mask).write(15);
            assert_eq!(RingView::<NetPacket>::from_raw(r.ring()).unwrap_err(), RingError::MaskMismatch);
            let r = OsRing::new(8, 8);
            assert_eq!(RingView::<NetPacket>::from_raw(r.ring()).unwrap_err(), RingError::StrideTooSmall);
            let r = OsRing::new(12, 8);
            assert_eq!(RingView::<NetFragment>::from_raw(r.ring()).unwrap_err(), RingError::StrideMisaligned);
            // 12 suits a packet (align 4) and 16 a fragment.
            assert!(RingView::<NetPacket>::from_raw(r.ring()).is_ok());
            assert!(RingView::<NetFragment>::from_raw(OsRing::new(16, 8).ring()).is_ok());
        }
    }

    #[test]
    fn only_owned_elements_are_handed_out() {
        let r = OsRing::new(16, 8);
        let mut v = view::<NetPacket>(&r);
        assert_eq!(v.owned().len(), 0);
        assert_eq!(v.get(0).unwrap_err(), RingError::NotOwned);
        r.set_end(5);
        assert_eq!(v.owned().collect::<std::vec::Vec<_>>(), [0, 1, 2, 3, 4]);
        assert!(v.get(4).is_ok());
        assert_eq!(v.get(5).unwrap_err(), RingError::NotOwned);
        assert_eq!(v.get_mut(8).unwrap_err(), RingError::IndexOutOfRing);
        v.get_mut(2).unwrap().fragment_index = 0xAABB_CCDD;
        // Element 2 at 64 + 2 × 16, FragmentIndex little-endian at its start.
        assert_eq!((0..4).map(|i| r.byte(96 + i)).collect::<std::vec::Vec<_>>(), [0xDD, 0xCC, 0xBB, 0xAA]);

        v.set_begin(3).unwrap();
        assert_eq!(v.begin(), 3);
        assert_eq!(r.byte(48), 3, "BeginIndex @48");
        assert_eq!(v.get(2).unwrap_err(), RingError::NotOwned);
        // Backwards, and past EndIndex, are both outside [begin, end].
        assert_eq!(v.set_begin(2), Err(RingError::OutsideOwnedRange));
        assert_eq!(v.set_begin(6), Err(RingError::OutsideOwnedRange));
        assert_eq!(v.set_begin(9), Err(RingError::IndexOutOfRing));
        v.set_begin(5).unwrap();
        assert_eq!(v.owned().len(), 0);
    }

    #[test]
    fn owned_range_wraps_and_writes_honour_the_stride() {
        let r = OsRing::new(24, 8);
        // Sentinels in the gaps between 12-byte packets 24 bytes apart.
        for i in 0..8 {
            r.fill(64 + 24 * i + 12, 12, 0xEE);
        }
        let mut v = view::<NetPacket>(&r);
        r.set_end(6);
        v.set_begin(6).unwrap();
        r.set_end(2);
        let owned = v.owned();
        assert_eq!(owned.len(), 4);
        for i in owned {
            let p = v.get_mut(i).unwrap();
            p.fragment_index = i;
            p.fragment_count = 1;
            p.set_ignore(true);
        }
        for i in [6u32, 7, 0, 1] {
            let at = 64 + 24 * i as usize;
            assert_eq!(r.byte(at), i as u8);
            assert_eq!(r.byte(at + 4), 1);
            assert_eq!(r.byte(at + 11), 0x01, "Ignore");
            assert!((12..24).all(|k| r.byte(at + k) == 0xEE), "gap after element {i} untouched");
        }
        assert!((0..12).all(|k| r.byte(64 + 24 * 3 + k) == 0), "element 3 is the OS's");
        v.set_begin(2).unwrap();
        assert_eq!(v.owned().len(), 0);
    }

    #[test]
    fn next_index_splits_drain_and_post_sections() {
        let r = OsRing::new(8, 8);
        let mut v = view::<NetFragment>(&r);
        r.set_end(6);
        v.set_begin(5).unwrap();
        r.set_end(3);
        v.set_next(5).unwrap();
        assert!(v.drain_section().unwrap().is_empty());
        assert_eq!(v.post_section().unwrap().collect::<std::vec::Vec<_>>(), [5, 6, 7, 0, 1, 2]);
        v.set_next(0).unwrap();
        assert_eq!(v.drain_section().unwrap().collect::<std::vec::Vec<_>>(), [5, 6, 7]);
        assert_eq!(v.post_section().unwrap().len(), 3);
        assert_eq!(r.byte(52), 0, "NextIndex @52");
        assert_eq!(v.set_next(4), Err(RingError::OutsideOwnedRange));
        v.set_next(3).unwrap();
        assert!(v.post_section().unwrap().is_empty());
        assert_eq!(v.range(0, 6), Err(RingError::OutsideOwnedRange));
        assert_eq!(v.range(7, 6), Err(RingError::OutsideOwnedRange));
        v.set_begin(1).unwrap();
        assert_eq!(v.drain_section().unwrap().collect::<std::vec::Vec<_>>(), [1, 2]);
        // Moving BeginIndex past NextIndex leaves NextIndex stale: the
        // sections are refused rather than computed the long way round.
        v.set_next(1).unwrap();
        v.set_begin(2).unwrap();
        assert_eq!(v.drain_section(), Err(RingError::OutsideOwnedRange));
        assert_eq!(v.post_section(), Err(RingError::OutsideOwnedRange));
    }

    #[test]
    fn extensions_follow_the_fragment_ring_ownership() {
        let frags = OsRing::new(16, 4);
        // Two extensions with a stride of 24 for 8-byte payloads.
        let mut va_storage = [0u64; 12];
        let mut rc_storage = [0u64; 12];
        let va_ext = NetExtension::new(va_storage.as_mut_ptr().cast(), 24, true);
        let rc_ext = NetExtension::new(rc_storage.as_mut_ptr().cast(), 24, true);
        // SAFETY: both storages hold 4 elements 24 bytes apart and outlive the
        // extensions; they belong to the 4-element fragment ring.
        let (va, rc) = unsafe {
            (
                Extension::<NetFragmentVirtualAddress>::from_queried(&va_ext).unwrap(),
                Extension::<NetFragmentReturnContext>::from_queried(&rc_ext).unwrap(),
            )
        };
        let mut v = view::<NetFragment>(&frags);
        frags.set_end(3);
        let mut payload = [0u8; 32];
        let payload_ptr = payload.as_mut_ptr();
        for i in v.owned() {
            v.get_mut(i).unwrap().set_rx_payload(100 + i).unwrap();
            v.extension_mut(&va, i).unwrap().virtual_address = payload_ptr.wrapping_add(i as usize).cast();
            v.extension_mut(&rc, i).unwrap().handle = payload_ptr.wrapping_add(16 + i as usize).cast();
        }
        assert_eq!(v.extension_mut(&va, 3).unwrap_err(), RingError::NotOwned);
        assert_eq!(v.get(2).unwrap().valid_length(), 102);
        assert_eq!(v.extension(&va, 2).unwrap().virtual_address, payload_ptr.wrapping_add(2).cast());
        // Element 2 of each extension sits at 2 × 24 bytes = u64 slot 6.
        assert_eq!(va_storage[6], payload_ptr.wrapping_add(2) as u64);
        assert_eq!(rc_storage[6], payload_ptr.wrapping_add(18) as u64);
        assert_eq!(va_storage[7], 0, "the gap between elements is untouched");
    }

    #[test]
    fn collection_yields_packet_and_fragment_rings() {
        let packets = OsRing::new(16, 8);
        let fragments = OsRing::new(8, 16);
        let collection = NetRingCollection::new(packets.ring(), fragments.ring());
        // SAFETY: both test rings outlive the views and have valid headers.
        let q = unsafe { QueueRings::from_collection(&collection) }.unwrap();
        assert_eq!(q.packets.as_ptr(), packets.ring());
        assert_eq!(q.fragments.number_of_elements(), 16);
        // SAFETY: a null collection is refused before anything is read.
        assert_eq!(unsafe { QueueRings::from_collection(core::ptr::null()) }.unwrap_err(), RingError::NullRing);
        let swapped = NetRingCollection::new(fragments.ring(), packets.ring());
        // SAFETY: as above; the packet slot now holds a stride-8 ring.
        assert_eq!(unsafe { QueueRings::from_collection(&swapped) }.unwrap_err(), RingError::StrideTooSmall);
    }
}
