//! Packed roll-ups: the closed 5-minute buckets of a series, one blob per UTC day in
//! `rollup_blocks` (`rollup_codec.rs`), so 30 days of history cost a few bytes per bucket
//! instead of a ~90-byte row each.
//!
//! **Which buckets are packed.** A bucket is closed once the memory floor `F` passed its end:
//! every in-order sample of it was folded. The maintenance pass packs the rows of buckets
//! before `F` rounded down to `rollup_pack_ms` (1 h) whenever that point moves: per series,
//! it merges them into the day's block and deletes them, in one transaction (a kill -9 leaves
//! either the rows or the block holding them, never both, never neither). Rows thus hold only
//! the last hour or so past the memory window; queries read blocks and rows.
//!
//! **Late samples.** A fold touching a packed bucket (one the day's block holds, or older
//! than its last bucket: `last`) recomputes the bucket from the chunks, as it does for a row
//! (`rollup::refresh`), and rewrites the day's block in the fold's transaction. So packing
//! changes no answer: a bucket is exact wherever it lives.
//!
//! **Retention.** Whole blocks go once their day ended before the roll-up cutoff: roll-ups
//! are kept `rollup_retention_ms` at least, and at most a day longer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use procwatch_model::TsMs;
use procwatch_store::rollup::Bucket;
use procwatch_store::{agg, StoreResult, ROLLUP_MS};
use rusqlite::{params, Connection, OptionalExtension};

use crate::inner::Inner;
use crate::rollup::read_rows;
use crate::rollup_codec;
use crate::schema::{blob_at, db_err, other};

/// One UTC day: the span of a block.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// One row per series and day: `last` is the start of its newest bucket (read without the
/// blob, to tell a new bucket from a packed one). A rowid table with a unique index, not
/// `WITHOUT ROWID`: its records (a kilobyte or more) sit in an index b-tree at four per page at
/// most, about half full after VACUUM (measured: 2.2× the blob bytes), while a table b-tree
/// packs them (and spills the rest of a long blob to full overflow pages).
pub(crate) const BLOCK_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollup_blocks(series_id INTEGER NOT NULL, day INTEGER NOT NULL,
  last INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS rollup_blocks_key ON rollup_blocks(series_id, day);
";

/// The start of `b`'s UTC day (saturating: `TsMs::MIN` stands for "from the beginning").
fn day_of(b: TsMs) -> TsMs {
    b.saturating_sub(b.rem_euclid(DAY_MS))
}

/// The start of the newest bucket packed in `b`'s day block, if there is one.
pub(crate) fn block_last(conn: &Connection, sid: u32, b: TsMs) -> StoreResult<Option<TsMs>> {
    conn.prepare_cached("SELECT last FROM rollup_blocks WHERE series_id = ?1 AND day = ?2")
        .and_then(|mut st| st.query_row(params![sid, day_of(b)], |r| r.get(0)).optional())
        .map_err(db_err)
}

fn read_block(conn: &Connection, sid: u32, day: TsMs) -> StoreResult<Vec<Bucket>> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT data FROM rollup_blocks WHERE series_id = ?1 AND day = ?2")
        .and_then(|mut st| st.query_row(params![sid, day], |r| r.get(0)).optional())
        .map_err(db_err)?;
    match blob {
        Some(b) => rollup_codec::decode(&b).map_err(other),
        None => Ok(Vec::new()),
    }
}

/// Writes a day's block (sorted buckets), deleting it when empty.
fn write_block(conn: &Connection, sid: u32, day: TsMs, buckets: &[Bucket]) -> StoreResult<()> {
    match buckets.last() {
        Some(last) => conn
            .prepare_cached(
                "INSERT OR REPLACE INTO rollup_blocks(series_id, day, last, data) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![sid, day, last.start, rollup_codec::encode(buckets)])
            }),
        None => conn
            .prepare_cached("DELETE FROM rollup_blocks WHERE series_id = ?1 AND day = ?2")
            .and_then(|mut st| st.execute(params![sid, day])),
    }
    .map(|_| ())
    .map_err(db_err)
}

/// Replaces packed bucket `b` by `fresh` (or removes it) in its day's block.
pub(crate) fn update_packed(
    conn: &Connection,
    sid: u32,
    b: TsMs,
    fresh: Option<Bucket>,
) -> StoreResult<()> {
    let day = day_of(b);
    let mut buckets = read_block(conn, sid, day)?;
    buckets.retain(|k| k.start != b);
    if let Some(k) = fresh {
        let at = buckets.partition_point(|x| x.start < b);
        buckets.insert(at, k);
    }
    write_block(conn, sid, day, &buckets)
}

/// The packed buckets of one series in `[from, to)`, by start.
pub(crate) fn read_blocks(
    conn: &Connection,
    sid: u32,
    from: TsMs,
    to: TsMs,
) -> StoreResult<Vec<Bucket>> {
    let mut st = conn
        .prepare_cached(
            "SELECT data FROM rollup_blocks WHERE series_id = ?1 AND day >= ?2 AND day < ?3 ORDER BY day",
        )
        .map_err(db_err)?;
    let mut rows = st.query(params![sid, day_of(from), to]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let blob = blob_at(row, 0)?;
        let buckets = rollup_codec::decode(blob).map_err(other)?;
        out.extend(buckets.into_iter().filter(|k| k.start >= from && k.start < to));
    }
    Ok(out)
}

/// Moves the rows of one series' buckets before `to` into their day blocks (`conn` is a
/// transaction). Returns the rows packed.
fn pack_series(conn: &Connection, sid: u32, to: TsMs) -> StoreResult<usize> {
    let rows = read_rows(conn, sid, TsMs::MIN, to)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut days: BTreeMap<TsMs, Vec<Bucket>> = BTreeMap::new();
    for k in &rows {
        days.entry(day_of(k.start)).or_default().push(*k);
    }
    for (day, fresh) in days {
        let mut all: BTreeMap<TsMs, Bucket> =
            read_block(conn, sid, day)?.into_iter().map(|k| (k.start, k)).collect();
        all.extend(fresh.into_iter().map(|k| (k.start, k)));
        write_block(conn, sid, day, &all.into_values().collect::<Vec<_>>())?;
    }
    conn.prepare_cached("DELETE FROM rollups WHERE series_id = ?1 AND bucket < ?2")
        .and_then(|mut st| st.execute(params![sid, to]))
        .map_err(db_err)?;
    Ok(rows.len())
}

/// Every stored bucket, rows and blocks, by (process, start): for tests and tools.
pub(crate) fn stored(conn: &Connection) -> StoreResult<Vec<(String, Bucket)>> {
    let mut out: Vec<(String, Bucket)> = Vec::new();
    let sids: Vec<(u32, String)> = {
        let mut st = conn.prepare("SELECT id, process FROM series").map_err(db_err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    for (sid, process) in sids {
        let mut all: BTreeMap<TsMs, Bucket> = BTreeMap::new();
        all.extend(read_blocks(conn, sid, TsMs::MIN, TsMs::MAX)?.into_iter().map(|k| (k.start, k)));
        all.extend(read_rows(conn, sid, TsMs::MIN, TsMs::MAX)?.into_iter().map(|k| (k.start, k)));
        out.extend(all.into_values().map(|k| (process.clone(), k)));
    }
    out.sort_by(|a, b| (&a.0, a.1.start).cmp(&(&b.0, b.1.start)));
    Ok(out)
}

impl Inner {
    /// Packs the rows of closed buckets (before the memory floor rounded down to
    /// `rollup_pack_ms`) when that point moved, series by series in short transactions.
    /// Returns the rows packed.
    pub(crate) fn pack_rollups(&self) -> StoreResult<u64> {
        let step = self.opts.rollup_pack_ms;
        let floor = self.floor.load(Ordering::SeqCst);
        // The pass runs when the rounded floor moved (every pass with a step of 0); it packs
        // whole buckets before it.
        let point = agg::bucket_start(floor, step);
        if step > 0 && point <= self.packed_to.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let to = agg::bucket_start(point, ROLLUP_MS);
        let sids: Vec<u32> = self.catalog.read().series.keys().copied().collect();
        let mut n = 0;
        for part in sids.chunks(1024) {
            // Short transactions: writers wait for one part at most.
            let mut w = self.writer.lock();
            let tx = w.conn.transaction().map_err(db_err)?;
            for &sid in part {
                n += pack_series(&tx, sid, to)?;
            }
            tx.commit().map_err(db_err)?;
        }
        self.packed_to.store(point, Ordering::SeqCst);
        Ok(n as u64)
    }

    /// Deletes the blocks of days that ended at or before `cutoff`, series by series.
    pub(crate) fn drop_blocks(&self, cutoff: TsMs) -> StoreResult<u64> {
        let blocks = "DELETE FROM rollup_blocks WHERE series_id = ?1 AND day <= ?2";
        self.delete_per_series(blocks, cutoff.saturating_sub(DAY_MS))
    }
}
