//! procwatch's external storage engine: InfluxDB through its v1 HTTP API, behind the same
//! [`Storage`] trait as the embedded SQLite store. The server keeps no state of its own with
//! this backend, so several server replicas on one InfluxDB give the same answers.
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
//!   batch), `last_seq`, `seq_gaps`, `dropped_samples`, `interval_ms`, `last_seen`. Before it
//!   writes a batch point the store reads the host's newest one and applies the same `seq`
//!   rules as every backend (`procwatch_store::agg::seq_update`); `hosts()` reads the newest
//!   point of each host. A replica handles one batch of a host at a time; two batches *of one
//!   host* written at the same instant through two replicas could still race on these counters
//!   (an agent sends its batches one at a time, to one server).
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
//! (`ORDER BY time DESC LIMIT 1` per group), `top()` and `percentile()`; a usage query is one
//! round trip of two concurrent requests (`count`, the newest points), then a round of four
//! (one per metric).
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
//! answers
//! with 503 (agents keep the batch in their spool and retry). The store needs no restart:
//! every call after an `Unavailable` re-checks the schema and carries on when influxd is back.
//! A large batch is written in requests of 10,000 points; if influxd fails between two of
//! them, the batch is answered 503 and its retry rewrites every point (idempotent), so a
//! batch acknowledged with 2xx is always stored whole; InfluxDB has no transactions, so the
//! first part of a refused batch may be visible until the agent's retry lands.
//!
//! # Costs
//! A batch costs two writes and one query (the host's bookkeeping). A usage query costs
//! InfluxDB work in proportion to (series in the answer × function calls, about 14): fine for
//! one host, seconds for `get-all` merged over a fleet of thousands of series on a small
//! InfluxDB (see BENCHMARKS.md, "InfluxDB backend").
//!
//! # Tests
//! The feature `testing` provides `testing::Influxd`, a real `influxd` (from `$INFLUXD` or
//! `PATH`) in a temp dir on free loopback ports, killed by PID when dropped or when the test
//! process ends. Without influxd, tests print `SKIPPED: influxd not installed` and pass, unless
//! `CI` is set.

pub mod influxql;
pub mod line;

mod client;
mod rollup;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use procwatch_model::clock::Clock;
use procwatch_model::{AlarmEvent, Batch, HostTotal, Sample, TsMs};
use procwatch_store::memory::{alarm_matches, check_batch, sort_newest_first};
use procwatch_store::{
    agg, AlarmQuery, HistoryAnswer, HistoryPoint, HistoryQuery, HostInfo, SeriesWindow, Stats,
    Storage, StoreError, StoreResult, UsageQuery, UsageRow, WriteOutcome,
};

use crate::client::Client;
use crate::influxql::{ident, linear_ranks, nearest_rank_arg, tag_eq, time_range, Series};
use crate::line::{int, write_point, Field};

/// The default retention policy name.
pub const DEFAULT_RP: &str = "procwatch";
/// Points per `/write` request.
pub const WRITE_CHUNK: usize = 10_000;

const PROC: &str = "proc";
const HOST: &str = "host";
const BATCH: &str = "batch";
const ALARM: &str = "alarm_event";
/// One point per retirement of a host (`retire_host`): field `at`.
const RETIRED: &str = "retired_host";
/// How much earlier than "now − RP duration" a retention cutoff may be and still be left to
/// the retention policy.
const RP_SLACK_MS: i64 = 5 * 60_000;
const METRICS: [&str; 4] = ["cpu", "cores", "mem", "rss"];

/// Where and how to reach InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Database (1.x) or DBRP-mapped database name (2.x/3.x).
    pub db: String,
    /// API token (2.x/3.x), sent as `Authorization: Token <t>`.
    pub token: Option<String>,
    /// Retention policy; `None` = [`DEFAULT_RP`] when the store manages the schema, the
    /// database's default when it cannot (2.x).
    pub rp: Option<String>,
    /// Duration of the retention policy (at least 1 h, InfluxDB's minimum).
    pub retention: Duration,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

impl InfluxConfig {
    pub fn new(url: impl Into<String>, db: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            db: db.into(),
            token: None,
            rp: None,
            retention: Duration::from_secs(48 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the store found or created in InfluxDB.
#[derive(Debug, Clone)]
struct Schema {
    /// RP of samples, host totals and batch metadata (`None`: the database's default).
    data_rp: Option<String>,
    /// RP of alarm events.
    events_rp: Option<String>,
    /// Whether the store created/ALTERs the RPs (1.x) and may DELETE.
    managed: bool,
}

/// The InfluxDB backend. Cheap to share as `Arc<dyn Storage>`; holds no data of its own.
pub struct InfluxStore {
    cfg: InfluxConfig,
    client: Client,
    schema: Mutex<Option<Arc<Schema>>>,
    init_lock: tokio::sync::Mutex<()>,
    /// One lock per host: this replica handles one batch of a host at a time, so a retry that
    /// overtakes its original cannot race it on the host's bookkeeping.
    host_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
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

/// Shard duration for a retention (see the crate doc).
fn shard_duration(retention: Duration) -> &'static str {
    let days = retention.as_secs_f64() / 86_400.0;
    if days <= 2.0 {
        "1h"
    } else if days <= 180.0 {
        "1d"
    } else {
        "7d"
    }
}

fn check_name(what: &str, s: &str) -> StoreResult<()> {
    if s.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!("{what} {s:?} contains a control character")));
    }
    Ok(())
}

/// The host's cumulative bookkeeping (the newest `batch` point).
#[derive(Debug, Clone, Default, PartialEq)]
struct BatchState {
    time: TsMs,
    last_seq: u64,
    seq_gaps: u64,
    dropped_samples: u64,
    interval_ms: u64,
    last_seen: TsMs,
}

impl BatchState {
    fn from_row(r: &influxql::Row<'_>) -> Self {
        Self {
            time: r.time(),
            last_seq: r.u64("last_seq").unwrap_or(0),
            seq_gaps: r.u64("seq_gaps").unwrap_or(0),
            dropped_samples: r.u64("dropped_samples").unwrap_or(0),
            interval_ms: r.u64("interval_ms").unwrap_or(0),
            last_seen: r.i64("last_seen").unwrap_or(0),
        }
    }
}

const BATCH_COLS: &str = r#""last_seq", "seq_gaps", "dropped_samples", "interval_ms", "last_seen""#;
const SAMPLE_COLS: &str = r#""cpu", "cores", "mem", "rss", "count""#;

fn sample_from_row(process: &str, r: &influxql::Row<'_>) -> Sample {
    Sample {
        ts: r.time(),
        process: process.to_string(),
        cpu: r.f64("cpu").unwrap_or(0.0),
        cores: r.f64("cores").unwrap_or(0.0),
        mem: r.f64("mem").unwrap_or(0.0),
        rss: r.u64("rss").unwrap_or(0),
        count: r.u64("count").unwrap_or(0).min(u64::from(u32::MAX)) as u32,
    }
}

/// `top(f, k)` answers p95 and max when `k = n − lo ≤ TOP_MAX` (windows of up to ~600
/// samples); above, two `percentile()` calls and `max()` do.
const TOP_MAX: usize = 32;

/// What one statement of a usage query answers.
#[derive(Debug, Clone, Copy)]
enum StmtKind {
    MeanMin { n: usize },
    Top { n: usize },
    Percentiles { n: usize },
}

impl StmtKind {
    fn n(self) -> usize {
        match self {
            StmtKind::MeanMin { n } | StmtKind::Top { n } | StmtKind::Percentiles { n } => n,
        }
    }
}

/// Key of a usage group: (host when per host, process).
type GroupKey = (Option<String>, String);

fn group_key(s: &Series, per_host: bool) -> GroupKey {
    (per_host.then(|| s.tag("host")), s.tag("process"))
}

fn group_cond(k: &GroupKey) -> String {
    match &k.0 {
        Some(h) => format!("({} AND {})", tag_eq("host", h), tag_eq("process", &k.1)),
        None => tag_eq("process", &k.1),
    }
}

impl InfluxStore {
    /// A store for `cfg`. Does no I/O: InfluxDB may be down at start; the schema is checked
    /// on the first call (and again after any `Unavailable`).
    pub fn new(cfg: InfluxConfig) -> StoreResult<Self> {
        if cfg.db.is_empty() {
            return Err(StoreError::InvalidInput("influxdb database name is empty".into()));
        }
        let client = Client::new(&cfg.url, cfg.token.clone(), cfg.timeout)?;
        Ok(Self {
            cfg,
            client,
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

    fn db(&self) -> Option<&str> {
        Some(&self.cfg.db)
    }

    async fn schema(&self) -> StoreResult<Arc<Schema>> {
        if let Some(s) = self.schema.lock().expect("schema lock").clone() {
            return Ok(s);
        }
        let _g = self.init_lock.lock().await;
        if let Some(s) = self.schema.lock().expect("schema lock").clone() {
            return Ok(s);
        }
        let s = Arc::new(self.init().await?);
        *self.schema.lock().expect("schema lock") = Some(s.clone());
        Ok(s)
    }

    /// Forgets the schema after an `Unavailable`, so the next call checks it again (influxd
    /// may come back empty).
    fn track<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        if let Err(StoreError::Unavailable(_)) = &r {
            *self.schema.lock().expect("schema lock") = None;
        }
        r
    }

    async fn init(&self) -> StoreResult<Schema> {
        self.client.ping().await?;
        let db = ident(&self.cfg.db);
        match self.client.query(None, &format!("CREATE DATABASE {db}")).await {
            Ok(_) => {}
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    "influxdb: cannot create database {db} ({e}); assuming InfluxDB 2.x/3.x with \
                     a DBRP mapping: retention is the bucket's"
                );
                return Ok(Schema {
                    data_rp: self.cfg.rp.clone(),
                    events_rp: self.cfg.rp.clone(),
                    managed: false,
                });
            }
        }
        let rp = self.cfg.rp.clone().unwrap_or_else(|| DEFAULT_RP.to_string());
        let secs = self.rp_duration().as_secs();
        let shard = shard_duration(self.cfg.retention);
        let create = format!(
            "CREATE RETENTION POLICY {} ON {db} DURATION {secs}s REPLICATION 1 SHARD DURATION \
             {shard} DEFAULT",
            ident(&rp)
        );
        match self.client.query(None, &create).await {
            Ok(_) => {}
            Err(StoreError::Other(e)) if e.to_string().contains("already exists") => {
                let alter = format!(
                    "ALTER RETENTION POLICY {} ON {db} DURATION {secs}s SHARD DURATION {shard} \
                     DEFAULT",
                    ident(&rp)
                );
                self.client.query(None, &alter).await?;
                tracing::info!("influxdb: retention policy {rp} set to {secs}s and made default");
            }
            Err(e) => return Err(e),
        }
        let events_rp = format!("{rp}_events");
        let create_events = format!(
            "CREATE RETENTION POLICY {} ON {db} DURATION INF REPLICATION 1",
            ident(&events_rp)
        );
        match self.client.query(None, &create_events).await {
            Ok(_) => {}
            Err(StoreError::Other(e)) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e),
        }
        Ok(Schema { data_rp: Some(rp), events_rp: Some(events_rp), managed: true })
    }

    /// A measurement qualified with its database and retention policy.
    fn from(&self, rp: Option<&str>, measurement: &str) -> String {
        match rp {
            Some(rp) => format!("{}.{}.{}", ident(&self.cfg.db), ident(rp), ident(measurement)),
            None => ident(measurement),
        }
    }

    async fn write_lines(&self, rp: Option<&str>, lines: &[String]) -> StoreResult<()> {
        for chunk in lines {
            self.client.write(&self.cfg.db, rp, chunk).await?;
        }
        Ok(())
    }

    async fn batch_state(&self, s: &Schema, host: &str) -> StoreResult<Option<BatchState>> {
        let q = format!(
            "SELECT {BATCH_COLS} FROM {} WHERE {} ORDER BY time DESC LIMIT 1",
            self.from(s.data_rp.as_deref(), BATCH),
            tag_eq("host", host)
        );
        let res = self.client.query(self.db(), &q).await?;
        Ok(res
            .first()
            .and_then(|r| r.series.first())
            .and_then(|s| s.rows().next().map(|r| BatchState::from_row(&r))))
    }

    async fn write_batch_inner(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
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

    async fn hosts_inner(&self) -> StoreResult<Vec<HostInfo>> {
        let s = self.schema().await?;
        let rp = s.data_rp.as_deref();
        let q = format!(
            "SELECT {BATCH_COLS} FROM {} GROUP BY \"host\" ORDER BY time DESC LIMIT 1; \
             SELECT \"cpu\", \"mem\", \"unattributed_cpu\" FROM {} GROUP BY \"host\" \
             ORDER BY time DESC LIMIT 1; \
             SELECT \"at\" FROM {} GROUP BY \"host\" ORDER BY time DESC LIMIT 1",
            self.from(rp, BATCH),
            self.from(rp, HOST),
            self.from(rp, RETIRED)
        );
        let res = self.client.query(self.db(), &q).await?;
        let mut latest: BTreeMap<String, HostTotal> = BTreeMap::new();
        if let Some(r) = res.get(1) {
            for series in &r.series {
                if let Some(row) = series.rows().next() {
                    latest.insert(
                        series.tag("host"),
                        HostTotal {
                            ts: row.time(),
                            cpu: row.f64("cpu").unwrap_or(0.0),
                            mem: row.f64("mem").unwrap_or(0.0),
                            unattributed_cpu: row.f64("unattributed_cpu"),
                        },
                    );
                }
            }
        }
        let mut retired: BTreeMap<String, TsMs> = BTreeMap::new();
        if let Some(r) = res.get(2) {
            for series in &r.series {
                if let Some(at) = series.rows().next().and_then(|row| row.i64("at")) {
                    retired.insert(series.tag("host"), at);
                }
            }
        }
        let mut out = Vec::new();
        if let Some(r) = res.first() {
            for series in &r.series {
                let Some(row) = series.rows().next() else { continue };
                let b = BatchState::from_row(&row);
                let host = series.tag("host");
                if retired.get(&host).is_some_and(|at| b.last_seen <= *at) {
                    continue;
                }
                out.push(HostInfo {
                    latest: latest.remove(&host),
                    host,
                    last_seen: b.last_seen,
                    interval_ms: b.interval_ms,
                    last_seq: b.last_seq,
                    seq_gaps: b.seq_gaps,
                    dropped_samples: b.dropped_samples,
                });
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    fn usage_cond(&self, q: &UsageQuery) -> String {
        let mut cond = time_range(q.from, q.to);
        if let Some(h) = &q.host {
            cond.push_str(" AND ");
            cond.push_str(&tag_eq("host", h));
        }
        if let Some(p) = &q.process {
            cond.push_str(" AND ");
            cond.push_str(&tag_eq("process", p));
        }
        cond
    }

    async fn usage_inner(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        if q.to <= q.from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let from = self.from(s.data_rp.as_deref(), PROC);
        let cond = self.usage_cond(q);
        let group = if q.per_host { r#""host", "process""# } else { r#""process""# };

        // Round 1, two concurrent requests: the number of samples of each group (it picks the
        // ranks of p95) and the newest sample of each group.
        let count = format!("SELECT count(\"cpu\") AS n FROM {from} WHERE {cond} GROUP BY {group}");
        let newest = format!(
            "SELECT {SAMPLE_COLS} FROM {from} WHERE {cond} GROUP BY {group} \
             ORDER BY time DESC LIMIT 1"
        );
        let (res, newest) = tokio::try_join!(
            self.client.query(self.db(), &count),
            self.client.query(self.db(), &newest)
        )?;
        struct Part {
            n: usize,
            stats: [Stats; 4],
            last: Option<Sample>,
        }
        let mut parts: BTreeMap<GroupKey, Part> = BTreeMap::new();
        for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            let n = series.rows().next().and_then(|r| r.u64("n")).unwrap_or(0) as usize;
            if n > 0 {
                let part = Part { n, stats: [Stats::default(); 4], last: None };
                parts.insert(group_key(series, q.per_host), part);
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }

        // Round 2, as concurrent requests (InfluxDB runs each on its own core): per metric its
        // mean, min, max and the two order statistics
        // around numpy's linear p95 rank. Those come from `top(f, k)` (the k = n − lo largest
        // values, max included) when k is small, else from InfluxDB's nearest-rank
        // `percentile()` at the two ranks. One statement per distinct sample count n,
        // restricted to the groups with that count (but the most common one).
        let mut by_n: BTreeMap<usize, Vec<&GroupKey>> = BTreeMap::new();
        for (k, p) in &parts {
            by_n.entry(p.n).or_default().push(k);
        }
        let majority = by_n.iter().max_by_key(|(_, v)| v.len()).map(|(n, _)| *n).unwrap_or(0);
        let mut requests = Vec::new();
        // What each statement of a metric's request answers (the same for every metric).
        let mut kinds: Vec<StmtKind> = Vec::new();
        for (j, m) in METRICS.iter().enumerate() {
            let f = ident(m);
            let mut stmts = Vec::new();
            for (&n, keys) in &by_n {
                let (lo, hi, _) = linear_ranks(0.95, n);
                let mut c = cond.clone();
                if n != majority {
                    let keys: Vec<String> = keys.iter().map(|k| group_cond(k)).collect();
                    c = format!("{c} AND ({})", keys.join(" OR "));
                }
                let k = n - lo;
                if k <= TOP_MAX {
                    stmts.push(format!(
                        "SELECT mean({f}) AS mean, min({f}) AS min FROM {from} WHERE {c} \
                         GROUP BY {group}; \
                         SELECT top({f}, {k}) AS top FROM {from} WHERE {c} GROUP BY {group}"
                    ));
                    if j == 0 {
                        kinds.push(StmtKind::MeanMin { n });
                        kinds.push(StmtKind::Top { n });
                    }
                } else {
                    let (alo, ahi) = (nearest_rank_arg(lo, n), nearest_rank_arg(hi, n));
                    stmts.push(format!(
                        "SELECT mean({f}) AS mean, min({f}) AS min, max({f}) AS max, \
                         percentile({f}, {alo}) AS lo, percentile({f}, {ahi}) AS hi \
                         FROM {from} WHERE {c} GROUP BY {group}"
                    ));
                    if j == 0 {
                        kinds.push(StmtKind::Percentiles { n });
                    }
                }
            }
            requests.push(stmts.join("; "));
        }
        let answers =
            futures::future::try_join_all(requests.iter().map(|r| self.client.query(self.db(), r)))
                .await?;
        for series in newest.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            let key = group_key(series, q.per_host);
            if let (Some(p), Some(row)) = (parts.get_mut(&key), series.rows().next()) {
                p.last = Some(sample_from_row(&key.1, &row));
            }
        }
        for (j, answer) in answers.iter().enumerate() {
            for (kind, result) in kinds.iter().zip(answer) {
                let n = kind.n();
                let (lo, hi, frac) = linear_ranks(0.95, n);
                for series in &result.series {
                    let key = group_key(series, q.per_host);
                    let Some(p) = parts.get_mut(&key).filter(|p| p.n == n) else { continue };
                    let st = &mut p.stats[j];
                    match kind {
                        StmtKind::MeanMin { .. } => {
                            let Some(row) = series.rows().next() else { continue };
                            st.mean = row.f64("mean").unwrap_or(0.0);
                            st.min = row.f64("min").unwrap_or(0.0);
                        }
                        StmtKind::Top { .. } => {
                            // The n − lo largest values, largest first: index i is rank n−1−i.
                            let mut top: Vec<f64> =
                                series.rows().filter_map(|r| r.f64("top")).collect();
                            top.sort_by(|a, b| b.total_cmp(a));
                            let at = |rank: usize| top.get(n - 1 - rank).copied().unwrap_or(0.0);
                            st.max = top.first().copied().unwrap_or(0.0);
                            st.p95 = at(lo) + (at(hi) - at(lo)) * frac;
                        }
                        StmtKind::Percentiles { .. } => {
                            let Some(row) = series.rows().next() else { continue };
                            let plo = row.f64("lo").unwrap_or(0.0);
                            let phi = row.f64("hi").unwrap_or(plo);
                            st.mean = row.f64("mean").unwrap_or(0.0);
                            st.min = row.f64("min").unwrap_or(0.0);
                            st.max = row.f64("max").unwrap_or(0.0);
                            st.p95 = plo + (phi - plo) * frac;
                        }
                    }
                }
            }
        }

        Ok(parts
            .into_iter()
            .map(|((host, process), p)| {
                let last = p.last.unwrap_or_else(|| Sample {
                    ts: 0,
                    process: process.clone(),
                    cpu: 0.0,
                    cores: 0.0,
                    mem: 0.0,
                    rss: 0,
                    count: 0,
                });
                let [mut cpu, mut cores, mut mem, mut rss] = p.stats;
                cpu.last = last.cpu;
                cores.last = last.cores;
                mem.last = last.mem;
                rss.last = last.rss as f64;
                UsageRow {
                    host,
                    process,
                    cpu,
                    cores,
                    mem,
                    rss,
                    count: last.count,
                    samples: p.n as u64,
                    last_ts: last.ts,
                }
            })
            .collect())
    }

    async fn window_inner(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        if q.to <= q.from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let stmt = format!(
            "SELECT {SAMPLE_COLS} FROM {} WHERE {} GROUP BY \"host\", \"process\" \
             ORDER BY time ASC",
            self.from(s.data_rp.as_deref(), PROC),
            self.usage_cond(q)
        );
        let res = self.client.query(self.db(), &stmt).await?;
        let mut out: Vec<SeriesWindow> = res
            .into_iter()
            .next()
            .map(|r| r.series)
            .unwrap_or_default()
            .iter()
            .map(|series| {
                let process = series.tag("process");
                SeriesWindow {
                    host: series.tag("host"),
                    samples: series.rows().map(|r| sample_from_row(&process, &r)).collect(),
                    process,
                }
            })
            .filter(|w| !w.samples.is_empty())
            .collect();
        out.sort_by(|a, b| (&a.host, &a.process).cmp(&(&b.host, &b.process)));
        Ok(out)
    }

    async fn history_inner(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let s = self.schema().await?;
        let from = self.from(s.data_rp.as_deref(), PROC);
        let series_cond =
            format!("{} AND {}", tag_eq("host", &q.host), tag_eq("process", &q.process));
        let mut points = Vec::new();
        if q.to > q.from {
            let cond = format!("{series_cond} AND {}", time_range(q.from, q.to));
            let stmt = if q.step_ms > 0 {
                format!(
                    "SELECT mean(\"cpu\") AS cpu, min(\"cpu\") AS cpu_min, max(\"cpu\") AS cpu_max, \
                     mean(\"cores\") AS cores, mean(\"mem\") AS mem, min(\"mem\") AS mem_min, \
                     max(\"mem\") AS mem_max, mean(\"rss\") AS rss, \
                     mean(\"count\") AS \"count\" FROM {from} WHERE {cond} \
                     GROUP BY time({}ms) fill(none)",
                    q.step_ms
                )
            } else {
                format!("SELECT {SAMPLE_COLS} FROM {from} WHERE {cond} ORDER BY time ASC")
            };
            let res = self.client.query(self.db(), &stmt).await?;
            for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
                for r in series.rows() {
                    let cpu = r.f64("cpu").unwrap_or(0.0);
                    let mem = r.f64("mem").unwrap_or(0.0);
                    points.push(HistoryPoint {
                        ts: r.time(),
                        cpu,
                        cpu_min: r.f64("cpu_min").unwrap_or(cpu),
                        cpu_max: r.f64("cpu_max").unwrap_or(cpu),
                        cores: r.f64("cores").unwrap_or(0.0),
                        mem,
                        mem_min: r.f64("mem_min").unwrap_or(mem),
                        mem_max: r.f64("mem_max").unwrap_or(mem),
                        rss: r.f64("rss").unwrap_or(0.0),
                        count: r.f64("count").unwrap_or(0.0),
                    });
                }
            }
        }
        if points.is_empty() {
            // SHOW TAG VALUES rather than SHOW SERIES: InfluxDB 2.x/3.x serve it too.
            let show = format!(
                "SHOW TAG VALUES FROM {} WITH KEY = {} WHERE {series_cond}",
                ident(PROC),
                ident("process")
            );
            let res = self.client.query(self.db(), &show).await?;
            let known = res.first().is_some_and(|r| r.series.iter().any(|s| !s.values.is_empty()));
            if !known {
                return Err(StoreError::NotFound(format!(
                    "no series for host {:?}, process {:?}",
                    q.host, q.process
                )));
            }
        }
        points.sort_by_key(|p| p.ts);
        Ok(points)
    }

    async fn host_totals_inner(
        &self,
        host: &str,
        from: TsMs,
        to: TsMs,
    ) -> StoreResult<Vec<HostTotal>> {
        if to <= from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let stmt = format!(
            "SELECT \"cpu\", \"mem\", \"unattributed_cpu\" FROM {} WHERE {} AND {} ORDER BY time ASC",
            self.from(s.data_rp.as_deref(), HOST),
            tag_eq("host", host),
            time_range(from, to)
        );
        let res = self.client.query(self.db(), &stmt).await?;
        Ok(res
            .first()
            .map(|r| r.series.as_slice())
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.rows())
            .map(|r| HostTotal {
                ts: r.time(),
                cpu: r.f64("cpu").unwrap_or(0.0),
                mem: r.f64("mem").unwrap_or(0.0),
                unattributed_cpu: r.f64("unattributed_cpu"),
            })
            .collect())
    }

    async fn apply_retention_inner(&self, cutoff: TsMs) -> StoreResult<u64> {
        let s = self.schema().await?;
        if !s.managed {
            return Ok(0);
        }
        let rp = s.data_rp.as_deref();
        let mut stmts = Vec::new();
        let mut samples = 0;
        // The retention policy drops what is older than its duration (by whole shards): only a
        // cutoff more recent than that needs DELETEs (tests, or a --retention under 1 h).
        let rp_cutoff = self.clock.now_ms() - self.rp_duration().as_millis() as i64 + RP_SLACK_MS;
        if cutoff > rp_cutoff {
            let (n, totals) = self.count_older(rp, cutoff).await?;
            samples = n;
            if n > 0 {
                stmts.push(format!("DELETE FROM {} WHERE time < {cutoff}ms", ident(PROC)));
            }
            if totals > 0 {
                stmts.push(format!("DELETE FROM {} WHERE time < {cutoff}ms", ident(HOST)));
            }
        }
        for h in self.hosts_inner().await? {
            if h.last_seen < cutoff {
                stmts.push(format!(
                    "DROP SERIES FROM {} WHERE {}",
                    ident(BATCH),
                    tag_eq("host", &h.host)
                ));
            }
        }
        let closed = format!(
            "SELECT \"end\", \"id\" FROM {} WHERE \"open\" = false AND \"end\" < {cutoff}",
            self.from(s.events_rp.as_deref(), ALARM)
        );
        let res = self.client.query(self.db(), &closed).await?;
        let ids: Vec<String> = res
            .first()
            .map(|r| r.series.as_slice())
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.rows())
            .filter_map(|r| r.str("id").map(|id| line::decode_tag_value(id).into_owned()))
            .collect();
        for chunk in ids.chunks(200) {
            let conds: Vec<String> = chunk.iter().map(|id| tag_eq("id", id)).collect();
            stmts.push(format!("DROP SERIES FROM {} WHERE {}", ident(ALARM), conds.join(" OR ")));
        }
        if !stmts.is_empty() {
            self.client.query(self.db(), &stmts.join("; ")).await?;
        }
        Ok(samples)
    }

    /// The retention policy's duration (InfluxDB's minimum is 1 h).
    fn rp_duration(&self) -> Duration {
        Duration::from_secs(self.cfg.retention.as_secs().max(3600))
    }

    /// Samples and host totals older than `cutoff`.
    async fn count_older(&self, rp: Option<&str>, cutoff: TsMs) -> StoreResult<(u64, u64)> {
        let counts = format!(
            "SELECT count(\"cpu\") AS n FROM {} WHERE time < {cutoff}ms; \
             SELECT count(\"cpu\") AS n FROM {} WHERE time < {cutoff}ms",
            self.from(rp, PROC),
            self.from(rp, HOST)
        );
        let res = self.client.query(self.db(), &counts).await?;
        let count = |i: usize| -> u64 {
            res.get(i)
                .and_then(|r| r.series.first())
                .and_then(|s| s.rows().next().and_then(|r| r.u64("n")))
                .unwrap_or(0)
        };
        Ok((count(0), count(1)))
    }

    async fn retire_host_inner(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let Some(last_seen) =
            self.hosts_inner().await?.into_iter().find(|h| h.host == host).map(|h| h.last_seen)
        else {
            return Err(StoreError::NotFound(format!("host {host:?}")));
        };
        let s = self.schema().await?;
        let mut line = String::new();
        write_point(
            &mut line,
            RETIRED,
            &[("host", host)],
            &[("at", Field::Int(at.max(last_seen)))],
            self.clock.now_ms(),
        );
        self.client.write(&self.cfg.db, s.data_rp.as_deref(), &line).await?;
        Ok(last_seen)
    }

    async fn put_alarm_event_inner(&self, e: &AlarmEvent) -> StoreResult<()> {
        if e.id.is_empty() {
            return Err(StoreError::InvalidInput("alarm event without id".into()));
        }
        check_name("alarm id", &e.id)?;
        let s = self.schema().await?;
        let json = serde_json::to_string(e).map_err(|err| StoreError::Other(Box::new(err)))?;
        let mut line = String::new();
        write_point(
            &mut line,
            ALARM,
            &[("host", &e.host), ("id", &e.id), ("metric", e.metric.as_str())],
            &[
                ("event", Field::Str(&json)),
                ("process", Field::Str(&e.process)),
                ("level", Field::Str(e.level.as_str())),
                ("open", Field::Bool(e.end.is_none())),
                ("end", Field::Int(e.end.unwrap_or(0))),
            ],
            e.start,
        );
        self.client.write(&self.cfg.db, s.events_rp.as_deref(), &line).await
    }

    async fn alarm_events_inner(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let s = self.schema().await?;
        let mut conds = Vec::new();
        if let Some(f) = q.from {
            conds.push(format!("time >= {f}ms"));
        }
        if let Some(t) = q.to {
            conds.push(format!("time < {t}ms"));
        }
        if let Some(h) = &q.host {
            conds.push(tag_eq("host", h));
        }
        if let Some(m) = q.metric {
            conds.push(tag_eq("metric", m.as_str()));
        }
        if q.active_only {
            conds.push("\"open\" = true".into());
        }
        let mut stmt =
            format!("SELECT \"event\" FROM {}", self.from(s.events_rp.as_deref(), ALARM));
        if !conds.is_empty() {
            stmt = format!("{stmt} WHERE {}", conds.join(" AND "));
        }
        let res = self.client.query(self.db(), &stmt).await?;
        let mut by_id: BTreeMap<String, AlarmEvent> = BTreeMap::new();
        for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            for r in series.rows() {
                let Some(json) = r.str("event") else { continue };
                match serde_json::from_str::<AlarmEvent>(json) {
                    Ok(e) if alarm_matches(q, &e) => {
                        by_id.insert(e.id.clone(), e);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!("influxdb: unreadable alarm event: {err}"),
                }
            }
        }
        let mut v: Vec<AlarmEvent> = by_id.into_values().collect();
        sort_newest_first(&mut v);
        if q.limit > 0 {
            v.truncate(q.limit);
        }
        Ok(v)
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
        let r = self.usage_inner(q).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_durations() {
        assert_eq!(shard_duration(Duration::from_secs(48 * 3600)), "1h");
        assert_eq!(shard_duration(Duration::from_secs(7 * 86_400)), "1d");
        assert_eq!(shard_duration(Duration::from_secs(365 * 86_400)), "7d");
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(check_name("process", "a\nb").is_err());
        assert!(check_name("process", "a\u{1A}b").is_err());
        assert!(check_name("process", "ok name, with = and \\").is_ok());
    }

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
