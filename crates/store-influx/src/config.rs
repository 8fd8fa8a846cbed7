//! Where and how to reach InfluxDB: the store's options.

use std::time::Duration;

/// The default retention policy name.
pub const DEFAULT_RP: &str = "procwatch";
/// Points per `/write` request.
pub const WRITE_CHUNK: usize = 10_000;

/// Where and how to reach InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Database (1.x) or DBRP-mapped database name (2.x/3.x).
    pub db: String,
    /// API token (2.x/3.x), sent as `Authorization: Token <t>`.
    pub token: Option<String>,
    /// Retention policy; `None` = [`DEFAULT_RP`] when the store manages the schema, the
    /// database's default when it cannot (2.x).
    pub rp: Option<String>,
    /// Duration of the retention policy (at least 1 h, InfluxDB's minimum).
    pub retention: Duration,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

impl InfluxConfig {
    pub fn new(url: impl Into<String>, db: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            db: db.into(),
            token: None,
            rp: None,
            retention: Duration::from_secs(48 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}
