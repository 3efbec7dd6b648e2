//! Fixed pools the data path allocates once (at adapter or socket creation)
//! and then only takes from and gives back to: index free lists, bounded
//! FIFOs of indices, and the RX copy buffers.
//!
//! Nothing here allocates after construction, so the per-packet path never
//! does; every capacity is a named constant of the caller.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr::NonNull;

use crate::os::sync::SpinLock;

/// A free list of indices `0..capacity`.
pub struct IndexPool {
    free: SpinLock<Stack>,
}

struct Stack {
    items: Box<[u16]>,
    len: usize,
}

impl IndexPool {
    /// A pool with all of `0..capacity` free; `take` hands out 0 first.
    pub fn full(capacity: u16) -> Self {
        let items: Box<[u16]> = (0..capacity).rev().collect::<Vec<_>>().into_boxed_slice();
        let len = items.len();
        Self { free: SpinLock::new(Stack { items, len }) }
    }

    /// A pool that can hold `capacity` indices, none free yet.
    pub fn empty(capacity: u16) -> Self {
        Self { free: SpinLock::new(Stack { items: alloc::vec![0; usize::from(capacity)].into_boxed_slice(), len: 0 }) }
    }

    pub fn take(&self) -> Option<u16> {
        self.take_leaving(0)
    }

    /// As [`IndexPool::take`], but only while more than `leave` are free.
    pub fn take_leaving(&self, leave: usize) -> Option<u16> {
        let mut s = self.free.lock();
        if s.len <= leave {
            return None;
        }
        let len = s.len - 1;
        let index = *s.items.get(len)?;
        s.len = len;
        Some(index)
    }

    /// Takes up to `out.len()` indices under one lock, in the order single
    /// [`IndexPool::take`]s would hand them out; returns how many.
    pub fn take_into(&self, out: &mut [u16]) -> usize {
        self.take_into_leaving(out, 0)
    }

    /// As [`IndexPool::take_into`], but never the last `leave` free ones.
    pub fn take_into_leaving(&self, out: &mut [u16], leave: usize) -> usize {
        let mut s = self.free.lock();
        let n = out.len().min(s.len.saturating_sub(leave));
        let rest = s.len - n;
        let Some(taken) = s.items.get(rest..s.len) else { return 0 };
        for (slot, &index) in out.iter_mut().zip(taken.iter().rev()) {
            *slot = index;
        }
        s.len = rest;
        n
    }

    /// Gives back indices taken with [`IndexPool::take_into`] and not used,
    /// under one lock, so the pool is as if they had never been taken (the
    /// first of `indices` is on top again). Those that do not fit (a double
    /// free) are not added; returns how many were.
    pub fn put_all(&self, indices: &[u16]) -> usize {
        let mut s = self.free.lock();
        let mut added = 0;
        for &index in indices.iter().rev() {
            let len = s.len;
            match s.items.get_mut(len) {
                Some(slot) => {
                    *slot = index;
                    s.len = len + 1;
                    added += 1;
                }
                None => break,
            }
        }
        added
    }

    /// Gives `index` back. `false` if the pool is already full (a second
    /// free of the same index): the index is not added twice.
    pub fn put(&self, index: u16) -> bool {
        let mut s = self.free.lock();
        let len = s.len;
        match s.items.get_mut(len) {
            Some(slot) => {
                *slot = index;
                s.len = len + 1;
                true
            }
            None => false,
        }
    }

    /// Puts back all indices `0..count` (at most the capacity) at once,
    /// replacing whatever was free: for a pool whose size is learnt later.
    pub fn fill(&self, count: u16) {
        let mut s = self.free.lock();
        let n = usize::from(count).min(s.items.len());
        for (slot, index) in s.items.iter_mut().zip((0..n).rev()) {
            *slot = index as u16;
        }
        s.len = n;
    }

    pub fn available(&self) -> usize {
        self.free.lock().len
    }
}

/// A bounded double-ended queue of indices.
pub struct IndexDeque {
    items: Box<[u16]>,
    head: usize,
    len: usize,
}

impl IndexDeque {
    pub fn with_capacity(capacity: u16) -> Self {
        Self { items: alloc::vec![0; usize::from(capacity)].into_boxed_slice(), head: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn capacity(&self) -> usize {
        self.items.len()
    }

    /// `at` (below twice the capacity) wrapped into the ring: a compare, not
    /// a division, on the per-packet path.
    fn wrap(&self, at: usize) -> usize {
        if at >= self.capacity() { at - self.capacity() } else { at }
    }

    /// `false` when full: the caller counts the drop.
    pub fn push_back(&mut self, index: u16) -> bool {
        if self.len >= self.capacity() {
            return false;
        }
        // head < capacity and len < capacity here.
        let at = self.wrap(self.head + self.len);
        match self.items.get_mut(at) {
            Some(slot) => *slot = index,
            None => return false,
        }
        self.len += 1;
        true
    }

    /// `false` when full.
    pub fn push_front(&mut self, index: u16) -> bool {
        if self.len >= self.capacity() {
            return false;
        }
        let at = self.wrap(self.head + self.capacity() - 1);
        match self.items.get_mut(at) {
            Some(slot) => *slot = index,
            None => return false,
        }
        self.head = at;
        self.len += 1;
        true
    }

    /// Pops up to `out.len()` indices into `out`, oldest first; returns
    /// how many.
    pub fn pop_front_into(&mut self, out: &mut [u16]) -> usize {
        let mut n = 0;
        for slot in out.iter_mut() {
            let Some(index) = self.pop_front() else { break };
            *slot = index;
            n += 1;
        }
        n
    }

    pub fn pop_front(&mut self) -> Option<u16> {
        if self.len == 0 {
            return None;
        }
        let index = *self.items.get(self.head)?;
        self.head = self.wrap(self.head + 1);
        self.len -= 1;
        Some(index)
    }
}

/// Byte buffers of `SIZE` bytes handed to one owner at a time.
pub struct BufferPool<const SIZE: usize> {
    buffers: Box<[UnsafeCell<[u8; SIZE]>]>,
    free: IndexPool,
}

// SAFETY: a buffer is reached only through `ptr(index)` by the owner of
// `index`, which it took from the free list and has not put back; the free
// list hands each index to one owner at a time, so no two threads touch the
// same buffer concurrently.
unsafe impl<const SIZE: usize> Sync for BufferPool<SIZE> {}
// SAFETY: the buffers are plain bytes owned by the pool.
unsafe impl<const SIZE: usize> Send for BufferPool<SIZE> {}

impl<const SIZE: usize> BufferPool<SIZE> {
    pub fn new(count: u16) -> Self {
        let buffers = (0..count).map(|_| UnsafeCell::new([0u8; SIZE])).collect::<Vec<_>>().into_boxed_slice();
        Self { buffers, free: IndexPool::full(count) }
    }

    pub fn take(&self) -> Option<u16> {
        self.free.take()
    }

    /// Gives a buffer back; `false` on a double free (ignored).
    pub fn put(&self, index: u16) -> bool {
        usize::from(index) < self.buffers.len() && self.free.put(index)
    }

    /// The buffer `index`. Only the owner (who took `index` and has not
    /// put it back) may read or write through it.
    pub fn ptr(&self, index: u16) -> Option<NonNull<u8>> {
        self.buffers.get(usize::from(index)).and_then(|b| NonNull::new(b.get().cast::<u8>()))
    }

    pub fn available(&self) -> usize {
        self.free.available()
    }

    pub const fn buffer_size(&self) -> usize {
        SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_pool_hands_out_each_index_once() {
        let p = IndexPool::full(3);
        assert_eq!([p.take(), p.take(), p.take(), p.take()], [Some(0), Some(1), Some(2), None]);
        assert!(p.put(1));
        assert_eq!(p.take(), Some(1));
        assert!(p.put(0) && p.put(1) && p.put(2));
        assert!(!p.put(2), "a fourth index does not fit a pool of three");
        assert_eq!(p.available(), 3);
    }

    #[test]
    fn taking_several_at_once_hands_out_what_single_takes_would() {
        let (one, many) = (IndexPool::full(5), IndexPool::full(5));
        let mut out = [0u16; 3];
        assert_eq!(many.take_into(&mut out), 3);
        let singles: [u16; 3] = core::array::from_fn(|_| one.take().unwrap());
        assert_eq!(out, singles);
        // Two unused go back on top, first of them first out again.
        assert_eq!(many.put_all(&out[1..]), 2);
        assert_eq!(many.take(), Some(out[1]));
        assert_eq!(many.take(), Some(out[2]));
        // Asking for more than is free takes what there is.
        let mut big = [0u16; 8];
        assert_eq!(many.take_into(&mut big), 2);
        assert_eq!(many.take(), None);
        // Nothing is added beyond the capacity.
        assert_eq!(many.put_all(&[0, 1, 2, 3, 4, 0]), 5);
        assert_eq!(many.available(), 5);
    }

    #[test]
    fn an_empty_pool_is_filled_once_its_size_is_known() {
        let p = IndexPool::empty(4);
        assert_eq!(p.take(), None);
        p.fill(9);
        assert_eq!(p.available(), 4, "never more than the capacity");
        p.fill(2);
        assert_eq!([p.take(), p.take(), p.take()], [Some(0), Some(1), None]);
    }

    #[test]
    fn deque_is_bounded_and_wraps() {
        let mut q = IndexDeque::with_capacity(3);
        assert!(q.push_back(1) && q.push_back(2) && q.push_back(3));
        assert!(!q.push_back(4) && !q.push_front(4));
        assert_eq!(q.pop_front(), Some(1));
        assert!(q.push_back(5));
        assert_eq!(q.pop_front(), Some(2));
        assert!(q.push_front(9));
        assert_eq!([q.pop_front(), q.pop_front(), q.pop_front(), q.pop_front()], [Some(9), Some(3), Some(5), None]);
        assert!(q.is_empty());
    }

    #[test]
    fn buffers_are_distinct_and_bounded() {
        let pool = BufferPool::<64>::new(2);
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!(pool.take(), None);
        let (pa, pb) = (pool.ptr(a).unwrap(), pool.ptr(b).unwrap());
        assert_eq!(pb.as_ptr() as usize - pa.as_ptr() as usize, 64);
        assert!(pool.ptr(2).is_none());
        assert!(pool.put(a));
        assert!(!pool.put(7));
        assert_eq!(pool.available(), 1);
    }
}
