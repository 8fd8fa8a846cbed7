//! A host's bookkeeping (`seq` gaps, dropped samples, last seen, retirement), kept as one JSON
//! row per host in the `hosts` table and updated with the shared rules of
//! `procwatch_store::agg::seq_update`; [`Book`] is this store's copy and what it has not
//! written yet (see the crate doc, "Host bookkeeping").

use std::collections::HashMap;

use procwatch_model::{Batch, TsMs};
use procwatch_store::host_book::HostBook;
use procwatch_store::HostInfo;
use serde::{Deserialize, Serialize};

/// What the store remembers of a host between batches: the shared bookkeeping, and when the
/// host was retired.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    #[serde(flatten)]
    pub book: HostBook,
    /// Retired: hidden from `hosts()` while `last_seen` is at or before this.
    pub retired_until: Option<TsMs>,
}

impl HostState {
    /// Applies a batch; returns the `seq` gap it opened.
    pub fn apply(&mut self, batch: &Batch) -> u64 {
        self.book.record_all(batch)
    }

    /// Whether `hosts()` lists the host.
    pub fn listed(&self) -> bool {
        self.retired_until.is_none_or(|at| self.book.last_seen > at)
    }

    /// The state as of a retention floor: `None` when the host was not seen since `floor` (it
    /// is gone, as in the reference store); an older `latest` is dropped with its row.
    pub fn after_retention(mut self, floor: TsMs) -> Option<Self> {
        if self.book.last_seen < floor {
            return None;
        }
        if self.book.latest.as_ref().is_some_and(|l| l.ts < floor) {
            self.book.latest = None;
        }
        Some(self)
    }

    pub fn info(&self, host: &str) -> HostInfo {
        self.book.info(host)
    }
}

/// The bookkeeping this store holds: its copy of each host's state, and which of them are
/// newer than the `hosts` table (pending: written by the next flush).
#[derive(Debug, Default)]
pub struct Book {
    /// This store's copy of each host's state (loaded from `hosts` on first sight).
    pub states: HashMap<String, HostState>,
    /// Hosts whose copy is newer than what this store wrote to `hosts`, with the change
    /// counter at their last change (a flush clears only what it wrote).
    pub pending: HashMap<String, u64>,
    /// Counts changes.
    pub changes: u64,
    /// A flush task is scheduled.
    pub scheduled: bool,
}

impl Book {
    /// Marks `host`'s copy changed.
    pub fn touch(&mut self, host: &str) {
        self.changes += 1;
        self.pending.insert(host.to_string(), self.changes);
    }

    /// The pending states (cloned), for a flush or for `hosts()` to overlay.
    pub fn pending_states(&self) -> Vec<(String, u64, HostState)> {
        self.pending
            .iter()
            .filter_map(|(h, c)| self.states.get(h).map(|s| (h.clone(), *c, s.clone())))
            .collect()
    }

    /// After a flush wrote `written` (host, change counter): those not changed since are no
    /// longer pending.
    pub fn written(&mut self, written: &[(String, u64)]) {
        for (h, c) in written {
            if self.pending.get(h) == Some(c) {
                self.pending.remove(h);
            }
        }
    }
}
