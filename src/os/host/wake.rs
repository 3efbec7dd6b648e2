//! A condition variable that makes the wake-up system call only when a
//! thread sleeps on it. `std`'s futex condvar issues `FUTEX_WAKE` on every
//! notify; the model's poll and socket threads notify once per packet, and
//! those calls (mostly with nobody asleep) cost more than the data path's
//! work. Same contract as [`Condvar`]: the state a waiter checks changes
//! under the mutex before `notify_all`.
//!
//! Why no wake-up is lost: a waiter counts itself while holding the mutex,
//! before it sleeps; a notifier changed the state under the same mutex and
//! looks at the count after releasing it, so either the waiter saw the new
//! state and did not sleep, or its count is visible to the notifier.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, MutexGuard, WaitTimeoutResult};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Wake {
    cv: Condvar,
    waiting: AtomicUsize,
}

impl Wake {
    pub const fn new() -> Self {
        Self { cv: Condvar::new(), waiting: AtomicUsize::new(0) }
    }

    /// Wakes every sleeper, if any.
    pub fn notify_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }

    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.cv.wait(guard).unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait_timeout(guard, timeout).unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub fn wait_timeout_while<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait_timeout_while(guard, timeout, condition).unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_sleeper_is_woken_and_a_notify_without_one_is_harmless() {
        let pair = Arc::new((Mutex::new(false), Wake::new()));
        pair.1.notify_all();
        let p = pair.clone();
        let t = std::thread::spawn(move || {
            let mut ready = p.0.lock().unwrap();
            while !*ready {
                ready = p.1.wait(ready);
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        *pair.0.lock().unwrap() = true;
        pair.1.notify_all();
        t.join().unwrap();
    }
}
