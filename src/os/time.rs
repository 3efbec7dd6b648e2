//! Monotonic time as the control plane and data path see it.
//!
//! In the kernel it is `KeQueryInterruptTime` (100 ns units since boot,
//! advancing across sleep, which is what keepalive timeouts must measure); the
//! host model passes in real or virtual time. Nothing here reads a clock:
//! callers hand an [`Instant`] in, so tests run in virtual time.

use core::time::Duration;

/// A point on the monotonic clock, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// From `KeQueryInterruptTime`'s 100 ns units.
    pub const fn from_interrupt_time(units_100ns: u64) -> Self {
        Self(units_100ns / 10_000)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds, the unit of the replay window's time rule.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_time_converts_to_millis_and_arithmetic_saturates() {
        assert_eq!(Instant::from_interrupt_time(25_000_000).as_millis(), 2_500);
        assert_eq!(Instant::from_millis(2_500).as_secs(), 2);
        let t = Instant::from_millis(u64::MAX - 1);
        assert_eq!(t.saturating_add(Duration::from_secs(5)).as_millis(), u64::MAX);
        assert_eq!(Instant::ZERO.saturating_since(t), Duration::ZERO);
    }
}
