//! The InfluxDB v1 HTTP API: `/ping`, `/write` (gzip line protocol), `/query` (InfluxQL).
//! Errors are mapped for the server: connection refused, timeouts, 5xx and 429 are
//! `StoreError::Unavailable` (503, the agent keeps its batch and retries).

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use procwatch_store::{StoreError, StoreResult};
use reqwest::StatusCode;

use crate::influxql::{Response, StatementResult};

#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    gzip: bool,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("influxdb {what}: {e}"))
}

/// A reqwest error with its causes ("error sending request ...: connection refused"), and
/// what it means for the operator.
fn unreachable(what: &str, e: &reqwest::Error) -> StoreError {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    let kind = if e.is_timeout() { "did not answer in time" } else { "cannot be reached" };
    StoreError::Unavailable(format!("influxdb {kind} ({what}): {msg}"))
}

fn other(msg: String) -> StoreError {
    StoreError::Other(msg.into())
}

/// Whether an InfluxDB error message means the database or retention policy is gone (influxd
/// was reset): the store re-creates them on its next call.
pub(crate) fn is_missing_schema(msg: &str) -> bool {
    msg.contains("database not found") || msg.contains("retention policy not found")
}

impl Client {
    pub(crate) fn new(
        url: &str,
        token: Option<String>,
        timeout: Duration,
        gzip: bool,
    ) -> StoreResult<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(StoreError::InvalidInput(format!(
                "influxdb url {url:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| other(format!("http client: {e}")))?;
        Ok(Self { http, base, token, gzip })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header(reqwest::header::AUTHORIZATION, format!("Token {t}")),
            None => rb,
        }
    }

    /// `GET /ping` answers 204 when influxd is up.
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        let resp = self
            .auth(self.http.get(format!("{}/ping", self.base)))
            .send()
            .await
            .map_err(|e| unreachable("ping", &e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(unavailable("ping", resp.status()))
        }
    }

    /// Writes line protocol (ms precision), gzip-compressed if so configured. Points beyond the retention
    /// policy are dropped by InfluxDB with a "partial write" 400; they would be deleted by
    /// retention anyway, so that is logged and treated as success.
    pub(crate) async fn write(&self, db: &str, rp: Option<&str>, lines: &str) -> StoreResult<()> {
        let mut params = vec![("db", db), ("precision", "ms")];
        if let Some(rp) = rp {
            params.push(("rp", rp));
        }
        let mut rb = self
            .auth(self.http.post(format!("{}/write", self.base)))
            .query(&params)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        rb = if self.gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(lines.len() / 4), Compression::fast());
            enc.write_all(lines.as_bytes()).map_err(|e| other(format!("gzip: {e}")))?;
            let body = enc.finish().map_err(|e| other(format!("gzip: {e}")))?;
            rb.header(reqwest::header::CONTENT_ENCODING, "gzip").body(body)
        } else {
            rb.body(lines.to_string())
        };
        let resp = rb.send().await.map_err(|e| unreachable("write", &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Response>(&text)
            .ok()
            .and_then(|r| r.error)
            .unwrap_or_else(|| text.trim().to_string());
        if status == StatusCode::BAD_REQUEST
            && msg.contains("partial write")
            && msg.contains("beyond retention policy")
            && !msg.contains("unable to parse")
        {
            tracing::warn!("influxdb dropped points older than its retention policy: {msg}");
            return Ok(());
        }
        Err(map_status("write", status, msg))
    }

    /// Runs InfluxQL statements (`;`-separated) by POST; answers one result per statement.
    /// A statement's own error is returned as an error of the whole call.
    pub(crate) async fn query(
        &self,
        db: Option<&str>,
        q: &str,
    ) -> StoreResult<Vec<StatementResult>> {
        let mut params = vec![("epoch", "ms")];
        if let Some(db) = db {
            params.push(("db", db));
        }
        let resp = self
            .auth(self.http.post(format!("{}/query", self.base)))
            .query(&params)
            .form(&[("q", q)])
            .send()
            .await
            .map_err(|e| unreachable("query", &e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| unreachable("query", &e))?;
        let parsed: Option<Response> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let msg = parsed.and_then(|r| r.error).unwrap_or_else(|| text.trim().to_string());
            return Err(map_status("query", status, msg));
        }
        let r =
            parsed.ok_or_else(|| other(format!("influxdb query: unreadable answer {text:?}")))?;
        if let Some(e) = r.error {
            return Err(statement_error(e));
        }
        if let Some(e) = r.results.iter().find_map(|s| s.error.clone()) {
            return Err(statement_error(e));
        }
        Ok(r.results)
    }
}

fn statement_error(msg: String) -> StoreError {
    if is_missing_schema(&msg) {
        StoreError::Unavailable(format!("influxdb: {msg}"))
    } else {
        other(format!("influxdb query: {msg}"))
    }
}

fn map_status(what: &str, status: StatusCode, msg: String) -> StoreError {
    // 501: the server does not implement the statement (2.x/3.x refusing CREATE, DELETE...):
    // not something a retry fixes.
    if (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || is_missing_schema(&msg)
    {
        StoreError::Unavailable(format!("influxdb {what}: {status}: {msg}"))
    } else if status == StatusCode::BAD_REQUEST {
        StoreError::InvalidInput(format!("influxdb {what}: {msg}"))
    } else {
        other(format!("influxdb {what}: {status}: {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_store_errors() {
        let kind = |e: StoreError| match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::InvalidInput(_) => "invalid input",
            StoreError::Other(_) => "other",
            _ => "another error",
        };
        for (what, status, body, want) in [
            ("w", StatusCode::SERVICE_UNAVAILABLE, "x", "unavailable"),
            ("w", StatusCode::NOT_FOUND, "database not found: \"x\"", "unavailable"),
            ("w", StatusCode::BAD_REQUEST, "unable to parse", "invalid input"),
            ("w", StatusCode::UNAUTHORIZED, "bad token", "other"),
            ("q", StatusCode::NOT_IMPLEMENTED, "not implemented", "other"),
        ] {
            assert_eq!(kind(map_status(what, status, body.into())), want, "{status} {body}");
        }
    }

    #[test]
    fn urls_must_be_http() {
        assert!(Client::new("localhost:8086", None, Duration::from_secs(1), true).is_err());
        assert!(Client::new("http://127.0.0.1:8086/", None, Duration::from_secs(1), true).is_ok());
    }
}
