//! A host's bookkeeping (`seq` gaps, dropped samples, last seen, retirement), kept as one JSON
//! row per host in the `hosts` table and updated with the shared rules of
//! `procwatch_store::agg::seq_update`.

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
