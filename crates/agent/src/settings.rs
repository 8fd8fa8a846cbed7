//! The agent's steerable settings: one [`Settings`] value the sweep loop reads (interval,
//! paused, process filter, extra metrics), changed by the server's directives
//! ([`crate::directive`]) and kept in `<spool>/settings.json` so a restart keeps them.
//!
//! `settings.json` holds the directive version applied, the settings it resulted in, and the
//! newest directive refused (if any). It is replaced atomically (temporary file, fsync,
//! rename, directory fsync). When it exists it wins over the command line's `--interval`
//! (the operator steered the agent since); delete it to go back to the flags. A damaged file
//! is logged and ignored (the server sends the directive again: the agent then reports
//! version 0).

use std::path::Path;
use std::time::Duration;

use procwatch_model::directive::{DirectiveError, SettingsChange};
use procwatch_model::glob::Glob;
use serde::{Deserialize, Serialize};

use crate::spool::{write_atomic, SpoolError};

/// The file in the spool directory that keeps the applied settings.
pub const SETTINGS_FILE: &str = "settings.json";

/// What the sweep loop runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Time between two sweeps.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// No sweep is taken while paused (the sender keeps posting heartbeat batches).
    pub paused: bool,
    /// Process-name globs to keep; empty: every process.
    pub include: Vec<String>,
    /// Process-name globs to leave out (after `include`).
    pub exclude: Vec<String>,
    /// Extra metrics asked for (`procwatch_model::directive::EXTRA_METRIC_NAMES`): the sweep
    /// function is handed these settings at each sweep and collects them (the binary's
    /// `cmd::agent::sweep_fn` hands them to the collector when they change).
    pub metrics: Vec<String>,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl Settings {
    /// The settings of an agent nobody steered: `interval`, not paused, every process.
    pub fn new(interval: Duration) -> Self {
        Settings {
            interval,
            paused: false,
            include: Vec::new(),
            exclude: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// These settings with `change` applied, or why it cannot be
    /// ([`SettingsChange::check_applicable`]).
    pub fn with(&self, change: &SettingsChange) -> Result<Settings, String> {
        change.check_applicable()?;
        let mut out = self.clone();
        if let Some(ms) = change.interval_ms()? {
            out.interval = Duration::from_millis(ms);
        }
        if let Some(p) = change.paused {
            out.paused = p;
        }
        if let Some(i) = &change.include {
            out.include.clone_from(i);
        }
        if let Some(e) = &change.exclude {
            out.exclude.clone_from(e);
        }
        if let Some(m) = &change.metrics {
            out.metrics.clone_from(m);
        }
        Ok(out)
    }

    /// The process filter of these settings.
    pub fn filter(&self) -> Filter {
        Filter {
            include: self.include.iter().map(|g| Glob::new(g.as_str())).collect(),
            exclude: self.exclude.iter().map(|g| Glob::new(g.as_str())).collect(),
        }
    }
}

/// The process filter, compiled: a name is kept when it matches an `include` glob (or there
/// is none) and no `exclude` glob.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
}

impl Filter {
    /// Whether `process` is kept.
    pub fn admits(&self, process: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| g.matches(process)))
            && !self.exclude.iter().any(|g| g.matches(process))
    }

    /// Whether every process is kept.
    pub fn is_open(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// The content of `settings.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// The directive version the settings result from.
    pub version: u64,
    /// The settings.
    pub settings: Settings,
    /// The newest directive refused, if newer than `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<DirectiveError>,
}

impl Persisted {
    /// Reads `dir/settings.json`: `Ok(None)` when there is none, `Err` (a reason) when it is
    /// damaged.
    pub fn load(dir: &Path) -> Result<Option<Persisted>, String> {
        let path = dir.join(SETTINGS_FILE);
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Replaces `dir/settings.json` atomically (fsynced when `fsync`).
    pub fn store(&self, dir: &Path, fsync: bool) -> Result<(), SpoolError> {
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(dir, SETTINGS_FILE, &body, fsync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_applies_key_by_key_or_not_at_all() {
        let s = Settings::new(Duration::from_secs(10));
        let c = SettingsChange {
            interval: Some("5s".into()),
            include: Some(vec!["nginx*".into(), "postgres".into()]),
            ..Default::default()
        };
        let t = s.with(&c).unwrap();
        assert_eq!(t.interval, Duration::from_secs(5));
        assert!(!t.paused);
        let f = t.filter();
        assert!(f.admits("nginx: worker") && f.admits("postgres") && !f.admits("java"));
        let bad = SettingsChange {
            interval: Some("100ms".into()),
            paused: Some(true),
            ..Default::default()
        };
        assert!(t.with(&bad).is_err());
        let ex = SettingsChange { exclude: Some(vec!["nginx*".into()]), ..Default::default() };
        assert!(!t.with(&ex).unwrap().filter().admits("nginx"));
        assert!(Settings::new(Duration::from_secs(1)).filter().is_open());
    }

    #[test]
    fn settings_survive_a_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Persisted::load(dir.path()), Ok(None));
        let p = Persisted {
            version: 3,
            settings: Settings { paused: true, ..Settings::new(Duration::from_millis(2500)) },
            refused: Some(DirectiveError { version: 4, message: "no".into() }),
        };
        p.store(dir.path(), true).unwrap();
        assert_eq!(Persisted::load(dir.path()), Ok(Some(p)));
        std::fs::write(dir.path().join(SETTINGS_FILE), b"{").unwrap();
        assert!(Persisted::load(dir.path()).is_err());
    }
}
