//! procwatch's external storage engine: InfluxDB through its v1 HTTP API, behind the same
//! [`Storage`] trait as the embedded SQLite store. The server keeps no data of its own with
//! this backend (only a cache of each host's seq bookkeeping, read back whenever another
//! replica may have written it: see "Schema"), so several server replicas on one InfluxDB
//! give the same answers.
//!
//! # Versions
//! - InfluxDB 1.x serves the v1 API natively; tested against Debian's 1.6.7 (`influxd`).
//! - InfluxDB 2.x serves it through its v1 compatibility API: pass the token
//!   (`--influx-token`, sent as `Authorization: Token <t>`) and create a DBRP mapping for
//!   `--influx-db` (and `--influx-rp`) to a bucket first. 2.x refuses `CREATE DATABASE`; the
//!   store then leaves the schema alone ("unmanaged"): retention is the bucket's, and
//!   `apply_retention` is a no-op. 3.x Core's v1 write and query API should work the same way.
//!   Neither 2.x nor 3.x could be tested here (only 1.6 is installable from Debian).
//!
//! # Schema (database `--influx-db`)
//! - `proc` (tags `host`, `process`; fields `cpu`, `cores`, `mem` floats, `rss`, `count`
//!   integers): one point per sample, timestamp = sample `ts` (ms precision). A rewrite of the
//!   same (host, process, ts) overwrites the point: writes are idempotent by construction.
//! - `host` (tag `host`; fields `cpu`, `mem`, `unattributed_cpu`): host totals.
//! - `batch` (tag `host`): one point per received batch, timestamped at its arrival (kept
//!   strictly increasing per host), with the host's *cumulative* bookkeeping: `seq` (this
//!   batch), `last_seq`, `seq_gaps`, `dropped_samples`, `interval_ms`, `last_seen`, computed
//!   with the same `seq` rules as every backend (`procwatch_store::agg::seq_update`) from the
//!   host's previous state; `hosts()` reads the newest point of each host. The previous state
//!   is kept in memory (`ingest`): read back from InfluxDB at a host's first batch, after a
//!   failed write, and when this store did not handle the host's previous batch within 1.5
//!   intervals, i.e. whenever another replica may have written since. A replica handles one
//!   batch of a host at a time. Two replicas stay exact when a host's batches go to one of
//!   them at a time (an agent sends its batches one at a time, to one server) or take turns
//!   per interval; a backlog of one host replayed *faster than its interval* through a load
//!   balancer that alternates replicas can miscount `seq_gaps` and `dropped_samples` (never
//!   the samples).
//! - `alarm_event` (tags `host`, `id`, `metric`; fields `event` = the event as JSON,
//!   `process`, `level`, `open`, `end`), timestamp = the event's `start`: a replace (same id,
//!   same start) overwrites it. Events live in a second retention policy, `<rp>_events`, of
//!   infinite duration, so an alarm that stays open longer than the data retention is not
//!   lost; `apply_retention` deletes closed events that ended before the cutoff.
//!
//! InfluxDB merges the fields of a rewritten point: a host total rewritten without
//! `unattributed_cpu` keeps the old one. Line protocol escaping, and the backslashes in process
//! names it cannot carry (stored as U+001A, read back as `\`), are described in [`mod@line`].
//!
//! # Retention
//! At start (and again after influxd comes back empty) the store creates the database and the
//! retention policy `--influx-rp` (default `procwatch`) with the configured duration (default
//! 48 h) and makes it the database's DEFAULT, or ALTERs it to that duration if it exists.
//! Shards are 1 h long for retentions up to 2 days (InfluxDB drops whole shards, so data lives
//! at most one shard duration past the retention; 1 d shards up to 180 days, 7 d beyond).
//! `apply_retention(cutoff)` leaves samples and host totals to the policy when the cutoff is
//! what the policy enforces anyway (within 5 min of "now − duration": the server's periodic
//! call), returning 0 as its estimate; so queries may still see data up to one shard duration
//! past the retention. A more recent cutoff (a test, or `--retention` under InfluxDB's 1 h
//! minimum) is applied exactly with `DELETE ... WHERE time < cutoff`, returning the number of
//! samples deleted. Every call also drops hosts not seen since the cutoff and closed alarm
//! events that ended before it.
//!
//! # Queries
//! Statistics are computed by InfluxDB: `mean`, `min`, `max`, `count`, the newest point
//! (`ORDER BY time DESC LIMIT 1` per group), `top()` and `percentile()`, and only those the
//! caller needs (`Storage::usage_of` with `UsageNeeds`). Round one is one statement with the
//! means of the metrics needed and, when p95 or the sample count is needed, `count`; in a
//! concurrent second request, the newest points when `last` is needed. `get-all` stops
//! there: one request, one statement, `SELECT mean("mem"), mean("cpu") ... GROUP BY
//! "process"`, what a person would write. A full `usage()` then runs a second round of four
//! concurrent requests (one per metric: `min` and `top()`, or `min`, `max` and two
//! `percentile()`), so ~10 function calls per series instead of 2.
//! InfluxDB's `percentile()` is nearest-rank, procwatch's p95 is numpy's linear interpolation
//! between the two closest ranks `lo` and `lo + 1`; the store asks InfluxDB for exactly those
//! two order statistics and interpolates between them, so both backends give the same p95.
//! For windows of up to ~600 samples they come from `top(f, n − lo)` (which also gives the
//! max); above, from two `percentile()` calls (a nearest-rank argument that selects rank `k`
//! of `n` values is `100·(k+1)/n`). Both need `n`, hence one statement per distinct sample
//! count in the answer. History is `GROUP BY time(step) fill(none)`, whose buckets InfluxDB
//! aligns to multiples of the step like every backend.
//!
//! # Failures
//! Connection refused, timeouts (default 10 s per request), HTTP 5xx (but 501) and 429, and a
//! database or retention policy that vanished are `StoreError::Unavailable`, which the server
//! answers with 503 (agents keep the batch in their spool and retry). The store needs no restart:
//! every call after an `Unavailable` re-checks the schema and carries on when influxd is back.
//! A batch is one `/write` request (samples, host totals, then its `batch` point; combined
//! with other batches waiting at the same time, see `coalesce` for how a failed combined
//! request is answered), or, above 10,000 points, several in sequence with the `batch` point
//! in the last. The store answers
//! only after influxd answered 204 to every one of them (influxd answers 204 once the points
//! are in its WAL, fsynced on every write by default), so a batch acknowledged with 2xx is
//! stored whole. An InfluxDB write request is **not atomic**: influxd splits it by shard
//! (by time) and writes the shards independently, and within a shard it drops single points
//! it refuses (a field type conflict, a series limit) and keeps the rest; any such failure is
//! a non-2xx answer, so the batch is refused (503, or 400 for points influxd will never take)
//! while an unknown part of it is stored. The agent keeps a batch refused with 503 and sends
//! it again, and the retry is idempotent: samples and host totals are points keyed by (measurement,
//! tags, timestamp), so rewriting them overwrites the same points (nothing is counted twice);
//! the bookkeeping is read back after a failure, and a `batch` point that did land makes the
//! retry an "old" seq that adds no gap and no dropped samples again. Until the retry lands,
//! queries may see part of the refused batch, and `hosts()` may already count it.
//!
//! # Costs
//! A batch costs one write request (shared with the other batches waiting at the same time:
//! `coalesce`, group commit) and, except at a host's first batch (or after a failure or a
//! change of replica), no query. `get-all` costs one statement of two `mean()` calls per
//! series in the answer, the same as the direct InfluxQL; a full usage query about 10 calls
//! per series: fine for one host, a few hundred ms merged over a fleet of thousands of series
//! on a small InfluxDB (see BENCHMARKS.md, "InfluxDB backend", for both side by side with the
//! engine driven directly).
//!
//! # Layout
//! `client` (HTTP transport and error mapping), `line` (line-protocol encoding), `influxql`
//! (InfluxQL quoting and the JSON answer), `config` (options), `schema` (measurements, database
//! and retention policies), `ingest` (writing a batch), `coalesce` (group commit),
//! `bookkeeping` (seq bookkeeping, hosts), `usage` (the usage query), `reads` (window, history,
//! host totals), `retention`, `alarms`.
//!
//! # Tests
//! The feature `testing` provides `testing::Influxd`, a real `influxd` (from `$INFLUXD` or
//! `PATH`) in a temp dir on free loopback ports, killed by PID when dropped or when the test
//! process ends. Without influxd, tests print `SKIPPED: influxd not installed` and pass, unless
//! `CI` is set.
#![deny(missing_docs)]

pub mod influxql;
pub mod line;

mod alarms;
mod bookkeeping;
mod client;
mod coalesce;
mod config;
mod directives;
mod extras;
mod ingest;
mod reads;
mod retention;
mod rollup;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod usage;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use procwatch_model::clock::Clock;
use procwatch_model::{AlarmEvent, Batch, HostTotal, TsMs};
use procwatch_store::{
    AlarmQuery, HistoryAnswer, HistoryPoint, HistoryQuery, HostInfo, SeriesWindow, Storage,
    StoreError, StoreResult, UsageNeeds, UsageQuery, UsageRow, WriteOutcome,
};

use crate::client::Client;
use crate::schema::Schema;

pub use crate::config::{InfluxConfig, DEFAULT_RP, WRITE_CHUNK};

/// The InfluxDB backend. Cheap to share as `Arc<dyn Storage>`; holds no data of its own, only
/// the hosts' cached bookkeeping.
pub struct InfluxStore {
    cfg: InfluxConfig,
    client: Client,
    /// Batches' writes, combined when several wait at once.
    writes: coalesce::Coalescer,
    schema: Mutex<Option<Arc<Schema>>>,
    init_lock: tokio::sync::Mutex<()>,
    /// One lock per host: this replica handles one batch of a host at a time, so a retry that
    /// overtakes its original cannot race it on the host's bookkeeping; it guards the host's
    /// cached bookkeeping (`ingest`).
    host_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Option<ingest::Cached>>>>>,
    /// Bookkeeping times and retention cutoffs.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InfluxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxStore")
            .field("url", &self.cfg.url)
            .field("db", &self.cfg.db)
            .field("rp", &self.cfg.rp)
            .finish_non_exhaustive()
    }
}

impl InfluxStore {
    /// A store for `cfg`. Does no I/O: InfluxDB may be down at start; the schema is checked
    /// on the first call (and again after any `Unavailable`).
    pub fn new(cfg: InfluxConfig) -> StoreResult<Self> {
        if cfg.db.is_empty() {
            return Err(StoreError::InvalidInput("influxdb database name is empty".into()));
        }
        let client = Client::new(&cfg.url, cfg.token.clone(), cfg.timeout, cfg.gzip)?;
        let writes = coalesce::Coalescer::new(client.clone(), cfg.db.clone());
        Ok(Self {
            cfg,
            client,
            writes,
            schema: Mutex::new(None),
            init_lock: tokio::sync::Mutex::new(()),
            host_locks: Mutex::new(BTreeMap::new()),
            clock: procwatch_model::clock::system(),
        })
    }

    /// The same store with `clock` for its bookkeeping times and retention cutoffs.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// [`InfluxStore::new`], then one attempt to reach InfluxDB and set up the schema. An
    /// unreachable InfluxDB is logged, not an error (the store retries on every call); any
    /// other failure (bad credentials, say) is.
    pub async fn connect(cfg: InfluxConfig) -> StoreResult<Self> {
        let store = Self::new(cfg)?;
        match store.schema().await {
            Ok(_) => {}
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!("{e}; will retry on every request");
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// The configuration.
    pub fn config(&self) -> &InfluxConfig {
        &self.cfg
    }

    /// Forgets the schema after an `Unavailable`, so the next call checks it again (influxd
    /// may come back empty).
    fn track<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        if let Err(StoreError::Unavailable(_)) = &r {
            *self.schema.lock().expect("schema lock") = None;
        }
        r
    }
}

#[async_trait]
impl Storage for InfluxStore {
    fn backend(&self) -> &'static str {
        "influxdb"
    }

    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        let r = self.write_batch_inner(batch).await;
        self.track(r)
    }

    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        let r = self.hosts_inner().await;
        self.track(r)
    }

    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let r = self.usage_inner(q, UsageNeeds::ALL).await;
        self.track(r)
    }

    async fn usage_of(&self, q: &UsageQuery, needs: UsageNeeds) -> StoreResult<Vec<UsageRow>> {
        let r = self.usage_inner(q, needs).await;
        self.track(r)
    }

    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        let r = self.window_inner(q).await;
        self.track(r)
    }

    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let r = self.history_inner(q).await;
        self.track(r)
    }

    async fn history_answer(&self, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
        let r = self.history_answer_inner(q).await; // rollup.rs
        self.track(r)
    }

    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        let r = self.host_totals_inner(host, from, to).await;
        self.track(r)
    }

    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        let r = self.apply_retention_inner(cutoff).await;
        self.track(r)
    }

    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let r = self.retire_host_inner(host, at).await;
        self.track(r)
    }

    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()> {
        let r = self.put_alarm_event_inner(event).await;
        self.track(r)
    }

    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let r = self.alarm_events_inner(q).await;
        self.track(r)
    }

    async fn put_directive(
        &self,
        record: &procwatch_model::directive::DirectiveRecord,
    ) -> StoreResult<()> {
        let r = self.put_directive_inner(record).await;
        self.track(r)
    }

    async fn directives(&self) -> StoreResult<Vec<procwatch_model::directive::DirectiveRecord>> {
        let r = self.directives_inner().await;
        self.track(r)
    }

    async fn health(&self) -> StoreResult<()> {
        let r = async {
            self.schema().await?;
            self.client.ping().await
        }
        .await;
        self.track(r)
    }

    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn extras_window(
        &self,
        q: &UsageQuery,
    ) -> StoreResult<Vec<procwatch_store::extras::ExtrasRecord>> {
        let r = self.extras_window_inner(q).await;
        self.track(r)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    #[test]
    fn config_needs_a_db_and_an_http_url() {
        assert!(InfluxStore::new(InfluxConfig::new("http://127.0.0.1:1", "")).is_err());
        assert!(InfluxStore::new(InfluxConfig::new("127.0.0.1:1", "x")).is_err());
        assert!(InfluxStore::new(InfluxConfig::new("http://127.0.0.1:1", "x")).is_ok());
    }

    #[tokio::test]
    async fn unreachable_influxdb_is_unavailable() {
        // Port 1 on loopback: nothing listens there.
        let mut cfg = InfluxConfig::new("http://127.0.0.1:1", "x");
        cfg.timeout = Duration::from_secs(2);
        let store = InfluxStore::connect(cfg).await.expect("connect does not fail when down");
        let e = store.hosts().await.expect_err("down");
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        let e = store.health().await.expect_err("down");
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    }
}
