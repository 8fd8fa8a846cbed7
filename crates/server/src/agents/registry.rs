//! The agents registry: per host, what its newest batch said of the agent (version string,
//! interval, directive version, spool backlog, drops, a refused directive) and when it
//! arrived, and when the newest batch that said "paused" arrived (the alarm evaluator judges a
//! paused host's silence on those heartbeats, see [`Registry::pauses`]). In memory, rebuilt
//! from the batches after a restart; bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;

use procwatch_alarm::Pause;
use procwatch_model::directive::{truncate, DirectiveError, MAX_TEXT_LEN};
use procwatch_model::{Batch, TsMs};
use serde::{Deserialize, Serialize};

/// Hosts listed at most; batches of further hosts are served but not listed.
pub const MAX_AGENTS: usize = 10_000;
/// Bytes of an agent's name and version kept at most.
pub const MAX_AGENT_LEN: usize = 128;

/// One agent as `GET /api/v1/agents` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentInfo {
    /// The newest directive it refused, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directive_error: Option<DirectiveError>,
    /// The version of the directive it should run, when newer than `directive_version` (sent
    /// with its next acknowledgement; absent when it is up to date).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_version: Option<u64>,
    /// The host the agent reports for.
    pub host: String,
    /// The agent's name and version (`Batch::agent`), e.g. `procwatch/0.1.0`.
    pub agent: String,
    /// Whether its batches carry a report (it speaks the control channel).
    pub steerable: bool,
    /// The sweep interval it runs, ms.
    pub interval_ms: u64,
    /// Whether sampling is paused.
    pub paused: bool,
    /// The directive version it runs (0: none).
    pub directive_version: u64,
    /// When its newest batch arrived (the server's clock, Unix ms).
    pub last_seen: TsMs,
    /// Sweeps spooled on the host and not yet delivered.
    pub spool_backlog: u64,
    /// Samples the agent dropped since it started.
    pub dropped_samples: u64,
}

/// One host's entry: what `GET /api/v1/agents` lists, and when its newest batch that said
/// "paused" arrived.
struct Entry {
    info: AgentInfo,
    paused_at: Option<TsMs>,
}

/// The registry (see the module documentation).
#[derive(Default)]
pub struct Registry {
    agents: Mutex<BTreeMap<String, Entry>>,
}

impl Registry {
    /// Records `batch` (arrived at `now`). `false` when the host is new and the registry is
    /// full (it is then not listed).
    pub fn observe(&self, batch: &Batch, now: TsMs) -> bool {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if !agents.contains_key(&batch.host) && agents.len() >= MAX_AGENTS {
            return false;
        }
        let r = batch.report.clone().unwrap_or_default();
        let info = AgentInfo {
            host: batch.host.clone(),
            agent: truncate(&batch.agent, MAX_AGENT_LEN).to_owned(),
            steerable: batch.report.is_some(),
            interval_ms: if batch.report.is_some() { r.interval_ms } else { batch.interval_ms },
            paused: r.paused,
            directive_version: r.directive_version,
            pending_version: None,
            last_seen: now,
            spool_backlog: r.spool_backlog,
            dropped_samples: r.dropped_samples,
            directive_error: r.directive_error.map(|e| DirectiveError {
                version: e.version,
                message: truncate(&e.message, MAX_TEXT_LEN).to_owned(),
            }),
        };
        // Kept after a resume: the first samples then have 3 intervals from the last paused
        // heartbeat to arrive (see `procwatch_alarm::Pause`).
        let paused_at = match r.paused {
            true => Some(now),
            false => agents.get(&batch.host).and_then(|e| e.paused_at),
        };
        agents.insert(batch.host.clone(), Entry { info, paused_at });
        true
    }

    /// Per host that ever reported a pause by directive since this server started: whether it
    /// is paused now, and when its newest batch that said so arrived.
    pub fn pauses(&self) -> BTreeMap<String, Pause> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents
            .iter()
            .filter_map(|(host, e)| {
                let heartbeat = e.paused_at?;
                Some((host.clone(), Pause { paused: e.info.paused, heartbeat }))
            })
            .collect()
    }

    /// Every agent by host, `pending(host, version it runs)` giving the version it should run
    /// when newer.
    pub fn list(&self, pending: impl Fn(&str, u64) -> Option<u64>) -> Vec<AgentInfo> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents
            .values()
            .map(|e| {
                let mut a = e.info.clone();
                if a.steerable {
                    a.pending_version = pending(&a.host, a.directive_version);
                }
                a
            })
            .collect()
    }

    /// Hosts listed.
    pub fn len(&self) -> usize {
        self.agents.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no host is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::directive::AgentReport;

    fn batch(host: &str, report: Option<AgentReport>) -> Batch {
        Batch {
            host: host.into(),
            agent: "x".repeat(1000),
            seq: 1,
            interval_ms: 10_000,
            host_totals: vec![],
            samples: vec![],
            dropped_samples: 0,
            report,
        }
    }

    #[test]
    fn hostile_reports_are_cut_and_the_registry_is_bounded() {
        let r = Registry::default();
        let report = AgentReport {
            directive_version: 3,
            interval_ms: 5_000,
            directive_error: Some(DirectiveError { version: 4, message: "é".repeat(10_000) }),
            ..Default::default()
        };
        assert!(r.observe(&batch("web-1", Some(report)), 7));
        let a = &r.list(|_, _| Some(9))[0];
        assert_eq!(a.agent.len(), MAX_AGENT_LEN);
        assert!(a.directive_error.as_ref().unwrap().message.len() <= MAX_TEXT_LEN);
        assert_eq!((a.interval_ms, a.directive_version, a.pending_version), (5_000, 3, Some(9)));
        assert!(r.observe(&batch("old", None), 8));
        let old = r.list(|_, _| Some(9)).into_iter().find(|a| a.host == "old").unwrap();
        assert_eq!((old.steerable, old.interval_ms, old.pending_version), (false, 10_000, None));
        for i in 0..MAX_AGENTS {
            r.observe(&batch(&format!("h{i}"), None), 9);
        }
        assert_eq!(r.len(), MAX_AGENTS);
        assert!(!r.observe(&batch("one-more", None), 10));
        assert!(r.observe(&batch("web-1", None), 10), "a known host is updated");
    }

    #[test]
    fn pauses_keep_the_newest_paused_heartbeat_after_a_resume() {
        let r = Registry::default();
        let report = |paused| Some(AgentReport { paused, ..Default::default() });
        r.observe(&batch("web-1", report(false)), 1);
        assert!(r.pauses().is_empty(), "never paused");
        r.observe(&batch("web-1", report(true)), 2);
        r.observe(&batch("web-1", report(true)), 3);
        assert_eq!(r.pauses()["web-1"], Pause { paused: true, heartbeat: 3 });
        r.observe(&batch("web-1", report(false)), 4);
        assert_eq!(r.pauses()["web-1"], Pause { paused: false, heartbeat: 3 });
    }
}
