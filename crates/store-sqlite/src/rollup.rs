//! 5-minute roll-ups (`procwatch_store::rollup::Bucket`) in the `rollups` table, kept
//! `rollup_retention_ms` (30 days) while raw samples go after `retention_ms` (48 h).
//!
//! **Incremental and kill -9 safe.** A bucket changes only when samples of it reach the
//! chunks: every fold (of the live head or of late rows) updates, *in its own transaction*,
//! the buckets its records touch. Records newer than the newest sample a bucket holds (its
//! `last_ts`: the live head, in order) are added to its row; any other (a late sample, a
//! rewrite) makes the bucket be recomputed from the chunks as they are after the fold (merged
//! by `gen`, so a rewrite replaces and a late sample is added exactly once). A crash leaves
//! either the fold with its buckets or neither. Nothing rescans history.
//!
//! **Rows and blocks.** Rows hold the recent buckets only: closed ones are packed into one
//! compressed blob per series and day (`rollup_pack.rs`). A bucket without a row that its
//! day's block holds (or is older than the block's last bucket) is packed: a fold touching
//! it recomputes it from the chunks into the block.
//!
//! **Which buckets the table answers.** Every sample older than the memory floor `F` is in
//! the chunks or in a late head row, so buckets before `bucket_start(F)` are complete in the
//! table once the late rows are folded; until then a query recomputes the buckets touched by
//! the host's pending late rows from raw (chunks and late rows). Buckets from
//! `bucket_start(F)` on come from raw samples (memory and head) at query time.
//!
//! **Retention.** Raw retention deletes chunks after their buckets were computed (it folds
//! the head and late rows first); roll-ups older than the roll-up cutoff are deleted by the
//! maintenance pass, hourly, series by series. A bucket straddling the raw retention floor is not recomputed any more
//! (its older raw samples may be gone): a late sample landing there (≤ 5 minutes of it) is
//! kept raw but not added to the bucket.
//!
//! A database written before roll-ups existed gets them computed from its chunks once, at
//! open (`backfill`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;

use procwatch_model::TsMs;
use procwatch_store::rollup::{self, Bucket};
use procwatch_store::{
    agg, HistoryAnswer, HistoryQuery, Resolution, StoreError, StoreResult, ROLLUP_MS,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::Columns;
use crate::disk::{disk_series, late_rows};
use crate::head::HeadRec;
use crate::inner::Inner;
use crate::rollup_pack;
use crate::schema::db_err;

/// The roll-up table of recent (not yet packed) buckets, one row per series and bucket, keyed by both (no other index: it would
/// cost a fifth of the table; retention deletes series by series instead). REAL columns
/// holding whole numbers (idle cpu, sums of rss and count) take SQLite's integer encoding.
pub(crate) const ROLLUP_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollups(series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
  n INTEGER NOT NULL, cpu_min REAL NOT NULL, cpu_sum REAL NOT NULL, cpu_max REAL NOT NULL,
  mem_min REAL NOT NULL, mem_sum REAL NOT NULL, mem_max REAL NOT NULL, cores_sum REAL NOT NULL,
  rss_sum REAL NOT NULL, count_sum REAL NOT NULL, last_ts INTEGER NOT NULL,
  PRIMARY KEY(series_id, bucket)) WITHOUT ROWID;
";

/// 5-minute buckets of columns sorted by ts.
pub(crate) fn buckets_of_columns(c: &Columns) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for i in 0..c.len() {
        let b = agg::bucket_start(c.ts[i], ROLLUP_MS);
        if out.last().is_none_or(|l| l.start != b) {
            out.push(Bucket::new(b));
        }
        out.last_mut().expect("pushed").push(c.cpu[i], c.cores[i], c.mem[i], c.rss[i], c.count[i]);
    }
    out
}

/// Brings every bucket the folded records touch up to date (`conn` is the fold's
/// transaction, the records' chunks already inserted; `recs` sorted by (series, ts) without
/// duplicates, as `fold_head_rows` leaves them). Buckets starting before `floor` (the raw
/// retention floor: older raw samples may be gone) are left alone.
///
/// The common case, samples newer than every sample the bucket holds (`last_ts`), adds them
/// to the stored row: the sums come out as a recomputation in time order would give them.
/// Otherwise (a late sample, a rewrite) the bucket is recomputed from the chunks, merged by
/// `gen`. A bucket without a row is either packed (its day's block holds it or a later
/// bucket: recomputed into the block) or holds no earlier sample: every sample that reached
/// the chunks went through here.
pub(crate) fn refresh(conn: &Connection, recs: &[HeadRec], floor: TsMs) -> StoreResult<()> {
    let mut get = conn
        .prepare_cached(
            "SELECT n, cpu_min, cpu_sum, cpu_max, mem_min, mem_sum, mem_max, cores_sum, rss_sum, count_sum, last_ts FROM rollups WHERE series_id = ?1 AND bucket = ?2",
        )
        .map_err(db_err)?;
    let mut put = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO rollups(series_id, bucket, n, cpu_min, cpu_sum, cpu_max, mem_min, mem_sum, mem_max, cores_sum, rss_sum, count_sum, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(db_err)?;
    let mut del = conn
        .prepare_cached("DELETE FROM rollups WHERE series_id = ?1 AND bucket = ?2")
        .map_err(db_err)?;
    let mut i = 0;
    while i < recs.len() {
        let (sid, b) = (recs[i].sid, agg::bucket_start(recs[i].ts, ROLLUP_MS));
        let mut j = i;
        while j < recs.len() && recs[j].sid == sid && agg::bucket_start(recs[j].ts, ROLLUP_MS) == b
        {
            j += 1;
        }
        let group = &recs[i..j];
        i = j;
        if b < floor {
            continue;
        }
        let stored: Option<(Bucket, TsMs)> = get
            .query_row(params![sid, b], |r| Ok((bucket_at(r, b, 0)?, r.get(10)?)))
            .optional()
            .map_err(db_err)?;
        let fresh = match stored {
            Some((mut k, last)) if group[0].ts > last => {
                group.iter().for_each(|r| k.push(r.cpu, r.cores, r.mem, r.rss, r.count));
                Some((k, group[group.len() - 1].ts))
            }
            None if rollup_pack::block_last(conn, sid, b)?.is_some_and(|last| b <= last) => {
                // Packed: recomputed from the chunks into its day's block.
                let c = disk_series(conn, sid, &[], b, b + ROLLUP_MS)?;
                rollup_pack::update_packed(conn, sid, b, buckets_of_columns(&c).first().copied())?;
                continue;
            }
            None => {
                let mut k = Bucket::new(b);
                group.iter().for_each(|r| k.push(r.cpu, r.cores, r.mem, r.rss, r.count));
                Some((k, group[group.len() - 1].ts))
            }
            Some(_) => {
                let c = disk_series(conn, sid, &[], b, b + ROLLUP_MS)?;
                let last = c.ts.last().copied();
                buckets_of_columns(&c).first().copied().zip(last)
            }
        };
        match fresh {
            Some((k, last)) => put
                .execute(params![
                    sid,
                    b,
                    k.n as i64,
                    k.cpu_min,
                    k.cpu_sum,
                    k.cpu_max,
                    k.mem_min,
                    k.mem_sum,
                    k.mem_max,
                    k.cores_sum,
                    k.rss_sum,
                    k.count_sum,
                    last
                ])
                .map_err(db_err)?,
            None => del.execute(params![sid, b]).map_err(db_err)?,
        };
    }
    Ok(())
}

/// The row table's buckets of one series in `[from, to)`, by start (see `read_stored`).
/// The bucket starting at `start` whose columns `n, cpu_min, cpu_sum, cpu_max, mem_min,
/// mem_sum, mem_max, cores_sum, rss_sum, count_sum` begin at column `i` of `r`.
fn bucket_at(r: &rusqlite::Row<'_>, start: TsMs, i: usize) -> rusqlite::Result<Bucket> {
    Ok(Bucket {
        start,
        n: r.get::<_, i64>(i)? as u64,
        cpu_min: r.get(i + 1)?,
        cpu_sum: r.get(i + 2)?,
        cpu_max: r.get(i + 3)?,
        mem_min: r.get(i + 4)?,
        mem_sum: r.get(i + 5)?,
        mem_max: r.get(i + 6)?,
        cores_sum: r.get(i + 7)?,
        rss_sum: r.get(i + 8)?,
        count_sum: r.get(i + 9)?,
    })
}

pub(crate) fn read_rows(
    conn: &Connection,
    sid: u32,
    from: TsMs,
    to: TsMs,
) -> StoreResult<Vec<Bucket>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT bucket, n, cpu_min, cpu_sum, cpu_max, mem_min, mem_sum, mem_max, cores_sum, rss_sum, count_sum FROM rollups WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
        )
        .map_err(db_err)?;
    let rows =
        stmt.query_map(params![sid, from, to], |r| bucket_at(r, r.get(0)?, 1)).map_err(db_err)?;
    rows.collect::<Result<_, _>>().map_err(db_err)
}

/// Computes the roll-ups of every chunk once, for a database written before roll-ups
/// existed (marked done in `meta`). Runs at open, before anything else writes.
pub(crate) fn backfill(conn: &Connection) -> StoreResult<()> {
    let done: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'rollups_v1'", [], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    if done.is_some() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let sids: Vec<u32> = {
        let mut st = tx.prepare("SELECT DISTINCT series_id FROM chunks").map_err(db_err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    for sid in sids {
        let c = disk_series(&tx, sid, &[], TsMs::MIN, TsMs::MAX)?;
        let recs: Vec<HeadRec> = (0..c.len())
            .map(|i| HeadRec {
                sid,
                ts: c.ts[i],
                cpu: c.cpu[i],
                cores: c.cores[i],
                mem: c.mem[i],
                rss: c.rss[i],
                count: c.count[i],
            })
            .collect();
        refresh(&tx, &recs, TsMs::MIN)?;
    }
    tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rollups_v1', 1)", [])
        .map_err(db_err)?;
    tx.commit().map_err(db_err)
}

impl Inner {
    /// `Storage::history_answer`: see the module doc for where each bucket comes from.
    pub(crate) fn history_answer(&self, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
        let rfloor = self.retention_floor.load(Ordering::SeqCst);
        let horizon = (self.opts.clock.now_ms() - self.opts.retention_ms).max(rfloor);
        let (resolution, step_ms) = rollup::pick_resolution(q, horizon);
        if resolution == Resolution::Raw {
            let points = self.history(q)?;
            return Ok(HistoryAnswer { resolution, step_ms, points });
        }
        let sels = self.select(Some(&q.host), Some(&q.process));
        let Some(sel) = sels.first() else {
            return Err(StoreError::NotFound(format!("{}/{}", q.host, q.process)));
        };
        let (from, to) = rollup::rollup_range(q.from, q.to, step_ms);
        // Buckets before `split` come from the table; from `split` on, from raw samples.
        let split = agg::bucket_start(sel.host.index.read().floor, ROLLUP_MS).clamp(from, to);
        let mut buckets: BTreeMap<TsMs, Bucket> = BTreeMap::new();
        if from < split {
            self.with_reader(|conn| {
                // Packed buckets, then rows (a row would be the newer, were both there).
                for b in rollup_pack::read_blocks(conn, sel.sid, from, split)? {
                    buckets.insert(b.start, b);
                }
                for b in read_rows(conn, sel.sid, from, split)? {
                    buckets.insert(b.start, b);
                }
                // Buckets with samples still in unfolded late rows: from raw, exactly.
                let late = late_rows(conn, sel.host.id, from.max(rfloor), split)?;
                let mut stale: BTreeSet<TsMs> = BTreeSet::new();
                for (_, recs) in &late {
                    stale.extend(
                        recs.iter()
                            .filter(|r| r.sid == sel.sid && r.ts >= from && r.ts < split)
                            .map(|r| agg::bucket_start(r.ts, ROLLUP_MS))
                            .filter(|&b| b >= rfloor),
                    );
                }
                for b in stale {
                    let c = disk_series(conn, sel.sid, &late, b, b + ROLLUP_MS)?;
                    let fresh: HashMap<TsMs, Bucket> =
                        buckets_of_columns(&c).into_iter().map(|k| (k.start, k)).collect();
                    match fresh.get(&b) {
                        Some(k) => buckets.insert(b, *k),
                        None => buckets.remove(&b),
                    };
                }
                Ok(())
            })?;
        }
        if split < to {
            let cols = self.series_columns(std::slice::from_ref(sel), split.max(rfloor), to)?;
            for b in buckets_of_columns(&cols[0]) {
                buckets.insert(b.start, b);
            }
        }
        let buckets: Vec<Bucket> = buckets.into_values().collect();
        Ok(HistoryAnswer {
            resolution,
            step_ms,
            points: rollup::points_from_buckets(&buckets, step_ms),
        })
    }

    /// Deletes roll-up rows of buckets that start before `cutoff`, series by series (a range
    /// of the primary key each), and the packed blocks of days ended by then. Returns the
    /// rows and blocks deleted.
    /// Runs when the cutoff, rounded down to an hour, has moved (hourly at most).
    pub(crate) fn apply_rollup_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        let cutoff = agg::bucket_start(cutoff, 3_600_000);
        if cutoff <= self.rollup_floor.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let rows = "DELETE FROM rollups WHERE series_id = ?1 AND bucket < ?2";
        let n = self.delete_per_series(rows, cutoff)? + self.drop_blocks(cutoff)?;
        self.rollup_floor.store(cutoff, Ordering::SeqCst);
        Ok(n)
    }

    /// Runs `delete` (parameters: a series id, then `bound`) for every series, in parts of
    /// 4,096 series to a transaction so that writers wait for one part at most. Returns the
    /// rows deleted.
    pub(crate) fn delete_per_series(&self, delete: &str, bound: i64) -> StoreResult<u64> {
        let sids: Vec<u32> = self.catalog.read().series.keys().copied().collect();
        let mut n = 0;
        for part in sids.chunks(4096) {
            let mut w = self.writer.lock();
            let tx = w.conn.transaction().map_err(db_err)?;
            {
                let mut del = tx.prepare_cached(delete).map_err(db_err)?;
                for sid in part {
                    n += del.execute(params![sid, bound]).map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
        }
        Ok(n as u64)
    }
}
