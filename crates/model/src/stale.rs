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

/// The interval the server goes by for a host whose batches claim `claim_ms` (0: unknown),
/// when its own is `server_ms`: the claim, but never under the shorter of `server_ms` and
/// [`MIN_INTERVAL_MS`](crate::directive::MIN_INTERVAL_MS) (1 s). The claim comes from the
/// client, and the alarm engine sizes a `linear` forecaster's window in samples by it
/// (`window / interval`): a batch claiming 1 ms must not make every one of its series hold
/// a window of a million samples. The floor keeps what tests and short-interval servers
/// use (a server at 200 ms trusts a 200 ms claim).
pub fn trusted_interval_ms(claim_ms: u64, server_ms: i64) -> i64 {
    if claim_ms == 0 {
        return server_ms;
    }
    let floor = server_ms.min(crate::directive::MIN_INTERVAL_MS as i64).max(1);
    i64::try_from(claim_ms).unwrap_or(i64::MAX).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_interval_has_a_floor() {
        // Unknown: the server's own.
        assert_eq!(trusted_interval_ms(0, 10_000), 10_000);
        // Honest claims stand, above and below the server's.
        assert_eq!(trusted_interval_ms(5_000, 10_000), 5_000);
        assert_eq!(trusted_interval_ms(60_000, 10_000), 60_000);
        assert_eq!(trusted_interval_ms(200, 200), 200);
        // Hostile ones: not under 1 s at a 10 s server, not under the server's own below that.
        assert_eq!(trusted_interval_ms(1, 10_000), 1_000);
        assert_eq!(trusted_interval_ms(1, 200), 200);
        // Past i64: the largest, not a negative interval.
        assert_eq!(trusted_interval_ms(u64::MAX, 10_000), i64::MAX);
        assert!(!is_stale(i64::MAX, 0, trusted_interval_ms(u64::MAX, 10_000)));
    }

    #[test]
    fn stale_after_three_intervals() {
        assert_eq!(stale_after_ms(10_000), 30_000);
        assert!(!is_stale(40_000, 10_000, 10_000));
        assert!(is_stale(40_001, 10_000, 10_000));
    }
}
