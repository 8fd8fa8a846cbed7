//! The agent's counters, readable while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Counters, readable while the agent runs.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Sweeps taken and spooled.
    pub sweeps: AtomicU64,
    /// Sweeps that failed (collector error, or the disk refused the append).
    pub sweep_errors: AtomicU64,
    /// Ticks skipped because a sweep overran a whole interval.
    pub missed_ticks: AtomicU64,
    /// Samples appended to the spool.
    pub spooled_samples: AtomicU64,
    /// Requests the server acknowledged.
    pub requests_ok: AtomicU64,
    /// Spooled records delivered.
    pub sent_records: AtomicU64,
    /// Samples delivered.
    pub sent_samples: AtomicU64,
    /// Failed attempts that will be retried.
    pub retries: AtomicU64,
    /// Records the server refused for good, set aside in `quarantine/`.
    pub quarantined_records: AtomicU64,
    /// Quarantined batches deleted (or never written) to keep the quarantine under its cap.
    pub quarantine_evicted_files: AtomicU64,
    /// Attempts answered by something that is not the server's ingestion route (3xx, 404, 405,
    /// a 2xx that is not its acknowledgement); the batch stayed in the spool.
    pub misconfigured_answers: AtomicU64,
    /// Samples lost to a spool cap, a refused batch or a failed append.
    pub dropped_samples: AtomicU64,
    /// Records resent after a restart because they were in flight when the agent stopped.
    pub resent_records: AtomicU64,
    /// The latest sweep start since the agent started, microseconds after its schedule.
    pub max_lateness_us: AtomicU64,
    /// The longest spool append (lock wait + write + fsync), microseconds.
    pub max_append_us: AtomicU64,
    lateness_us: Mutex<std::collections::VecDeque<u64>>,
}

/// How many sweep lateness figures [`AgentStats::lateness_us`] keeps (the most recent).
pub const LATENESS_KEPT: usize = 10_000;

impl AgentStats {
    /// How late each of the last [`LATENESS_KEPT`] sweeps started after its scheduled time,
    /// microseconds, oldest first.
    pub fn lateness_us(&self) -> Vec<u64> {
        self.lateness_us.lock().map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    pub(crate) fn record_lateness(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.max_lateness_us.fetch_max(us, Ordering::Relaxed);
        if let Ok(mut v) = self.lateness_us.lock() {
            if v.len() >= LATENESS_KEPT {
                v.pop_front();
            }
            v.push_back(us);
        }
    }
}
