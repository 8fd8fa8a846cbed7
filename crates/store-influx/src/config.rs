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
    /// Whether `/write` bodies are gzip-compressed. Default: yes, but not to a loopback
    /// address, where compressing costs both processes CPU and saves no network.
    pub gzip: bool,
}

impl InfluxConfig {
    /// The defaults for `url` and `db`: no token, the [`DEFAULT_RP`] for 48 h, 10 s timeout,
    /// gzip unless `url` is a loopback address.
    pub fn new(url: impl Into<String>, db: impl Into<String>) -> Self {
        let url = url.into();
        Self {
            gzip: !is_loopback(&url),
            url,
            db: db.into(),
            token: None,
            rp: None,
            retention: Duration::from_secs(48 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Whether `url`'s host is a loopback address (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_except_on_loopback() {
        for url in [
            "http://127.0.0.1:8086",
            "http://localhost:8086/",
            "https://[::1]:1",
            "http://127.1.2.3",
        ] {
            assert!(!InfluxConfig::new(url, "d").gzip, "{url}");
        }
        for url in
            ["http://10.0.0.5:8086", "https://influx.example.com", "http://[2001:db8::1]:8086"]
        {
            assert!(InfluxConfig::new(url, "d").gzip, "{url}");
        }
    }
}
