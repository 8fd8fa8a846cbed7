//! procwatch's embedded store: SQLite (bundled, WAL) laid out as a time-series store.
//!
//! # Usage (what the server calls)
//!
//! ```ignore
//! let store = Arc::new(SqliteStore::open(&data_dir, SqliteOptions { retention_ms, ..Default::default() })?);
//! let storage: Arc<dyn Storage> = store.clone();
//! ```
//!
//! `open` is synchronous: it creates the directory and the database, folds whatever a crash
//! left in the head, rebuilds the in-memory recent window, and starts one background
//! maintenance thread (`SqliteOptions::maintenance_interval`, 60 s; `Duration::ZERO` starts
//! none). The thread holds only a weak reference; it stops at `close()` or when the store is
//! dropped. `SqliteStore::maintain_at`/`compact_at`/`vacuum` run the same work on demand.
//!
//! # Files
//!
//! `<dir>/procwatch.db` plus SQLite's `-wal` and `-shm` files, and `<dir>/procwatch.lock`,
//! held exclusively while the store is open: a second store (or process) opening the same
//! directory gets `StoreError::Unavailable`. Tables:
//! - `series(id, host_id, process)`, `hosts(id, name, last_seen, interval_ms, last_seq,
//!   seq_gaps, dropped)`: the catalog, also held in memory.
//! - `head(id, host_id, min_ts, max_ts, n, gen, data)`: one row per accepted batch, appended
//!   in arrival order; `data` is the batch's samples, 48 bytes each, little-endian
//!   (`series_id u32, ts i64, cpu f64, cores f64, mem f64, rss u64, count u32`). One INSERT per
//!   batch is what makes ingestion fast. Samples older than the memory floor (an agent
//!   replaying its spool) go to a second, "late" row of the batch (`gen > 0`).
//! - `chunks(id, series_id, start_ts, end_ts, n, gen, level, data)`: compressed runs of one
//!   series (`codec`: delta-of-delta timestamps, Gorilla XOR floats, zig-zag deltas for rss
//!   and count). Level 0 chunks are what a fold produced; once a whole aligned block
//!   (`block_ms`, 2 h) is older than the memory floor, its chunks are merged into one level-1
//!   chunk (≈720 samples at 10 s). `gen` orders writes: where chunks overlap, the higher
//!   `gen` wins, so a rewrite of an old timestamp replaces it.
//! - `host_totals(host_id, ts, ...)` (one row per host and sweep), `alarms(id, ..., body)`
//!   (the event as JSON), `meta` (the memory floor and the retention floor).
//!
//! # The memory floor `F`, queries and compaction
//!
//! Every sample with `ts >= F` is in the in-memory index (per host, per process, in columns)
//! and in `head` or `chunks`; every sample with `ts < F` is in `chunks` or a late head row. `F` trails the wall
//! clock by `memory_window_ms` (15 min) and moves forward in `fold_step_ms` (5 min) steps: the
//! maintenance thread first folds the head rows reaching below the new `F` into level-0 chunks
//! (a prefix of the head, in arrival order, so later writes still win), then raises `F` and
//! drops older samples from memory. Samples older than `F` in a batch (a spool replay) are
//! written as a late head row with its own `gen`; disk reads take them into account, and the
//! maintenance thread (woken after 64 of them, else every pass) folds them into level-0
//! chunks, host by host. Merges wait while late rows are pending, so a late rewrite always
//! keeps the highest `gen`. Queries whose window starts at or after `F` (the usage, `get-all`
//! and fleet queries, the alarms' windows) are answered from memory alone; older parts
//! (history) come from chunks and late rows, merged by `gen`. At `open` the index is rebuilt from the chunks reaching `F` and the head.
//! Memory use: 44 bytes per sample in the window (columns `ts, cpu, cores, mem, rss: 8 bytes,
//! count: 4`); a series' columns are reserved up to the most it holds, (window + fold step +
//! maintenance period) / its host's interval + 2 samples (10 s: 128), so they stop there
//! instead of at the next power of two (2 s: 632, not 1,024), plus ≈ 1.3 KB per series of
//! names, maps and SQLite cache. Measured under concurrent ingest (`examples/mem_probe.rs`):
//! ≈ 60 bytes of RSS per window sample, 6.9 KB per series at 10 s in the steady state. In
//! the server the store's window is about 40 % of the heap; the alarm engine's per-series
//! state and the evaluator's copies of the window are the rest (BENCHMARKS.md, "Embedded
//! store"). Big usage queries (8 hosts or more, or merged rows over ≥ 2,000 series) use two
//! threads. Figures: BENCHMARKS.md, "Embedded store".
//!
//! # Durability
//!
//! `write_batch` returns after its transaction (head rows, host totals, host state) commits. With the default `Durability::Process` (`synchronous=NORMAL` in WAL mode)
//! a committed batch survives the server being killed (SIGKILL, panic, OOM kill): the WAL is in
//! the OS page cache and is replayed at the next open. A power loss or kernel crash can lose the
//! last transactions (never corrupt the file).
//!
//! `Durability::Power` (what `procwatch server` selects unless `--durability relaxed`) also
//! survives power loss, by **group commit**: `write_batch` commits its transaction
//! (`synchronous=NORMAL`, no fsync under the writer lock), takes a ticket, releases the writer
//! lock, and returns only once an `fdatasync` of the WAL file that started after its commit has
//! finished. One writer at a time runs the fsync; every batch that committed before it started
//! is covered by it, and batches committing meanwhile share the next one, so concurrent batches
//! share fsyncs instead of queueing one fsync each behind the writer lock (SQLite's
//! `synchronous=FULL` would fsync inside every commit). SQLite syncs the WAL header itself when
//! it reuses the WAL after a checkpoint, and syncs the WAL before and the database after every
//! checkpoint, so a synced WAL frame is either in the WAL or already in the database file. An
//! fsync error fails the write (`Unavailable`: the agent retries; writes are idempotent). Other
//! writes (alarm events, folds, retention) are made durable by the next batch's fsync or the
//! next checkpoint. [`SqliteStore::wal_syncs`] counts the fsyncs.
//!
//! # Retention
//!
//! `apply_retention(cutoff)` (and the maintenance thread, with `now - retention_ms`, 48 h)
//! raises a persisted retention floor: queries never return anything older. Physically it
//! deletes whole chunks that end before the cutoff (one indexed DELETE, no rewrite), host
//! totals and closed alarm events that ended before it; a chunk straddling the cutoff stays
//! until it is wholly older. Freed pages go back to the OS with `incremental_vacuum`.
//! Samples written with a `ts` older than the retention floor are dropped. A series left with
//! no chunk and nothing in memory is forgotten (`history` answers `NotFound` again), so the
//! catalog does not grow with every process name ever seen; hosts silent since before the
//! cutoff drop out of `hosts()` and their `seq` bookkeeping restarts.
//!
//! # Idempotency and seq
//!
//! A sample with the same (host, process, ts) as a stored one replaces it, wherever the old one
//! lives (memory: replaced in place; head: the later row wins when the head is folded;
//! chunks: the newer `gen` wins on read and at the next merge). Host `seq` bookkeeping follows `procwatch_store::agg::seq_update`.

mod codec;
mod index;

pub use codec::{decode as decode_chunk, encode as encode_chunk, Columns, CorruptChunk};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use procwatch_model::clock::Clock;
use procwatch_model::{AlarmEvent, Batch, HostTotal, Sample, TsMs};
use procwatch_store::memory::{alarm_matches, check_batch, sort_newest_first};
use procwatch_store::{
    agg, AlarmQuery, HistoryPoint, HistoryQuery, HostInfo, SeriesWindow, Storage, StoreError,
    StoreResult, UsageQuery, UsageRow, WriteOutcome,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use index::{HostIndex, MergedAcc, Scratch};

/// What a successful write survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives a kill of the process (WAL, `synchronous=NORMAL`). The library default (the
    /// server's is `Power`).
    #[default]
    Process,
    /// Also survives power loss: `write_batch` returns after an fsync of the WAL covering its
    /// commit, shared by concurrent writers (group commit; see the crate doc).
    Power,
}

/// Group commit of `Durability::Power`: commits are numbered under the writer lock; one
/// thread at a time fsyncs the WAL, covering every commit numbered before it started.
#[derive(Default)]
struct WalSync {
    state: Mutex<SyncState>,
    done: parking_lot::Condvar,
    syncs: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct SyncState {
    committed: u64,
    synced: u64,
    syncing: bool,
}

impl WalSync {
    /// Numbers a commit; call under the writer lock, right after the commit.
    fn ticket(&self) -> u64 {
        let mut st = self.state.lock();
        st.committed += 1;
        st.committed
    }

    /// Returns once an fsync of `wal` that started after commit `ticket` has finished.
    fn wait(&self, wal: &Path, ticket: u64) -> std::io::Result<()> {
        let mut st = self.state.lock();
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if st.syncing {
                self.done.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let target = st.committed;
            // Opened each time: always the WAL file SQLite writes now.
            let r = parking_lot::MutexGuard::unlocked(&mut st, || {
                std::fs::File::open(wal).and_then(|f| f.sync_data())
            });
            st.syncing = false;
            if r.is_ok() {
                st.synced = st.synced.max(target);
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            self.done.notify_all();
            r?;
        }
    }
}

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Samples older than this are dropped by the maintenance thread. Default 48 h.
    pub retention_ms: i64,
    /// See `Durability`. Default `Process`.
    pub durability: Durability,
    /// How far back the in-memory index reaches. Default 15 min.
    pub memory_window_ms: i64,
    /// The memory floor moves in steps of this; the head holds up to window + step. Default 5 min.
    pub fold_step_ms: i64,
    /// Aligned span of a merged chunk. Default 2 h.
    pub block_ms: i64,
    /// Period of the background maintenance thread; `Duration::ZERO` starts none. Default 60 s.
    pub maintenance_interval: Duration,
    /// Where "now" comes from for the memory window and retention. Default the system clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            retention_ms: 48 * 3_600_000,
            durability: Durability::Process,
            memory_window_ms: 15 * 60_000,
            fold_step_ms: 5 * 60_000,
            block_ms: 2 * 3_600_000,
            maintenance_interval: Duration::from_secs(60),
            clock: procwatch_model::clock::system(),
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Head rows folded into chunks.
    pub head_rows_folded: u64,
    /// Level-0 chunks merged into level-1 chunks.
    pub chunks_merged: u64,
}

/// The embedded SQLite store. See the crate documentation.
pub struct SqliteStore {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const DB_FILE: &str = "procwatch.db";
const HEAD_REC: usize = 48;

#[derive(Debug, Default, Clone)]
struct HostState {
    last_seen: TsMs,
    interval_ms: u64,
    seq: Option<(u64, u64)>,
    dropped: u64,
    latest: Option<HostTotal>,
}

struct HostEntry {
    name: String,
    id: u32,
    state: Mutex<HostState>,
    index: RwLock<HostIndex>,
    series: RwLock<HashMap<String, u32>>,
}

#[derive(Default)]
struct Catalog {
    hosts: BTreeMap<String, Arc<HostEntry>>,
    by_id: HashMap<u32, Arc<HostEntry>>,
    /// series id → (host id, process)
    series: HashMap<u32, (u32, String)>,
    /// Retired hosts (`retired_hosts`): hidden from `hosts()` while `last_seen` ≤ this.
    retired: HashMap<String, TsMs>,
}

struct Writer {
    conn: Connection,
    next_host: u32,
    next_series: u32,
    gen: i64,
}

struct Inner {
    /// Holds `<dir>/procwatch.lock` exclusively: one process per data directory.
    _lock: Mutex<Connection>,
    path: PathBuf,
    opts: SqliteOptions,
    writer: Mutex<Writer>,
    /// Group commit of `Durability::Power`.
    wal_sync: WalSync,
    readers: Mutex<Vec<Connection>>,
    catalog: RwLock<Catalog>,
    /// The memory floor F (see the crate doc). Changed only under the writer lock.
    floor: AtomicI64,
    /// Nothing older is ever returned.
    retention_floor: AtomicI64,
    stop: AtomicBool,
    /// Late head rows written since the last fold of them.
    late_rows: std::sync::atomic::AtomicU64,
    /// The maintenance thread, woken early when late rows pile up.
    maint_thread: Mutex<Option<std::thread::Thread>>,
}

/// Late head rows that wake the maintenance thread to fold them.
const LATE_ROWS_WAKE: u64 = 64;

fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // Busy, disk full, I/O trouble: the caller may retry later (503).
        Some(
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::CannotOpen,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(Box::new(e)),
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(Box::new(e))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosts(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  last_seen INTEGER NOT NULL, interval_ms INTEGER NOT NULL, last_seq INTEGER,
  seq_gaps INTEGER NOT NULL, dropped INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series(id INTEGER PRIMARY KEY, host_id INTEGER NOT NULL,
  process TEXT NOT NULL, UNIQUE(host_id, process));
CREATE TABLE IF NOT EXISTS head(id INTEGER PRIMARY KEY, host_id INTEGER NOT NULL,
  min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL, n INTEGER NOT NULL,
  gen INTEGER NOT NULL DEFAULT 0, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS head_min_ts ON head(min_ts);
CREATE INDEX IF NOT EXISTS head_late ON head(host_id, gen) WHERE gen > 0;
CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL,
  start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, n INTEGER NOT NULL, gen INTEGER NOT NULL,
  level INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_series ON chunks(series_id, start_ts);
CREATE INDEX IF NOT EXISTS chunks_end ON chunks(end_ts);
CREATE INDEX IF NOT EXISTS chunks_l0 ON chunks(start_ts) WHERE level = 0;
CREATE TABLE IF NOT EXISTS host_totals(host_id INTEGER NOT NULL, ts INTEGER NOT NULL,
  cpu REAL NOT NULL, mem REAL NOT NULL, unattributed REAL, PRIMARY KEY(host_id, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms(id TEXT PRIMARY KEY, start INTEGER NOT NULL, end_ts INTEGER,
  host TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alarms_start ON alarms(start);
CREATE TABLE IF NOT EXISTS retired_hosts(name TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
";

fn open_conn(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // `Power` fsyncs the WAL itself after the commit (group commit, `WalSync`).
    let sync = match durability {
        Durability::Process | Durability::Power => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-32768;"
    ))?;
    Ok(conn)
}

/// Takes the data directory's lock: an exclusive transaction held open on a small SQLite
/// file (POSIX advisory locks underneath, released by the kernel when the process dies).
fn take_dir_lock(dir: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(dir.join("procwatch.lock")).map_err(db_err)?;
    conn.busy_timeout(Duration::ZERO).map_err(db_err)?;
    match conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;") {
        Ok(()) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            Err(StoreError::Unavailable(format!(
                "data directory {} is in use by another procwatch store",
                dir.display()
            )))
        }
        Err(e) => Err(db_err(e)),
    }
}

/// One decoded head record.
#[derive(Debug, Clone, Copy)]
struct HeadRec {
    sid: u32,
    ts: TsMs,
    cpu: f64,
    cores: f64,
    mem: f64,
    rss: u64,
    count: u32,
}

fn encode_head(recs: &[HeadRec]) -> Vec<u8> {
    let mut out = Vec::with_capacity(recs.len() * HEAD_REC);
    for r in recs {
        out.extend_from_slice(&r.sid.to_le_bytes());
        out.extend_from_slice(&r.ts.to_le_bytes());
        out.extend_from_slice(&r.cpu.to_le_bytes());
        out.extend_from_slice(&r.cores.to_le_bytes());
        out.extend_from_slice(&r.mem.to_le_bytes());
        out.extend_from_slice(&r.rss.to_le_bytes());
        out.extend_from_slice(&r.count.to_le_bytes());
    }
    out
}

fn decode_head(data: &[u8], out: &mut Vec<HeadRec>) -> Result<(), CorruptChunk> {
    if !data.chunks_exact(HEAD_REC).remainder().is_empty() {
        return Err(CorruptChunk("head row length"));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    for b in data.chunks_exact(HEAD_REC) {
        out.push(HeadRec {
            sid: u32_at(b, 0),
            ts: u64_at(b, 4) as i64,
            cpu: f64::from_bits(u64_at(b, 12)),
            cores: f64::from_bits(u64_at(b, 20)),
            mem: f64::from_bits(u64_at(b, 28)),
            rss: u64_at(b, 36),
            count: u32_at(b, 44),
        });
    }
    Ok(())
}

/// Sorts records by (series, ts), keeping the last written of equal (series, ts).
fn sort_dedup(recs: &mut Vec<HeadRec>) {
    // Stable sort keeps write order among equal keys; keep the last of each run.
    recs.sort_by_key(|r| (r.sid, r.ts));
    let mut out: Vec<HeadRec> = Vec::with_capacity(recs.len());
    for r in recs.drain(..) {
        match out.last_mut() {
            Some(l) if l.sid == r.sid && l.ts == r.ts => *l = r,
            _ => out.push(r),
        }
    }
    *recs = out;
}

/// Replaces the head rows `ids`, already decoded into `recs`, by level-0 chunks of generation
/// `gen`: the one fold step shared by the live fold and the late-row fold.
fn fold_head_rows(
    tx: &rusqlite::Transaction,
    ids: &[i64],
    recs: &mut Vec<HeadRec>,
    gen: i64,
    block_ms: i64,
) -> rusqlite::Result<()> {
    sort_dedup(recs);
    insert_chunks(tx, recs, gen, block_ms)?;
    let mut del = tx.prepare_cached("DELETE FROM head WHERE id = ?1")?;
    for id in ids {
        del.execute([id])?;
    }
    Ok(())
}

/// Inserts level-0 chunks for sorted, deduplicated records (any series), split by block.
fn insert_chunks(
    tx: &rusqlite::Transaction,
    recs: &[HeadRec],
    gen: i64,
    block_ms: i64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO chunks(series_id, start_ts, end_ts, n, gen, level, data) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
    )?;
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
        stmt.execute(params![
            sid,
            c.ts[0],
            c.ts[c.len() - 1],
            c.len() as i64,
            gen,
            codec::encode(&c)
        ])?;
        i = j;
    }
    Ok(())
}

/// Merges chunk columns given in ascending `gen` (later wins on equal ts) into one sorted
/// series restricted to `from <= ts < to`.
fn merge_columns(parts: Vec<Columns>, from: TsMs, to: TsMs) -> Columns {
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
fn late_rows(
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
        let blob = row
            .get_ref(1)
            .map_err(db_err)?
            .as_blob()
            .map_err(|e| other(rusqlite::Error::from(e)))?;
        let mut recs = Vec::new();
        decode_head(blob, &mut recs).map_err(other)?;
        out.push((gen, recs));
    }
    Ok(out)
}

/// Samples of one series in `[from, to)` from its chunks and its host's late head rows
/// (`late`, from `late_rows`), merged by `gen`.
fn disk_series(
    conn: &Connection,
    sid: u32,
    late: &[(i64, Vec<HeadRec>)],
    from: TsMs,
    to: TsMs,
) -> StoreResult<Columns> {
    if from >= to {
        return Ok(Columns::default());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT gen, data FROM chunks WHERE series_id = ?1 AND start_ts < ?3 AND end_ts >= ?2 ORDER BY gen, id",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query(params![sid, from, to]).map_err(db_err)?;
    let mut parts: Vec<(i64, Columns)> = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let gen: i64 = row.get(0).map_err(db_err)?;
        let blob = row
            .get_ref(1)
            .map_err(db_err)?
            .as_blob()
            .map_err(|e| other(rusqlite::Error::from(e)))?;
        parts.push((gen, codec::decode(blob).map_err(other)?));
    }
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
        return Ok(Columns::default());
    }
    parts.sort_by_key(|(g, _)| *g);
    Ok(merge_columns(parts.into_iter().map(|(_, c)| c).collect(), from, to))
}

fn append_columns(dst: &mut Columns, src: &Columns, r: std::ops::Range<usize>) {
    dst.ts.extend_from_slice(&src.ts[r.clone()]);
    dst.cpu.extend_from_slice(&src.cpu[r.clone()]);
    dst.cores.extend_from_slice(&src.cores[r.clone()]);
    dst.mem.extend_from_slice(&src.mem[r.clone()]);
    dst.rss.extend_from_slice(&src.rss[r.clone()]);
    dst.count.extend_from_slice(&src.count[r]);
}

fn col_sample(c: &Columns, i: usize, process: &str) -> Sample {
    Sample {
        ts: c.ts[i],
        process: process.to_string(),
        cpu: c.cpu[i],
        cores: c.cores[i],
        mem: c.mem[i],
        rss: c.rss[i],
        count: c.count[i],
    }
}

/// Runs `f` over `items`, split in two halves on two threads when `big`; results in order,
/// `None` when either half gives `None`.
fn par_split<T: Sync, R: Send>(
    items: &[T],
    big: bool,
    f: impl Fn(&[T]) -> Option<Vec<R>> + Sync,
) -> Option<Vec<R>> {
    if !big || items.len() < 2 {
        return f(items);
    }
    let (a, b) = items.split_at(items.len() / 2);
    std::thread::scope(|scope| {
        let hb = scope.spawn(|| f(b));
        let ra = f(a);
        match hb.join() {
            Ok(rb) => {
                let (mut ra, mut rb) = (ra?, rb?);
                ra.append(&mut rb);
                Some(ra)
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Usage rows straight from the rings, when every selected host's memory covers
/// `[from, to)`; `None` as soon as one does not (the floor moved since the caller looked),
/// and the caller takes the general path. Big queries (the fleet) use two threads.
fn usage_from_memory(
    hosts: &[Arc<HostEntry>],
    q: &UsageQuery,
    from: TsMs,
    to: TsMs,
) -> Option<Vec<UsageRow>> {
    if q.per_host {
        let big = hosts.len() >= 8;
        return par_split(hosts, big, |hs| {
            let mut scratch = Scratch::default();
            let cap = match q.process {
                Some(_) => hs.len(),
                None => hs.iter().map(|h| h.index.read().series.len()).sum(),
            };
            let mut rows = Vec::with_capacity(cap);
            for h in hs {
                let idx = h.index.read();
                if idx.floor > from {
                    return None;
                }
                let mut one = |p: &String, ring: &index::Ring| {
                    let r = ring.range(from, to);
                    if !r.is_empty() {
                        let host = Some(h.name.clone());
                        rows.push(index::row_of(&ring.c, r, host, p.clone(), &mut scratch));
                    }
                };
                match &q.process {
                    Some(p) => {
                        if let Some(ring) = idx.series.get(p) {
                            one(p, ring);
                        }
                    }
                    None => idx.series.iter().for_each(|(p, ring)| one(p, ring)),
                }
            }
            Some(rows)
        });
    }
    let procs: Vec<String> = match &q.process {
        Some(p) => vec![p.clone()],
        None => {
            let mut set = std::collections::BTreeSet::new();
            for h in hosts {
                set.extend(h.index.read().series.keys().cloned());
            }
            set.into_iter().collect()
        }
    };
    let big = hosts.len() * procs.len() >= 2_000;
    par_split(&procs, big, |ps| {
        let mut acc = MergedAcc::default();
        let mut rows = Vec::with_capacity(ps.len());
        for p in ps {
            acc.clear();
            for h in hosts {
                let idx = h.index.read();
                if idx.floor > from {
                    return None;
                }
                if let Some(ring) = idx.series.get(p) {
                    acc.add(&ring.c, ring.range(from, to));
                }
            }
            if !acc.is_empty() {
                rows.push(acc.finish(p.clone()));
            }
        }
        Some(rows)
    })
}

/// One series selected by a query.
struct Sel {
    host: Arc<HostEntry>,
    process: String,
    sid: u32,
}

impl SqliteStore {
    /// What an acknowledged write survives (the option it was opened with).
    pub fn durability(&self) -> Durability {
        self.inner.opts.durability
    }

    /// WAL fsyncs run by the group commit of `Durability::Power` so far (0 with `Process`).
    pub fn wal_syncs(&self) -> u64 {
        self.inner.wal_sync.syncs.load(Ordering::Relaxed)
    }

    /// The writer connection's `PRAGMA synchronous` (0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA).
    pub fn synchronous_pragma(&self) -> Result<i64, StoreError> {
        let w = self.inner.writer.lock();
        w.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).map_err(db_err)
    }

    /// Opens (creating if needed) the store in `dir`. See the crate documentation.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(other)?;
        let lock = take_dir_lock(dir)?;
        let path = dir.join(DB_FILE);
        let conn = open_conn(&path, opts.durability).map_err(db_err)?;
        // auto_vacuum only takes effect before the first table exists.
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL;")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;

        let meta = |k: &str| -> StoreResult<Option<i64>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
                .map_err(db_err)
        };
        let floor = meta("mem_floor")?.unwrap_or(opts.clock.now_ms() - opts.memory_window_ms);
        let retention_floor = meta("retention_floor")?.unwrap_or(i64::MIN);
        let max = |sql: &str| -> StoreResult<i64> {
            conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0))
                .map_err(db_err)
        };
        let next_host = max("SELECT max(id) FROM hosts")? as u32 + 1;
        let next_series = max("SELECT max(id) FROM series")? as u32 + 1;
        let gen = max("SELECT max(gen) FROM chunks")?;

        let catalog = load_catalog(&conn, floor)?;
        let inner = Arc::new(Inner {
            _lock: Mutex::new(lock),
            path,
            opts: opts.clone(),
            writer: Mutex::new(Writer { conn, next_host, next_series, gen }),
            wal_sync: WalSync::default(),
            readers: Mutex::new(Vec::new()),
            catalog: RwLock::new(catalog),
            floor: AtomicI64::new(floor),
            retention_floor: AtomicI64::new(retention_floor),
            stop: AtomicBool::new(false),
            late_rows: std::sync::atomic::AtomicU64::new(0),
            maint_thread: Mutex::new(None),
        });
        {
            let w = inner.writer.lock();
            w.conn
                .execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('mem_floor', ?1)", [floor])
                .map_err(db_err)?;
        }
        // Fold what a crash or a long stop left behind, then rebuild the recent window.
        inner.advance(opts.clock.now_ms() - opts.memory_window_ms)?;
        inner.rebuild_index()?;

        let store = SqliteStore { inner, thread: Mutex::new(None) };
        if !opts.maintenance_interval.is_zero() {
            let weak = Arc::downgrade(&store.inner);
            let every = opts.maintenance_interval;
            let handle = std::thread::Builder::new()
                .name("procwatch-store-maint".into())
                .spawn(move || maintenance_loop(weak, every))
                .map_err(other)?;
            *store.inner.maint_thread.lock() = Some(handle.thread().clone());
            *store.thread.lock() = Some(handle);
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current memory floor (every sample at or after it is served from memory).
    pub fn memory_floor(&self) -> TsMs {
        self.inner.floor.load(Ordering::SeqCst)
    }

    /// One maintenance pass as the background thread runs it, as if the clock read `now`:
    /// retention at `now - retention_ms`, fold and merge, incremental vacuum.
    pub fn maintain_at(&self, now: TsMs) -> StoreResult<CompactStats> {
        self.inner.maintain(now)
    }

    /// Folds the head and merges complete blocks as if the clock read `now` (no retention).
    pub fn compact_at(&self, now: TsMs) -> StoreResult<CompactStats> {
        self.inner.compact(now)
    }

    /// Checkpoints the WAL and rewrites the file compactly (`VACUUM`); for benchmarks and
    /// backups, it blocks writers while it runs.
    pub fn vacuum(&self) -> StoreResult<()> {
        let w = self.inner.writer.lock();
        w.conn
            .execute_batch(
                "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .map_err(db_err)
    }

    /// What the in-memory recent window holds: (series, samples, bytes reserved by the
    /// sample columns). For benchmarks and diagnostics; takes each host's index lock briefly.
    pub fn memory_usage(&self) -> (usize, usize, usize) {
        let hosts: Vec<Arc<HostEntry>> =
            self.inner.catalog.read().hosts.values().cloned().collect();
        let (mut series, mut samples, mut bytes) = (0, 0, 0);
        for h in hosts {
            let idx = h.index.read();
            for r in idx.series.values() {
                series += 1;
                samples += r.len();
                bytes += r.reserved_bytes();
            }
        }
        (series, samples, bytes)
    }

    /// Total bytes of the database, its WAL and shared-memory files.
    pub fn disk_bytes(&self) -> u64 {
        let p = self.inner.path.as_os_str().to_owned();
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut f = p.clone();
                f.push(suffix);
                std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0)
            })
            .sum()
    }

    fn stop_thread(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.thread.lock().take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Other(format!("store task failed: {e}").into()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn maintenance_loop(weak: Weak<Inner>, every: Duration) {
    loop {
        std::thread::park_timeout(every);
        let Some(inner) = weak.upgrade() else { return };
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = inner.maintain(inner.opts.clock.now_ms()) {
            tracing::warn!(message = "Store maintenance failed.", %error);
        }
    }
}

fn load_catalog(conn: &Connection, floor: TsMs) -> StoreResult<Catalog> {
    let mut cat = Catalog::default();
    let mut stmt = conn
        .prepare("SELECT id, name, last_seen, interval_ms, last_seq, seq_gaps, dropped FROM hosts")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (id, name, last_seen, interval, last_seq, gaps, dropped) = row.map_err(db_err)?;
        let latest = conn
            .query_row(
                "SELECT ts, cpu, mem, unattributed FROM host_totals WHERE host_id = ?1 ORDER BY ts DESC LIMIT 1",
                [id],
                |r| Ok(HostTotal { ts: r.get(0)?, cpu: r.get(1)?, mem: r.get(2)?, unattributed_cpu: r.get(3)? }),
            )
            .optional()
            .map_err(db_err)?;
        let entry = Arc::new(HostEntry {
            name: name.clone(),
            id,
            state: Mutex::new(HostState {
                last_seen,
                interval_ms: interval as u64,
                seq: last_seq.map(|s| (s as u64, gaps as u64)),
                dropped: dropped as u64,
                latest,
            }),
            index: RwLock::new(HostIndex::new(floor)),
            series: RwLock::new(HashMap::new()),
        });
        cat.by_id.insert(id, entry.clone());
        cat.hosts.insert(name, entry);
    }
    let mut stmt = conn.prepare("SELECT name, at FROM retired_hosts").map_err(db_err)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
    for row in rows {
        let (name, at): (String, TsMs) = row.map_err(db_err)?;
        cat.retired.insert(name, at);
    }
    let mut stmt = conn.prepare("SELECT id, host_id, process FROM series").map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?, r.get::<_, String>(2)?)))
        .map_err(db_err)?;
    for row in rows {
        let (sid, hid, process) = row.map_err(db_err)?;
        if let Some(h) = cat.by_id.get(&hid) {
            h.series.write().insert(process.clone(), sid);
        }
        cat.series.insert(sid, (hid, process));
    }
    Ok(cat)
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.readers.lock().pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path, self.opts.durability).map_err(db_err)?,
        };
        let out = {
            let tx = conn.unchecked_transaction().map_err(db_err)?;
            let out = f(&tx);
            tx.finish().map_err(db_err)?;
            out
        };
        let mut pool = self.readers.lock();
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        check_batch(batch)?;
        let mut w = self.writer.lock();
        let floor = self.floor.load(Ordering::SeqCst);
        let rfloor = self.retention_floor.load(Ordering::SeqCst);
        let existing = self.catalog.read().hosts.get(&batch.host).cloned();
        let res = self.write_locked(&mut w, batch, existing.as_ref(), floor, rfloor);
        if res.is_ok() && self.opts.durability == Durability::Power {
            let ticket = self.wal_sync.ticket();
            drop(w);
            let mut wal = self.path.clone().into_os_string();
            wal.push("-wal");
            self.wal_sync.wait(Path::new(&wal), ticket).map_err(|e| {
                StoreError::Unavailable(format!("fsync of the write-ahead log failed: {e}"))
            })?;
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

    fn write_locked(
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
        if let Some(ts) = newest {
            state.last_seen = state.last_seen.max(ts);
        }
        let (last, gaps, gap, is_new) = agg::seq_update(state.seq, batch.seq);
        state.seq = Some((last, gaps));
        if is_new {
            state.dropped += batch.dropped_samples;
            state.interval_ms = batch.interval_ms;
        }
        for t in &totals {
            if state.latest.as_ref().is_none_or(|l| t.ts >= l.ts) {
                state.latest = Some((*t).clone());
            }
        }

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
                state.dropped as i64
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
                    state: Mutex::new(HostState::default()),
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

    /// The samples one series of a host sending every `interval_ms` holds at most in memory:
    /// the window, a fold step, a maintenance period (the floor moves only at a pass), and
    /// two for jitter. 0 (grow as needed) when the interval is unknown; at most 4,096.
    fn window_cap(&self, interval_ms: u64) -> usize {
        if interval_ms == 0 {
            return 0;
        }
        let o = &self.opts;
        let span = (o.memory_window_ms + o.fold_step_ms).max(0) as u128
            + o.maintenance_interval.as_millis();
        ((span / u128::from(interval_ms)) as usize + 2).min(4096)
    }

    /// Rebuilds the in-memory index from chunks reaching the floor and the whole head.
    fn rebuild_index(&self) -> StoreResult<()> {
        let floor = self.floor.load(Ordering::SeqCst);
        let cat = self.catalog.read();
        let w = self.writer.lock();
        let mut per_series: HashMap<u32, Vec<Columns>> = HashMap::new();
        {
            let mut stmt = w
                .conn
                .prepare("SELECT series_id, data FROM chunks WHERE end_ts >= ?1 ORDER BY gen, id")
                .map_err(db_err)?;
            let mut rows = stmt.query([floor]).map_err(db_err)?;
            while let Some(row) = rows.next().map_err(db_err)? {
                let sid: u32 = row.get(0).map_err(db_err)?;
                let blob: Vec<u8> = row.get(1).map_err(db_err)?;
                per_series.entry(sid).or_default().push(codec::decode(&blob).map_err(other)?);
            }
        }
        for (sid, parts) in per_series {
            let Some((hid, process)) = cat.series.get(&sid) else { continue };
            let Some(h) = cat.by_id.get(hid) else { continue };
            let merged = merge_columns(parts, floor, TsMs::MAX);
            let mut idx = h.index.write();
            idx.cap = self.window_cap(h.state.lock().interval_ms);
            for i in 0..merged.len() {
                idx.upsert(
                    process,
                    merged.ts[i],
                    merged.cpu[i],
                    merged.cores[i],
                    merged.mem[i],
                    merged.rss[i],
                    merged.count[i],
                );
            }
        }
        let mut stmt = w.conn.prepare("SELECT data FROM head ORDER BY id").map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        let mut recs = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            recs.clear();
            let blob = row
                .get_ref(0)
                .map_err(db_err)?
                .as_blob()
                .map_err(|e| other(rusqlite::Error::from(e)))?;
            decode_head(blob, &mut recs).map_err(other)?;
            // One batch is one host: lock its index once per row.
            let Some(h) = recs
                .first()
                .and_then(|r| cat.series.get(&r.sid))
                .and_then(|(hid, _)| cat.by_id.get(hid))
            else {
                continue;
            };
            let mut idx = h.index.write();
            idx.cap = self.window_cap(h.state.lock().interval_ms);
            for r in &recs {
                if r.ts < floor {
                    continue;
                }
                let Some((hid, process)) = cat.series.get(&r.sid) else { continue };
                if *hid != h.id {
                    continue; // never written so; a head row holds one host's samples
                }
                idx.upsert(process, r.ts, r.cpu, r.cores, r.mem, r.rss, r.count);
            }
        }
        Ok(())
    }

    /// Folds head rows so that every sample older than `target` is in chunks, then raises the
    /// memory floor to `target` and evicts memory. Returns the head rows folded.
    fn advance(&self, target: TsMs) -> StoreResult<u64> {
        let mut folded = 0u64;
        loop {
            let mut w = self.writer.lock();
            let floor = self.floor.load(Ordering::SeqCst);
            if target <= floor {
                return Ok(folded);
            }
            // The prefix of the head (by arrival) up to the last row reaching below target.
            let limit: Option<i64> = w
                .conn
                .query_row("SELECT max(id) FROM head WHERE min_ts < ?1", [target], |r| r.get(0))
                .map_err(db_err)?;
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
            let host_id: i64 = w
                .conn
                .query_row(
                    "SELECT host_id FROM head WHERE id <= ?1 ORDER BY id LIMIT 1",
                    [limit],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let gen = w.gen + 1;
            let tx = w.conn.transaction().map_err(db_err)?;
            let mut recs = Vec::new();
            let mut ids = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached("SELECT id, data FROM head WHERE id <= ?1 AND host_id = ?2 ORDER BY id LIMIT 64")
                    .map_err(db_err)?;
                let mut rows = stmt.query(params![limit, host_id]).map_err(db_err)?;
                while let Some(row) = rows.next().map_err(db_err)? {
                    ids.push(row.get::<_, i64>(0).map_err(db_err)?);
                    let blob = row
                        .get_ref(1)
                        .map_err(db_err)?
                        .as_blob()
                        .map_err(|e| other(rusqlite::Error::from(e)))?;
                    decode_head(blob, &mut recs).map_err(other)?;
                }
            }
            fold_head_rows(&tx, &ids, &mut recs, gen, self.opts.block_ms).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            w.gen = gen;
            folded += ids.len() as u64;
        }
    }

    /// Merges the chunks of every complete block (ending at or before the memory floor) that
    /// still has level-0 chunks into one level-1 chunk.
    fn merge_blocks(&self) -> StoreResult<u64> {
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
                let mut ids = Vec::new();
                let mut parts = Vec::new();
                let mut gen = 0i64;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT id, gen, level, data FROM chunks WHERE series_id = ?1 AND start_ts >= ?2 AND start_ts < ?3 ORDER BY gen, id",
                        )
                        .map_err(db_err)?;
                    let mut rows = stmt.query(params![sid, block, block + b]).map_err(db_err)?;
                    while let Some(row) = rows.next().map_err(db_err)? {
                        ids.push(row.get::<_, i64>(0).map_err(db_err)?);
                        gen = gen.max(row.get::<_, i64>(1).map_err(db_err)?);
                        if row.get::<_, i64>(2).map_err(db_err)? == 0 {
                            merged += 1;
                        }
                        let blob = row
                            .get_ref(3)
                            .map_err(db_err)?
                            .as_blob()
                            .map_err(|e| other(rusqlite::Error::from(e)))?;
                        parts.push(codec::decode(blob).map_err(other)?);
                    }
                }
                let c = merge_columns(parts, TsMs::MIN, TsMs::MAX);
                {
                    let mut del =
                        tx.prepare_cached("DELETE FROM chunks WHERE id = ?1").map_err(db_err)?;
                    for id in &ids {
                        del.execute([id]).map_err(db_err)?;
                    }
                }
                if !c.is_empty() {
                    tx.prepare_cached(
                        "INSERT INTO chunks(series_id, start_ts, end_ts, n, gen, level, data) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![sid, c.ts[0], c.ts[c.len() - 1], c.len() as i64, gen, codec::encode(&c)])
                    })
                    .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
        }
    }

    /// Folds the late head rows into level-0 chunks, host by host, oldest write first; the
    /// chunks take the highest `gen` of the rows they fold. Returns the rows folded.
    fn fold_late(&self) -> StoreResult<u64> {
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
            let mut recs = Vec::new();
            let mut ids = Vec::new();
            let mut gen = 0i64;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, gen, data FROM head WHERE gen > 0 AND host_id = ?1 ORDER BY gen LIMIT 256",
                    )
                    .map_err(db_err)?;
                let mut rows = stmt.query([host_id]).map_err(db_err)?;
                while let Some(row) = rows.next().map_err(db_err)? {
                    ids.push(row.get::<_, i64>(0).map_err(db_err)?);
                    gen = gen.max(row.get::<_, i64>(1).map_err(db_err)?);
                    let blob = row
                        .get_ref(2)
                        .map_err(db_err)?
                        .as_blob()
                        .map_err(|e| other(rusqlite::Error::from(e)))?;
                    decode_head(blob, &mut recs).map_err(other)?;
                }
            }
            fold_head_rows(&tx, &ids, &mut recs, gen, self.opts.block_ms).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            folded += ids.len() as u64;
        }
    }

    fn compact(&self, now: TsMs) -> StoreResult<CompactStats> {
        let target = now - self.opts.memory_window_ms;
        let floor = self.floor.load(Ordering::SeqCst);
        let mut stats = CompactStats::default();
        stats.head_rows_folded += self.fold_late()?;
        if target - floor >= self.opts.fold_step_ms {
            stats.head_rows_folded += self.advance(target)?;
        }
        stats.chunks_merged = self.merge_blocks()?;
        Ok(stats)
    }

    fn maintain(&self, now: TsMs) -> StoreResult<CompactStats> {
        self.apply_retention(now - self.opts.retention_ms)?;
        let stats = self.compact(now)?;
        let w = self.writer.lock();
        w.conn.execute_batch("PRAGMA incremental_vacuum(2048);").map_err(db_err)?;
        Ok(stats)
    }

    fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        if cutoff <= self.retention_floor.load(Ordering::SeqCst) {
            return Ok(0);
        }
        // Everything older than the cutoff must be in chunks before whole chunks are dropped.
        self.advance(cutoff)?;
        self.fold_late()?;
        let mut w = self.writer.lock();
        let tx = w.conn.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('retention_floor', ?1)",
            [cutoff],
        )
        .map_err(db_err)?;
        let removed: i64 = tx
            .query_row("SELECT COALESCE(SUM(n), 0) FROM chunks WHERE end_ts < ?1", [cutoff], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        tx.execute("DELETE FROM chunks WHERE end_ts < ?1", [cutoff]).map_err(db_err)?;
        let hosts: Vec<Arc<HostEntry>> = self.catalog.read().hosts.values().cloned().collect();
        {
            let mut st = tx
                .prepare_cached("DELETE FROM host_totals WHERE host_id = ?1 AND ts < ?2")
                .map_err(db_err)?;
            for h in &hosts {
                st.execute(params![h.id, cutoff]).map_err(db_err)?;
            }
        }
        tx.execute("DELETE FROM alarms WHERE end_ts IS NOT NULL AND end_ts < ?1", [cutoff])
            .map_err(db_err)?;
        // A retirement older than the cutoff hides nothing any more: the host is gone.
        tx.execute("DELETE FROM retired_hosts WHERE at < ?1", [cutoff]).map_err(db_err)?;
        self.catalog.write().retired.retain(|_, at| *at >= cutoff);
        // Hosts silent since before the cutoff are forgotten (their seq history too).
        tx.execute(
            "UPDATE hosts SET last_seq = NULL, seq_gaps = 0, dropped = 0 WHERE last_seen < ?1",
            [cutoff],
        )
        .map_err(db_err)?;
        // Series left with no chunk and nothing in memory (so nothing in the head either)
        // are forgotten, so the catalog does not grow with every process name ever seen.
        let orphans: Vec<(u32, u32, String)> = {
            let mut st = tx
                .prepare_cached(
                    "SELECT id, host_id, process FROM series s WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.series_id = s.id)",
                )
                .map_err(db_err)?;
            let rows =
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db_err)?;
            let cat = self.catalog.read();
            let mut out = Vec::new();
            for row in rows {
                let (sid, hid, process): (u32, u32, String) = row.map_err(db_err)?;
                let in_memory = cat.by_id.get(&hid).is_some_and(|h| {
                    h.index.read().series.get(&process).is_some_and(|r| !r.c.is_empty())
                });
                if !in_memory {
                    out.push((sid, hid, process));
                }
            }
            out
        };
        {
            let mut st = tx.prepare_cached("DELETE FROM series WHERE id = ?1").map_err(db_err)?;
            for (sid, _, _) in &orphans {
                st.execute([sid]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        self.retention_floor.store(cutoff, Ordering::SeqCst);
        if !orphans.is_empty() {
            let mut cat = self.catalog.write();
            for (sid, hid, process) in &orphans {
                cat.series.remove(sid);
                if let Some(h) = cat.by_id.get(hid) {
                    h.series.write().remove(process);
                }
            }
        }
        for h in &hosts {
            let mut st = h.state.lock();
            if st.last_seen < cutoff {
                st.seq = None;
                st.dropped = 0;
            }
            if st.latest.as_ref().is_some_and(|l| l.ts < cutoff) {
                st.latest = None;
            }
        }
        Ok(removed.max(0) as u64)
    }

    /// The series a query selects, sorted by (host, process).
    fn select(&self, host: Option<&str>, process: Option<&str>) -> Vec<Sel> {
        let cat = self.catalog.read();
        let hosts: Vec<Arc<HostEntry>> = match host {
            Some(h) => cat.hosts.get(h).cloned().into_iter().collect(),
            None => cat.hosts.values().cloned().collect(),
        };
        drop(cat);
        let mut out = Vec::new();
        for h in hosts {
            let ser = h.series.read();
            match process {
                Some(p) => {
                    if let Some(&sid) = ser.get(p) {
                        out.push(Sel { host: h.clone(), process: p.to_string(), sid });
                    }
                }
                None => {
                    let mut all: Vec<(&String, &u32)> = ser.iter().collect();
                    all.sort_unstable();
                    for (p, &sid) in all {
                        out.push(Sel { host: h.clone(), process: p.clone(), sid });
                    }
                }
            }
        }
        out
    }

    /// Full columns of `sel` in `[from, to)`: chunks below the host's memory floor, memory above.
    fn series_columns(&self, sels: &[Sel], from: TsMs, to: TsMs) -> StoreResult<Vec<Columns>> {
        let mut mem_parts = Vec::with_capacity(sels.len());
        let mut need_disk = false;
        for s in sels {
            let idx = s.host.index.read();
            let floor = idx.floor;
            let mut c = Columns::default();
            if let Some(ring) = idx.series.get(&s.process) {
                let r = ring.range(from.max(floor), to);
                ring.c.append_to(&mut c, r);
            }
            need_disk |= from < floor;
            mem_parts.push((floor, c));
        }
        if !need_disk {
            return Ok(mem_parts.into_iter().map(|(_, c)| c).collect());
        }
        self.with_reader(|conn| {
            let mut out = Vec::with_capacity(sels.len());
            // Each host's late head rows, read once (usually none).
            let mut late: HashMap<u32, Vec<(i64, Vec<HeadRec>)>> = HashMap::new();
            for (s, (floor, mem)) in sels.iter().zip(mem_parts) {
                if from < floor {
                    let host_late = match late.entry(s.host.id) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(late_rows(conn, s.host.id, from, to)?)
                        }
                    };
                    let mut c = disk_series(conn, s.sid, host_late, from, to.min(floor))?;
                    append_columns(&mut c, &mem, 0..mem.len());
                    out.push(c);
                } else {
                    out.push(mem);
                }
            }
            Ok(out)
        })
    }

    fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        let to = q.to;
        if from >= to {
            return Ok(Vec::new());
        }
        let hosts: Vec<Arc<HostEntry>> = {
            let cat = self.catalog.read();
            match &q.host {
                Some(h) => cat.hosts.get(h).cloned().into_iter().collect(),
                None => cat.hosts.values().cloned().collect(),
            }
        };
        if hosts.iter().all(|h| h.index.read().floor <= from) {
            if let Some(rows) = usage_from_memory(&hosts, q, from, to) {
                return Ok(rows);
            }
        }
        let sels = self.select(q.host.as_deref(), q.process.as_deref());
        let cols = self.series_columns(&sels, from, to)?;
        let mut scratch = Scratch::default();
        let mut rows = Vec::new();
        if q.per_host {
            for (s, c) in sels.iter().zip(&cols) {
                if !c.is_empty() {
                    let host = Some(s.host.name.clone());
                    rows.push(index::row_of(c, 0..c.len(), host, s.process.clone(), &mut scratch));
                }
            }
        } else {
            // `sels` is sorted by (host, process): grouping keeps host order inside a process.
            let mut by_proc: BTreeMap<&str, Vec<&Columns>> = BTreeMap::new();
            for (s, c) in sels.iter().zip(&cols) {
                by_proc.entry(&s.process).or_default().push(c);
            }
            let mut acc = MergedAcc::default();
            for (p, group) in by_proc {
                acc.clear();
                for c in group {
                    acc.add(c, 0..c.len());
                }
                if !acc.is_empty() {
                    rows.push(acc.finish(p.to_string()));
                }
            }
        }
        Ok(rows)
    }

    fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        if from >= q.to {
            return Ok(Vec::new());
        }
        let sels = self.select(q.host.as_deref(), q.process.as_deref());
        let cols = self.series_columns(&sels, from, q.to)?;
        // Each series' columns are dropped as soon as its samples are built: the alarm
        // evaluator's first pass reads every series' whole window, and holding both copies of
        // all of them at once doubled that peak.
        Ok(sels
            .iter()
            .zip(cols)
            .filter(|(_, c)| !c.is_empty())
            .map(|(s, c)| SeriesWindow {
                host: s.host.name.clone(),
                process: s.process.clone(),
                samples: (0..c.len()).map(|i| col_sample(&c, i, &s.process)).collect(),
            })
            .collect())
    }

    fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let sels = self.select(Some(&q.host), Some(&q.process));
        if sels.is_empty() {
            return Err(StoreError::NotFound(format!("{}/{}", q.host, q.process)));
        }
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        if from >= q.to {
            return Ok(Vec::new());
        }
        let cols = self.series_columns(&sels, from, q.to)?;
        let c = &cols[0];
        let samples: Vec<Sample> = (0..c.len()).map(|i| col_sample(c, i, "")).collect();
        Ok(agg::history_points(&samples, q.step_ms))
    }

    fn hosts(&self) -> Vec<HostInfo> {
        let rfloor = self.retention_floor.load(Ordering::SeqCst);
        let (hosts, retired): (Vec<Arc<HostEntry>>, HashMap<String, TsMs>) = {
            let cat = self.catalog.read();
            (cat.hosts.values().cloned().collect(), cat.retired.clone())
        };
        hosts
            .iter()
            .filter_map(|h| {
                let st = h.state.lock();
                let listed = st.last_seen >= rfloor
                    && st.seq.is_some()
                    && retired.get(&h.name).is_none_or(|at| st.last_seen > *at);
                listed.then(|| HostInfo {
                    host: h.name.clone(),
                    last_seen: st.last_seen,
                    interval_ms: st.interval_ms,
                    last_seq: st.seq.map_or(0, |s| s.0),
                    seq_gaps: st.seq.map_or(0, |s| s.1),
                    dropped_samples: st.dropped,
                    latest: st.latest.clone(),
                })
            })
            .collect()
    }

    fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        let Some(h) = self.catalog.read().hosts.get(host).cloned() else { return Ok(Vec::new()) };
        let from = from.max(self.retention_floor.load(Ordering::SeqCst));
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT ts, cpu, mem, unattributed FROM host_totals WHERE host_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![h.id, from, to], |r| {
                    Ok(HostTotal { ts: r.get(0)?, cpu: r.get(1)?, mem: r.get(2)?, unattributed_cpu: r.get(3)? })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
    }

    fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let Some(last_seen) =
            self.hosts().into_iter().find(|h| h.host == host).map(|h| h.last_seen)
        else {
            return Err(StoreError::NotFound(format!("host {host:?}")));
        };
        let at = at.max(last_seen);
        let w = self.writer.lock();
        w.conn
            .prepare_cached("INSERT OR REPLACE INTO retired_hosts(name, at) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![host, at]))
            .map_err(db_err)?;
        self.catalog.write().retired.insert(host.to_owned(), at);
        Ok(last_seen)
    }

    fn put_alarm_event(&self, e: &AlarmEvent) -> StoreResult<()> {
        let body = serde_json::to_string(e).map_err(other)?;
        let w = self.writer.lock();
        w.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO alarms(id, start, end_ts, host, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![e.id, e.start, e.end, e.host, body]))
            .map_err(db_err)?;
        Ok(())
    }

    fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let mut v = self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM alarms WHERE start >= ?1 AND start < ?2 AND (?3 IS NULL OR host = ?3) AND (?4 = 0 OR end_ts IS NULL)",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(
                    params![
                        q.from.unwrap_or(i64::MIN),
                        q.to.unwrap_or(i64::MAX),
                        q.host,
                        q.active_only
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(db_err)?;
            let mut out = Vec::new();
            for body in rows {
                let e: AlarmEvent = serde_json::from_str(&body.map_err(db_err)?).map_err(other)?;
                if alarm_matches(q, &e) {
                    out.push(e);
                }
            }
            Ok(out)
        })?;
        sort_newest_first(&mut v);
        if q.limit > 0 {
            v.truncate(q.limit);
        }
        Ok(v)
    }
}

#[async_trait]
impl Storage for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        // On a multi-thread runtime, write in place (no copy of the batch, no thread hop);
        // elsewhere, on the blocking pool.
        if tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        {
            return tokio::task::block_in_place(|| self.inner.write_batch(batch));
        }
        let batch = batch.clone();
        self.blocking(move |i| i.write_batch(&batch)).await
    }

    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        Ok(self.inner.hosts())
    }

    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let q = q.clone();
        self.blocking(move |i| i.usage(&q)).await
    }

    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        let q = q.clone();
        self.blocking(move |i| i.window(&q)).await
    }

    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let q = q.clone();
        self.blocking(move |i| i.history(&q)).await
    }

    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        let host = host.to_string();
        self.blocking(move |i| i.host_totals(&host, from, to)).await
    }

    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        self.blocking(move |i| i.apply_retention(cutoff)).await
    }

    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let host = host.to_owned();
        self.blocking(move |i| i.retire_host(&host, at)).await
    }

    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()> {
        let e = event.clone();
        self.blocking(move |i| i.put_alarm_event(&e)).await
    }

    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let q = q.clone();
        self.blocking(move |i| i.alarm_events(&q)).await
    }

    async fn health(&self) -> StoreResult<()> {
        self.blocking(|i| {
            i.with_reader(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err))
        })
        .await
    }

    fn window_bytes(&self) -> Option<u64> {
        let hosts: Vec<Arc<HostEntry>> =
            self.inner.catalog.read().hosts.values().cloned().collect();
        Some(hosts.iter().map(|h| h.index.read().estimated_bytes() as u64).sum())
    }

    async fn close(&self) -> StoreResult<()> {
        self.stop_thread();
        self.blocking(|i| {
            let w = i.writer.lock();
            w.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(db_err)
        })
        .await
    }
}
