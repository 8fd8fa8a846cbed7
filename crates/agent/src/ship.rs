//! Shipping one request: the HTTP client, failure classification and backoff.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use procwatch_model::retry::RetryAction;
use rand::{Rng, RngCore};

/// A failed attempt: what to do ([`RetryAction`], from the status alone) and why (logged).
///
/// The agent acts on the action: [`RetryAction::Retry`], [`RetryAction::Unauthorized`] (a
/// credential problem is not a bad batch: the data stays in the spool until the token is
/// fixed, each attempt logging an error) and [`RetryAction::Misconfigured`] (a 3xx, never
/// followed, a 404/405, or a 2xx that is not the server's acknowledgement: nothing was stored)
/// are retried with backoff; [`RetryAction::Quarantine`] (400, 413, 422, any other 4xx) means
/// the batch can never be accepted as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What to do; never [`RetryAction::Done`].
    pub action: RetryAction,
    /// Why, for the log: the status and the answer's start, or the transport error.
    pub reason: String,
}

impl Failure {
    fn new(action: RetryAction, reason: String) -> Self {
        Failure { action, reason }
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
    /// A directive for the agent (control channel); absent from older servers' answers. Kept
    /// raw: a directive the agent cannot read is refused, the batch still acknowledged.
    #[serde(default)]
    directive: Option<serde_json::Value>,
}

/// An acknowledgement body larger than this is not the server's (whose is under 1 KiB).
pub const MAX_ACK_BYTES: usize = 64 * 1024;

/// Checks a 2xx answer: `None` when `body` is the server's acknowledgement of exactly
/// `expected` (JSON `{samples, host_totals, seq_gap, host, seq}` with the same sample count,
/// and the same host and seq when echoed), else why not.
pub fn check_ack(status: u16, body: &[u8], expected: &Expected<'_>) -> Option<Failure> {
    read_ack(status, body, expected).err()
}

/// [`check_ack`], giving the acknowledgement's `directive` (raw JSON) when it holds one.
pub fn read_ack(
    status: u16,
    body: &[u8],
    expected: &Expected<'_>,
) -> Result<Option<serde_json::Value>, Failure> {
    let head = || {
        let b: String = String::from_utf8_lossy(&body[..body.len().min(200)]).chars().collect();
        format!("HTTP {status} is not a procwatch acknowledgement ({})", b.trim())
    };
    let ack: Ack = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            return Err(Failure::new(
                RetryAction::Misconfigured,
                format!("{}: {e}; is --server a procwatch server, not a proxy or portal?", head()),
            ))
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
        Ok(ack.directive)
    } else {
        Err(Failure::new(
            RetryAction::Misconfigured,
            format!("HTTP {status} acknowledged another batch: {}", wrong.join(", ")),
        ))
    }
}

/// Classifies an HTTP answer by its status ([`RetryAction::from_status`]). `None` means a 2xx
/// (whose body [`check_ack`] must still accept). `body` is the server's answer, for the reason
/// (the contract's `{error, problems}` JSON on a 400).
pub fn classify_status(status: u16, body: &str) -> Option<Failure> {
    let b: String = body.chars().take(500).collect();
    let detail = format!("HTTP {status}: {}", b.trim());
    let action = RetryAction::from_status(status);
    let hint = match action {
        RetryAction::Done => return None,
        RetryAction::Retry | RetryAction::Quarantine => "",
        RetryAction::Unauthorized => " (check --token / the server's --write-token)",
        RetryAction::Misconfigured if (300..400).contains(&status) => {
            " (a redirect, not followed: point --server at the procwatch server itself)"
        }
        RetryAction::Misconfigured => " (no ingestion route there: check --server's URL and path)",
    };
    Some(Failure::new(action, format!("{detail}{hint}")))
}

/// Classifies a transport error (no HTTP answer): always retried.
pub fn classify_error(err: &reqwest::Error) -> Failure {
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
    Failure::new(RetryAction::Retry, msg)
}

/// The shipper's backoff policy (the shared [`procwatch_model::retry::Backoff`]; by default
/// 500 ms, doubling, at most 30 s, full jitter). There is no deadline on purpose: giving up
/// would lose samples; the spool caps bound how long data waits.
pub type BackoffConfig = procwatch_model::retry::Backoff;

/// The retries of one request: the attempt count over a [`BackoffConfig`], and the source of
/// its jitter.
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
        self.cfg.ceiling(self.attempt)
    }

    /// The next delay; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let frac: f64 = self.rng.gen_range(0.0..=1.0);
        let delay = self.cfg.delay(self.attempt, frac);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last success.
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
    /// Defaults for `server`: 30 s per request, 5 s to connect, gzip, no token.
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
    /// Builds the HTTP client (redirects are never followed).
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
    /// of exactly `expected` ([`check_ack`]): the batch is durable. `Ok(Some(_))` carries the
    /// directive the acknowledgement holds (raw JSON; see [`crate::directive`]).
    pub async fn send(
        &self,
        json: &[u8],
        expected: &Expected<'_>,
    ) -> Result<Option<serde_json::Value>, Failure> {
        let mut req = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if self.gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(json.len() / 8), Compression::fast());
            let body = enc
                .write_all(json)
                .and_then(|()| enc.finish())
                .map_err(|e| Failure::new(RetryAction::Retry, format!("gzip: {e}")))?;
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
            return read_ack(status, &body, expected);
        }
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if let Some(l) = location {
            text = format!("Location: {l}; {text}");
        }
        match classify_status(status, &text) {
            Some(failure) => Err(failure),
            None => Ok(None),
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
        let action = |s| classify_status(s, "x").map(|f| f.action);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(action(s), Some(RetryAction::Retry), "{s}");
        }
        for s in [401, 403] {
            assert_eq!(action(s), Some(RetryAction::Unauthorized), "{s}");
        }
        for s in [400, 413, 422] {
            assert_eq!(action(s), Some(RetryAction::Quarantine), "{s}");
        }
        for s in [301, 302, 307, 308, 404, 405] {
            assert_eq!(action(s), Some(RetryAction::Misconfigured), "{s}");
        }
        let a = classify_status(400, r#"{"error":"bad cpu"}"#).unwrap();
        assert_eq!(a.reason, r#"HTTP 400: {"error":"bad cpu"}"#);
        assert!(classify_status(401, "").unwrap().reason.contains("--token"));
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
                check_ack(200, bad, &e).map(|f| f.action) == Some(RetryAction::Misconfigured),
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
