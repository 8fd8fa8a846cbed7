//! A host's bookkeeping (`seq` gaps, dropped samples, last seen, retirement), kept as one JSON
//! row per host in the `hosts` table and updated with the shared rules of
//! `procwatch_store::agg::seq_update`.

use procwatch_model::{Batch, HostTotal, TsMs};
use procwatch_store::{agg, HostInfo};
use serde::{Deserialize, Serialize};

/// What the store remembers of a host between batches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub last_seen: TsMs,
    pub interval_ms: u64,
    /// `(last_seq, seq_gaps)`, `None` before the first batch.
    pub seq: Option<(u64, u64)>,
    pub dropped_samples: u64,
    /// The host total with the newest `ts`.
    pub latest: Option<HostTotal>,
    /// Retired: hidden from `hosts()` while `last_seen` is at or before this.
    pub retired_until: Option<TsMs>,
}

impl HostState {
    /// Applies a batch; returns the `seq` gap it opened.
    pub fn apply(&mut self, batch: &Batch) -> u64 {
        let newest =
            batch.samples.iter().map(|s| s.ts).chain(batch.host_totals.iter().map(|t| t.ts)).max();
        if let Some(ts) = newest {
            self.last_seen = self.last_seen.max(ts);
        }
        for t in &batch.host_totals {
            if self.latest.as_ref().is_none_or(|l| t.ts >= l.ts) {
                self.latest = Some(t.clone());
            }
        }
        let (last, gaps, gap, new) = agg::seq_update(self.seq, batch.seq);
        self.seq = Some((last, gaps));
        if new {
            self.dropped_samples += batch.dropped_samples;
            self.interval_ms = batch.interval_ms;
        }
        gap
    }

    /// Whether `hosts()` lists the host.
    pub fn listed(&self) -> bool {
        self.retired_until.is_none_or(|at| self.last_seen > at)
    }

    /// The state as of a retention floor: `None` when the host was not seen since `floor` (it
    /// is gone, as in the reference store); an older `latest` is dropped with its row.
    pub fn after_retention(mut self, floor: TsMs) -> Option<Self> {
        if self.last_seen < floor {
            return None;
        }
        if self.latest.as_ref().is_some_and(|l| l.ts < floor) {
            self.latest = None;
        }
        Some(self)
    }

    pub fn info(&self, host: &str) -> HostInfo {
        HostInfo {
            host: host.to_string(),
            last_seen: self.last_seen,
            interval_ms: self.interval_ms,
            last_seq: self.seq.map_or(0, |s| s.0),
            seq_gaps: self.seq.map_or(0, |s| s.1),
            dropped_samples: self.dropped_samples,
            latest: self.latest.clone(),
        }
    }
}
