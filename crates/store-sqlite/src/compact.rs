//! Compaction: folding the head into level-0 chunks, late rows, merging complete blocks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use procwatch_model::TsMs;
use procwatch_store::{agg, StoreResult};
use rusqlite::{params, OptionalExtension};

use crate::catalog::HostEntry;
use crate::codec;
use crate::codec::Columns;
use crate::disk::merge_columns;
use crate::head::{decode_head, sort_dedup, HeadRec};
use crate::inner::Inner;
use crate::options::CompactStats;
use crate::rollup;
use crate::schema::{blob_at, db_err, other};

/// Replaces the head rows `ids`, already decoded into `recs`, by level-0 chunks of generation
/// `gen`, and recomputes the roll-up buckets they touch: the one fold step shared by the live
/// fold and the late-row fold.
pub(crate) fn fold_head_rows(
    tx: &rusqlite::Transaction,
    ids: &[i64],
    recs: &mut Vec<HeadRec>,
    gen: i64,
    block_ms: i64,
    rfloor: TsMs,
) -> StoreResult<()> {
    sort_dedup(recs);
    insert_chunks(tx, recs, gen, block_ms).map_err(db_err)?;
    let mut del = tx.prepare_cached("DELETE FROM head WHERE id = ?1").map_err(db_err)?;
    for id in ids {
        del.execute([id]).map_err(db_err)?;
    }
    // The buckets these samples fall in, in the same transaction (see `rollup`).
    rollup::refresh(tx, recs, rfloor)
}

/// Inserts level-0 chunks for sorted, deduplicated records (any series), split by block.
pub(crate) fn insert_chunks(
    tx: &rusqlite::Transaction,
    recs: &[HeadRec],
    gen: i64,
    block_ms: i64,
) -> rusqlite::Result<()> {
    let mut i = 0;
    while i < recs.len() {
        let sid = recs[i].sid;
        let block = agg::bucket_start(recs[i].ts, block_ms);
        let mut j = i;
        let mut c = Columns::default();
        while j < recs.len()
            && recs[j].sid == sid
            && agg::bucket_start(recs[j].ts, block_ms) == block
        {
            let r = &recs[j];
            c.push(r.ts, r.cpu, r.cores, r.mem, r.rss, r.count);
            j += 1;
        }
        put_chunk(tx, sid, gen, 0, &c)?;
        i = j;
    }
    Ok(())
}

/// The last head row (by arrival) reaching below the fold target. Through the `min_ts` index:
/// left to itself SQLite answered `max(id)` by walking the table back from its newest row,
/// reading every head row of the last minutes (each about a page) until one matched: 25–40 ms
/// a query, once per host and step, ≈ 55 s of a 60 s maintenance pass at 300,000 series
/// (BENCHMARKS.md, "Session 12").
pub(crate) const HEAD_PREFIX_END: &str =
    "SELECT max(id) FROM head INDEXED BY head_min_ts WHERE min_ts < ?1";
/// The host of the oldest head row in the prefix.
pub(crate) const HEAD_OLDEST_HOST: &str =
    "SELECT host_id FROM head WHERE id <= ?1 ORDER BY id LIMIT 1";
/// One host's rows in the prefix, oldest first: through `head_host` (host, rowid), not a scan
/// of the whole prefix (≈ 4,000 rows at 1,000 hosts) for each host's half dozen.
pub(crate) const HEAD_HOST_PREFIX: &str =
    "SELECT id, gen, data FROM head INDEXED BY head_host WHERE host_id = ?2 AND id <= ?1 ORDER BY id LIMIT 64";

impl Inner {
    /// Folds head rows so that every sample older than `target` is in chunks, then raises the
    /// memory floor to `target` and evicts memory. Returns the head rows folded.
    pub(crate) fn advance(&self, target: TsMs) -> StoreResult<u64> {
        let mut folded = 0u64;
        loop {
            let mut w = self.writer.lock();
            let floor = self.floor.load(Ordering::SeqCst);
            if target <= floor {
                return Ok(folded);
            }
            // The prefix of the head (by arrival) up to the last row reaching below target.
            let limit: Option<i64> =
                w.conn.query_row(HEAD_PREFIX_END, [target], |r| r.get(0)).map_err(db_err)?;
            let Some(limit) = limit else {
                let tx = w.conn.transaction().map_err(db_err)?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('mem_floor', ?1)",
                    [target],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                // Still under the writer lock: no write sees the new floor before memory does.
                self.floor.store(target, Ordering::SeqCst);
                let hosts: Vec<Arc<HostEntry>> =
                    self.catalog.read().hosts.values().cloned().collect();
                for h in hosts {
                    h.index.write().evict(target);
                }
                drop(w);
                return Ok(folded);
            };
            // Fold up to 64 rows of the host of the oldest row in the prefix.
            let host_id: i64 =
                w.conn.query_row(HEAD_OLDEST_HOST, [limit], |r| r.get(0)).map_err(db_err)?;
            let gen = w.gen + 1;
            let tx = w.conn.transaction().map_err(db_err)?;
            let n =
                self.fold_selected(&tx, HEAD_HOST_PREFIX, params![limit, host_id], Some(gen))?;
            tx.commit().map_err(db_err)?;
            w.gen = gen;
            folded += n;
        }
    }

    /// Merges the chunks of every complete block (ending at or before the memory floor) that
    /// still has level-0 chunks into one level-1 chunk (see [`merge_block`]).
    pub(crate) fn merge_blocks(&self) -> StoreResult<u64> {
        let b = self.opts.block_ms;
        let mut merged = 0u64;
        loop {
            let mut w = self.writer.lock();
            let floor = self.floor.load(Ordering::SeqCst);
            let block_floor = agg::bucket_start(floor, b);
            // A late head row not folded yet may be newer than chunks of a block: merging
            // would give its stale samples a higher gen. Wait for the fold.
            let pending: bool = w
                .conn
                .query_row("SELECT EXISTS(SELECT 1 FROM head WHERE gen > 0)", [], |r| r.get(0))
                .map_err(db_err)?;
            if pending {
                return Ok(merged);
            }
            let todo: Vec<(u32, TsMs)> = {
                let mut stmt = w
                    .conn
                    .prepare_cached(
                        "SELECT DISTINCT series_id, start_ts - (((start_ts % ?2) + ?2) % ?2) FROM chunks WHERE level = 0 AND start_ts < ?1 LIMIT 256",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![block_floor, b], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(db_err)?;
                rows.collect::<Result<_, _>>().map_err(db_err)?
            };
            if todo.is_empty() {
                return Ok(merged);
            }
            let tx = w.conn.transaction().map_err(db_err)?;
            for (sid, block) in todo {
                merged += merge_block(&tx, sid, block, b)?;
            }
            tx.commit().map_err(db_err)?;
        }
    }

    /// Folds the late head rows into level-0 chunks, host by host, oldest write first; the
    /// chunks take the highest `gen` of the rows they fold. Returns the rows folded.
    pub(crate) fn fold_late(&self) -> StoreResult<u64> {
        let mut folded = 0u64;
        loop {
            let mut w = self.writer.lock();
            let host_id: Option<i64> = w
                .conn
                .query_row("SELECT host_id FROM head WHERE gen > 0 LIMIT 1", [], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            let Some(host_id) = host_id else {
                self.late_rows.store(0, Ordering::SeqCst);
                return Ok(folded);
            };
            let tx = w.conn.transaction().map_err(db_err)?;
            let n = self.fold_selected(
                &tx,
                "SELECT id, gen, data FROM head WHERE gen > 0 AND host_id = ?1 ORDER BY gen LIMIT 256",
                [host_id],
                None,
            )?;
            tx.commit().map_err(db_err)?;
            folded += n;
        }
    }

    /// Folds the head rows `select` returns (`id, gen, data`) into chunks in `tx`, at `gen`
    /// (`None`: the newest of the rows' own generations); returns how many rows it folded.
    fn fold_selected(
        &self,
        tx: &rusqlite::Transaction,
        select: &str,
        params: impl rusqlite::Params,
        gen: Option<i64>,
    ) -> StoreResult<u64> {
        let mut recs = Vec::new();
        let mut ids = Vec::new();
        let mut newest = 0i64;
        {
            let mut stmt = tx.prepare_cached(select).map_err(db_err)?;
            let mut rows = stmt.query(params).map_err(db_err)?;
            while let Some(row) = rows.next().map_err(db_err)? {
                ids.push(row.get::<_, i64>(0).map_err(db_err)?);
                newest = newest.max(row.get::<_, i64>(1).map_err(db_err)?);
                decode_head(blob_at(row, 2)?, &mut recs).map_err(other)?;
            }
        }
        fold_head_rows(
            tx,
            &ids,
            &mut recs,
            gen.unwrap_or(newest),
            self.opts.block_ms,
            self.retention_floor.load(Ordering::SeqCst),
        )?;
        Ok(ids.len() as u64)
    }

    pub(crate) fn compact(&self, now: TsMs) -> StoreResult<CompactStats> {
        let target = now - self.opts.memory_window_ms;
        let floor = self.floor.load(Ordering::SeqCst);
        let mut stats = CompactStats::default();
        stats.head_rows_folded += self.fold_late()?;
        if target - floor >= self.opts.fold_step_ms {
            stats.head_rows_folded += self.advance(target)?;
        }
        stats.chunks_merged = self.merge_blocks()?;
        self.pack_rollups()?;
        Ok(stats)
    }

    pub(crate) fn maintain(&self, now: TsMs) -> StoreResult<CompactStats> {
        // Roll-ups first: a series left with neither chunks nor roll-ups is then forgotten
        // by this same pass.
        self.apply_rollup_retention(now - self.opts.rollup_retention_ms)?;
        self.apply_retention(now - self.opts.retention_ms)?;
        let stats = self.compact(now)?;
        let w = self.writer.lock();
        w.conn.execute_batch("PRAGMA incremental_vacuum(2048);").map_err(db_err)?;
        Ok(stats)
    }
}

/// The chunks of series `?1` holding samples of `[?2, ?3)`, for `merge_block`: the same
/// search as `disk::SERIES_CHUNKS`, which starts at the block rather than at the series'
/// oldest chunk.
pub(crate) const BLOCK_CHUNKS: &str =
    "SELECT id, gen, level, data FROM chunks WHERE series_id = ?1 AND end_ts >= ?2 AND start_ts < ?3 ORDER BY gen, id";

/// Merges every chunk of series `sid` holding samples of the block `[block, block + b)` into
/// one level-1 chunk of that block's samples, at the highest `gen` among them; the samples a
/// chunk holds outside the block stay where they were, re-inserted at that chunk's own `gen`
/// and level. Returns the level-0 chunks merged.
///
/// Only the block's samples may take the raised `gen`: a chunk reaching past its block (one
/// written with another `block_ms`, e.g. a level-1 chunk of a 2 h block read by a store
/// reopened with 1 min blocks) would otherwise carry its stale samples of later blocks over
/// newer chunks there, changing what reads return without the roll-ups being recomputed
/// (found by `rollups_equal_raw_after_sigkill_during_folds`, about 1 run in 100). Every chunk
/// overlapping the block is a part, not only those starting in it, for the same reason.
fn merge_block(tx: &rusqlite::Transaction, sid: u32, block: TsMs, b: i64) -> StoreResult<u64> {
    let end = block + b;
    let mut ids = Vec::new();
    let mut parts = Vec::new();
    let mut outside: Vec<(i64, i64, Columns)> = Vec::new();
    let mut gen = 0i64;
    let mut merged = 0u64;
    {
        let mut stmt = tx.prepare_cached(BLOCK_CHUNKS).map_err(db_err)?;
        let mut rows = stmt.query(params![sid, block, end]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            ids.push(row.get::<_, i64>(0).map_err(db_err)?);
            let part_gen = row.get::<_, i64>(1).map_err(db_err)?;
            let level = row.get::<_, i64>(2).map_err(db_err)?;
            gen = gen.max(part_gen);
            if level == 0 {
                merged += 1;
            }
            let c = codec::decode(blob_at(row, 3)?).map_err(other)?;
            for (from, to) in [(TsMs::MIN, block), (end, TsMs::MAX)] {
                let rest = merge_columns(vec![c.clone()], from, to);
                if !rest.is_empty() {
                    outside.push((part_gen, level, rest));
                }
            }
            parts.push(c);
        }
    }
    let c = merge_columns(parts, block, end);
    {
        let mut del = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1").map_err(db_err)?;
        for id in &ids {
            del.execute([id]).map_err(db_err)?;
        }
    }
    let one = std::iter::once((gen, 1, c)).filter(|(_, _, c)| !c.is_empty());
    for (g, level, c) in outside.into_iter().chain(one) {
        put_chunk(tx, sid, g, level, &c).map_err(db_err)?;
    }
    Ok(merged)
}

/// Inserts one chunk of series `sid` (non-empty columns, sorted by ts).
fn put_chunk(
    tx: &rusqlite::Transaction,
    sid: u32,
    gen: i64,
    level: i64,
    c: &Columns,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO chunks(series_id, start_ts, end_ts, n, gen, level, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![sid, c.ts[0], c.ts[c.len() - 1], c.len() as i64, gen, level, codec::encode(c)])
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The maintenance pass's head queries search the index each is meant to; none scans the
    /// head table (each head row is a whole batch, about a page: a scan of a few minutes' rows
    /// at a large fleet is what made a pass take most of its minute).
    #[test]
    fn the_folds_head_queries_search_their_indexes() {
        let (store, _dir) = store();
        let w = store.inner.writer.lock();
        let queries = [
            (HEAD_PREFIX_END, "INDEX head_min_ts"),
            (HEAD_OLDEST_HOST, "INTEGER PRIMARY KEY"),
            (HEAD_HOST_PREFIX, "INDEX head_host"),
            // The partial index holds only the late rows (a handful).
            ("SELECT host_id FROM head WHERE gen > 0 LIMIT 1", "INDEX head_late"),
            ("SELECT EXISTS(SELECT 1 FROM head WHERE gen > 0)", "INDEX head_late"),
        ];
        plans_use(&w.conn, " head", &queries);
    }

    /// A series' chunks are searched by (series, end): `(series_id=? AND end_ts>?)` in the
    /// plan, not a walk from the series' oldest chunk.
    #[test]
    fn chunk_reads_start_at_the_window() {
        let (store, _dir) = store();
        let w = store.inner.writer.lock();
        let want = "INDEX chunks_series_end (series_id=? AND end_ts>?)";
        plans_use(&w.conn, " chunks", &[(crate::disk::SERIES_CHUNKS, want), (BLOCK_CHUNKS, want)]);
        // A read sorts its handful of chunks itself: no sorter per series.
        let plan = plan(&w.conn, crate::disk::SERIES_CHUNKS);
        assert!(!plan.iter().any(|s| s.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// An empty store with no maintenance thread, and its directory.
    fn store() -> (crate::SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::SqliteOptions {
            maintenance_interval: std::time::Duration::ZERO,
            ..Default::default()
        };
        (crate::SqliteStore::open(dir.path(), opts).unwrap(), dir)
    }

    /// The steps of `q`'s query plan, every parameter 1.
    fn plan(conn: &rusqlite::Connection, q: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {q}")).unwrap();
        let ones = std::iter::repeat_n(1, stmt.parameter_count());
        stmt.query_map(rusqlite::params_from_iter(ones), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Asserts that every step of each query's plan on `table` uses its index.
    fn plans_use(conn: &rusqlite::Connection, table: &str, queries: &[(&str, &str)]) {
        for &(q, index) in queries {
            let plan = plan(conn, q);
            let on_table: Vec<&String> = plan.iter().filter(|s| s.contains(table)).collect();
            assert!(!on_table.is_empty(), "{q}: {plan:?}");
            for step in on_table {
                assert!(
                    step.contains(&format!(" USING {index}"))
                        || step.contains(&format!(" USING COVERING {index}")),
                    "{q}: {plan:?}"
                );
            }
        }
    }
}
