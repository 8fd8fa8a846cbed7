//! A host's bookkeeping between batches, as every backend keeps it: when it was last seen,
//! its interval, its `seq` baseline and gaps ([`crate::agg::seq_update`]), the samples its
//! agent dropped, and its newest host total. `hosts()` answers from it ([`HostBook::info`]).

use procwatch_model::{Batch, HostTotal, TsMs};
use serde::{Deserialize, Serialize};

use crate::{agg, HostInfo};

/// What a store remembers of a host between batches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostBook {
    /// The newest sample or host total timestamp stored for the host.
    pub last_seen: TsMs,
    /// The sampling interval of the host's newest batch that declared one.
    pub interval_ms: u64,
    /// `(last_seq, seq_gaps)`, `None` before the first batch.
    pub seq: Option<(u64, u64)>,
    /// Samples the host's agent reported dropped, over the batches not seen before.
    pub dropped_samples: u64,
    /// The host total with the newest `ts`.
    pub latest: Option<HostTotal>,
}

impl HostBook {
    /// Records `batch`, of which the store kept rows up to `newest` (the newest timestamp of
    /// its samples and host totals that were kept) and the host totals `totals`; returns
    /// the `seq` gap it opened.
    pub fn record<'a>(
        &mut self,
        batch: &Batch,
        newest: Option<TsMs>,
        totals: impl IntoIterator<Item = &'a HostTotal>,
    ) -> u64 {
        if let Some(ts) = newest {
            self.last_seen = self.last_seen.max(ts);
        }
        for t in totals {
            if self.latest.as_ref().is_none_or(|l| t.ts >= l.ts) {
                self.latest = Some(t.clone());
            }
        }
        let (last, gaps, gap, new) = agg::seq_update(self.seq, batch.seq);
        self.seq = Some((last, gaps));
        if new {
            self.dropped_samples += batch.dropped_samples;
            // A batch declaring no interval (0: a heartbeat of an agent older than the one
            // that declares its interval in every batch) keeps the known one: the alarm
            // engine judges the host's silence on it.
            if batch.interval_ms > 0 {
                self.interval_ms = batch.interval_ms;
            }
        }
        gap
    }

    /// [`HostBook::record`] of a batch stored whole.
    pub fn record_all(&mut self, batch: &Batch) -> u64 {
        let newest =
            batch.samples.iter().map(|s| s.ts).chain(batch.host_totals.iter().map(|t| t.ts)).max();
        self.record(batch, newest, &batch.host_totals)
    }

    /// The host as `hosts()` lists it.
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
