//! The WSK ownership verifier: one per test (shared by every socket the
//! test opens, and thread-safe), recording each broken rule of
//! `docs/datapath.md` ("RX ownership", "TX ownership", the `Transport`
//! contract) instead of crashing, so a test can assert on exactly what went
//! wrong. Released memory is reported to listeners (`on_release`) so the
//! NetAdapterCx model can flag fragments that still point into it.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};

use crate::ntstatus::NtStatus;

/// Which socket a report is about (numbered in opening order, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// A broken WSK ownership rule. The address of a list is that of its head
/// node, as the driver would pass it to WskRelease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// WskRelease of a list already released.
    ReleasedTwice { socket: SocketId, list: usize },
    /// WskRelease of a list whose receive event returned STATUS_SUCCESS
    /// (WSK took it back at once).
    ReleasedNotRetained { socket: SocketId, list: usize },
    /// WskRelease of an address that is no list head of this socket.
    ReleasedUnknown { socket: SocketId, list: usize },
    /// WskRelease after WskCloseSocket.
    ReleasedAfterClose { socket: SocketId, list: usize },
    /// A receive event returned something other than SUCCESS or PENDING.
    BadReceiveStatus { socket: SocketId, status: NtStatus },
    /// WskCloseSocket (or dropping the socket) with lists still retained.
    LeakedLists { socket: SocketId, retained: usize },
    /// WskCloseSocket (or dropping the socket) with sends still in flight.
    SendsInFlightAtClose { socket: SocketId, in_flight: usize },
    /// A send on a slot whose previous send has not completed.
    SendOnBusySlot { socket: SocketId, slot: u16 },
    /// A slot number at or past `send_slots()`.
    SlotOutOfRange { socket: SocketId, slot: u16 },
    /// A send longer than SEND_SLOT_SIZE.
    SendTooLong { socket: SocketId, slot: u16, len: usize },
    /// A send after WskCloseSocket.
    SendAfterClose { socket: SocketId, slot: u16 },
    /// A `WskSendMessages` batch that is empty or longer than
    /// `SEND_BATCH_MAX` datagrams.
    BadSendBatch { socket: SocketId, len: usize },
    /// `slot_buffer` asked for a slot while its send is in flight.
    SlotBufferWhileInFlight { socket: SocketId, slot: u16 },
    /// The slot's bytes changed between the send and its completion.
    SlotWrittenWhileInFlight { socket: SocketId, slot: u16 },
    /// The model delivered a different number of completions than it
    /// accepted sends (a fault of the model itself).
    CompletionCountMismatch { socket: SocketId, accepted: u64, completed: u64 },
}

/// Called with the address range of memory whose ownership changes.
pub type RangeHook = Box<dyn Fn(Range<usize>) + Send + Sync>;

/// The shared verifier.
#[derive(Default)]
pub struct WskVerifier {
    violations: Mutex<Vec<Violation>>,
    indicate_hooks: RwLock<Vec<RangeHook>>,
    release_hooks: RwLock<Vec<RangeHook>>,
    next_socket: AtomicU32,
}

impl core::fmt::Debug for WskVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WskVerifier").field("violations", &self.violations()).finish_non_exhaustive()
    }
}

impl WskVerifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records a broken rule.
    pub fn report(&self, violation: Violation) {
        lock(&self.violations).push(violation);
    }

    /// Every violation so far.
    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.violations).clone()
    }

    /// Every violation so far, forgetting them.
    pub fn take_violations(&self) -> Vec<Violation> {
        core::mem::take(&mut *lock(&self.violations))
    }

    /// Panics, listing them, if any rule was broken.
    #[track_caller]
    pub fn assert_clean(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "WSK ownership violations: {v:#?}");
    }

    /// Registers a listener told of each buffer range WSK hands the driver
    /// in an indication (before the receive event runs).
    pub fn on_indicate(&self, hook: impl Fn(Range<usize>) + Send + Sync + 'static) {
        self.indicate_hooks.write().unwrap_or_else(|p| p.into_inner()).push(Box::new(hook));
    }

    /// Registers a listener told of each buffer range that stops being the
    /// driver's (list reclaimed or released); the bytes are already poisoned.
    pub fn on_release(&self, hook: impl Fn(Range<usize>) + Send + Sync + 'static) {
        self.release_hooks.write().unwrap_or_else(|p| p.into_inner()).push(Box::new(hook));
    }

    pub(crate) fn new_socket(&self) -> SocketId {
        SocketId(self.next_socket.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub(crate) fn indicated(&self, range: Range<usize>) {
        for hook in self.indicate_hooks.read().unwrap_or_else(|p| p.into_inner()).iter() {
            hook(range.clone());
        }
    }

    pub(crate) fn released(&self, range: Range<usize>) {
        for hook in self.release_hooks.read().unwrap_or_else(|p| p.into_inner()).iter() {
            hook(range.clone());
        }
    }
}

/// A std mutex lock that shrugs off poisoning: a panic under the lock has
/// already failed the test that caused it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    #[test]
    fn records_takes_and_tells_listeners() {
        let v = WskVerifier::new();
        assert_eq!(v.new_socket(), SocketId(1));
        assert_eq!(v.new_socket(), SocketId(2));
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        v.on_release(move |r| {
            s.fetch_add(r.len(), Ordering::Relaxed);
        });
        v.released(100..164);
        assert_eq!(seen.load(Ordering::Relaxed), 64);
        v.assert_clean();
        v.report(Violation::SendOnBusySlot { socket: SocketId(1), slot: 3 });
        assert_eq!(v.take_violations(), [Violation::SendOnBusySlot { socket: SocketId(1), slot: 3 }]);
        v.assert_clean();
    }
}
