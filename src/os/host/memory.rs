//! Memory the host model plays the OS with: blocks it allocates and owns,
//! and element arrays (rings, extensions) with a shadow of what the OS last
//! wrote, so that any byte the driver changed where it owned nothing is found
//! after the fact.
//!
//! All raw memory access of the model is here; the rest of `os::host` works
//! on copies.

use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;
use std::alloc::{Layout, alloc, dealloc};
use std::vec::Vec;

use crate::netcx::ring::{IndexRange, range_count};

/// Pattern of bytes that are never part of an element (stride padding,
/// the tail of a ring allocation): the driver must never write them.
pub(crate) const CANARY: u8 = 0xA5;
/// Pattern of element bytes the OS has not handed out yet.
pub(crate) const NEVER_HANDED_OUT: u8 = 0x5A;

/// One allocation the model owns, 64-byte aligned (the NET_RING alignment,
/// enough for any element).
pub(crate) struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a Block is the sole owner of its heap allocation; moving it to
// another thread moves that ownership. Sharing (Sync) is not claimed.
unsafe impl Send for Block {}

impl Block {
    /// `size` bytes (at least 1), every byte `fill`.
    pub(crate) fn new(size: usize, fill: u8) -> Self {
        let layout = Layout::from_size_align(size.max(1), 64).expect("block size");
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc(layout) }).expect("host model out of memory");
        // SAFETY: the allocation is `layout.size()` bytes, freshly ours.
        unsafe { ptr.as_ptr().write_bytes(fill, layout.size()) };
        Self { ptr, layout }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len()), "host model: access outside a block");
    }

    /// Copies bytes out. Raw copy, no reference to the block is formed.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: in bounds (checked). The model reads only bytes the OS
        // owns (elements outside [BeginIndex, EndIndex), padding, returned
        // payload); a driver writing them at the same time is the very
        // violation being detected.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), out.len()) };
    }

    /// Copies bytes in.
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len());
        // SAFETY: in bounds (checked); the OS side writes only elements it
        // owns (not yet handed out, or given back by BeginIndex).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len()) };
    }

    /// Whether bytes `[offset, offset + expected.len())` equal `expected`.
    pub(crate) fn holds(&self, offset: usize, expected: &[u8]) -> bool {
        self.check(offset, expected.len());
        // SAFETY: in bounds (checked). As for `read`: the model compares
        // only bytes the OS owns; a driver writing them meanwhile is the
        // violation being detected, and the model's own writes happen on
        // this thread.
        let now = unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(offset), expected.len()) };
        now == expected
    }

    /// Whether every byte of the block is `byte`.
    pub(crate) fn all(&self, byte: u8) -> bool {
        self.all_in(0, self.len(), byte)
    }

    /// Whether bytes `[offset, offset + len)` are all `byte`.
    pub(crate) fn all_in(&self, offset: usize, len: usize, byte: u8) -> bool {
        self.check(offset, len);
        // SAFETY: in bounds (checked); as for `holds`, bytes the OS owns.
        let now = unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) };
        let word = u64::from_ne_bytes([byte; 8]);
        let mut words = now.chunks_exact(8);
        let whole =
            words.by_ref().fold(0u64, |acc, w| acc | (u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])) ^ word));
        whole == 0 && words.remainder().iter().all(|&b| b == byte)
    }

    /// [`Block::holds`] for the few bytes of stride padding: a plain loop,
    /// no library call per element.
    pub(crate) fn holds_few(&self, offset: usize, expected: &[u8]) -> bool {
        self.check(offset, expected.len());
        // SAFETY: as for `holds`.
        let now = unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(offset), expected.len()) };
        now.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) {
        self.check(offset, len);
        // SAFETY: in bounds (checked); as for `write`, memory the OS owns.
        unsafe { self.ptr.as_ptr().add(offset).write_bytes(byte, len) };
    }

    /// A ring index field (EndIndex, BeginIndex) as the atomic both sides
    /// use.
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4);
        assert!(offset % 4 == 0, "index fields are 4-byte aligned");
        // SAFETY: in bounds and aligned (block is 64-aligned, offset a
        // multiple of 4); the field is only ever accessed atomically by the
        // driver (RingView) and by the model, and lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast()) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Copies `len` bytes at a driver-supplied address, as NetAdapterCx reads an
/// indicated fragment.
///
/// # Safety
/// `addr` is valid for reads of `len` bytes: the driver promised it by
/// indicating a fragment with this VirtualAddress and Capacity (datapath
/// facts: the memory stays mapped while the ReturnContext is outstanding),
/// and the verifier found it in no released range.
pub(crate) unsafe fn read_foreign_into(addr: *const u8, len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    let at = out.len();
    // SAFETY: caller's contract for the source; `out` has room for `len`
    // more bytes (reserved), which are initialised by the copy before the
    // length covers them.
    unsafe {
        core::ptr::copy_nonoverlapping(addr, out.as_mut_ptr().add(at), len);
        out.set_len(at + len);
    }
}

/// The `len` bytes at a driver-supplied address, borrowed for as long as
/// NetAdapterCx's upper layer reads an indicated fragment in place.
///
/// # Safety
/// As for [`read_foreign_into`], for all of `'a`: the fragment's ReturnContext
/// stays outstanding (so the driver neither writes nor frees the memory)
/// until the borrow ends.
pub(crate) unsafe fn foreign_slice<'a>(addr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: caller's contract.
    unsafe { core::slice::from_raw_parts(addr, len) }
}

/// Where a byte the driver must not write was found changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// A header byte at this offset (outside BeginIndex/NextIndex/Scratch).
    Header(usize),
    /// The element at this index, which the driver did not own.
    Element(u32),
    /// The stride padding after the element at this index.
    Padding(u32),
    /// The unused tail of the allocation, at this offset.
    Tail(usize),
}

/// An array of `count` elements of `elem_size` bytes, `stride` apart,
/// starting at `base` in its block (64 for a ring, 0 for an extension),
/// with a shadow copy of what the OS last wrote.
pub(crate) struct ElementArray {
    block: Block,
    base: usize,
    stride: usize,
    elem_size: usize,
    mask: u32,
    /// Header bytes the driver may write (BeginIndex, NextIndex, Scratch).
    driver_header: Range<usize>,
    shadow: Vec<u8>,
    scratch: Vec<u8>,
    /// Damage found by the OS's own writes (each first compares what it
    /// replaces), reported at the next [`ElementArray::check`]. At most
    /// one entry per element and header byte between two checks.
    pending: Vec<Damage>,
}

impl ElementArray {
    /// `count` (a power of two) elements; header bytes before `base` are
    /// left for the caller to initialise, then [`ElementArray::resync`].
    pub(crate) fn new(
        size: usize,
        base: usize,
        stride: usize,
        elem_size: usize,
        count: u32,
        driver_header: Range<usize>,
    ) -> Self {
        assert!(count.is_power_of_two() && count > 1 && stride >= elem_size);
        assert!(base + stride * count as usize <= size);
        let block = Block::new(size, CANARY);
        for i in 0..count as usize {
            block.fill(base + i * stride, elem_size, NEVER_HANDED_OUT);
        }
        let shadow = std::vec![0u8; block.len()];
        let mut array = Self {
            block,
            base,
            stride,
            elem_size,
            mask: count - 1,
            driver_header,
            shadow,
            scratch: std::vec![0; stride],
            pending: Vec::new(),
        };
        array.resync();
        array
    }

    pub(crate) fn block(&self) -> &Block {
        &self.block
    }

    pub(crate) fn mask(&self) -> u32 {
        self.mask
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    fn element_offset(&self, index: u32) -> usize {
        self.base + (index & self.mask) as usize * self.stride
    }

    /// Takes the whole block as the new expected image.
    pub(crate) fn resync(&mut self) {
        let mut shadow = core::mem::take(&mut self.shadow);
        self.block.read(0, &mut shadow);
        self.shadow = shadow;
    }

    /// Reads element `index` (its `elem_size` bytes) into `out`.
    pub(crate) fn read_element(&self, index: u32, out: &mut [u8]) {
        assert!(out.len() <= self.elem_size);
        self.block.read(self.element_offset(index), out);
    }

    /// The OS writes element `index` (a prefix of its bytes); the shadow
    /// follows.
    pub(crate) fn write_element(&mut self, index: u32, data: &[u8]) {
        assert!(data.len() <= self.elem_size);
        let at = self.element_offset(index);
        // The OS only writes elements the driver does not own: a driver
        // write there since the last check would be erased unseen.
        if !self.block.holds_few(at, &self.shadow[at..at + self.elem_size]) {
            self.pending.push(Damage::Element(index & self.mask));
        }
        self.block.write(at, data);
        self.shadow[at..at + data.len()].copy_from_slice(data);
    }

    /// Before the OS writes a header field: records driver writes to the
    /// header that the OS write could erase.
    pub(crate) fn guard_header(&mut self) {
        for offset in 0..self.base {
            if self.driver_header.contains(&offset) {
                continue;
            }
            let mut byte = [0u8];
            self.block.read(offset, &mut byte);
            if byte[0] != self.shadow[offset] {
                self.pending.push(Damage::Header(offset));
                self.shadow[offset] = byte[0];
            }
        }
    }

    /// A header field the OS writes (EndIndex); the shadow follows.
    pub(crate) fn note_header_write(&mut self, offset: usize, data: &[u8]) {
        self.shadow[offset..offset + data.len()].copy_from_slice(data);
    }

    /// Elements `[from, to)` came back from the driver: their bytes as they
    /// are now become the expected image.
    pub(crate) fn adopt(&mut self, from: u32, to: u32) {
        for index in IndexRange::new(self.mask, from, to) {
            let at = self.element_offset(index);
            let mut shadow = core::mem::take(&mut self.shadow);
            self.block.read(at, &mut shadow[at..at + self.elem_size]);
            self.shadow = shadow;
        }
    }

    /// Compares every byte the driver may not write, given that it owned
    /// `[begin, end)`, with the expected image. Changed bytes are reported
    /// and taken as the new image, so each write is reported once.
    pub(crate) fn check(&mut self, begin: u32, end: u32, out: &mut Vec<Damage>) {
        out.append(&mut self.pending);
        if self.unchanged(begin, end) {
            return;
        }
        let owned = range_count(self.mask, begin, end);
        let mut header = std::vec![0u8; self.base];
        self.block.read(0, &mut header);
        for (offset, byte) in header.iter().enumerate() {
            if !self.driver_header.contains(&offset) && *byte != self.shadow[offset] {
                out.push(Damage::Header(offset));
                self.shadow[offset] = *byte;
            }
        }
        for index in 0..=self.mask {
            let at = self.element_offset(index);
            if range_count(self.mask, begin, index) >= owned {
                self.compare(at, self.elem_size, Damage::Element(index), out);
            }
            self.compare(at + self.elem_size, self.stride - self.elem_size, Damage::Padding(index), out);
        }
        let tail = self.base + self.stride * (self.mask as usize + 1);
        if tail < self.block.len() {
            let mut bytes = std::vec![0u8; self.block.len() - tail];
            self.block.read(tail, &mut bytes);
            if bytes[..] != self.shadow[tail..] {
                out.push(Damage::Tail(tail));
                self.shadow[tail..].copy_from_slice(&bytes);
            }
        }
    }

    /// The fast check, run before every callback and after it: whether
    /// every byte the driver may not write still equals the image, compared
    /// in as few runs as the layout allows (the header outside the driver's
    /// fields, the elements the driver does not own with their padding, the
    /// padding of those it owns, the tail). Anything found is then located
    /// by the byte-exact walk of [`ElementArray::check`].
    fn unchanged(&self, begin: u32, end: u32) -> bool {
        let same = |from: usize, to: usize| from >= to || self.block.holds(from, &self.shadow[from..to]);
        let header = same(0, self.driver_header.start.min(self.base))
            && same(self.driver_header.end.max(self.driver_header.start).min(self.base), self.base);
        if !header {
            return false;
        }
        let count = self.mask as usize + 1;
        let owned = range_count(self.mask, begin, end) as usize;
        let first_owned = (begin & self.mask) as usize;
        let elements = self.base + self.stride * count;
        // The driver owns elements first_owned .. first_owned + owned (mod
        // count); the others, padding included, lie in at most two runs.
        let at = |i: usize| self.base + self.stride * i;
        let stop = first_owned + owned;
        let os_runs = if owned == 0 {
            [(self.base, elements), (0, 0)]
        } else if stop <= count {
            [(self.base, at(first_owned)), (at(stop), elements)]
        } else {
            [(at(stop - count), at(first_owned)), (0, 0)]
        };
        if !os_runs.iter().all(|&(from, to)| same(from, to)) {
            return false;
        }
        // Owned elements' padding is never the driver's.
        if self.stride > self.elem_size {
            let pad = self.stride - self.elem_size;
            let mut intact = true;
            for k in 0..owned {
                let at = self.element_offset(begin.wrapping_add(k as u32)) + self.elem_size;
                intact &= self.block.holds_few(at, &self.shadow[at..at + pad]);
            }
            if !intact {
                return false;
            }
        }
        same(elements, self.block.len())
    }

    fn compare(&mut self, at: usize, len: usize, damage: Damage, out: &mut Vec<Damage>) {
        if len == 0 {
            return;
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        self.block.read(at, &mut scratch[..len]);
        if scratch[..len] != self.shadow[at..at + len] {
            out.push(damage);
            self.shadow[at..at + len].copy_from_slice(&scratch[..len]);
        }
        self.scratch = scratch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_outside_ownership_are_found_once() {
        let mut a = ElementArray::new(64 + 8 * 16, 64, 16, 12, 8, 48..64);
        let mut damage = Vec::new();
        a.check(0, 0, &mut damage);
        assert!(damage.is_empty());
        // The driver owns [2, 4); element 5 and the padding of 2 are not its.
        a.block().write(64 + 16 * 5, &[1]);
        a.block().write(64 + 16 * 2 + 12, &[1]);
        a.block().write(64 + 16 * 3, &[1]);
        a.block().write(50, &[1]);
        a.block().write(12, &[1]);
        a.check(2, 4, &mut damage);
        assert_eq!(damage, [Damage::Header(12), Damage::Padding(2), Damage::Element(5)]);
        damage.clear();
        a.check(2, 4, &mut damage);
        assert!(damage.is_empty(), "reported once");
    }

    #[test]
    fn a_wrapped_ownership_checks_both_unowned_ends_and_nothing_owned() {
        // Packed elements (stride = size): no padding to check.
        let mut a = ElementArray::new(64 + 8 * 8, 64, 8, 8, 8, 48..64);
        let mut damage = Vec::new();
        // The driver owns [6, 2): elements 6, 7, 0, 1.
        for owned in [6u32, 7, 0, 1] {
            a.block().write(64 + 8 * owned as usize, &[0xEE; 8]);
        }
        a.check(6, 2, &mut damage);
        assert!(damage.is_empty(), "writes to owned elements are the driver's right: {damage:?}");
        a.adopt(6, 2);
        a.block().write(64 + 8 * 2, &[1]);
        a.block().write(64 + 8 * 5 + 7, &[1]);
        a.check(6, 2, &mut damage);
        assert_eq!(damage, [Damage::Element(2), Damage::Element(5)]);
        // Owning nothing: every element is checked.
        damage.clear();
        a.block().write(64 + 8 * 7, &[2]);
        a.check(3, 3, &mut damage);
        assert_eq!(damage, [Damage::Element(7)]);
    }

    #[test]
    fn an_os_write_over_a_driver_write_still_reports_it() {
        let mut a = ElementArray::new(64 + 8 * 16, 64, 16, 12, 8, 48..64);
        let mut damage = Vec::new();
        a.check(0, 0, &mut damage);
        // The driver writes element 6, which it does not own; the OS then
        // hands element 6 out, overwriting it, before the next check.
        a.block().write(64 + 16 * 6, &[9]);
        a.write_element(6, &[0; 12]);
        a.check(0, 0, &mut damage);
        assert_eq!(damage, [Damage::Element(6)]);
        // Header bytes the OS is about to rewrite are compared first too.
        a.block().write(4, &[7]);
        a.guard_header();
        a.check(0, 0, &mut damage);
        assert_eq!(damage, [Damage::Element(6), Damage::Header(4)]);
    }

    #[test]
    fn the_fast_check_sees_padding_of_owned_elements_and_wrapped_ranges() {
        let mut a = ElementArray::new(64 + 8 * 16, 64, 16, 12, 8, 48..64);
        let mut damage = Vec::new();
        // Owned [6, 10) wraps: elements 6, 7, 0, 1. Their bytes are the
        // driver's; their padding and every other element are not.
        a.block().write(64 + 16 * 7, &[1]);
        a.block().write(64 + 16, &[1]);
        a.check(6, 10, &mut damage);
        assert!(damage.is_empty(), "{damage:?}");
        a.block().write(64 + 16 + 12, &[1]);
        a.block().write(64 + 16 * 2, &[1]);
        a.check(6, 10, &mut damage);
        assert_eq!(damage, [Damage::Padding(1), Damage::Element(2)]);
    }
}
