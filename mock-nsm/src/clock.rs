//! Injectable time source for the mock NSM (UNIX time in milliseconds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in milliseconds since the UNIX epoch.
///
/// The mock NSM stamps documents and issues its 3-hour leaf certificates with this
/// clock, so tests can produce documents "in the past" or "in the future".
pub trait Clock: Send + Sync {
    /// The current time in milliseconds since the UNIX epoch.
    fn now_unix_ms(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        // A clock before 1970 reads as 0; a clock past year 584 million saturates.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A manually driven clock (for tests): starts at a given time and moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Sets the time.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `delta_ms`.
    pub fn advance(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Any `Fn() -> u64` closure is a clock.
impl<F> Clock for F
where
    F: Fn() -> u64 + Send + Sync,
{
    fn now_unix_ms(&self) -> u64 {
        self()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_unix_ms(), 1_000);
        clock.advance(500);
        assert_eq!(clock.now_unix_ms(), 1_500);
        clock.set(42);
        assert_eq!(clock.now_unix_ms(), 42);
    }

    #[test]
    fn closures_are_clocks() {
        let clock = || 1_657_117_102_484u64;
        assert_eq!(Clock::now_unix_ms(&clock), 1_657_117_102_484);
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now_unix_ms() > 1_704_067_200_000);
    }
}
