//! Server limits: what a hostile or broken client can make the server spend, and how each breach
//! is answered and counted.
//!
//! | limit | setting (default) | answer | `procwatch_limit_breaches_total{reason}` |
//! | --- | --- | --- | --- |
//! | body on the wire | `max_body_bytes` (16 MiB) | 413 | `body_too_large` |
//! | body after gunzip | `max_body_bytes` (16 MiB) | 413 | `decompressed_too_large` |
//! | samples a batch | `max_samples` (100,000) | 400 naming `samples` | `too_many_samples` |
//! | host / process name | 253 / 255 bytes (spec) | 400 naming the field | `name_too_long` |
//! | whole request | `request_timeout` (30 s) | 408 | `request_timeout` |
//! | request head | `header_read_timeout` (30 s; also the keep-alive idle limit, longer than the agents' 10 s interval so their connections are reused) | connection closed (hyper sends no 408 for a head that never ends) | `header_timeout` |
//! | TLS handshake | `header_read_timeout` | connection closed | `tls_handshake` |
//! | requests in flight | `max_concurrent_requests` (1024) | 429 + `Retry-After: 1` | `concurrency` |
//! | ingestion in flight | `max_inflight_writes` (64) | 429 + `Retry-After: 1` | `inflight_writes` |
//! | ingestion rate per host | `ingest_rate` (200/s), `ingest_burst` (400) | 429 + `Retry-After: <s>` | `rate_limited` |
//! | distinct processes a batch | `series_limits.per_batch` (10,000) | 413 | `series_per_batch` |
//! | distinct series a host | `series_limits.per_host` (20,000) | 429 + `Retry-After: 60` | `series_per_host` |
//! | distinct series in total | `series_limits.total` (1,000,000) | 507 | `series_total` |
//! | usage reads below the embedded store's memory floor (a fleet or host over a window longer than `--window`) at once | `procwatch_store_sqlite::DISK_READS_AT_ONCE` (2) | waits its turn, then 408 at `request_timeout`; a read whose request ended stops at its next host | – |
//!
//! The rate limit is a token bucket per host: the batch's `host` (a per-host token's host,
//! before the body is read), so one flooding host does not starve the others, whatever token
//! or address they share. `ingest_rate = 0` turns it off. At most
//! [`MAX_RATE_KEYS`] keys are tracked; past that, full (idle) buckets are forgotten first and a
//! new key is refused while none can be. `/healthz`, `/readyz` and the alarm stream are not
//! counted against `max_concurrent_requests` (probes must answer under load; streams are
//! long-lived).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Every value of the `reason` label of `procwatch_limit_breaches_total`.
pub const BREACH_REASONS: [&str; 13] = [
    "body_too_large",
    "decompressed_too_large",
    "too_many_samples",
    "name_too_long",
    "request_timeout",
    "header_timeout",
    "tls_handshake",
    "concurrency",
    "inflight_writes",
    "rate_limited",
    "series_per_batch",
    "series_per_host",
    "series_total",
];

/// More values of the `reason` label of `procwatch_limit_breaches_total`: the HTTP-layer limits
/// of hardening round 2 (see RELIABILITY.md, "Hardening, round 2 (HTTP layer)").
pub const HTTP_BREACH_REASONS: [&str; 11] = [
    "bad_host",
    "cross_origin",
    "not_json",
    "connection_limit",
    "idle_timeout",
    "first_request_timeout",
    "streams",
    "inflight_bytes",
    "glob",
    "chart_render",
    "bad_number",
];

/// Keys the rate limiter tracks at most.
pub const MAX_RATE_KEYS: usize = 10_000;

/// Paths never refused by the global concurrency limit.
const UNLIMITED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/api/v1/alarms/stream"];

/// A token bucket per key: `rate` tokens a second, at most `burst` saved.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` per second (0 = unlimited), `burst` at least 1.
    pub fn new(rate: f64, burst: u32) -> Self {
        RateLimiter { rate, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether ingestion is rate-limited at all (a positive, finite rate).
    pub fn enabled(&self) -> bool {
        self.rate > 0.0 && self.rate.is_finite()
    }

    /// Takes one token of `key` at `now`; `Err(wait)` is how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_RATE_KEYS {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| refill(b, now, rate, burst) < burst);
            if map.len() >= MAX_RATE_KEYS {
                return Err(Duration::from_secs(1));
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        let tokens = refill(b, now, self.rate, self.burst);
        if tokens >= 1.0 {
            *b = Bucket { tokens: tokens - 1.0, at: now };
            Ok(())
        } else {
            *b = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

fn refill(b: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let dt = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + dt * rate).min(burst)
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the breach counted.
pub fn too_many(st: &AppState, reason: &'static str, wait: Duration) -> Response {
    st.metrics.limit_breach(reason);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::TooManyRequests.into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Middleware: at most `max_concurrent_requests` requests in flight (see the module doc).
pub async fn concurrency(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if UNLIMITED_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_permit) = st.request_permits.clone().try_acquire_owned() else {
        return too_many(&st, "concurrency", Duration::from_secs(1));
    };
    next.run(req).await
}

/// Counts a refused batch's limit breaches (too many samples, names too long).
pub fn count_rejection(st: &AppState, err: &ApiError) {
    match err {
        ApiError::BadRequest { problems, .. } => {
            if problems.iter().any(|p| {
                (p.field == "samples" || p.field == "data") && p.reason.contains("at most")
            }) {
                st.metrics.limit_breach("too_many_samples");
            }
            if problems.iter().any(|p| {
                (p.field == "host" || p.field.contains("process") || p.field == "ipaddress")
                    && p.reason.contains("bytes, at most")
            }) {
                st.metrics.limit_breach("name_too_long");
            }
        }
        ApiError::PayloadTooLarge(m) if m.contains("after decompression") => {
            st.metrics.limit_breach("decompressed_too_large")
        }
        ApiError::PayloadTooLarge(_) => st.metrics.limit_breach("body_too_large"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::clock::{Clock, ManualClock};

    #[test]
    fn bucket_allows_burst_then_refills() {
        let l = RateLimiter::new(2.0, 3);
        let clock = ManualClock::new(0);
        let t0 = clock.instant();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        let wait = l.check("a", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        // Another key has its own bucket.
        assert!(l.check("b", t0).is_ok());
        // Half a second later one token came back (2/s), and only one.
        clock.advance(Duration::from_millis(500));
        let t1 = clock.instant();
        assert!(l.check("a", t1).is_ok());
        assert!(l.check("a", t1).is_err());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let l = RateLimiter::new(0.0, 1);
        let t = ManualClock::new(0).instant();
        assert!((0..1000).all(|_| l.check("a", t).is_ok()));
    }

    #[test]
    fn key_table_is_bounded() {
        let l = RateLimiter::new(1.0, 1);
        let clock = ManualClock::new(0);
        let t = clock.instant();
        for i in 0..MAX_RATE_KEYS {
            assert!(l.check(&i.to_string(), t).is_ok());
        }
        // Every bucket is empty: a new key cannot evict one.
        assert!(l.check("new", t).is_err());
        // Later they are full again (idle) and are forgotten for the new key.
        clock.advance(Duration::from_secs(2));
        assert!(l.check("new", clock.instant()).is_ok());
        assert!(l.buckets.lock().unwrap().len() <= MAX_RATE_KEYS);
    }
}
