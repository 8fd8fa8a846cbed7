//! Reading samples back from disk: chunks and late head rows merged by `gen`.

use procwatch_model::{Sample, TsMs};
use procwatch_store::StoreResult;
use rusqlite::{params, Connection};

use crate::codec;
use crate::codec::Columns;
use crate::head::{decode_head, HeadRec};
use crate::schema::{blob_at, db_err, other};

/// Merges chunk columns given in ascending `gen` (later wins on equal ts) into one sorted
/// series restricted to `from <= ts < to`.
pub(crate) fn merge_columns(parts: Vec<Columns>, from: TsMs, to: TsMs) -> Columns {
    if parts.len() == 1 {
        let c = &parts[0];
        if c.ts.windows(2).all(|w| w[0] < w[1]) {
            let a = c.ts.partition_point(|&t| t < from);
            let b = c.ts.partition_point(|&t| t < to).max(a);
            if a == 0 && b == c.len() {
                return parts.into_iter().next().expect("one");
            }
            let mut out = Columns::with_capacity(b - a);
            for i in a..b {
                out.push(c.ts[i], c.cpu[i], c.cores[i], c.mem[i], c.rss[i], c.count[i]);
            }
            return out;
        }
    }
    let mut all: Vec<(TsMs, usize, usize)> = Vec::new();
    for (p, c) in parts.iter().enumerate() {
        for (i, &t) in c.ts.iter().enumerate() {
            if t >= from && t < to {
                all.push((t, p, i));
            }
        }
    }
    all.sort_unstable();
    let mut out = Columns::with_capacity(all.len());
    let mut k = 0;
    while k < all.len() {
        // The last of equal ts has the highest part index = highest gen.
        while k + 1 < all.len() && all[k + 1].0 == all[k].0 {
            k += 1;
        }
        let (t, p, i) = all[k];
        let c = &parts[p];
        out.push(t, c.cpu[i], c.cores[i], c.mem[i], c.rss[i], c.count[i]);
        k += 1;
    }
    out
}

/// Late head rows (samples that were older than the memory floor when written) of one host
/// overlapping `[from, to)`, oldest write first.
pub(crate) fn late_rows(
    conn: &Connection,
    host_id: u32,
    from: TsMs,
    to: TsMs,
) -> StoreResult<Vec<(i64, Vec<HeadRec>)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT gen, data FROM head WHERE gen > 0 AND host_id = ?1 AND min_ts < ?3 AND max_ts >= ?2 ORDER BY gen",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query(params![host_id, from, to]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let gen: i64 = row.get(0).map_err(db_err)?;
        let blob = blob_at(row, 1)?;
        let mut recs = Vec::new();
        decode_head(blob, &mut recs).map_err(other)?;
        out.push((gen, recs));
    }
    Ok(out)
}

/// The chunks of series `?1` holding samples in `[?2, ?3)`: `(gen, id, data)`. Through
/// `chunks_series_end` (series, end): the search starts at the series' first chunk ending at
/// or after `?2`. Through an index on (series, start) it began at the series' oldest chunk:
/// a store at its steady state holds ≈ 140 chunks a series (one per 2 h block of the
/// retention, one per fold of the open block), and a 10-minute read visited all of them to
/// return a dozen (BENCHMARKS.md, "Session 14"). Adding the start to the index, to check it
/// there, made every fold and merge slower (one more column in each entry) and the reads
/// no faster: a recent window's chunks all start before its end. No `ORDER BY`: the
/// caller puts the handful of rows in (`gen`, `id`) order itself, where SQLite built a
/// sorter for every series.
pub(crate) const SERIES_CHUNKS: &str =
    "SELECT gen, id, data FROM chunks WHERE series_id = ?1 AND end_ts >= ?2 AND start_ts < ?3";

/// Samples of one series in `[from, to)` from its chunks and its host's late head rows
/// (`late`, from `late_rows`), merged by `gen`.
pub(crate) fn disk_series(
    conn: &Connection,
    sid: u32,
    late: &[(i64, Vec<HeadRec>)],
    from: TsMs,
    to: TsMs,
) -> StoreResult<Columns> {
    let mut out = Columns::default();
    disk_series_into(conn, sid, late, from, to, &mut out, &mut DiskScratch::default())?;
    Ok(out)
}

/// Decoded chunks kept between calls of `disk_series_into`: a fleet query reads every
/// series' chunks, and a fresh set of column vectors per chunk was a third of its time spent
/// in the allocator (BENCHMARKS.md, "Session 9").
#[derive(Debug, Default)]
pub(crate) struct DiskScratch {
    /// (`gen`, `id`, decoded chunk), reused from series to series.
    parts: Vec<(i64, i64, Columns)>,
}

/// `disk_series`, appended to `out`, decoding into `s`'s buffers.
pub(crate) fn disk_series_into(
    conn: &Connection,
    sid: u32,
    late: &[(i64, Vec<HeadRec>)],
    from: TsMs,
    to: TsMs,
    out: &mut Columns,
    s: &mut DiskScratch,
) -> StoreResult<()> {
    if from >= to {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(SERIES_CHUNKS).map_err(db_err)?;
    let mut rows = stmt.query(params![sid, from, to]).map_err(db_err)?;
    let pool = &mut s.parts;
    let mut n = 0;
    while let Some(row) = rows.next().map_err(db_err)? {
        if pool.len() == n {
            pool.push((0, 0, Columns::default()));
        }
        let (gen, id, c) = &mut pool[n];
        *gen = row.get(0).map_err(db_err)?;
        *id = row.get(1).map_err(db_err)?;
        c.clear();
        codec::decode_into(blob_at(row, 2)?, c).map_err(other)?;
        n += 1;
    }
    // Oldest write first: a later write of the same timestamp wins the merge.
    let parts = &mut pool[..n];
    if !parts.is_sorted_by_key(|(g, id, _)| (*g, *id)) {
        parts.sort_unstable_by_key(|(g, id, _)| (*g, *id));
    }
    let parts = &pool[..n];
    let has_late = late.iter().any(|(_, recs)| recs.iter().any(|r| r.sid == sid));
    // The common case: chunks of successive folds, each sorted, one after the other in time.
    // No timestamp is in two of them, so their union in order is the merge.
    if !has_late && in_sequence(parts.iter().map(|(_, _, c)| c)) {
        for (_, _, c) in parts {
            let a = c.ts.partition_point(|&t| t < from);
            let b = c.ts.partition_point(|&t| t < to).max(a);
            append_columns(out, c, a..b);
        }
        return Ok(());
    }
    let mut parts: Vec<(i64, Columns)> = parts.iter().map(|(g, _, c)| (*g, c.clone())).collect();
    for (gen, recs) in late {
        let mut c = Columns::default();
        for r in recs.iter().filter(|r| r.sid == sid) {
            c.push(r.ts, r.cpu, r.cores, r.mem, r.rss, r.count);
        }
        if !c.is_empty() {
            // Within one row, a later record of the same ts wins: sort stably by ts, keep last.
            let mut idx: Vec<usize> = (0..c.len()).collect();
            idx.sort_by_key(|&i| c.ts[i]);
            let mut sorted = Columns::with_capacity(c.len());
            for (k, &i) in idx.iter().enumerate() {
                if idx.get(k + 1).is_some_and(|&j| c.ts[j] == c.ts[i]) {
                    continue;
                }
                sorted.push(c.ts[i], c.cpu[i], c.cores[i], c.mem[i], c.rss[i], c.count[i]);
            }
            parts.push((*gen, sorted));
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    parts.sort_by_key(|(g, _)| *g);
    let merged = merge_columns(parts.into_iter().map(|(_, c)| c).collect(), from, to);
    append_columns(out, &merged, 0..merged.len());
    Ok(())
}

/// Whether every part is strictly ascending and each ends before the next (non-empty) one
/// begins.
fn in_sequence<'a>(parts: impl Iterator<Item = &'a Columns>) -> bool {
    let mut last: Option<TsMs> = None;
    for c in parts {
        if !c.ts.windows(2).all(|w| w[0] < w[1]) {
            return false;
        }
        if let (Some(l), Some(&f)) = (last, c.ts.first()) {
            if l >= f {
                return false;
            }
        }
        last = c.ts.last().copied().or(last);
    }
    true
}

pub(crate) fn append_columns(dst: &mut Columns, src: &Columns, r: std::ops::Range<usize>) {
    dst.ts.extend_from_slice(&src.ts[r.clone()]);
    dst.cpu.extend_from_slice(&src.cpu[r.clone()]);
    dst.cores.extend_from_slice(&src.cores[r.clone()]);
    dst.mem.extend_from_slice(&src.mem[r.clone()]);
    dst.rss.extend_from_slice(&src.rss[r.clone()]);
    dst.count.extend_from_slice(&src.count[r]);
}

pub(crate) fn col_sample(c: &Columns, i: usize, process: &str) -> Sample {
    Sample {
        ts: c.ts[i],
        process: process.to_string(),
        cpu: c.cpu[i],
        cores: c.cores[i],
        mem: c.mem[i],
        rss: c.rss[i],
        count: c.count[i],
        extras: None,
    }
}
