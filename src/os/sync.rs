//! The one lock the data path and control plane share: a spin lock that, in
//! the kernel, raises to DISPATCH_LEVEL (WSK receive events and NetAdapterCx
//! callbacks run there, so nothing that may sleep can guard shared state).
//!
//! On the host it is a `std` mutex: same contract (short critical sections,
//! never held across a call that can re-enter the lock), and the form that
//! miri understands. Under `cfg(loom)` it is loom's mutex, and [`atomic`]
//! is loom's atomics, so the loom models (`datapath::loom_models`) explore
//! every interleaving of the real data-path code around them.

use core::ops::{Deref, DerefMut};

/// The atomics of the cross-CPU hand-offs (reference counts, one-shot
/// notification flags, the TX completion bit): `core`'s, or loom's under
/// `cfg(loom)`. Plain counters stay on `core` atomics.
pub mod atomic {
    #[cfg(not(all(loom, test)))]
    pub use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
    #[cfg(all(loom, test))]
    pub use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
}

/// Memory passed between CPUs by an ownership hand-off on an atomic instead
/// of a lock (an RX slot's fields): `core`'s `UnsafeCell`, or loom's under
/// `cfg(loom)`, whose models then fail on any access to it that the
/// hand-off does not order after the previous owner's.
pub mod cell {
    /// `core::cell::UnsafeCell` with loom's access API.
    #[cfg(not(all(loom, test)))]
    #[derive(Debug)]
    pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    #[cfg(not(all(loom, test)))]
    impl<T> UnsafeCell<T> {
        pub const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        /// Reads through the pointer; the caller's hand-off must exclude
        /// every concurrent writer.
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Writes through the pointer; the caller's hand-off must make it
        /// the only one touching the value.
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    #[cfg(all(loom, test))]
    pub use loom::cell::UnsafeCell;
}

/// Mutual exclusion for `T`; critical sections must be short and must not
/// call back into code that takes the same lock.
pub struct SpinLock<T> {
    inner: imp::Lock<T>,
}

/// Access to the locked value; the lock is released when it drops.
pub struct SpinLockGuard<'a, T> {
    inner: imp::Guard<'a, T>,
}

impl<T> SpinLock<T> {
    #[cfg(not(all(loom, test)))]
    pub const fn new(value: T) -> Self {
        Self { inner: imp::Lock::new(value) }
    }

    /// Loom's mutex cannot be made in a const context.
    #[cfg(all(loom, test))]
    pub fn new(value: T) -> Self {
        Self { inner: imp::Lock::new(value) }
    }

    /// Acquires the lock (in the kernel: at DISPATCH_LEVEL until released).
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        SpinLockGuard { inner: self.inner.lock() }
    }

    /// The value, without locking: `&mut self` proves nobody else holds it.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

#[cfg(all(not(windows), not(all(loom, test))))]
mod imp {
    extern crate std;

    pub struct Lock<T>(std::sync::Mutex<T>);
    pub type Guard<'a, T> = std::sync::MutexGuard<'a, T>;

    impl<T> Lock<T> {
        pub const fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> Guard<'_, T> {
            // A panic while holding the lock already fails the test that
            // caused it; the protected state is still the best we have.
            self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

#[cfg(all(not(windows), loom, test))]
mod imp {
    pub struct Lock<T>(loom::sync::Mutex<T>);
    pub type Guard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Lock<T> {
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> Guard<'_, T> {
            self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

#[cfg(windows)]
mod imp {
    //! KSPIN_LOCK (a ULONG_PTR, zero when free: `KeInitializeSpinLock`),
    //! acquired with `KeAcquireSpinLockRaiseToDpc` and released with
    //! `KeReleaseSpinLock` (wdm.h; both exported by ntoskrnl on x64, callable
    //! at IRQL <= DISPATCH_LEVEL).

    use core::cell::UnsafeCell;
    use core::ops::{Deref, DerefMut};

    type Kirql = u8;

    unsafe extern "system" {
        fn KeAcquireSpinLockRaiseToDpc(spin_lock: *mut usize) -> Kirql;
        fn KeReleaseSpinLock(spin_lock: *mut usize, new_irql: Kirql);
    }

    pub struct Lock<T> {
        spin: UnsafeCell<usize>,
        value: UnsafeCell<T>,
    }

    // SAFETY: the value is only reached through a guard, which exists only
    // while the KSPIN_LOCK is held, so at most one CPU touches it at a time.
    unsafe impl<T: Send> Sync for Lock<T> {}
    // SAFETY: moving the lock moves the value; it is not held while moved
    // (a guard borrows the lock).
    unsafe impl<T: Send> Send for Lock<T> {}

    pub struct Guard<'a, T> {
        lock: &'a Lock<T>,
        old_irql: Kirql,
    }

    impl<T> Lock<T> {
        pub const fn new(value: T) -> Self {
            Self { spin: UnsafeCell::new(0), value: UnsafeCell::new(value) }
        }

        pub fn lock(&self) -> Guard<'_, T> {
            // SAFETY: the KSPIN_LOCK lives inside `self`, which the guard
            // borrows, so it stays put until released.
            let old_irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.spin.get()) };
            Guard { lock: self, old_irql }
        }

        pub fn get_mut(&mut self) -> &mut T {
            self.value.get_mut()
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            // SAFETY: this guard acquired the lock and releases it once,
            // restoring the IRQL it was acquired at.
            unsafe { KeReleaseSpinLock(self.lock.spin.get(), self.old_irql) }
        }
    }

    impl<T> Deref for Guard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the guard holds the lock: no other reference exists.
            unsafe { &*self.lock.value.get() }
        }
    }

    impl<T> DerefMut for Guard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: the guard holds the lock: no other reference exists.
            unsafe { &mut *self.lock.value.get() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Increments per thread. Miri interprets every one of them and checks
    /// each access for races, so a few hundred already interleave the
    /// threads many times over.
    const ROUNDS: u64 = if cfg!(miri) { 200 } else { 10_000 };

    #[test]
    fn the_lock_serialises_updates_across_threads() {
        let lock = Arc::new(SpinLock::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 4 * ROUNDS);
    }
}
