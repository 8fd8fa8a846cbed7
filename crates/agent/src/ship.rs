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
}

impl RetryAction {
    pub fn reason(&self) -> &str {
        match self {
            RetryAction::Retry(r) | RetryAction::DontRetry(r) => r,
        }
    }
}

/// Classifies an HTTP answer. `None` means success (2xx). `body` is the server's answer, for
/// the reason (the SPEC's `{error, problems}` JSON on a 400).
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
            .build()?;
        Ok(Shipper {
            client,
            endpoint: format!("{}/api/v1/samples", cfg.server.trim_end_matches('/')),
            token: cfg.token.clone(),
            gzip: cfg.gzip,
        })
    }

    /// Sends one JSON batch body. `Ok` means the server answered 2xx (the batch is durable).
    pub async fn send(&self, json: &[u8]) -> Result<(), RetryAction> {
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
        let resp = req.send().await.map_err(|e| classify_error(&e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            // Drain the body so the connection goes back to the pool.
            let _ = resp.bytes().await;
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        match classify_status(status, &body) {
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
        for s in [400, 404, 405, 413, 422] {
            assert!(matches!(classify_status(s, "x"), Some(RetryAction::DontRetry(_))), "{s}");
        }
        let a = classify_status(400, r#"{"error":"bad cpu"}"#).unwrap();
        assert_eq!(a.reason(), r#"HTTP 400: {"error":"bad cpu"}"#);
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
