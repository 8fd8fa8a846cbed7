//! The sender's ledger, kept in `state.json`: the ack cursor, the next `seq`, the dropped
//! samples not yet reported and the request in flight. Written to a temporary file, fsynced
//! and renamed, so a restart resends at most the request that was in flight.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{io_err, write_atomic, Dropped, Spool, SpoolError};

/// The ledger's file in the spool directory.
const STATE_FILE: &str = "state.json";

/// A request the sender has built and may have sent: persisted so a restart resends exactly it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// The request's batch `seq`.
    pub seq: u64,
    /// The last record id the request holds (it holds every unacked record up to it).
    pub last_id: u64,
    /// The `dropped_samples` the request reports.
    pub dropped: u64,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolState {
    /// The first record id not yet acked.
    pub next_unacked: u64,
    /// The `seq` of the next new request.
    pub next_seq: u64,
    /// Dropped samples not yet reported to the server in an accepted batch.
    pub dropped_pending: u64,
    /// All samples ever dropped by this spool (caps and quarantine).
    pub dropped_total: u64,
    #[serde(default)]
    /// The request in flight, if any (resent first after a restart).
    pub inflight: Option<Inflight>,
    /// Samples of the request in flight that a cap dropped while it was being sent: if that
    /// attempt succeeds they were delivered after all and are taken off the drop counts.
    #[serde(default)]
    pub inflight_dropped: u64,
}

impl Spool {
    /// Marks every record up to and including `id` as delivered, clears the request in flight
    /// and lowers the unreported drop count by `reported_dropped`; persists the state and
    /// deletes fully acked segments. Returns the samples counted as dropped that the request
    /// delivered after all (a cap dropped them while it was on the wire).
    pub fn ack_through(&mut self, id: u64, reported_dropped: u64) -> Result<u64, SpoolError> {
        self.state.next_unacked = self.state.next_unacked.max(id + 1);
        self.state.dropped_pending = self.state.dropped_pending.saturating_sub(reported_dropped);
        let restored = std::mem::take(&mut self.state.inflight_dropped);
        if restored > 0 {
            self.state.dropped_pending = self.state.dropped_pending.saturating_sub(restored);
            self.state.dropped_total = self.state.dropped_total.saturating_sub(restored);
            info!(
                message = "Dropped sweeps were in the request the server just accepted; not dropped after all.",
                samples = restored
            );
        }
        self.state.inflight = None;
        self.persist()?;
        self.gc()?;
        Ok(restored)
    }

    /// The request in flight is about to be rebuilt from what the spool still holds: drops of
    /// its records are final.
    pub fn settle_inflight_drops(&mut self) {
        self.state.inflight_dropped = 0;
    }

    pub(super) fn note_drop(&mut self, id: u64, samples: u32) {
        if self.state.inflight.is_some_and(|i| id <= i.last_id) {
            self.state.inflight_dropped += samples as u64;
        }
    }

    /// Records the request about to be sent (so a restart resends the same request with the
    /// same `seq`) and persists it. A new request takes `next_seq`.
    pub fn set_inflight(&mut self, inflight: Inflight) -> Result<(), SpoolError> {
        self.state.next_seq = self.state.next_seq.max(inflight.seq + 1);
        self.state.inflight = Some(inflight);
        self.persist()
    }

    /// Takes `seq` for a request that holds no record (it only reports drops).
    pub fn take_seq(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.state.next_seq = self.state.next_seq.max(seq + 1);
        self.persist()
    }

    /// The server accepted a request that only reported `reported` dropped samples.
    pub fn ack_dropped(&mut self, reported: u64) -> Result<(), SpoolError> {
        self.state.dropped_pending = self.state.dropped_pending.saturating_sub(reported);
        self.persist()
    }

    /// Forgets the request in flight without acking (e.g. it is to be split), giving its `seq`
    /// back when the server never accepted it.
    pub fn clear_inflight(&mut self, reuse_seq: bool) -> Result<(), SpoolError> {
        self.state.inflight_dropped = 0;
        if let Some(inf) = self.state.inflight.take() {
            if reuse_seq && self.state.next_seq == inf.seq + 1 {
                self.state.next_seq = inf.seq;
            }
        }
        self.persist()
    }

    /// Counts samples dropped outside the caps (e.g. quarantined) so they are reported.
    pub fn count_dropped(&mut self, d: Dropped) -> Result<(), SpoolError> {
        self.state.dropped_pending += d.samples;
        self.state.dropped_total += d.samples;
        self.persist()
    }

    pub(super) fn persist(&self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(STATE_FILE);
        let body = serde_json::to_vec(&self.state)
            .map_err(|e| SpoolError::State { path: path.clone(), reason: e.to_string() })?;
        write_atomic(&self.cfg.dir, STATE_FILE, &body, self.cfg.fsync)
    }
}

/// Reads the ledger; a missing or damaged one starts from the beginning (resending is harmless).
pub(super) fn read_state(dir: &Path) -> Result<SpoolState, SpoolError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => Ok(s),
            Err(e) => {
                // The state file is replaced atomically, so this is outside damage. Start from
                // the beginning: resending is harmless (idempotent writes), losing is not.
                warn!(
                    message = "Spool state unreadable; resending everything spooled.",
                    path = %path.display(),
                    error = %e
                );
                Ok(SpoolState::default())
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SpoolState::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}
