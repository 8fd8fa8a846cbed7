//! Retrying an HTTP request: what an answer's status means ([`RetryAction`]) and how long to
//! wait before the next attempt ([`Backoff`]). One home for the agent's shipper and the
//! notifiers (webhook, Alertmanager, the alarm-stream follower); each decides what to do with
//! an action (the agent keeps a batch through a token problem, a webhook gives up).
//!
//! Pure: no I/O, no clock, no randomness. The jitter's random draw is the caller's.

use std::time::Duration;

/// What an HTTP answer means for the request that got it, derived from the status alone
/// ([`RetryAction::from_status`]). A transport failure (no answer at all) is [`Retry`].
///
/// [`Retry`]: RetryAction::Retry
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// 2xx: accepted (a caller may still check that the body is the acknowledgement it
    /// expects).
    Done,
    /// Transient: 408, 429, 5xx, or no answer. The same request may succeed later.
    Retry,
    /// 401 or 403: the credentials are refused. Nothing is wrong with the request itself; it
    /// fails the same way until someone fixes the token.
    Unauthorized,
    /// A 3xx (redirects are not followed), 404 or 405: the request did not reach the endpoint
    /// meant (a wrong URL, a proxy, a captive portal).
    Misconfigured,
    /// Any other 4xx (400, 413, 422, …): the receiver refused this request for what it is;
    /// sent unchanged it can never succeed. Set it aside.
    Quarantine,
}

impl RetryAction {
    /// The action an HTTP status calls for. Statuses below 200 or above 599 (not sent by a
    /// conforming server) are treated as transient.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=299 => RetryAction::Done,
            401 | 403 => RetryAction::Unauthorized,
            300..=399 | 404 | 405 => RetryAction::Misconfigured,
            408 | 429 => RetryAction::Retry,
            400..=499 => RetryAction::Quarantine,
            _ => RetryAction::Retry,
        }
    }

    /// Whether the same request may succeed if simply sent again later.
    pub fn is_transient(self) -> bool {
        self == RetryAction::Retry
    }
}

/// Exponential backoff with full jitter: after the n-th failure (n from 0) wait a uniformly
/// random time in `[0, min(max, base × factor^n)]`, so clients that lost the same server do not
/// come back in step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// Growth of the ceiling per failure.
    pub factor: f64,
    /// The largest ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    /// 500 ms, doubling, at most 30 s (the agent's shipper).
    fn default() -> Self {
        Backoff { base: Duration::from_millis(500), factor: 2.0, max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The ceiling of the wait after the `attempt`-th failure (0-based), without jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.min(64) as i32);
        let secs = self.base.as_secs_f64() * exp;
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()).max(0.0))
    }

    /// The wait after the `attempt`-th failure for a uniform random draw `unit` in `[0, 1]`
    /// (clamped): `unit × ceiling(attempt)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_nan() { 0.0 } else { unit.clamp(0.0, 1.0) };
        self.ceiling(attempt).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_one_action_each() {
        let cases: &[(&[u16], RetryAction)] = &[
            (&[200, 202, 204, 299], RetryAction::Done),
            (&[408, 429, 500, 502, 503, 599, 600, 100], RetryAction::Retry),
            (&[401, 403], RetryAction::Unauthorized),
            (&[301, 302, 307, 308, 404, 405], RetryAction::Misconfigured),
            (&[400, 409, 413, 415, 422, 499], RetryAction::Quarantine),
        ];
        for (statuses, want) in cases {
            for &s in *statuses {
                assert_eq!(RetryAction::from_status(s), *want, "{s}");
            }
        }
        assert!(RetryAction::Retry.is_transient());
        assert!(!RetryAction::Unauthorized.is_transient());
    }

    #[test]
    fn backoff_grows_to_the_cap_and_jitter_stays_below_it() {
        let b =
            Backoff { base: Duration::from_millis(100), factor: 2.0, max: Duration::from_secs(1) };
        let caps: Vec<u128> = (0..6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(3, 7.0), b.ceiling(3));
        assert_eq!(b.delay(3, f64::NAN), Duration::ZERO);
    }
}
