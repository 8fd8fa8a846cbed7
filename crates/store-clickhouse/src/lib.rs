//! `ClickHouseStore`: the storage backend on a sharded, replicated ClickHouse cluster
//! (`ReplicatedMergeTree` tables on every node, `Distributed` tables sharded by host,
//! coordinated by ZooKeeper), for fleets that outgrow one server. See `docs/scaling-out.md`.
//!
//! Guarantees, and how:
//! - **A 2xx means stored on the shard.** Through the `Distributed` tables (the default) every
//!   insert runs with `insert_distributed_sync=1`: ClickHouse answers only after the rows are
//!   written on a replica of each target shard (never "queued on the receiving node"). With
//!   [`ClickHouseConfig::shard_urls`] (**shard-aware writes**, `shard.rs`) the store computes
//!   each batch's shard as the `Distributed` tables' sharding key does (`cityHash64(host)`,
//!   ClickHouse's CityHash v1.0.2, modulo the shard weights) and inserts straight into that
//!   shard's local `ReplicatedReplacingMergeTree` tables on its first replica (the one reads
//!   use), the next on a connection error: the answer again comes once the rows are written on
//!   a replica of their shard and committed in ZooKeeper, one hop fewer. Either way the other
//!   replica fetches them through ZooKeeper, and with ZooKeeper down the replicated tables are
//!   read-only and every write fails with [`StoreError::Unavailable`] (the server answers 503)
//!   while reads go on. Reads always go through the `Distributed` tables.
//! - **Idempotent delivery.** A batch becomes deterministic insert blocks (rows sorted by
//!   `(process, ts)`, `version` = the batch `seq`, nothing time-dependent), so a retried batch —
//!   through this store or another procwatch server, through `Distributed` or straight to the
//!   shard — has the same block checksum and the replicated table ignores it
//!   (`insert_deduplicate`, on by default; the shard's last 100 blocks). On top of that the
//!   tables are `ReplacingMergeTree(version)` read with `FINAL`: a sample with the same
//!   `(host, process, ts)` replaces the stored one (the later `seq` wins).
//! - **Group commit, several INSERTs in flight** (`group.rs`): a batch's rows join a bounded
//!   queue; while fewer than `max_inserts_in_flight` (4) data INSERTs run, a new one starts
//!   with everything queued (at once, or after `insert_linger` when one is set: off by
//!   default), so an idle cluster adds no wait, and under load the batches that would wait
//!   share the next INSERT (a replicated INSERT costs about the same whether it carries 300
//!   rows or 5,000). With shard-aware writes there is one such queue per shard, with
//!   `max_inserts_in_flight_per_shard` (2) INSERTs in flight each, so a group is one INSERT on
//!   one shard and never waits for the other shard. `write_batch` returns `Ok` only once the
//!   INSERT holding its rows was acknowledged; a failed INSERT fails every batch in it. A
//!   group resent as it was (a replica failover) is the same block and stored once; a batch
//!   that was grouped and is retried in another group or alone is a different block, so the
//!   insert deduplication does not catch it: it is stored again as the same
//!   `(host, process, ts, version)` rows, which `FINAL` reads once and the background merges
//!   collapse (so until then a count without `FINAL`, e.g. `apply_retention`'s "removed"
//!   figure, may count such a row twice; `tests/shard_retry.rs`).
//! - **Host bookkeeping off the write path.** The host's bookkeeping (`seq` gaps, dropped
//!   samples, last seen, newest total, retirement) is updated in this store's copy only once
//!   the data INSERT was acknowledged (never before: bookkeeping after data, not data after
//!   bookkeeping), and written to the `hosts` table by a background flush at most
//!   `hosts_flush_every` (1 s) later, every pending host in one INSERT (at once by the writer
//!   when 10,000 hosts are pending; by `close()`; and before `retire_host`, whose own row is
//!   written before it answers). This store's `hosts()` overlays its pending states on the
//!   table, so its reads see every batch it acknowledged; other servers (and an alarm
//!   evaluator taking a host over) see them up to `hosts_flush_every` later. **A crash between
//!   the acknowledgement and the flush** loses no sample (they were on their shard before the
//!   2xx) and makes no retry count twice (above); it loses that second's bookkeeping of the
//!   hosts it wrote: their `last_seen` and newest total go back until the host's next batch,
//!   the samples their agents reported dropped in those batches are not counted, and the
//!   `seq` baseline goes back, so a later batch may report as a gap the batches whose
//!   bookkeeping was lost (`tests/bookkeeping.rs` pins exactly this).
//! - **Reads see the writes**: `load_balancing=in_order` and `prefer_localhost_replica=0` send
//!   every server's reads and writes of a shard to the same (first live) replica. The small
//!   catalogs (`hosts`, `alarm_events`) are read on the node this store talks to: another
//!   server's update shows there once replicated (milliseconds).
//! - **Alarm events** go to `alarm_events` (replicated on every node) one INSERT per call of
//!   `put_alarm_events`, which the server's evaluator makes once per pass with all of the
//!   pass's events, not one replicated INSERT per event.
//! - **Retention** drops whole day partitions (`ALTER … DROP PARTITION`, ClickHouse 18.16 has
//!   no `TTL`) and keeps a retention floor (table `meta`) that every query applies, so rows of
//!   the cutoff's own day below the cutoff are invisible until their partition goes.
//!
//! `usage` is aggregated by ClickHouse next to the data with the reference formulas (numpy's
//! linear p95 spelled out over the sorted values, `sql::usage`); `history` and `window` read one
//! series' raw rows and use the shared `procwatch_store::agg` arithmetic.
#![deny(missing_docs)]

mod error;
mod extras;
mod group;
mod hosts;
mod queries;
// Public only for measurements that insert as the store does (the `insert_profile` example).
#[cfg(feature = "testing")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod rows;
#[cfg(not(feature = "testing"))]
mod rows;
pub mod schema;
pub mod shard;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use procwatch_model::clock::{Clock, SystemClock};
use procwatch_model::{AlarmEvent, Batch, HostTotal, TsMs};
use procwatch_store::memory::check_batch;
use procwatch_store::{
    AlarmQuery, HistoryAnswer, HistoryPoint, HistoryQuery, HostInfo, SeriesWindow, Storage,
    StoreError, StoreResult, UsageQuery, UsageRow, WriteOutcome,
};

use error::shared_error;
pub use error::ClickHouseError;
use hosts::{Book, HostState};
use rows::{sample_rows, HostRow, MetaRow};

/// The default [`ClickHouseConfig::insert_linger`].
pub const DEFAULT_INSERT_LINGER: Duration = Duration::ZERO;

/// The default [`ClickHouseConfig::max_inserts_in_flight_per_shard`].
pub const DEFAULT_INSERTS_IN_FLIGHT_PER_SHARD: usize = 2;

/// Where the cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP URL of one ClickHouse node, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// The cluster name in the nodes' `<remote_servers>` (for `ON CLUSTER` DDL and the
    /// `Distributed` tables).
    pub cluster: String,
    /// Database procwatch creates and uses (letters, digits, `_`).
    pub database: String,
    /// ClickHouse user (default `default`).
    pub user: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// Deadline of each request to ClickHouse.
    pub timeout: Duration,
    /// How long a host's bookkeeping may wait after a batch before it is written to the `hosts`
    /// table, together with every other host's (this store overlays what it has not written
    /// yet on its own reads). Default 1 s.
    pub hosts_flush_every: Duration,
    /// Data INSERTs in flight at once; batches arriving while all are busy are grouped into
    /// the next one (see `group.rs`). Default 4.
    pub max_inserts_in_flight: usize,
    /// Rows in one grouped INSERT at most (a single larger batch still goes alone). Default
    /// 100,000.
    pub max_group_rows: usize,
    /// How long a data INSERT that is about to start waits for more batches to share it
    /// (see `group.rs`): every batch may wait this much longer for its answer, and batches
    /// arriving close together cost the cluster one replicated INSERT instead of several.
    /// At most 100 ms. Default 0: every INSERT starts at once (BENCHMARKS.md, "ClickHouse
    /// cluster", Run 5: at 4 concurrent writers a 5 ms linger lowered the rate).
    pub insert_linger: Duration,
    /// HTTP URLs of every shard's replicas, shard by shard in the order of the cluster's
    /// `<remote_servers>`, each shard's replicas in their order there (checked at connect
    /// against every node's `system.clusters`). When set, a batch's data goes straight to its
    /// shard's local tables on the first reachable of its replicas (`shard.rs`), grouped per
    /// shard, instead of through the `Distributed` tables; reads still go through them. Empty
    /// (default): every data INSERT goes through the `Distributed` tables on `url`.
    pub shard_urls: Vec<Vec<String>>,
    /// With `shard_urls`: data INSERTs in flight at once per shard (each a group of that
    /// shard's batches; the batches arriving meanwhile share the next one). Default 2 (BENCHMARKS.md,
    /// "ClickHouse cluster", Run 6: 1 halved the rate at 4 concurrent writers).
    pub max_inserts_in_flight_per_shard: usize,
}

impl ClickHouseConfig {
    /// A configuration with the default user and a 30 s request timeout.
    pub fn new(url: impl Into<String>, cluster: &str, database: &str) -> Self {
        ClickHouseConfig {
            url: url.into(),
            cluster: cluster.to_string(),
            database: database.to_string(),
            user: None,
            password: None,
            timeout: Duration::from_secs(30),
            hosts_flush_every: Duration::from_secs(1),
            max_inserts_in_flight: 4,
            max_group_rows: 100_000,
            insert_linger: DEFAULT_INSERT_LINGER,
            shard_urls: Vec::new(),
            max_inserts_in_flight_per_shard: DEFAULT_INSERTS_IN_FLIGHT_PER_SHARD,
        }
    }
}

/// The HTTP client and what every request needs.
#[derive(Clone)]
pub(crate) struct Conn {
    client: clickhouse::Client,
    url: String,
    timeout: Duration,
    db: String,
}

impl Conn {
    /// Runs one request under the configured timeout.
    async fn run<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, ClickHouseError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ClickHouseError::Client { url: self.url.clone(), source }),
            Err(_) => {
                Err(ClickHouseError::Timeout { url: self.url.clone(), timeout: self.timeout })
            }
        }
    }

    /// Inserts `rows` into `table` as one RowBinary request (one block per shard and
    /// partition).
    async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), ClickHouseError>
    where
        T: clickhouse::RowWrite + clickhouse::RowOwned,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let table = format!("{}.{table}", self.db);
        self.run(async {
            // The name is `db.table` from validated identifiers.
            let mut ins = self.client.insert_unescaped::<T>(&table).await?;
            for r in rows {
                ins.write(r).await?;
            }
            ins.end().await
        })
        .await
    }

    /// The data of one batch or group: samples (host totals included) and extras at once
    /// (independent inserts; without extras, one).
    pub(crate) async fn insert_rows(&self, rows: &group::Rows) -> Result<(), ClickHouseError> {
        let (a, b) = tokio::join!(
            self.insert("samples", &rows.samples),
            self.insert("extras", &rows.extras)
        );
        a?;
        b
    }
}

/// Hosts with bookkeeping not yet written to `hosts`: past this, a writer flushes (waits)
/// instead of leaving it to the periodic flush.
const MAX_PENDING_HOSTS: usize = 10_000;

/// What the store and its background host flush share.
struct Core {
    conn: Conn,
    clock: Arc<dyn Clock>,
    /// Last version handed out for a catalog row (`hosts`, `alarm_events`, `meta`).
    version: AtomicU64,
    /// This store's copy of each host's bookkeeping and what it has not written yet.
    book: parking_lot::Mutex<Book>,
    /// One flush at a time, so a later flush's rows carry later versions.
    flush_lock: tokio::sync::Mutex<()>,
    flush_every: Duration,
    host_flushes: AtomicU64,
}

impl Core {
    /// A version for a catalog row: the clock in µs-ish units, strictly increasing here.
    fn next_version(&self) -> u64 {
        let now = u64::try_from(self.clock.now_ms()).unwrap_or(0).saturating_mul(1000);
        let mut cur = self.version.load(Ordering::SeqCst);
        loop {
            let next = now.max(cur + 1);
            match self.version.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Writes every pending host state to `hosts` in one INSERT (one row per host, its newest
    /// state); a host changed meanwhile stays pending.
    async fn flush_hosts(&self) -> Result<(), ClickHouseError> {
        let _one = self.flush_lock.lock().await;
        let (rows, written): (Vec<HostRow>, Vec<(String, u64)>) = {
            let book = self.book.lock();
            book.pending_states()
                .into_iter()
                .map(|(host, change, state)| {
                    let state = serde_json::to_string(&state).expect("host state serializes");
                    let row = HostRow { host: host.clone(), state, version: self.next_version() };
                    (row, (host, change))
                })
                .unzip()
        };
        if rows.is_empty() {
            return Ok(());
        }
        self.conn.insert("hosts", &rows).await?;
        self.host_flushes.fetch_add(1, Ordering::Relaxed);
        self.book.lock().written(&written);
        Ok(())
    }
}

/// Starts the background flush of pending host bookkeeping unless one is scheduled: it waits
/// `flush_every`, writes everything pending, and ends once nothing is (a failed flush is
/// retried after another `flush_every`). It holds the store weakly: a dropped store (or a
/// crashed server) writes nothing more; `close()` flushes.
fn schedule_flush(core: &Arc<Core>) {
    {
        let mut book = core.book.lock();
        if book.scheduled || book.pending.is_empty() {
            return;
        }
        book.scheduled = true;
    }
    let weak = Arc::downgrade(core);
    let every = core.flush_every;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(core) = weak.upgrade() else { return };
            if let Err(e) = core.flush_hosts().await {
                tracing::warn!(error = %e, "clickhouse: host bookkeeping not written; retrying");
            }
            let mut book = core.book.lock();
            if book.pending.is_empty() {
                book.scheduled = false;
                return;
            }
        }
    });
}

/// How the writes went since the store connected (for benchmarks and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Data INSERTs sent (each a group of one or more batches).
    pub data_inserts: u64,
    /// Batches those INSERTs carried.
    pub batches: u64,
    /// The time those INSERTs took, summed (from sending to ClickHouse's answer; the mean is
    /// this over `data_inserts`).
    pub data_insert_time: Duration,
    /// INSERTs of pending host bookkeeping into `hosts`.
    pub host_flushes: u64,
}

/// The ClickHouse cluster backend. Share it as `Arc<dyn Storage>`.
pub struct ClickHouseStore {
    client: clickhouse::Client,
    cfg: ClickHouseConfig,
    clock: Arc<dyn Clock>,
    core: Arc<Core>,
    writer: group::Writer,
    /// Retention floor: rows older than this are invisible (their partition may remain).
    floor: AtomicI64,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl ClickHouseStore {
    /// Connects, creates the database and tables on every node (`ON CLUSTER`, idempotent) and
    /// loads the retention floor.
    pub async fn connect(cfg: ClickHouseConfig) -> Result<Self, ClickHouseError> {
        Self::connect_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// [`ClickHouseStore::connect`] with the clock that versions catalog rows.
    pub async fn connect_with_clock(
        cfg: ClickHouseConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ClickHouseError> {
        for (what, name) in [("database", &cfg.database), ("cluster", &cfg.cluster)] {
            if !schema::valid_identifier(name) {
                return Err(ClickHouseError::Config(format!(
                    "{what} {name:?}: use 1-64 letters, digits or '_', not starting with a digit"
                )));
            }
        }
        let mut client = clickhouse::Client::default()
            .with_url(cfg.url.clone())
            // 18.16 knows neither RowBinaryWithNamesAndTypes nor the settings validation uses.
            .with_validation(false)
            .with_setting("insert_distributed_sync", "1")
            .with_setting("insert_deduplicate", "1")
            .with_setting("load_balancing", "in_order")
            // Not even a local replica first: every server reads and writes a shard on the
            // same (first live) replica, so any server reads what another just wrote.
            .with_setting("prefer_localhost_replica", "0")
            .with_setting("distributed_ddl_task_timeout", "60");
        if let Some(u) = &cfg.user {
            client = client.with_user(u.clone());
        }
        if let Some(p) = &cfg.password {
            client = client.with_password(p.clone());
        }
        let conn = Conn {
            client: client.clone(),
            url: cfg.url.clone(),
            timeout: cfg.timeout,
            db: cfg.database.clone(),
        };
        let core = Arc::new(Core {
            conn: conn.clone(),
            clock: clock.clone(),
            version: AtomicU64::new(0),
            book: parking_lot::Mutex::new(Book::default()),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_every: cfg.hosts_flush_every,
            host_flushes: AtomicU64::new(0),
        });
        for sql in schema::ddl(Some(&cfg.cluster), &cfg.database) {
            conn.run(client.query(&sql).execute()).await?;
        }
        let settings = |max_in_flight| group::Settings {
            max_in_flight,
            max_group_rows: cfg.max_group_rows,
            linger: cfg.insert_linger,
        };
        let writer = match shard::connect(&conn, &cfg, &clock).await? {
            None => group::Writer::Distributed(group::GroupCommit::new(
                group::Target::Distributed(Box::new(conn)),
                clock.clone(),
                settings(cfg.max_inserts_in_flight),
            )),
            Some((map, replicas)) => group::Writer::Sharded {
                map,
                shards: replicas
                    .into_iter()
                    .map(|r| {
                        group::GroupCommit::new(
                            group::Target::Shard(r),
                            clock.clone(),
                            settings(cfg.max_inserts_in_flight_per_shard),
                        )
                    })
                    .collect(),
            },
        };
        let store = ClickHouseStore { client, cfg, clock, core, writer, floor: AtomicI64::new(0) };
        let floor: Option<i64> = store
            .run(
                store
                    .client
                    .query(&sql::retention_floor(&store.cfg.database))
                    .fetch_optional::<i64>(),
            )
            .await?;
        // `max` over no rows is 0 (not NULL) in ClickHouse: 0 is also "no floor" for us.
        store.floor.store(floor.unwrap_or(0), Ordering::SeqCst);
        Ok(store)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClickHouseConfig {
        &self.cfg
    }

    /// How the writes went since the store connected.
    pub fn write_stats(&self) -> WriteStats {
        let g = self.writer.stats();
        let host_flushes = self.core.host_flushes.load(Ordering::Relaxed);
        WriteStats {
            data_inserts: g.groups,
            batches: g.batches,
            data_insert_time: g.insert_time,
            host_flushes,
        }
    }

    /// The shard (0-based, in cluster order) `host`'s data goes to, when this store writes
    /// straight to the shards ([`ClickHouseConfig::shard_urls`]); `None` through `Distributed`.
    pub fn shard_of(&self, host: &str) -> Option<usize> {
        self.writer.sharded().map(|m| m.shard_of(host))
    }

    /// For tests: writes `batches` (hosts of one shard, or any with `Distributed` writes) as
    /// one group INSERT, as the group commit does with batches that queued together, then
    /// each one's bookkeeping, as `write_batch` does.
    #[cfg(feature = "testing")]
    pub async fn write_together(&self, batches: &[Batch]) -> StoreResult<()> {
        let Some(first) = batches.first() else { return Ok(()) };
        if let Some(map) = self.writer.sharded() {
            let shard = map.shard_of(&first.host);
            if let Some(b) = batches.iter().find(|b| map.shard_of(&b.host) != shard) {
                return Err(StoreError::InvalidInput(format!(
                    "{} and {} are on different shards",
                    first.host, b.host
                )));
            }
        }
        let mut rows = group::Rows::default();
        for b in batches {
            rows.append(batch_rows(b)?);
        }
        self.writer.write(&first.host, rows).await.map_err(shared_error)?;
        for b in batches {
            self.update_host(&b.host, |s| s.apply(b)).await?;
        }
        Ok(())
    }

    /// Writes the host bookkeeping this store has not written yet to `hosts` now (the periodic
    /// flush does it within `hosts_flush_every`; `close()` does it too).
    pub async fn flush_hosts(&self) -> Result<(), ClickHouseError> {
        self.core.flush_hosts().await
    }

    fn db(&self) -> &str {
        &self.cfg.database
    }

    fn floor(&self) -> TsMs {
        self.floor.load(Ordering::SeqCst)
    }

    /// A version for a catalog row: the clock in µs-ish units, strictly increasing here.
    fn next_version(&self) -> u64 {
        self.core.next_version()
    }

    /// Runs one request under the configured timeout.
    async fn run<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, ClickHouseError> {
        self.core.conn.run(fut).await
    }

    /// Inserts `rows` into `table` as one RowBinary request.
    async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), ClickHouseError>
    where
        T: clickhouse::RowWrite + clickhouse::RowOwned,
    {
        self.core.conn.insert(table, rows).await
    }

    /// The host's state: this store's copy, else the `hosts` table's, else a new host.
    async fn host_state(&self, host: &str) -> Result<HostState, ClickHouseError> {
        if let Some(s) = self.core.book.lock().states.get(host) {
            return Ok(s.clone());
        }
        let row: Option<String> = self
            .run(
                self.client
                    .query(&sql::host_state(self.db()))
                    .bind(host)
                    .fetch_optional::<String>(),
            )
            .await?;
        let state = match row {
            Some(json) => serde_json::from_str::<HostState>(&json)
                .map_err(|e| ClickHouseError::Corrupt(format!("hosts row of {host:?}: {e}")))?
                .after_retention(self.floor())
                .unwrap_or_default(),
            None => HostState::default(),
        };
        Ok(self.core.book.lock().states.entry(host.to_string()).or_insert(state).clone())
    }

    /// Updates the host's state under the lock; it is pending until the next flush writes it
    /// to `hosts` (at once when too many hosts are pending).
    async fn update_host<R>(
        &self,
        host: &str,
        f: impl FnOnce(&mut HostState) -> R,
    ) -> Result<R, ClickHouseError> {
        self.host_state(host).await?;
        let (out, full) = {
            let mut book = self.core.book.lock();
            let out = f(book.states.entry(host.to_string()).or_default());
            book.touch(host);
            (out, book.pending.len() >= MAX_PENDING_HOSTS)
        };
        if full {
            self.core.flush_hosts().await?;
        }
        schedule_flush(&self.core);
        Ok(out)
    }
}

/// A checked batch's rows, deterministic (the same batch always gives the same rows in the same
/// order).
fn batch_rows(batch: &Batch) -> StoreResult<group::Rows> {
    check_batch(batch)?;
    Ok(group::Rows { samples: sample_rows(batch), extras: extras::rows(batch)? })
}

#[async_trait]
impl Storage for ClickHouseStore {
    fn backend(&self) -> &'static str {
        "clickhouse"
    }

    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        let rows = batch_rows(batch)?;
        // Acknowledged by the cluster (on a replica of the shard) before anything else.
        self.writer.write(&batch.host, rows).await.map_err(shared_error)?;
        // The host's bookkeeping only once the data holds the batch; written to `hosts` by the
        // next flush (pending meanwhile, and overlaid on this store's reads).
        let seq_gap = self.update_host(&batch.host, |s| s.apply(batch)).await?;
        Ok(WriteOutcome {
            samples: batch.samples.len(),
            host_totals: batch.host_totals.len(),
            seq_gap,
        })
    }

    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        // What this store has not written yet, taken before the table is read: a flush
        // finishing in between leaves the table at least as new as this.
        let pending = self.core.book.lock().pending_states();
        let rows: Vec<(String, String)> = self
            .run(self.client.query(&sql::hosts(self.db())).fetch_all::<(String, String)>())
            .await?;
        let mut states = BTreeMap::new();
        for (host, json) in rows {
            let state: HostState = serde_json::from_str(&json).map_err(|e| {
                StoreError::from(ClickHouseError::Corrupt(format!("hosts row of {host:?}: {e}")))
            })?;
            states.insert(host, state);
        }
        states.extend(pending.into_iter().map(|(host, _, state)| (host, state)));
        let floor = self.floor();
        Ok(states
            .into_iter()
            .filter_map(|(host, state)| {
                state.after_retention(floor).filter(HostState::listed).map(|s| s.info(&host))
            })
            .collect())
    }

    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        Ok(queries::usage(self, q).await?)
    }

    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        Ok(queries::window(self, q).await?)
    }

    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        queries::history(self, q).await
    }

    async fn history_answer(&self, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
        queries::history_answer(self, q).await
    }

    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        Ok(queries::host_totals(self, host, from, to).await?)
    }

    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        Ok(queries::apply_retention(self, cutoff).await?)
    }

    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let listed = self.hosts().await?.into_iter().any(|h| h.host == host);
        if !listed {
            return Err(StoreError::NotFound(format!("host {host:?}")));
        }
        // What this store has not written yet goes first; then its copy may be older than the
        // table's if another server wrote since.
        self.core.flush_hosts().await?;
        self.core.book.lock().states.remove(host);
        let last_seen = self
            .update_host(host, |s| {
                s.retired_until = Some(at.max(s.book.last_seen));
                s.book.last_seen
            })
            .await?;
        // Recorded before the answer, not at the next flush.
        self.core.flush_hosts().await?;
        Ok(last_seen)
    }

    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()> {
        Ok(queries::put_alarm_event(self, event).await?)
    }

    async fn put_alarm_events(&self, events: &[AlarmEvent]) -> StoreResult<()> {
        Ok(queries::put_alarm_events(self, events).await?)
    }

    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        Ok(queries::alarm_events(self, q).await?)
    }

    async fn put_directive(
        &self,
        record: &procwatch_model::directive::DirectiveRecord,
    ) -> StoreResult<()> {
        Ok(queries::put_directive(self, record).await?)
    }

    async fn directives(&self) -> StoreResult<Vec<procwatch_model::directive::DirectiveRecord>> {
        Ok(queries::directives(self).await?)
    }

    async fn extras_window(
        &self,
        q: &UsageQuery,
    ) -> StoreResult<Vec<procwatch_store::extras::ExtrasRecord>> {
        Ok(extras::window(self, q).await?)
    }

    async fn health(&self) -> StoreResult<()> {
        let readonly: u64 = self
            .run(self.client.query(sql::READONLY_REPLICAS).bind(self.db()).fetch_one::<u64>())
            .await?;
        if readonly > 0 {
            return Err(StoreError::Unavailable(format!(
                "{readonly} replicated table(s) on {} are read-only: ZooKeeper is unreachable; \
                 writes are refused until it returns",
                self.cfg.url
            )));
        }
        Ok(())
    }

    async fn close(&self) -> StoreResult<()> {
        Ok(self.core.flush_hosts().await?)
    }
}

/// The meta row recording a retention floor.
fn floor_row(value: TsMs, version: u64) -> MetaRow {
    MetaRow { key: "retention_floor".into(), value, version }
}
