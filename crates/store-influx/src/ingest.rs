//! Writing a batch: line protocol for its samples and host totals, then the host's
//! bookkeeping point.

use procwatch_model::Batch;
use procwatch_store::memory::check_batch;
use procwatch_store::{agg, StoreError, StoreResult, WriteOutcome};

use crate::bookkeeping::BatchState;
use crate::line::{self, int, write_point, Field};
use crate::schema::BATCH;
use crate::{InfluxStore, WRITE_CHUNK};

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
        }
        for t in &batch.host_totals {
            line::host_total_point(&mut cur, host, t);
            push(&mut cur, &mut n, &mut chunks);
        }
        if !cur.is_empty() {
            chunks.push(cur);
        }

        let host_lock = self
            .host_locks
            .lock()
            .expect("host locks")
            .entry(host.to_string())
            .or_default()
            .clone();
        let _one_batch_of_this_host = host_lock.lock().await;
        // The data and the host's previous bookkeeping, concurrently; the batch point last, so
        // `hosts()` only counts batches whose data is stored.
        let (_, prev) =
            tokio::try_join!(self.write_lines(rp, &chunks), self.batch_state(&schema, host))?;
        let newest =
            batch.samples.iter().map(|s| s.ts).chain(batch.host_totals.iter().map(|t| t.ts)).max();
        let prev_seq = prev.as_ref().map(|p| (p.last_seq, p.seq_gaps));
        let (last_seq, seq_gaps, gap, is_new) = agg::seq_update(prev_seq, batch.seq);
        let p = prev.unwrap_or_default();
        let state = BatchState {
            time: self.clock.now_ms().max(p.time + 1),
            last_seq,
            seq_gaps,
            dropped_samples: p.dropped_samples + if is_new { batch.dropped_samples } else { 0 },
            interval_ms: if is_new { batch.interval_ms } else { p.interval_ms },
            last_seen: newest.map_or(p.last_seen, |ts| ts.max(p.last_seen)),
        };
        let mut line = String::new();
        write_point(
            &mut line,
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
        self.client.write(&self.cfg.db, rp, &line).await?;
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
