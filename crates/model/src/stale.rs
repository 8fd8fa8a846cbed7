//! "Stale": how long without data a series or a host may go before procwatch stops treating it
//! as live. One rule, used by the alarm engine (STALE events, host silence), the host list of
//! the API and `/metrics`, and the alarm evaluator's look-back.

use crate::TsMs;

/// A series or a host with no data for more than this many intervals is stale.
pub const STALE_INTERVALS: i64 = 3;

/// How long without data makes a series or host stale at `interval_ms`: 3 intervals.
pub fn stale_after_ms(interval_ms: i64) -> i64 {
    STALE_INTERVALS.saturating_mul(interval_ms)
}

/// Whether data last seen at `last_seen` is stale at `now`, for data expected every
/// `interval_ms`.
pub fn is_stale(now: TsMs, last_seen: TsMs, interval_ms: i64) -> bool {
    now.saturating_sub(last_seen) > stale_after_ms(interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_three_intervals() {
        assert_eq!(stale_after_ms(10_000), 30_000);
        assert!(!is_stale(40_000, 10_000, 10_000));
        assert!(is_stale(40_001, 10_000, 10_000));
    }
}
