//! Writing a batch: one `/write` request with its samples, its host totals and, last, the
//! host's bookkeeping point (see the crate doc, "Schema" and "Failures").
//!
//! The host's bookkeeping (`BatchState`) is kept in memory, so a batch costs one request and no
//! query: it is read back from InfluxDB at a host's first batch, after any failed write, and
//! whenever this store did not handle the host's previous batch within
//! [`TRUST_INTERVALS`] of its interval (its agent may have talked to another replica since).

use procwatch_model::{Batch, TsMs};
use procwatch_store::memory::check_batch;
use procwatch_store::{agg, StoreError, StoreResult, WriteOutcome};

use crate::bookkeeping::BatchState;
use crate::line::{self, int, write_point, Field};
use crate::schema::BATCH;
use crate::{InfluxStore, WRITE_CHUNK};

/// The cached bookkeeping is trusted while the host's previous batch went through this store
/// less than 1.5 intervals ago: an agent sends its next batch one interval after the last,
/// so a host whose batches alternate between replicas is seen here at most every 2 intervals
/// and is always read back.
pub(crate) const TRUST_INTERVALS: f64 = 1.5;

/// A host's bookkeeping as this store last wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    state: BatchState,
    /// When (store clock) this store wrote it.
    at: TsMs,
}

/// Refuses names with control characters (SPEC section 2; the line protocol cannot carry
/// them either).
pub(crate) fn check_name(what: &str, s: &str) -> StoreResult<()> {
    if s.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!("{what} {s:?} contains a control character")));
    }
    Ok(())
}

impl InfluxStore {
    pub(crate) async fn write_lines(&self, rp: Option<&str>, lines: &[String]) -> StoreResult<()> {
        for chunk in lines {
            self.client.write(&self.cfg.db, rp, chunk).await?;
        }
        Ok(())
    }

    pub(crate) async fn write_batch_inner(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        check_batch(batch)?;
        check_name("host", &batch.host)?;
        for s in &batch.samples {
            check_name("process", &s.process)?;
        }
        let schema = self.schema().await?;
        let rp = schema.data_rp.as_deref();
        let host = batch.host.as_str();

        // Samples and host totals, in chunks of WRITE_CHUNK points.
        let mut chunks = Vec::new();
        let mut cur = String::new();
        let mut n = 0;
        let push = |cur: &mut String, n: &mut usize, chunks: &mut Vec<String>| {
            *n += 1;
            if *n == WRITE_CHUNK {
                chunks.push(std::mem::take(cur));
                *n = 0;
            }
        };
        for s in &batch.samples {
            line::sample_point(&mut cur, host, s);
            push(&mut cur, &mut n, &mut chunks);
            if crate::extras::extras_point(&mut cur, host, s)? {
                push(&mut cur, &mut n, &mut chunks);
            }
        }
        for t in &batch.host_totals {
            line::host_total_point(&mut cur, host, t);
            push(&mut cur, &mut n, &mut chunks);
        }
        if !cur.is_empty() {
            chunks.push(cur);
        }

        let slot = self
            .host_locks
            .lock()
            .expect("host locks")
            .entry(host.to_string())
            .or_default()
            .clone();
        // One batch of a host at a time in this store; the slot holds its cached bookkeeping.
        let mut cached = slot.lock().await;
        let now = self.clock.now_ms();
        let trusted = cached.take().filter(|c| {
            let interval = c.state.interval_ms.max(batch.interval_ms) as f64;
            ((now - c.at) as f64) < interval * TRUST_INTERVALS
        });
        let prev = match trusted {
            Some(c) => Some(c.state),
            None => self.batch_state(&schema, host).await?,
        };
        let newest =
            batch.samples.iter().map(|s| s.ts).chain(batch.host_totals.iter().map(|t| t.ts)).max();
        let prev_seq = prev.as_ref().map(|p| (p.last_seq, p.seq_gaps));
        let (last_seq, seq_gaps, gap, is_new) = agg::seq_update(prev_seq, batch.seq);
        let p = prev.unwrap_or_default();
        let state = BatchState {
            time: now.max(p.time + 1),
            last_seq,
            seq_gaps,
            dropped_samples: p.dropped_samples + if is_new { batch.dropped_samples } else { 0 },
            // A batch declaring no interval (0: an older agent's heartbeat) keeps the known one.
            interval_ms: if is_new && batch.interval_ms > 0 {
                batch.interval_ms
            } else {
                p.interval_ms
            },
            last_seen: newest.map_or(p.last_seen, |ts| ts.max(p.last_seen)),
        };
        // The batch point is the last line of the last request: `hosts()` counts a batch once
        // the request carrying its last points is stored (see the crate doc, "Failures").
        if chunks.is_empty() {
            chunks.push(String::new());
        }
        let line = chunks.last_mut().expect("a chunk");
        write_point(
            line,
            BATCH,
            &[("host", host)],
            &[
                ("seq", int(batch.seq)),
                ("last_seq", int(state.last_seq)),
                ("seq_gaps", int(state.seq_gaps)),
                ("dropped_samples", int(state.dropped_samples)),
                ("interval_ms", int(state.interval_ms)),
                ("last_seen", Field::Int(state.last_seen)),
            ],
            state.time,
        );
        // On failure the slot stays empty: the next batch of this host reads the bookkeeping
        // back from InfluxDB (which may or may not hold this batch's point).
        if chunks.len() == 1 {
            // One request's worth: combined with other batches waiting at the same time.
            let lines = chunks.pop().expect("one chunk");
            self.writes.write(rp, lines).await?;
        } else {
            self.write_lines(rp, &chunks).await?;
        }
        *cached = Some(Cached { state, at: now });
        Ok(WriteOutcome {
            samples: batch.samples.len(),
            host_totals: batch.host_totals.len(),
            seq_gap: gap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused() {
        assert!(check_name("process", "a\nb").is_err());
        assert!(check_name("process", "a\u{1A}b").is_err());
        assert!(check_name("process", "ok name, with = and \\").is_ok());
    }
}
