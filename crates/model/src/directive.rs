//! The control channel's wire types: directives the server hands back to an agent in the
//! acknowledgement of its own batch POST, and the report an agent sends with each batch.
//!
//! No port is opened on a host: an agent only ever hears of a directive in the answer to a
//! request it made itself.
//!
//! - A [`SettingsChange`] is a partial change of the agent's settings (`paused`, `interval`,
//!   `include`, `exclude`, `metrics`, `sweep_now`); keys left out keep their value.
//! - The server stores each change with the host glob it targets as a [`DirectiveRecord`] and
//!   a version from one monotonic counter (so versions are monotonic per host too).
//! - **Merge rule** ([`effective`]): an agent's effective directive is the merge of every
//!   stored record whose host glob matches its host, in version order, a later record's key
//!   overriding an earlier one's; its version is the highest of them. `sweep_now` is not
//!   merged: it is set when a matching record newer than the version the agent runs asked
//!   for it (a one-shot). The server sends it when that version is newer than the one the
//!   agent reports, so an agent that lost its settings (a new disk) converges in one batch.
//! - **Who judges what.** The server checks shape and caps ([`SettingsChange::check_caps`]:
//!   unknown keys, sizes, counts, duration syntax); the agent judges whether it can apply a
//!   change ([`SettingsChange::check_applicable`]: the interval's range, glob caps, metric
//!   names it knows), since agents of several versions run at once. A change it cannot apply
//!   is refused whole and reported as a [`DirectiveError`]; the agent keeps its last good
//!   settings.

use serde::{Deserialize, Serialize};

use crate::glob::{Glob, MAX_GLOB_LEN};
pub use crate::text::truncate;
use crate::TsMs;

/// The extra per-process metrics an agent can be asked to collect (`metrics` of a
/// directive), by name. The collector's extras use the same names.
pub const EXTRA_METRIC_NAMES: &[&str] = &["io", "fds", "threads", "ctxsw", "owner", "unit"];

/// The shortest sweep interval a directive may set, ms (1 s).
pub const MIN_INTERVAL_MS: u64 = 1_000;
/// The longest sweep interval a directive may set, ms (1 h).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Globs in one `include` or `exclude` list at most.
pub const MAX_FILTER_GLOBS: usize = 32;
/// Names in one `metrics` list at most (and bytes in one name).
pub const MAX_METRIC_NAMES: usize = 16;
/// Bytes of a metric name, or of an `interval` text, at most.
pub const MAX_WORD_LEN: usize = 32;
/// Bytes of a host glob at most (a host name is at most 253).
pub const MAX_HOST_GLOB_LEN: usize = 253;
/// Bytes of free text (an error message, who made a change) kept at most.
pub const MAX_TEXT_LEN: usize = 512;
/// Bytes of a directive request body at most.
pub const MAX_DIRECTIVE_BODY: usize = 16 * 1024;

/// A partial change of an agent's settings; a key left out keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// Stop (`true`) or resume (`false`) sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The sweep interval, a duration (`5s`, `1m`); 1 s to 1 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Process-name globs to keep (empty list: every process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Process-name globs to leave out (applied after `include`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    /// Extra metrics to collect, names from [`EXTRA_METRIC_NAMES`] (empty list: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<String>>,
    /// Take one sweep now (a one-shot, even while paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_now: Option<bool>,
}

impl SettingsChange {
    /// Whether the change sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// The server's checks of a change from a client: sizes, counts and syntax. Each problem
    /// is a `(field, reason)` pair.
    pub fn check_caps(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.is_empty() {
            problems.push(("set".into(), "sets nothing: give at least one of paused, interval, include, exclude, metrics, sweep_now".into()));
        }
        if let Some(i) = &self.interval {
            if i.len() > MAX_WORD_LEN {
                problems.push((
                    "set.interval".into(),
                    format!("{} bytes, at most {MAX_WORD_LEN}", i.len()),
                ));
            } else if let Err(e) = crate::duration::parse(i) {
                problems.push(("set.interval".into(), e.to_string()));
            }
        }
        for (name, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            let Some(list) = list else { continue };
            if list.len() > MAX_FILTER_GLOBS {
                problems.push((
                    format!("set.{name}"),
                    format!("{} globs, at most {MAX_FILTER_GLOBS}", list.len()),
                ));
                continue;
            }
            for (i, g) in list.iter().enumerate() {
                if let Err(e) = Glob::parse(g) {
                    problems.push((format!("set.{name}[{i}]"), e.to_string()));
                }
            }
        }
        if let Some(m) = &self.metrics {
            if m.len() > MAX_METRIC_NAMES {
                problems.push((
                    "set.metrics".into(),
                    format!("{} names, at most {MAX_METRIC_NAMES}", m.len()),
                ));
            } else if let Some((i, n)) = m.iter().enumerate().find(|(_, n)| n.len() > MAX_WORD_LEN)
            {
                problems.push((
                    format!("set.metrics[{i}]"),
                    format!("{} bytes, at most {MAX_WORD_LEN}", n.len()),
                ));
            }
        }
        problems
    }

    /// The agent's checks: can it apply this change? `Err` says why not (a person reads it in
    /// `procwatch agents`).
    pub fn check_applicable(&self) -> Result<(), String> {
        if let Some((field, reason)) = self.check_caps().into_iter().find(|(f, _)| f != "set") {
            return Err(format!("{field}: {reason}"));
        }
        if let Some(ms) = self.interval_ms()? {
            if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
                return Err(format!(
                    "interval {:?} is out of range: between 1s and 1h",
                    self.interval.as_deref().unwrap_or_default()
                ));
            }
        }
        if let Some(m) = &self.metrics {
            if let Some(unknown) = m.iter().find(|n| !EXTRA_METRIC_NAMES.contains(&n.as_str())) {
                return Err(format!(
                    "unknown metric {unknown:?}: expected some of {}",
                    EXTRA_METRIC_NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The interval in ms, if the change sets one (`Err` if it is not a duration).
    pub fn interval_ms(&self) -> Result<Option<u64>, String> {
        match &self.interval {
            None => Ok(None),
            Some(t) => crate::duration::parse(t)
                .map(|d| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
                .map_err(|e| e.to_string()),
        }
    }

    /// Overrides this change's keys with those `later` sets (`sweep_now` is not merged).
    pub fn merge(&mut self, later: &SettingsChange) {
        fn over<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if b.is_some() {
                a.clone_from(b);
            }
        }
        over(&mut self.paused, &later.paused);
        over(&mut self.interval, &later.interval);
        over(&mut self.include, &later.include);
        over(&mut self.exclude, &later.exclude);
        over(&mut self.metrics, &later.metrics);
    }
}

/// What the server sends an agent: the merged change at a version (see [`effective`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// The highest version among the records merged.
    pub version: u64,
    /// The merged change.
    pub set: SettingsChange,
}

/// One stored directive change: who asked what of which hosts, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectiveRecord {
    /// Server-assigned, from 1, one more per change.
    pub version: u64,
    /// When it was made, Unix ms (the server's clock).
    pub at: TsMs,
    /// Who made it (`admin`: the admin token).
    pub who: String,
    /// The host glob it targets.
    pub hosts: String,
    /// The change.
    pub set: SettingsChange,
}

/// A directive an agent refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectiveError {
    /// The version refused.
    pub version: u64,
    /// Why (at most [`MAX_TEXT_LEN`] bytes are kept).
    pub message: String,
}

/// The agent's own state, sent with each batch (`Batch::report`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The directive version the agent runs (0: none yet).
    #[serde(default)]
    pub directive_version: u64,
    /// The sweep interval it runs, ms.
    #[serde(default)]
    pub interval_ms: u64,
    /// Whether sampling is paused (its batches are then heartbeats without samples).
    #[serde(default)]
    pub paused: bool,
    /// Sweeps spooled and not yet acknowledged.
    #[serde(default)]
    pub spool_backlog: u64,
    /// Samples dropped since the agent started (spool caps, refused batches).
    #[serde(default)]
    pub dropped_samples: u64,
    /// The newest directive it refused, if it runs an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directive_error: Option<DirectiveError>,
}

/// The effective directive of `host` given `records` (any order) and the version the agent
/// reports it runs; `None` when no matching record is newer than `reported`. See the module
/// documentation for the merge rule.
pub fn effective(records: &[DirectiveRecord], host: &str, reported: u64) -> Option<Directive> {
    let mut matching: Vec<&DirectiveRecord> =
        records.iter().filter(|r| Glob::new(r.hosts.as_str()).matches(host)).collect();
    matching.sort_by_key(|r| r.version);
    let newest = matching.last()?.version;
    if newest <= reported {
        return None;
    }
    let mut set = SettingsChange::default();
    for r in &matching {
        set.merge(&r.set);
    }
    if matching.iter().any(|r| r.version > reported && r.set.sweep_now == Some(true)) {
        set.sweep_now = Some(true);
    }
    Some(Directive { version: newest, set })
}

/// Checks a host glob from a client (1–253 bytes, the glob caps).
pub fn check_host_glob(hosts: &str) -> Result<(), String> {
    if hosts.is_empty() {
        return Err("empty: give a host name or glob, e.g. web-* (or * for every host)".into());
    }
    if hosts.len() > MAX_HOST_GLOB_LEN {
        return Err(format!("{} bytes, at most {MAX_HOST_GLOB_LEN}", hosts.len()));
    }
    if hosts.len() > MAX_GLOB_LEN && Glob::is_pattern(hosts) {
        return Err(format!("a glob of {} bytes, at most {MAX_GLOB_LEN}", hosts.len()));
    }
    if let Some(c) = hosts.chars().find(|c| !(c.is_ascii_alphanumeric() || "._:-*?".contains(*c))) {
        return Err(format!("character {c:?}: host globs are made of [A-Za-z0-9._:-*?]"));
    }
    if Glob::is_pattern(hosts) {
        Glob::parse(hosts).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(version: u64, hosts: &str, set: SettingsChange) -> DirectiveRecord {
        DirectiveRecord { version, at: 0, who: "admin".into(), hosts: hosts.into(), set }
    }

    #[test]
    fn hostile_changes_are_refused_by_the_caps() {
        let too_many = SettingsChange { include: Some(vec!["a".into(); 33]), ..Default::default() };
        assert_eq!(too_many.check_caps()[0].0, "set.include");
        let long = SettingsChange { exclude: Some(vec!["*".repeat(200)]), ..Default::default() };
        assert_eq!(long.check_caps()[0].0, "set.exclude[0]");
        let bad = SettingsChange { interval: Some("soon".into()), ..Default::default() };
        assert_eq!(bad.check_caps()[0].0, "set.interval");
        assert_eq!(SettingsChange::default().check_caps()[0].0, "set");
        let unknown: Result<SettingsChange, _> = serde_json::from_str(r#"{"colour":"red"}"#);
        assert!(unknown.is_err());
        assert!(check_host_glob(&"a".repeat(254)).is_err());
        assert!(check_host_glob("web-*").is_ok());
        assert!(check_host_glob("web 1").is_err());
        assert!(check_host_glob("").is_err());
    }

    #[test]
    fn the_agent_judges_range_and_metric_names() {
        let fast = SettingsChange { interval: Some("500ms".into()), ..Default::default() };
        assert!(fast.check_caps().is_empty(), "the server lets it through");
        assert!(fast.check_applicable().unwrap_err().contains("out of range"));
        let m = SettingsChange { metrics: Some(vec!["gpu".into()]), ..Default::default() };
        assert!(m.check_applicable().unwrap_err().contains("unknown metric"));
        let ok = SettingsChange {
            interval: Some("5s".into()),
            metrics: Some(vec!["io".into(), "fds".into()]),
            include: Some(vec!["nginx*".into()]),
            ..Default::default()
        };
        assert_eq!(ok.check_applicable(), Ok(()));
    }

    #[test]
    fn merge_in_version_order_later_keys_win() {
        let records = vec![
            rec(3, "web-1", SettingsChange { paused: Some(true), ..Default::default() }),
            rec(
                1,
                "web-*",
                SettingsChange {
                    interval: Some("5s".into()),
                    paused: Some(false),
                    ..Default::default()
                },
            ),
            rec(2, "db-*", SettingsChange { interval: Some("1m".into()), ..Default::default() }),
            rec(4, "*", SettingsChange { sweep_now: Some(true), ..Default::default() }),
        ];
        let d = effective(&records, "web-1", 0).unwrap();
        assert_eq!(d.version, 4);
        assert_eq!(d.set.interval.as_deref(), Some("5s"));
        assert_eq!(d.set.paused, Some(true));
        assert_eq!(d.set.sweep_now, Some(true));
        // Up to date: nothing to send.
        assert_eq!(effective(&records, "web-1", 4), None);
        // web-2 matches 1 and 4; at version 3 only the sweep is new.
        let d = effective(&records, "web-2", 3).unwrap();
        assert_eq!((d.version, d.set.paused, d.set.sweep_now), (4, Some(false), Some(true)));
        // A sweep_now already run is not asked again.
        let r2 = vec![
            records[3].clone(),
            rec(5, "*", SettingsChange { paused: Some(false), ..Default::default() }),
        ];
        assert_eq!(effective(&r2, "x", 4).unwrap().set.sweep_now, None);
        assert_eq!(effective(&records, "mail", 0).unwrap().version, 4);
        assert_eq!(effective(&records[..3], "mail", 0), None);
    }
}
