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

/// A UTC calendar time, from Unix milliseconds ([`Utc::from_ms`]) or to them
/// ([`Utc::to_ms`]): the one home of procwatch's calendar math (Howard Hinnant's civil-date
/// algorithms, proleptic Gregorian), so no crate needs a date library for RFC 3339 stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// The year (proleptic Gregorian; may be ≤ 0).
    pub year: i64,
    /// 1–12.
    pub month: i64,
    /// 1–31.
    pub day: i64,
    /// 0–23.
    pub hour: i64,
    /// 0–59.
    pub minute: i64,
    /// 0–59.
    pub second: i64,
    /// 0–999.
    pub millis: i64,
}

impl Utc {
    /// The calendar time of `ms` milliseconds since the Unix epoch.
    pub fn from_ms(ms: TsMs) -> Utc {
        let secs = ms.div_euclid(1000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis: ms.rem_euclid(1000),
        }
    }

    /// Milliseconds since the Unix epoch (fields out of range carry over, as in `timegm`).
    pub fn to_ms(&self) -> TsMs {
        let (y, m) = (self.year, self.month);
        let y = if m <= 2 { y - 1 } else { y };
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (((days * 24 + self.hour) * 60 + self.minute) * 60 + self.second) * 1000 + self.millis
    }

    /// RFC 3339 with milliseconds: `2026-12-04T16:40:12.345Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
}

#[cfg(test)]
mod calendar_tests {
    use super::Utc;

    #[test]
    fn civil_dates_round_trip() {
        for ms in [0, 951_782_400_000, 1_764_070_000_123, -86_400_000, 4_102_444_800_000] {
            assert_eq!(Utc::from_ms(ms).to_ms(), ms, "{ms}");
        }
        // 2000-02-29 (a leap day of a century leap year) and a known stamp.
        let leap = Utc::from_ms(951_782_400_000);
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!(Utc::from_ms(1_764_070_000_123).rfc3339(), "2025-11-25T11:26:40.123Z");
    }
}
