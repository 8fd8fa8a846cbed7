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
//! - `rollups(series_id, bucket, n, cpu_min, cpu_sum, cpu_max, mem_min, mem_sum, mem_max,
//!   cores_sum, rss_sum, count_sum)`: 5-minute roll-ups, recomputed for the buckets each fold
//!   touches in the fold's own transaction, kept `rollup_retention_ms` (30 d); they answer
//!   `history_answer` past the raw retention or at steps of whole 5 minutes (`rollup.rs`).
//!   Only recent buckets stay rows: closed ones are packed into
//!   `rollup_blocks(series_id, day, last, data)`, one compressed blob per series and UTC day
//!   (`rollup_pack.rs`, `rollup_codec.rs`).
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
//! Memory use: bit-packed at an agent's precision (about 8 bytes a quiet sample), 40 otherwise
//! (`ring.rs`); a series' buffer is allocated once at what it holds at most, (window + fold
//! step + two maintenance periods) / its host's interval + 2 samples (the server's 5 min
//! window and 1 min step at 10 s: 50). Each row of `head` is a whole batch: the fold
//! finds its prefix through the `head_min_ts` index and each host's rows of it through
//! `head_host`, never by reading the head table itself (a scan of a few minutes' rows cost most
//! of a 60 s pass at 300,000 series). Server figures per series: BENCHMARKS.md, "Memory per
//! active series". Big usage queries (8 hosts or more, or merged rows over ≥ 2,000 series) use two
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
//! cutoff drop out of `hosts()` and their `seq` bookkeeping restarts. Roll-ups are computed
//! before raw chunks go (retention folds first) and are deleted, series by series, once their
//! bucket is older than `now - rollup_retention_ms` (hourly; packed day blocks once their
//! whole day is); a series is forgotten only when
//! it has neither chunks nor roll-ups left.
//!
//! # Idempotency and seq
//!
//! A sample with the same (host, process, ts) as a stored one replaces it, wherever the old one
//! lives (memory: replaced in place; head: the later row wins when the head is folded;
//! chunks: the newer `gen` wins on read and at the next merge). Host `seq` bookkeeping follows `procwatch_store::agg::seq_update`.
//!
//! # Code map
//!
//! - `lib.rs`: `SqliteStore` (open, the maintenance thread, diagnostics); `storage.rs`: its
//!   `Storage` impl. `inner.rs`: the shared state (writer, reader pool, floors).
//! - `options.rs`: `SqliteOptions`, `Durability`; `schema.rs`: tables, connections, the
//!   directory lock, error mapping; `wal_sync.rs`: the group commit of `Durability::Power`.
//! - `catalog.rs`: hosts and series ids; `head.rs`: the head row format; `write.rs`: the
//!   write path.
//! - `index.rs` + `memory.rs`: the in-memory recent window and the queries it answers alone;
//!   `disk.rs`: reading chunks and late rows back; `read.rs`: usage, window, history, totals.
//! - `codec.rs`: the chunk compression; `compact.rs`: fold, late-row fold, block merge;
//!   `retention.rs`: the retention floor; `rollup.rs`: the 5-minute roll-ups and the long
//!   history they answer; `rollup_pack.rs`: packing closed buckets into day blocks
//!   (`rollup_codec.rs`: their compression, on `codec.rs`'s primitives); `alarms.rs`: alarm
//!   events.
#![deny(missing_docs)]

mod alarms;
mod catalog;
mod codec;
mod compact;
mod directives;
mod disk;
mod extras;
mod head;
mod index;
mod inner;
mod memory;
mod options;
mod read;
mod retention;
mod ring;
mod rollup;
mod rollup_codec;
mod rollup_pack;
mod schema;
mod storage;
mod top;
mod wal_sync;
mod write;

pub use codec::{decode as decode_chunk, encode as encode_chunk, Columns, CorruptChunk};
pub use options::{CompactStats, Durability, SqliteOptions};

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use procwatch_model::TsMs;
use procwatch_store::{StoreError, StoreResult};
use rusqlite::OptionalExtension;

use catalog::{load_catalog, HostEntry};
use inner::{Inner, Writer};
use schema::{db_err, open_conn, other, take_dir_lock, DB_FILE, SCHEMA, WRITER_CACHE_KIB};
use wal_sync::WalSync;
/// The embedded SQLite store. See the crate documentation.
pub struct SqliteStore {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Permits of the reads that reach below the memory floor over more than one series
    /// (`blocking_read`): [`DISK_READS_AT_ONCE`].
    disk_reads: Arc<tokio::sync::Semaphore>,
    /// Reads waiting for one of `disk_reads`' permits.
    reads_waiting: AtomicU64,
}

/// Usage reads over more than one series that reach below the memory floor, running at once
/// at most; the others wait their turn (first come, first served) or their request's timeout.
/// Such a read is the client's to size (any window up to the retention, the whole fleet), and
/// each takes a core for as long as it runs: without a cap, a few clients asking for 48 h
/// windows would take every core from ingestion and the alarm evaluator. Reads answered from
/// memory (the default windows), one series' reads and the evaluator's never wait.
pub const DISK_READS_AT_ONCE: usize = 2;

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
        let conn = open_conn(&path, opts.durability, WRITER_CACHE_KIB).map_err(db_err)?;
        // auto_vacuum only takes effect before the first table exists.
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL;")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        conn.execute_batch(rollup::ROLLUP_SCHEMA).map_err(db_err)?;
        conn.execute_batch(extras::EXTRAS_SCHEMA).map_err(db_err)?;
        conn.execute_batch(rollup_pack::BLOCK_SCHEMA).map_err(db_err)?;
        rollup::backfill(&conn)?;

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
            rollup_floor: AtomicI64::new(i64::MIN),
            packed_to: AtomicI64::new(i64::MIN),
            stop: AtomicBool::new(false),
            late_rows: std::sync::atomic::AtomicU64::new(0),
            last_maintenance_us: std::sync::atomic::AtomicU64::new(0),
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

        let store = SqliteStore {
            inner,
            thread: Mutex::new(None),
            disk_reads: Arc::new(tokio::sync::Semaphore::new(DISK_READS_AT_ONCE)),
            reads_waiting: AtomicU64::new(0),
        };
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

    /// Every stored 5-minute roll-up bucket, rows and packed blocks alike, by (process,
    /// bucket start). For tests and diagnostics: reads the whole roll-up history.
    pub fn stored_rollups(&self) -> StoreResult<Vec<(String, procwatch_store::rollup::Bucket)>> {
        self.inner.with_reader(rollup_pack::stored)
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

    /// `blocking` for a read whose cost the caller chooses (a fleet over a long window): `f`
    /// gets a flag set once nobody waits for the answer any more (this future dropped: the
    /// request timed out or its client left), and stops at its next host. Without it a
    /// dropped request's read ran to its end on a blocking thread, however long. A read of
    /// `q` that reaches below the memory floor over more than one series first takes one of
    /// the [`DISK_READS_AT_ONCE`] permits, held until `f` returns.
    async fn blocking_read<T: Send + 'static>(
        &self,
        q: &procwatch_store::UsageQuery,
        f: impl FnOnce(&Inner, &AtomicBool) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let _on_drop = SetOnDrop(abandoned.clone());
        let one_series = q.host.is_some() && q.process.is_some();
        let below_floor = q.from < self.inner.floor.load(Ordering::SeqCst);
        let permit = match below_floor && !one_series {
            true => {
                // Counted while it waits, however the wait ends (a permit, or the request
                // dropped).
                let _waiting = Waiting::enter(&self.reads_waiting);
                Some(self.disk_reads.clone().acquire_owned().await.map_err(other)?)
            }
            false => None,
        };
        self.blocking(move |i| {
            let out = f(i, &abandoned);
            drop(permit);
            out
        })
        .await
    }
}

/// One more on a count while it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(n: &'a AtomicU64) -> Waiting<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn maintenance_loop(weak: Weak<Inner>, every: Duration) {
    // At a fixed rate: a pass woken early (late rows, `write.rs`) runs, but does not push the
    // next regular one back. Each early pass used to restart the wait, and one that came less
    // than a fold step after the last advance left the floor where it was: at 300,000 series
    // the floor fell minutes behind, every ring outgrew the window's capacity at once, and the
    // outgrown buffers stayed in the heap as ≈ 0.2–0.3 GB of holes (BENCHMARKS.md, Session 11).
    let mut due: Option<std::time::Instant> = None;
    loop {
        let wait = match (due, weak.upgrade()) {
            (_, None) => return,
            (None, Some(_)) => every,
            (Some(d), Some(inner)) => d.saturating_duration_since(inner.opts.clock.instant()),
        };
        std::thread::park_timeout(wait);
        let Some(inner) = weak.upgrade() else { return };
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = inner.opts.clock.instant();
        let regular = due.unwrap_or(now);
        if now >= regular {
            // The next regular pass: one period after this one was due, or after now if this
            // one came later than that (a long pass, a busy machine).
            due = Some((regular + every).max(now));
        }
        if let Err(error) = inner.maintain(inner.opts.clock.now_ms()) {
            tracing::warn!(message = "Store maintenance failed.", %error);
        }
        let took = inner.opts.clock.instant().saturating_duration_since(now);
        inner.last_maintenance_us.store(took.as_micros() as u64 + 1, Ordering::Relaxed);
        if took > every {
            // The next pass starts at once: maintenance runs back to back and competes with
            // ingestion for the writer (the figure is `procwatch_store_maintenance_seconds`).
            tracing::warn!(
                message = "Store maintenance took longer than its period.",
                took_ms = took.as_millis() as u64,
                period_ms = every.as_millis() as u64
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_store::{LongReads, Storage, UsageNeeds, UsageQuery};

    /// A store with no maintenance thread, its directory, and its memory floor.
    fn open_store() -> (SqliteStore, tempfile::TempDir, TsMs) {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            SqliteOptions { maintenance_interval: Duration::ZERO, ..SqliteOptions::default() };
        let store = SqliteStore::open(dir.path(), opts).unwrap();
        let floor = store.inner.floor.load(Ordering::SeqCst);
        (store, dir, floor)
    }

    fn sample(ts: TsMs, process: &str) -> procwatch_model::Sample {
        procwatch_model::Sample {
            ts,
            process: process.into(),
            cpu: 1.0,
            cores: 0.01,
            mem: 1.0,
            rss: 4096,
            count: 1,
            extras: None,
        }
    }

    fn query(from: TsMs, to: TsMs) -> UsageQuery {
        UsageQuery { from, to, host: None, process: None, per_host: true }
    }

    /// A read whose future is dropped (its request timed out or its client left) is told so,
    /// and a below-floor usage read told so stops with an error instead of running on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_nobody_waits_for_stops() {
        let (store, _dir, floor) = open_store();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (saw_tx, saw_rx) = std::sync::mpsc::channel::<bool>();
        let recent = query(TsMs::MAX - 1, TsMs::MAX);
        let read = store.blocking_read(&recent, move |_, stop| {
            let _ = started_tx.send(());
            // Looks at the flag once the test has dropped the read (or given up).
            let _ = release_rx.recv();
            let _ = saw_tx.send(stop.load(Ordering::Relaxed));
            Ok(())
        });
        tokio::select! {
            _ = read => panic!("the read ended before it was dropped"),
            _ = started_rx => {} // running: the select drops the read here
        }
        release_tx.send(()).unwrap();
        let saw = tokio::task::spawn_blocking(move || saw_rx.recv().unwrap()).await.unwrap();
        assert!(saw, "the dropped read was not told");

        // A usage read below the memory floor looks at the flag host by host.
        let q = query(floor - 3_600_000, floor + 60_000);
        let batch =
            procwatch_store::conformance::batch("h", 1, vec![sample(floor - 1_800_000, "p")]);
        store.write_batch(&batch).await.unwrap();
        let needs = UsageNeeds::ALL;
        let go = AtomicBool::new(false);
        assert_eq!(store.inner.usage(&q, needs, &go).unwrap().len(), 1);
        let stopped = AtomicBool::new(true);
        let err = store.inner.usage(&q, needs, &stopped).unwrap_err();
        assert!(err.to_string().contains("its request ended"), "{err}");
    }

    /// Reads below the memory floor over more than one series take one of
    /// `DISK_READS_AT_ONCE` permits and wait while none is free; reads from memory and one
    /// series' reads do not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_reads_take_turns_and_short_ones_do_not_wait() {
        let (store, _dir, floor) = open_store();
        let now = floor + 600_000;
        let samples = vec![
            sample(floor - 1_800_000, "p"),
            sample(now - 30_000, "p"),
            sample(now - 30_000, "q"),
        ];
        store.write_batch(&procwatch_store::conformance::batch("h", 1, samples)).await.unwrap();
        let long = query(floor - 3_600_000, now);
        let one = UsageQuery { host: Some("h".into()), process: Some("p".into()), ..long.clone() };
        let recent = UsageQuery { from: floor + 1, ..long.clone() };
        let held = store.disk_reads.clone().acquire_many_owned(DISK_READS_AT_ONCE as u32).await;
        let held = held.unwrap();
        let mut waiting = Box::pin(store.usage(&long));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        let gauges = |running, waiting| Some(LongReads { running, waiting });
        assert_eq!(store.long_reads(), gauges(DISK_READS_AT_ONCE as u64, 1));
        // Meanwhile the others answer, each a full round trip through the blocking pool.
        let rows = store.usage(&recent).await.unwrap();
        assert_eq!(rows.len(), 2);
        let rows = store.usage(&one).await.unwrap();
        assert_eq!(rows[0].samples, 2);
        for _ in 0..3 {
            tokio::task::spawn_blocking(|| ()).await.unwrap();
            assert!(futures::poll!(waiting.as_mut()).is_pending(), "ran without a permit");
        }
        drop(held);
        let rows = waiting.await.unwrap();
        assert_eq!(rows.iter().map(|r| r.samples).sum::<u64>(), 3);
        assert_eq!(store.disk_reads.available_permits(), DISK_READS_AT_ONCE);
        assert_eq!(store.long_reads(), gauges(0, 0));

        // A request dropped while it waits leaves the count.
        let held = store.disk_reads.clone().acquire_owned().await.unwrap();
        let held2 = store.disk_reads.clone().acquire_owned().await.unwrap();
        let mut gone = Box::pin(store.usage(&long));
        assert!(futures::poll!(gone.as_mut()).is_pending());
        assert_eq!(store.long_reads(), gauges(2, 1));
        drop(gone);
        assert_eq!(store.long_reads(), gauges(2, 0));
        drop((held, held2));
        assert_eq!(store.long_reads(), gauges(0, 0));
    }
}
