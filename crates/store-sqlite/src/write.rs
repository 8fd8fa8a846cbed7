//! The write path: one transaction per batch (head rows, host totals, host state), then memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use procwatch_model::{Batch, HostTotal, TsMs};
use procwatch_store::host_book::HostBook;
use procwatch_store::memory::check_batch;
use procwatch_store::{StoreError, StoreResult, WriteOutcome};
use rusqlite::{params, TransactionBehavior};

use crate::catalog::HostEntry;
use crate::head::{encode_head, HeadRec};
use crate::index::HostIndex;
use crate::inner::{Inner, Writer, LATE_ROWS_WAKE};
use crate::options::Durability;
use crate::schema::db_err;

impl Inner {
    /// With `Durability::Power`, returns once the WAL holding commit `ticket` is fsynced
    /// (group commit); call after the writer lock is released.
    pub(crate) fn sync_wal(&self, ticket: u64) -> StoreResult<()> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        self.wal_sync.wait(Path::new(&wal), ticket).map_err(|e| {
            StoreError::Unavailable(format!("fsync of the write-ahead log failed: {e}"))
        })
    }

    pub(crate) fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        check_batch(batch)?;
        let mut w = self.writer.lock();
        let floor = self.floor.load(Ordering::SeqCst);
        let rfloor = self.retention_floor.load(Ordering::SeqCst);
        let existing = self.catalog.read().hosts.get(&batch.host).cloned();
        let res = self.write_locked(&mut w, batch, existing.as_ref(), floor, rfloor);
        if res.is_ok() && self.opts.durability == Durability::Power {
            let ticket = self.wal_sync.ticket();
            drop(w);
            self.sync_wal(ticket)?;
            return res;
        }
        if res.is_err() {
            // Ids handed out inside the failed transaction are free again.
            let max = |sql: &str| {
                w.conn
                    .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            let (h, s) = (max("SELECT max(id) FROM hosts"), max("SELECT max(id) FROM series"));
            w.next_host = h as u32 + 1;
            w.next_series = s as u32 + 1;
        }
        res
    }

    pub(crate) fn write_locked(
        &self,
        w: &mut Writer,
        batch: &Batch,
        existing: Option<&Arc<HostEntry>>,
        floor: TsMs,
        rfloor: TsMs,
    ) -> StoreResult<WriteOutcome> {
        let host_id = existing.map_or(w.next_host, |h| h.id);
        let mut new_series: Vec<(String, u32)> = Vec::new();
        let mut head = Vec::with_capacity(batch.samples.len());
        let mut late: Vec<HeadRec> = Vec::new();
        let mut next_series = w.next_series;
        {
            let known = existing.map(|h| h.series.read());
            for s in &batch.samples {
                if s.ts < rfloor {
                    continue;
                }
                let sid = match known.as_ref().and_then(|k| k.get(&s.process)) {
                    Some(&sid) => sid,
                    None => match new_series.iter().find(|(p, _)| *p == s.process) {
                        Some((_, sid)) => *sid,
                        None => {
                            let sid = next_series;
                            next_series += 1;
                            new_series.push((s.process.clone(), sid));
                            sid
                        }
                    },
                };
                let rec = HeadRec {
                    sid,
                    ts: s.ts,
                    cpu: s.cpu,
                    cores: s.cores,
                    mem: s.mem,
                    rss: s.rss,
                    count: s.count,
                };
                if s.ts >= floor {
                    head.push(rec);
                } else {
                    late.push(rec);
                }
            }
        }
        let totals: Vec<&HostTotal> = batch.host_totals.iter().filter(|t| t.ts >= rfloor).collect();
        let mut state = existing.map(|h| h.state.lock().clone()).unwrap_or_default();
        let newest =
            head.iter().chain(&late).map(|r| r.ts).chain(totals.iter().map(|t| t.ts)).max();
        let gap = state.record(batch, newest, totals.iter().copied());
        let (last, gaps) = state.seq.unwrap_or_default();

        let gen = w.gen + 1;
        let tx =
            w.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        if existing.is_none() {
            tx.execute(
                "INSERT INTO hosts(id, name, last_seen, interval_ms, last_seq, seq_gaps, dropped) VALUES (?1, ?2, 0, 0, NULL, 0, 0)",
                params![host_id, batch.host],
            )
            .map_err(db_err)?;
        }
        {
            let mut st = tx
                .prepare_cached("INSERT INTO series(id, host_id, process) VALUES (?1, ?2, ?3)")
                .map_err(db_err)?;
            for (p, sid) in &new_series {
                st.execute(params![sid, host_id, p]).map_err(db_err)?;
            }
        }
        if !head.is_empty() {
            let min_ts = head.iter().map(|r| r.ts).min().unwrap_or(0);
            let max_ts = head.iter().map(|r| r.ts).max().unwrap_or(0);
            tx.prepare_cached(
                "INSERT INTO head(host_id, min_ts, max_ts, n, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![host_id, min_ts, max_ts, head.len() as i64, encode_head(&head)])
            })
            .map_err(db_err)?;
        }
        if !late.is_empty() {
            // Older than the memory floor: a late head row, read by disk queries and folded
            // into chunks by the next maintenance pass.
            let min_ts = late.iter().map(|r| r.ts).min().unwrap_or(0);
            let max_ts = late.iter().map(|r| r.ts).max().unwrap_or(0);
            tx.prepare_cached(
                "INSERT INTO head(host_id, min_ts, max_ts, n, gen, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![host_id, min_ts, max_ts, late.len() as i64, gen, encode_head(&late)])
            })
            .map_err(db_err)?;
        }
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO host_totals(host_id, ts, cpu, mem, unattributed) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err)?;
            for t in &totals {
                st.execute(params![host_id, t.ts, t.cpu, t.mem, t.unattributed_cpu])
                    .map_err(db_err)?;
            }
        }
        crate::extras::write_extras(&tx, host_id, batch, rfloor)?;
        tx.prepare_cached(
            "UPDATE hosts SET last_seen = ?2, interval_ms = ?3, last_seq = ?4, seq_gaps = ?5, dropped = ?6 WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                host_id,
                state.last_seen,
                state.interval_ms as i64,
                last as i64,
                gaps as i64,
                state.dropped_samples as i64
            ])
        })
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;

        // Committed: publish to memory.
        if !late.is_empty() {
            w.gen = gen;
            if self.late_rows.fetch_add(1, Ordering::SeqCst) + 1 >= LATE_ROWS_WAKE {
                if let Some(t) = self.maint_thread.lock().as_ref() {
                    t.unpark();
                }
            }
        }
        w.next_series = next_series;
        let entry = match existing {
            Some(e) => e.clone(),
            None => {
                w.next_host = host_id + 1;
                let e = Arc::new(HostEntry {
                    name: batch.host.clone(),
                    id: host_id,
                    state: Mutex::new(HostBook::default()),
                    index: RwLock::new(HostIndex::new(floor)),
                    series: RwLock::new(HashMap::new()),
                });
                let mut cat = self.catalog.write();
                cat.hosts.insert(batch.host.clone(), e.clone());
                cat.by_id.insert(host_id, e.clone());
                e
            }
        };
        if !new_series.is_empty() {
            let mut cat = self.catalog.write();
            let mut ser = entry.series.write();
            for (p, sid) in &new_series {
                ser.insert(p.clone(), *sid);
                cat.series.insert(*sid, (host_id, p.clone()));
            }
        }
        let cap = self.window_cap(state.interval_ms);
        *entry.state.lock() = state;
        {
            let mut idx = entry.index.write();
            idx.cap = cap;
            for s in &batch.samples {
                if s.ts >= floor && s.ts >= rfloor {
                    idx.upsert(&s.process, s.ts, s.cpu, s.cores, s.mem, s.rss, s.count);
                }
            }
        }
        Ok(WriteOutcome {
            samples: head.len() + late.len(),
            host_totals: totals.len(),
            seq_gap: gap,
        })
    }
}
