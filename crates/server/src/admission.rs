//! Who may write which host, how fast, and how many series: the ingestion checks that need the
//! batch's `host` (hardening round 2, the data path).
//!
//! - **Per-host tokens** ([`HostTokens`], `--host-tokens FILE`): a token file maps each host to
//!   its own token, so a stolen agent token can only write that agent's host. A batch whose
//!   `host` is not its token's host is refused `403` (JSON, naming both). The global write token
//!   (`--write-token`) keeps working for every host unless `host_tokens_only` is set.
//! - **Rate per host**: the ingestion token bucket is keyed by the batch's host (the token's host
//!   for a per-host token, checked before the body is read; the decoded batch's `host`
//!   otherwise), so one flooding host gets `429` while the others keep getting `2xx`. The bucket
//!   table is capped (`limits::MAX_RATE_KEYS`), idle buckets evicted first.
//! - **Cardinality** ([`SeriesTracker`]): distinct series (process names) per batch, per host
//!   and in total are capped, checked before the store is called, under the tracker's own lock
//!   (never the store's writer lock). A series is counted from its first accepted sample until
//!   retention has dropped everything it held (the tracker forgets series whose newest sample is
//!   older than the retention cutoff at each retention pass); after a server restart it counts
//!   the series that arrive from then on.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use procwatch_model::{Batch, TsMs};

/// Hosts a token file may name at most.
pub const MAX_HOST_TOKENS: usize = 100_000;

/// The host → token map of `--host-tokens`.
///
/// File format: one `HOST TOKEN` pair a line, separated by whitespace; blank lines and lines
/// starting with `#` are ignored. A host may appear once; a token may not be shared by two
/// hosts; tokens are at least 16 characters. Example:
///
/// ```text
/// # host        token
/// web-1         3f9c1e0b7a...
/// db-1          b41d9e2c55...
/// ```
#[derive(Clone, Default)]
pub struct HostTokens {
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for HostTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTokens({} hosts, tokens redacted)", self.entries.len())
    }
}

/// Why a token file was refused (line numbers from 1).
#[derive(Debug, thiserror::Error)]
pub enum HostTokensError {
    /// The file could not be read.
    #[error("cannot read the host token file {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A line is malformed or repeats a host or a token.
    #[error("host token file, line {line}: {reason}")]
    Line {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file lists more than `MAX_HOST_TOKENS` hosts.
    #[error("host token file: more than {MAX_HOST_TOKENS} hosts")]
    TooMany,
}

impl HostTokens {
    /// Reads and parses the token file at `path` (see [`HostTokens::parse`]).
    pub fn load(path: &Path) -> Result<HostTokens, HostTokensError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| HostTokensError::Read { path: path.display().to_string(), source })?;
        HostTokens::parse(&text)
    }

    /// Parses `HOST TOKEN` lines (`#` comments and blank lines skipped): a token at least 16
    /// characters, no host or token listed twice, a host name of at most 253 bytes.
    pub fn parse(text: &str) -> Result<HostTokens, HostTokensError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut hosts = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| HostTokensError::Line { line: i + 1, reason: reason.into() };
            let mut parts = line.split_whitespace();
            let (Some(host), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `HOST TOKEN`"));
            };
            if host.len() > 253 {
                return Err(bad("host name too long"));
            }
            if token.len() < 16 {
                return Err(bad("token shorter than 16 characters"));
            }
            if !hosts.insert(host.to_owned()) {
                return Err(bad("host listed twice"));
            }
            if !tokens.insert(token.to_owned()) {
                return Err(bad("token shared with another host"));
            }
            if entries.len() >= MAX_HOST_TOKENS {
                return Err(HostTokensError::TooMany);
            }
            entries.push((host.to_owned(), token.to_owned()));
        }
        Ok(HostTokens { entries })
    }

    /// How many hosts have a token.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file listed no host.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The host whose token `given` is. Every entry is compared, each in constant time.
    pub fn host_of(&self, given: &[u8]) -> Option<&str> {
        let mut found = None;
        for (host, token) in &self.entries {
            if crate::constant_time_eq(given, token.as_bytes()) {
                found = Some(host.as_str());
            }
        }
        found
    }
}

/// What the write middleware learned from the token, for the handler (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAuth {
    /// The global write token, or no token configured: any host.
    AnyHost,
    /// A per-host token: this host only.
    Host(String),
}

/// Refuses a batch for another host than its token's.
pub fn check_host(auth: &WriteAuth, host: &str) -> Result<(), crate::ApiError> {
    match auth {
        WriteAuth::Host(h) if h != host => Err(crate::ApiError::Forbidden(format!(
            "this token belongs to host {h:?} and may not write host {host:?}: give each agent its own host's token"
        ))),
        _ => Ok(()),
    }
}

/// The cardinality caps (0 = no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Distinct process names in one batch. Default 10,000. Breach: 413.
    pub per_batch: usize,
    /// Distinct series one host may have. Default 20,000. Breach: 429 (retry once retention
    /// frees series).
    pub per_host: usize,
    /// Distinct series in the whole store. Default 1,000,000. Breach: 507.
    pub total: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits { per_batch: 10_000, per_host: 20_000, total: 1_000_000 }
    }
}

/// A refused batch: which cap, and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesBreach {
    /// The `reason` label of `procwatch_limit_breaches_total`.
    pub reason: &'static str,
    /// The message of the refusal (the JSON `error` of the 413, 429 or 507 answer).
    pub message: String,
}

/// The series each host has (hash of the process name → newest sample `ts`), for the caps.
#[derive(Debug, Default)]
pub struct SeriesTracker {
    inner: std::sync::Mutex<Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    hosts: HashMap<String, HashMap<u64, TsMs>>,
    total: usize,
}

fn series_key(process: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    process.hash(&mut h);
    h.finish()
}

impl SeriesTracker {
    /// Checks `batch` against `limits`; when it passes, its series are counted (before the
    /// store write: a failed write leaves them counted until retention forgets them, which
    /// errs on the side of refusing).
    pub fn admit(&self, batch: &Batch, limits: &SeriesLimits) -> Result<(), SeriesBreach> {
        // Distinct names of this batch with their newest ts, outside the lock.
        let mut names: HashMap<u64, TsMs> = HashMap::new();
        for s in &batch.samples {
            let e = names.entry(series_key(&s.process)).or_insert(s.ts);
            *e = (*e).max(s.ts);
            if limits.per_batch > 0 && names.len() > limits.per_batch {
                return Err(SeriesBreach {
                    reason: "series_per_batch",
                    message: format!(
                        "more than {} distinct processes in one batch (max_series_per_batch)",
                        limits.per_batch
                    ),
                });
            }
        }
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Tracked { hosts, total } = &mut *t;
        let known = hosts.get(&batch.host);
        let new = names.keys().filter(|k| known.is_none_or(|m| !m.contains_key(k))).count();
        if new > 0 {
            let have = known.map_or(0, HashMap::len);
            if limits.per_host > 0 && have + new > limits.per_host {
                return Err(SeriesBreach {
                    reason: "series_per_host",
                    message: format!(
                        "host {:?} would have {} series, more than {} (max_series_per_host); new process names are refused until retention drops old ones",
                        batch.host,
                        have + new,
                        limits.per_host
                    ),
                });
            }
            if limits.total > 0 && *total + new > limits.total {
                return Err(SeriesBreach {
                    reason: "series_total",
                    message: format!(
                        "the server holds {} series, the cap is {} (max_series_total); new series are refused until retention drops old ones",
                        *total, limits.total
                    ),
                });
            }
        }
        let m = hosts.entry(batch.host.clone()).or_default();
        for (k, ts) in names {
            let e = m.entry(k).or_insert_with(|| {
                *total += 1;
                ts
            });
            *e = (*e).max(ts);
        }
        Ok(())
    }

    /// Forgets series whose newest sample is older than `cutoff` (what retention dropped).
    pub fn forget_before(&self, cutoff: TsMs) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Tracked { hosts, total } = &mut *t;
        hosts.retain(|_, m| {
            let before = m.len();
            m.retain(|_, ts| *ts >= cutoff);
            *total -= before - m.len();
            !m.is_empty()
        });
    }

    /// Series counted, in total.
    pub fn total(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::Sample;

    fn batch(host: &str, procs: impl IntoIterator<Item = String>, ts: TsMs) -> Batch {
        Batch {
            host: host.into(),
            agent: "t".into(),
            seq: 0,
            interval_ms: 10_000,
            host_totals: vec![],
            samples: procs
                .into_iter()
                .map(|p| Sample {
                    ts,
                    process: p,
                    cpu: 0.0,
                    cores: 0.0,
                    mem: 0.0,
                    rss: 0,
                    count: 1,
                    extras: None,
                })
                .collect(),
            dropped_samples: 0,
            report: None,
        }
    }

    #[test]
    fn token_file_parses_and_refuses_mistakes() {
        let t =
            HostTokens::parse("# c\n\nweb-1 aaaaaaaaaaaaaaaa\n db-1\tbbbbbbbbbbbbbbbb \n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.host_of(b"bbbbbbbbbbbbbbbb"), Some("db-1"));
        assert_eq!(t.host_of(b"bbbbbbbbbbbbbbbc"), None);
        for bad in [
            "web-1",
            "web-1 short",
            "web-1 aaaaaaaaaaaaaaaa extra",
            "a aaaaaaaaaaaaaaaa\na bbbbbbbbbbbbbbbb",
            "a aaaaaaaaaaaaaaaa\nb aaaaaaaaaaaaaaaa",
        ] {
            assert!(HostTokens::parse(bad).is_err(), "{bad}");
        }
        assert!(format!("{t:?}").contains("redacted") && !format!("{t:?}").contains("aaaa"));
    }

    #[test]
    fn caps_per_batch_per_host_and_total() {
        let l = SeriesLimits { per_batch: 3, per_host: 4, total: 6 };
        let tr = SeriesTracker::default();
        let names = |r: std::ops::Range<u32>| r.map(|i| format!("p{i}")).collect::<Vec<_>>();
        assert_eq!(
            tr.admit(&batch("a", names(0..4), 1), &l).unwrap_err().reason,
            "series_per_batch"
        );
        assert_eq!(tr.total(), 0);
        tr.admit(&batch("a", names(0..3), 1), &l).unwrap();
        // Known series are free; one more is within the host's 4; two more are not.
        tr.admit(&batch("a", names(0..3), 2), &l).unwrap();
        tr.admit(&batch("a", names(3..4), 2), &l).unwrap();
        assert_eq!(
            tr.admit(&batch("a", names(4..5), 2), &l).unwrap_err().reason,
            "series_per_host"
        );
        tr.admit(&batch("b", names(0..2), 5), &l).unwrap();
        assert_eq!(tr.admit(&batch("c", names(0..1), 5), &l).unwrap_err().reason, "series_total");
        assert_eq!(tr.total(), 6);
        // Retention forgets host a's series (newest ts 2): room again.
        tr.forget_before(3);
        assert_eq!(tr.total(), 2);
        tr.admit(&batch("c", names(0..1), 5), &l).unwrap();
    }
}
