//! Where time comes from: the one [`Clock`] trait, the real [`SystemClock`] and the test
//! [`ManualClock`].
//!
//! Library code takes a clock (usually an `Arc<dyn Clock>` in its config or state) instead of
//! reading `SystemTime::now()` or `Instant::now()` itself, so tests can drive time, and so
//! there is exactly one place that reads the wall clock: [`SystemClock`]. The tidy test
//! (`crates/procwatch/tests/tidy.rs`) enforces this. It lives in `model` because every crate
//! that needs time already depends on `model`, and it needs nothing beyond `std`.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::TsMs;

/// A source of time.
pub trait Clock: Send + Sync + Debug {
    /// Wall-clock time in milliseconds since the Unix epoch (timestamps, retention cutoffs).
    fn now_ms(&self) -> TsMs;
    /// A monotonic instant (durations, deadlines, schedules).
    fn instant(&self) -> Instant;
}

/// The machine's clocks. The only code in the libraries that reads them.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TsMs {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as TsMs)
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// The real clock as a shared `Arc<dyn Clock>`, the default of every config that takes one.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to: [`ManualClock::advance`] moves both the wall clock
/// and the monotonic instant by the same amount.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
    base: Instant,
    elapsed_ns: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ms` (ms since the epoch).
    pub fn new(start_ms: TsMs) -> ManualClock {
        ManualClock {
            ms: AtomicI64::new(start_ms),
            base: Instant::now(),
            elapsed_ns: AtomicU64::new(0),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.elapsed_ns.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the wall clock (it may go backwards, as a real one can); the instant is unchanged.
    pub fn set_ms(&self, ms: TsMs) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TsMs {
        self.ms.load(Ordering::SeqCst)
    }
    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.elapsed_ns.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        let i0 = c.instant();
        assert_eq!((c.now_ms(), c.instant()), (1_000, i0));
        c.advance(Duration::from_millis(1_500));
        assert_eq!(c.now_ms(), 2_500);
        assert_eq!(c.instant() - i0, Duration::from_millis(1_500));
        c.set_ms(10);
        assert_eq!(c.now_ms(), 10);
    }

    #[test]
    fn system_clock_reads_the_epoch() {
        // 2020-01-01 and later: a real wall clock, in milliseconds.
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
