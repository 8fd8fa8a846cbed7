//! Shipping one request: the HTTP client, failure classification and backoff.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::{Rng, RngCore};

/// What to do after a failed attempt, and why (the reason is logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAction {
    /// A transient failure: connection refused or reset, timeout, 408, 429, 5xx, and 401/403
    /// (a credential problem is not a bad batch: the data stays in the spool until the token is
    /// fixed, and each attempt logs an error).
    Retry(String),
    /// The server refused this batch for what it is (400, 413, 422, any other 4xx): resending
    /// it unchanged can never succeed.
    DontRetry(String),
    /// The answer shows the agent is not talking to a procwatch server's ingestion route: a
    /// 3xx (redirects are never followed), 404/405 (wrong `--server` URL or path), or a 2xx
    /// that is not the server's acknowledgement (an HTML page from a proxy or captive portal,
    /// a wrong sample count). Nothing was stored: the batch stays in the spool and is retried
    /// with backoff, and each attempt logs an error.
    Misconfigured(String),
}

impl RetryAction {
    pub fn reason(&self) -> &str {
        match self {
            RetryAction::Retry(r) | RetryAction::DontRetry(r) | RetryAction::Misconfigured(r) => r,
        }
    }
}

/// What the server's acknowledgement of one request must say for the request to count as
/// delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The batch's `host`.
    pub host: &'a str,
    /// The batch's `seq`.
    pub seq: u64,
    /// Samples the batch holds.
    pub samples: u64,
}

/// The server's answer to an accepted batch (`procwatch_server::ingest::Accepted`).
#[derive(Debug, serde::Deserialize)]
struct Ack {
    samples: u64,
    host_totals: u64,
    #[allow(dead_code)]
    seq_gap: u64,
    /// Echoed since hardening round 2; absent from older servers' answers.
    received: Option<u64>,
    host: Option<String>,
    seq: Option<u64>,
}

/// An acknowledgement body larger than this is not the server's (whose is under 1 KiB).
pub const MAX_ACK_BYTES: usize = 64 * 1024;

/// Checks a 2xx answer: `None` when `body` is the server's acknowledgement of exactly
/// `expected` (JSON `{samples, host_totals, seq_gap, host, seq}` with the same sample count,
/// and the same host and seq when echoed), else why not.
pub fn check_ack(status: u16, body: &[u8], expected: &Expected<'_>) -> Option<RetryAction> {
    let head = || {
        let b: String = String::from_utf8_lossy(&body[..body.len().min(200)]).chars().collect();
        format!("HTTP {status} is not a procwatch acknowledgement ({})", b.trim())
    };
    let ack: Ack = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            return Some(RetryAction::Misconfigured(format!(
                "{}: {e}; is --server a procwatch server, not a proxy or portal?",
                head()
            )))
        }
    };
    let mut wrong = Vec::new();
    // `received` counts every sample of the batch; `samples` (older servers) those stored,
    // which is the same unless the store dropped some past its retention.
    let counted = ack.received.unwrap_or(ack.samples);
    if counted != expected.samples {
        wrong.push(format!("samples {counted} (sent {})", expected.samples));
    }
    if ack.host.as_deref().is_some_and(|h| h != expected.host) {
        wrong.push(format!("host {:?} (sent {:?})", ack.host.unwrap_or_default(), expected.host));
    }
    if ack.seq.is_some_and(|s| s != expected.seq) {
        wrong.push(format!("seq {} (sent {})", ack.seq.unwrap_or_default(), expected.seq));
    }
    let _ = ack.host_totals;
    if wrong.is_empty() {
        None
    } else {
        Some(RetryAction::Misconfigured(format!(
            "HTTP {status} acknowledged another batch: {}",
            wrong.join(", ")
        )))
    }
}

/// Classifies an HTTP answer's status. `None` means a 2xx (whose body [`check_ack`] must still
/// accept). `body` is the server's answer, for the reason (the SPEC's `{error, problems}` JSON
/// on a 400).
pub fn classify_status(status: u16, body: &str) -> Option<RetryAction> {
    let detail = || {
        let b: String = body.chars().take(500).collect();
        format!("HTTP {status}: {}", b.trim())
    };
    match status {
        200..=299 => None,
        408 | 429 | 500..=599 => Some(RetryAction::Retry(detail())),
        401 | 403 => Some(RetryAction::Retry(format!(
            "{} (check --token / the server's --write-token)",
            detail()
        ))),
        300..=399 => Some(RetryAction::Misconfigured(format!(
            "{} (a redirect, not followed: point --server at the procwatch server itself)",
            detail()
        ))),
        404 | 405 => Some(RetryAction::Misconfigured(format!(
            "{} (no ingestion route there: check --server's URL and path)",
            detail()
        ))),
        _ => Some(RetryAction::DontRetry(detail())),
    }
}

/// Classifies a transport error (no HTTP answer): always retried.
pub fn classify_error(err: &reqwest::Error) -> RetryAction {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_request() || err.is_body() {
        "request failed"
    } else {
        "transport error"
    };
    // `{:#}`-style chain: reqwest's Display hides the cause (e.g. "Connection refused").
    let mut msg = format!("{kind}: {err}");
    let mut src = std::error::Error::source(err);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    RetryAction::Retry(msg)
}

/// Exponential backoff with full jitter.
///
/// The n-th retry (n from 0) waits a uniformly random time in `[0, min(max, base × factor^n)]`
/// ("full jitter": agents that lost the same server do not come back in step). There is no
/// deadline on purpose: giving up would lose samples; the spool caps bound how long data waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// First ceiling. Default 500 ms.
    pub base: Duration,
    /// Growth per attempt. Default 2.
    pub factor: f64,
    /// Largest ceiling. Default 30 s.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(30),
        }
    }
}

/// Backoff state of one request's retries.
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    rng: Box<dyn RngCore + Send>,
}

impl Backoff {
    /// A backoff drawing its jitter from `rng` (inject a seeded one in tests).
    pub fn new(cfg: BackoffConfig, rng: Box<dyn RngCore + Send>) -> Self {
        Backoff { cfg, attempt: 0, rng }
    }

    /// The ceiling for the current attempt (no jitter).
    pub fn ceiling(&self) -> Duration {
        let exp = self.cfg.factor.powi(self.attempt.min(64) as i32);
        let secs = self.cfg.base.as_secs_f64() * exp;
        Duration::from_secs_f64(secs.min(self.cfg.max.as_secs_f64()))
    }

    /// The next delay; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let ceil = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let frac: f64 = self.rng.gen_range(0.0..=1.0);
        ceil.mul_f64(frac)
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Client settings.
#[derive(Clone)]
pub struct ShipperConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8000`.
    pub server: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Whole-request timeout. Default 30 s.
    pub timeout: Duration,
    /// TCP connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// Compress bodies with gzip. Default true.
    pub gzip: bool,
    /// Extra trusted CA certificates (PEM, one or more) for an `https://` server with a
    /// private CA; the system's web PKI roots stay trusted too. Default none.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ShipperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperConfig")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("gzip", &self.gzip)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

impl ShipperConfig {
    pub fn new(server: impl Into<String>) -> Self {
        ShipperConfig {
            server: server.into(),
            token: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            gzip: true,
            ca_pem: None,
        }
    }
}

/// Posts batch bodies to `POST {server}/api/v1/samples` over one keep-alive client.
#[derive(Debug, Clone)]
pub struct Shipper {
    client: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    gzip: bool,
}

impl Shipper {
    pub fn new(cfg: &ShipperConfig) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &cfg.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(concat!("procwatch-agent/", env!("CARGO_PKG_VERSION")))
            // A redirect is a misconfiguration (or a portal): following it would post the
            // batch somewhere that is not the server, and its 200 would look like an ack.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Shipper {
            client,
            endpoint: format!("{}/api/v1/samples", cfg.server.trim_end_matches('/')),
            token: cfg.token.clone(),
            gzip: cfg.gzip,
        })
    }

    /// Sends one JSON batch body. `Ok` means the server answered 2xx with its acknowledgement
    /// of exactly `expected` ([`check_ack`]): the batch is durable.
    pub async fn send(&self, json: &[u8], expected: &Expected<'_>) -> Result<(), RetryAction> {
        let mut req = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if self.gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(json.len() / 8), Compression::fast());
            let body = enc
                .write_all(json)
                .and_then(|()| enc.finish())
                .map_err(|e| RetryAction::Retry(format!("gzip: {e}")))?;
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip").body(body);
        } else {
            req = req.body(json.to_vec());
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| classify_error(&e))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        // Read at most MAX_ACK_BYTES (+1 to tell "too big"): the body is whoever answered's.
        let mut body = Vec::new();
        while body.len() <= MAX_ACK_BYTES {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    body.extend_from_slice(&c[..c.len().min(MAX_ACK_BYTES + 1 - body.len())])
                }
                Ok(None) => break,
                Err(e) if (200..300).contains(&status) => return Err(classify_error(&e)),
                Err(_) => break,
            }
        }
        if (200..300).contains(&status) {
            return match check_ack(status, &body, expected) {
                None => Ok(()),
                Some(action) => Err(action),
            };
        }
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if let Some(l) = location {
            text = format!("Location: {l}; {text}");
        }
        match classify_status(status, &text) {
            Some(action) => Err(action),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200, ""), None);
        assert_eq!(classify_status(204, ""), None);
        for s in [408, 429, 500, 502, 503, 504, 401, 403] {
            assert!(matches!(classify_status(s, "x"), Some(RetryAction::Retry(_))), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(matches!(classify_status(s, "x"), Some(RetryAction::DontRetry(_))), "{s}");
        }
        for s in [301, 302, 307, 308, 404, 405] {
            assert!(matches!(classify_status(s, "x"), Some(RetryAction::Misconfigured(_))), "{s}");
        }
        let a = classify_status(400, r#"{"error":"bad cpu"}"#).unwrap();
        assert_eq!(a.reason(), r#"HTTP 400: {"error":"bad cpu"}"#);
    }

    #[test]
    fn only_the_servers_own_acknowledgement_counts() {
        let e = Expected { host: "web-1", seq: 7, samples: 3 };
        let ok =
            br#"{"samples":3,"host_totals":1,"seq_gap":0,"received":3,"host":"web-1","seq":7}"#;
        assert_eq!(check_ack(200, ok, &e), None);
        // Stored fewer (retention dropped one) but received all: delivered.
        let aged =
            br#"{"samples":2,"host_totals":1,"seq_gap":0,"received":3,"host":"web-1","seq":7}"#;
        assert_eq!(check_ack(200, aged, &e), None);
        // An older server echoes neither host nor seq: the count still has to match.
        assert_eq!(check_ack(200, br#"{"samples":3,"host_totals":1,"seq_gap":0}"#, &e), None);
        for bad in [
            &b"<html><body>Welcome to the hotel wifi</body></html>"[..],
            b"",
            b"{}",
            br#"{"Response":"Ok"}"#,
            br#"{"samples":2,"host_totals":1,"seq_gap":0,"host":"web-1","seq":7}"#,
            br#"{"samples":3,"host_totals":1,"seq_gap":0,"received":4,"host":"web-1","seq":7}"#,
            br#"{"samples":3,"host_totals":1,"seq_gap":0,"host":"web-2","seq":7}"#,
            br#"{"samples":3,"host_totals":1,"seq_gap":0,"host":"web-1","seq":8}"#,
        ] {
            assert!(
                matches!(check_ack(200, bad, &e), Some(RetryAction::Misconfigured(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_with_full_jitter() {
        let cfg = BackoffConfig::default();
        let mut b = Backoff::new(cfg, Box::new(StdRng::seed_from_u64(7)));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceil = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceil, "{d:?} > {ceil:?}");
            ceilings.push(ceil.as_millis());
        }
        assert_eq!(ceilings, vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        // The same seed gives the same delays.
        let mut a1 = Backoff::new(cfg, Box::new(StdRng::seed_from_u64(1)));
        let mut a2 = Backoff::new(cfg, Box::new(StdRng::seed_from_u64(1)));
        for _ in 0..5 {
            assert_eq!(a1.next_delay(), a2.next_delay());
        }
    }
}
