//! The control channel, server side: the registry of agents (what each reports with its
//! batches) and the directive log (what operators asked of which hosts).
//!
//! - **Pull only.** A directive reaches an agent in the acknowledgement of one of its own
//!   batch POSTs ([`crate::ingest::Accepted::directive`]), never through a port on the host.
//!   It is sent when the agent's report says it runs an older version than its effective
//!   directive (`procwatch_model::directive::effective`: the merge of every record whose host
//!   glob matches, in version order), and not while the agent reports it refused that very
//!   version. Batches without a report (older agents, the legacy route) get none.
//! - **Durable.** Each change is stored through `Storage::put_directive` before it is
//!   answered (`201`), then published on the alarm stream as an `event: directive`; at start
//!   the log is read back (`Agents::restore`), so directives survive a server restart.
//! - **Bounded.** At most [`MAX_AGENTS`] hosts are tracked (more are served but not listed,
//!   counted as `limit_breaches{reason="agents"}`), the agent string and a refusal message are
//!   cut to `MAX_TEXT_LEN` bytes, and the log holds at most [`MAX_DIRECTIVES`] changes (507
//!   past it).
//! - **Who may do what.** `GET /api/v1/agents` and `GET /api/v1/agents/directives`: the read
//!   token. `POST /api/v1/agents/directives`: the admin token only, distinct from the read and
//!   write tokens; with no admin token configured the route answers 403 (disabled). A write
//!   token (an agent's) cannot steer anything: it only reaches the report of its own batches,
//!   which changes what `procwatch agents` shows for that host, not what any agent runs.
//!
//! Files: [`registry`] (the agents), [`routes`] (HTTP and the admin check), [`openapi`] (the
//! routes' part of the OpenAPI document).

pub mod openapi;
pub mod registry;
pub mod routes;

use std::sync::{Mutex, MutexGuard};

use procwatch_model::directive::{effective, Directive, DirectiveRecord};
use procwatch_model::{Batch, TsMs};
use procwatch_store::{Storage, StoreError};
use tokio::sync::broadcast;

use crate::error::ApiError;

pub use registry::{AgentInfo, Registry, MAX_AGENTS};
pub use routes::router;

/// Directive changes kept at most.
pub const MAX_DIRECTIVES: usize = 10_000;

/// How often the log is read again from the store (other servers' changes).
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the log again every [`REFRESH`] until `stop` changes (servers sharing one store see
/// each other's directives within it); a failed read is logged and retried at the next tick.
pub fn spawn_refresh(
    agents: std::sync::Arc<Agents>,
    store: std::sync::Arc<dyn Storage>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the log was just read at start
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = agents.restore(&*store).await {
                        tracing::warn!(message = "Could not re-read the directive log.", %error);
                    }
                }
                _ = stop.changed() => break,
            }
        }
    })
}

struct Log {
    records: Vec<DirectiveRecord>,
    /// The newest version handed out (0: none).
    version: u64,
}

/// The control channel's state: registry, directive log, and the channel of changes.
pub struct Agents {
    registry: Registry,
    log: Mutex<Log>,
    tx: broadcast::Sender<DirectiveRecord>,
    /// Serialises directive changes (version, store write, log) with one another.
    change: tokio::sync::Mutex<()>,
    /// Per host: the log version its effective directive was merged at, and that directive's
    /// version, so a host is merged once per change of the log, not once per batch (at most
    /// one entry per host the registry lists).
    merged: Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            registry: Registry::default(),
            log: Mutex::new(Log { records: Vec::new(), version: 0 }),
            tx: broadcast::channel(64).0,
            change: tokio::sync::Mutex::new(()),
            merged: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Agents {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the directive log back from the store (at start, then every [`REFRESH`], and
    /// before each change, so servers sharing one store converge). Returns how many changes.
    pub async fn restore(&self, store: &dyn Storage) -> Result<usize, StoreError> {
        let _one_at_a_time = self.change.lock().await;
        self.reload(store).await
    }

    async fn reload(&self, store: &dyn Storage) -> Result<usize, StoreError> {
        let records = store.directives().await?;
        let mut log = self.log();
        log.version = log.version.max(records.iter().map(|r| r.version).max().unwrap_or(0));
        log.records = records;
        Ok(log.records.len())
    }

    /// Every directive change, oldest first.
    pub fn directives(&self) -> Vec<DirectiveRecord> {
        self.log().records.clone()
    }

    /// The newest version handed out (0: none).
    pub fn version(&self) -> u64 {
        self.log().version
    }

    /// A receiver of every directive change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DirectiveRecord> {
        self.tx.subscribe()
    }

    /// The agents as last seen.
    pub fn list(&self) -> Vec<AgentInfo> {
        let log = self.log();
        self.registry
            .list(|host, reported| effective(&log.records, host, reported).map(|d| d.version))
    }

    /// Records an accepted batch's report (`now`: when it arrived) and answers the directive
    /// to send back, if the agent runs an older one. `false` from `tracked` means the registry
    /// is full and the host is not listed.
    pub fn after_batch(&self, batch: &Batch, now: TsMs) -> (Option<Directive>, bool) {
        let tracked = self.registry.observe(batch, now);
        let Some(report) = &batch.report else { return (None, tracked) };
        let log = self.log();
        if log.version <= report.directive_version {
            return (None, tracked); // runs the newest there is (the common case: no merge)
        }
        let mut merged = self.merged.lock().unwrap_or_else(|p| p.into_inner());
        let cached = merged.get(&batch.host);
        if cached.is_some_and(|&(at, v)| at == log.version && v <= report.directive_version) {
            return (None, tracked); // runs its own newest (merged once at this log version)
        }
        let d = effective(&log.records, &batch.host, report.directive_version);
        if tracked {
            let v = d.as_ref().map_or(report.directive_version, |d| d.version);
            merged.insert(batch.host.clone(), (log.version, v));
        }
        let d =
            d.filter(|d| report.directive_error.as_ref().is_none_or(|e| e.version != d.version));
        (d, tracked)
    }

    /// Adds a change: assigns its version, stores it (durable before this returns `Ok`),
    /// appends it to the log and publishes it. 507 when the log is full.
    pub async fn add(
        &self,
        store: &dyn Storage,
        mut record: DirectiveRecord,
    ) -> Result<DirectiveRecord, ApiError> {
        let _one_at_a_time = self.change.lock().await;
        // Another server on the same store may have taken versions since the last refresh.
        self.reload(store).await?;
        let version = {
            let log = self.log();
            if log.records.len() >= MAX_DIRECTIVES {
                return Err(ApiError::InsufficientStorage(format!(
                    "the directive log holds {MAX_DIRECTIVES} changes, the most this server keeps; a change for the same hosts and keys overrides an older one, so reuse host globs"
                )));
            }
            log.version + 1
        };
        record.version = version;
        store.put_directive(&record).await?;
        {
            let mut log = self.log();
            log.version = version;
            log.records.push(record.clone());
        }
        let _ = self.tx.send(record.clone());
        Ok(record)
    }

    /// What the agents reported of a pause by directive ([`Registry::pauses`]): the alarm
    /// evaluator judges a paused host on its heartbeats.
    pub fn pauses(&self) -> std::collections::BTreeMap<String, procwatch_alarm::Pause> {
        self.registry.pauses()
    }

    /// How many hosts the registry lists.
    pub fn tracked(&self) -> usize {
        self.registry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::directive::{AgentReport, SettingsChange};
    use procwatch_store::memory::MemoryStore;

    fn change(hosts: &str, set: SettingsChange) -> DirectiveRecord {
        DirectiveRecord { version: 0, at: 1, who: "admin".into(), hosts: hosts.into(), set }
    }

    fn batch(host: &str, version: u64) -> Batch {
        Batch {
            host: host.into(),
            agent: "t".into(),
            seq: 1,
            interval_ms: 1000,
            host_totals: vec![],
            samples: vec![],
            dropped_samples: 0,
            report: Some(AgentReport { directive_version: version, ..Default::default() }),
        }
    }

    #[tokio::test]
    async fn servers_sharing_a_store_take_distinct_versions_and_see_each_others_changes() {
        let store = MemoryStore::new();
        let (a, b) = (Agents::default(), Agents::default());
        let paused = SettingsChange { paused: Some(true), ..Default::default() };
        let fast = SettingsChange { interval: Some("2s".into()), ..Default::default() };
        assert_eq!(a.add(&store, change("web-*", paused)).await.unwrap().version, 1);
        assert_eq!(b.add(&store, change("web-1", fast)).await.unwrap().version, 2, "read first");
        a.restore(&store).await.unwrap();
        let (d, tracked) = a.after_batch(&batch("web-1", 0), 5);
        let d = d.unwrap();
        assert!(tracked);
        assert_eq!(
            (d.version, d.set.paused, d.set.interval.as_deref()),
            (2, Some(true), Some("2s"))
        );
        assert_eq!(a.after_batch(&batch("web-1", 2), 6).0, None, "up to date");
        assert_eq!(a.after_batch(&batch("db-1", 0), 6).0, None, "no glob matches");
        // A change for other hosts: web-1 at v2 is merged once more, then answered from the cache.
        let db = SettingsChange { paused: Some(false), ..Default::default() };
        assert_eq!(a.add(&store, change("db-*", db)).await.unwrap().version, 3);
        assert_eq!(a.after_batch(&batch("web-1", 2), 7).0, None);
        assert_eq!(a.merged.lock().unwrap().get("web-1"), Some(&(3, 2)));
        assert_eq!(a.after_batch(&batch("web-1", 2), 8).0, None);
        assert_eq!(a.after_batch(&batch("db-1", 0), 8).0.map(|d| d.version), Some(3));
        let listed = a.list();
        assert_eq!(listed.iter().find(|x| x.host == "db-1").unwrap().pending_version, Some(3));
    }
}
