//! A condition variable that makes no system call when nobody waits.
//!
//! `std`'s futex-based `Condvar::notify_all` always enters the kernel; the
//! model notifies several times per packet (a completion, a delivery, an
//! arrival, a freed buffer) while its threads are mostly busy, so those
//! calls cost more than the packet's crypto. [`Wakeup`] counts its waiters:
//! a waiter registers under the mutex that guards the state it waits on,
//! and every notifier changes that state under the same mutex before it
//! looks at the count, so a notification is skipped only when no thread can
//! be waiting for it.

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Condvar, LockResult, MutexGuard, WaitTimeoutResult};

#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    cv: Condvar,
    waiting: AtomicUsize,
}

impl Wakeup {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes every waiter, if there is one. Call after changing the state
    /// under its mutex (held or released since).
    pub(crate) fn notify_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait(guard);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait_timeout(guard, timeout);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub(crate) fn wait_timeout_while<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait_timeout_while(guard, timeout, condition);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_waiter_is_woken_and_no_waiter_costs_nothing() {
        let pair = Arc::new((Mutex::new(false), Wakeup::new()));
        pair.1.notify_all(); // nobody waits: a no-op
        let p = pair.clone();
        let t = std::thread::spawn(move || {
            let g = p.0.lock().unwrap();
            let (g, _) = p.1.wait_timeout_while(g, Duration::from_secs(10), |ready| !*ready).unwrap();
            *g
        });
        std::thread::sleep(Duration::from_millis(20));
        *pair.0.lock().unwrap() = true;
        pair.1.notify_all();
        assert!(t.join().unwrap(), "woken with the state set");
        assert_eq!(pair.1.waiting.load(Ordering::SeqCst), 0);
    }
}
