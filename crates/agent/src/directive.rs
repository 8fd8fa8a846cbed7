//! Applying the server's directives: [`Control`] holds the agent's [`Settings`] (shared by the
//! sweep thread, the spool thread and the sender), applies each directive version once,
//! persists the result (`settings.json`, atomically) before acting on it, wakes the sweep
//! thread, and writes the [`AgentReport`] each batch carries.
//!
//! - A directive arrives only in the acknowledgement of one of the agent's own batches
//!   (`Shipper::send`); the batch counts as delivered whatever the directive says.
//! - A version at or below the one applied, or equal to the one last refused, is ignored (the
//!   server keeps offering the newest until the agent reports it).
//! - A directive the agent cannot apply (malformed, interval out of range, a glob past the
//!   caps, an unknown metric) is refused whole: the agent keeps its last good settings, logs an
//!   error once, and reports `directive_error {version, message}` in its next batches.
//! - **Pause.** A paused agent takes no sweep (so spools and sends no samples) but keeps
//!   posting a heartbeat batch (no samples, its report) every interval, so the server can
//!   still answer with the directive that resumes it. The store does not count heartbeats as
//!   data (a paused host's `last_seen` stops), but the server's alarm evaluator judges a paused
//!   host's silence on its heartbeats: no host-silent alarm while they come, one 3 intervals
//!   after they stop (`procwatch_alarm::Pause`); `procwatch agents` shows it paused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::Duration;

use procwatch_model::directive::{truncate, AgentReport, Directive, DirectiveError, MAX_TEXT_LEN};
use tracing::{error, info, warn};

use crate::settings::{Filter, Persisted, Settings};

/// What wakes the sweep thread before its next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Stop sweeping.
    Stop,
    /// The settings changed (interval, pause, filter, or a sweep asked for now).
    Reconfigure,
}

struct State {
    persisted: Persisted,
    filter: Filter,
}

/// The agent's steerable settings and the directive version they come from.
pub struct Control {
    state: Mutex<State>,
    dir: std::path::PathBuf,
    fsync: bool,
    sweep_now: AtomicBool,
    wake: Mutex<Option<mpsc::Sender<Wake>>>,
    /// Whether the sweep can collect extra metrics (see `AgentConfig::extras_supported`).
    pub(crate) extras_supported: bool,
}

impl Control {
    /// Loads `dir/settings.json` if there is one (else `base`, version 0).
    pub fn load(dir: &std::path::Path, base: Settings, fsync: bool) -> Control {
        let persisted = match Persisted::load(dir) {
            Ok(Some(p)) => {
                info!(
                    message = "Running with the settings of the last directive applied (they win over the flags; delete the file to go back to them).",
                    directive_version = p.version,
                    interval_ms = p.settings.interval.as_millis() as u64,
                    paused = p.settings.paused,
                    file = %dir.join(crate::settings::SETTINGS_FILE).display()
                );
                p
            }
            Ok(None) => Persisted { version: 0, settings: base, refused: None },
            Err(reason) => {
                warn!(message = "Ignoring a damaged settings file; the server will send the directive again.", %reason);
                Persisted { version: 0, settings: base, refused: None }
            }
        };
        let filter = persisted.settings.filter();
        Control {
            state: Mutex::new(State { persisted, filter }),
            dir: dir.to_path_buf(),
            fsync,
            sweep_now: AtomicBool::new(false),
            wake: Mutex::new(None),
            extras_supported: true,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_waker(&self, tx: mpsc::Sender<Wake>) {
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// The settings the agent runs now.
    pub fn settings(&self) -> Settings {
        self.lock().persisted.settings.clone()
    }

    /// The directive version the agent runs (0: none).
    pub fn version(&self) -> u64 {
        self.lock().persisted.version
    }

    /// The newest directive refused, if any.
    pub fn refused(&self) -> Option<DirectiveError> {
        self.lock().persisted.refused.clone()
    }

    pub(crate) fn interval(&self) -> Duration {
        self.lock().persisted.settings.interval
    }

    pub(crate) fn paused(&self) -> bool {
        self.lock().persisted.settings.paused
    }

    /// Whether sampling is paused, and the process filter, as one sweep reads them.
    pub(crate) fn sweep_view(&self) -> (bool, Option<Filter>) {
        let st = self.lock();
        let f = (!st.filter.is_open()).then(|| st.filter.clone());
        (st.persisted.settings.paused, f)
    }

    /// Takes the "sweep now" request, if one is pending.
    pub(crate) fn take_sweep_now(&self) -> bool {
        self.sweep_now.swap(false, Ordering::SeqCst)
    }

    /// The report of the agent's state for its next batch.
    pub fn report(&self, spool_backlog: u64, dropped_samples: u64) -> AgentReport {
        let st = self.lock();
        AgentReport {
            directive_version: st.persisted.version,
            interval_ms: st.persisted.settings.interval.as_millis() as u64,
            paused: st.persisted.settings.paused,
            spool_backlog,
            dropped_samples,
            directive_error: st.persisted.refused.clone(),
        }
    }

    /// Handles the directive of an acknowledgement (raw JSON, from the server): applies it once,
    /// or refuses it. Returns whether the settings changed.
    pub fn offer(&self, raw: &serde_json::Value) -> bool {
        let version = raw.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let mut st = self.lock();
        if version <= st.persisted.version
            || st.persisted.refused.as_ref().is_some_and(|r| r.version == version)
        {
            return false;
        }
        let applied = serde_json::from_value::<Directive>(raw.clone())
            .map_err(|e| format!("malformed directive: {e}"))
            .and_then(|d| st.persisted.settings.with(&d.set).map(|s| (d, s)))
            .and_then(|(d, s)| {
                if s.metrics.is_empty() || self.extras_supported {
                    return Ok((d, s));
                }
                Err(format!(
                    "this agent's collector collects no extra metrics (asked for {}); run it with the proc collector (Linux)",
                    s.metrics.join(",")
                ))
            });
        let next = match applied {
            Ok((d, settings)) => {
                if d.set.sweep_now == Some(true) {
                    self.sweep_now.store(true, Ordering::SeqCst);
                }
                info!(
                    message = "Directive applied.",
                    directive_version = version,
                    interval_ms = settings.interval.as_millis() as u64,
                    paused = settings.paused,
                    include = ?settings.include,
                    exclude = ?settings.exclude,
                    metrics = ?settings.metrics,
                    sweep_now = d.set.sweep_now == Some(true)
                );
                Persisted { version, settings, refused: None }
            }
            Err(message) => {
                let message = truncate(&message, MAX_TEXT_LEN).to_owned();
                error!(
                    message = "Directive refused; running on with the last good settings.",
                    directive_version = version,
                    reason = %message
                );
                Persisted {
                    refused: Some(DirectiveError { version, message }),
                    ..st.persisted.clone()
                }
            }
        };
        if let Err(e) = next.store(&self.dir, self.fsync) {
            // Applied for this run; after a restart the agent reports the older version and
            // the server sends this directive again.
            error!(message = "Could not persist the settings; they last until the agent stops.", error = %e);
        }
        let changed =
            next.settings != st.persisted.settings || self.sweep_now.load(Ordering::SeqCst);
        st.filter = next.settings.filter();
        st.persisted = next;
        drop(st);
        if changed {
            if let Some(tx) = self.wake.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.send(Wake::Reconfigure);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_version_is_applied_once_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::load(dir.path(), Settings::new(Duration::from_secs(10)), false);
        let (tx, rx) = mpsc::channel();
        c.set_waker(tx);
        assert!(c.offer(&json!({"version": 2, "set": {"interval": "2s", "exclude": ["java"]}})));
        assert_eq!(rx.try_recv(), Ok(Wake::Reconfigure));
        assert_eq!((c.version(), c.interval()), (2, Duration::from_secs(2)));
        assert!(!c.offer(&json!({"version": 2, "set": {"interval": "3s"}})), "applied once");
        assert!(!c.offer(&json!({"version": 3, "set": {"interval": "50ms"}})));
        assert_eq!(c.refused().unwrap().version, 3);
        assert_eq!(c.interval(), Duration::from_secs(2), "last good settings kept");
        assert!(!c.offer(&json!({"version": 4, "set": {"colour": "red"}})));
        assert!(c.refused().unwrap().message.contains("malformed"));
        // A restart reads them back.
        let again = Control::load(dir.path(), Settings::new(Duration::from_secs(10)), false);
        assert_eq!((again.version(), again.interval()), (2, Duration::from_secs(2)));
        assert_eq!(again.report(5, 1).directive_error.unwrap().version, 4);
        assert!(again.offer(&json!({"version": 5, "set": {"paused": true, "sweep_now": true}})));
        assert!(again.paused() && again.take_sweep_now() && !again.take_sweep_now());
        assert_eq!(again.report(0, 0).directive_error, None);
        let (paused, filter) = again.sweep_view();
        assert!(paused && !filter.unwrap().admits("java"));
    }

    #[test]
    fn metrics_replace_the_flags_and_an_agent_without_extras_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let base =
            Settings { metrics: vec!["io".into()], ..Settings::new(Duration::from_secs(10)) };
        let c = Control::load(dir.path(), base.clone(), false);
        assert!(c.offer(&json!({"version": 1, "set": {"metrics": ["threads", "fds"]}})));
        assert_eq!(c.settings().metrics, ["threads", "fds"]);
        assert!(!c.offer(&json!({"version": 2, "set": {"metrics": ["gpu"]}})));
        assert!(c.refused().unwrap().message.contains("unknown metric"));
        let again = Control::load(dir.path(), base.clone(), false);
        assert_eq!(again.settings().metrics, ["threads", "fds"], "persisted over the flags");

        let other = tempfile::tempdir().unwrap();
        let mut portable =
            Control::load(other.path(), Settings::new(Duration::from_secs(10)), false);
        portable.extras_supported = false;
        assert!(!portable.offer(&json!({"version": 1, "set": {"metrics": ["threads"]}})));
        assert!(portable.refused().unwrap().message.contains("collects no extra metrics"));
        assert!(portable.settings().metrics.is_empty());
        assert!(portable.offer(&json!({"version": 2, "set": {"metrics": [], "paused": true}})));
    }
}
