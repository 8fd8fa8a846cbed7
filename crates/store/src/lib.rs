//! The storage boundary of procwatch.
//!
//! The server holds one `Arc<dyn Storage>` and never knows which backend is behind it (the
//! embedded SQLite store or InfluxDB). Every backend passes the same conformance suite.
//!
//! Contract for every implementation:
//! - `write_batch` returning `Ok` means the batch is durable: it survives `kill -9` of the
//!   process right after.
//! - Writes are idempotent: a sample with the same (host, process, ts) as a stored one
//!   replaces it.
//! - A batch is written whole or not at all.
//! - Query windows are half-open: `from <= ts < to`, in Unix milliseconds.
//!
//! Reference semantics (what `memory::MemoryStore` does and `conformance` checks):
//! - `usage`: one row per (host, process) sorted by (host, process) when `per_host`, else one
//!   row per process name sorted by name, its statistics over every matching host's samples
//!   together. `last` and `count` are those of the newest sample (on a tie between hosts in a
//!   merged row, any one of them). `p95` is numpy's default linear percentile. Series with no
//!   sample in the window give no row. See `agg` for the shared arithmetic.
//! - `window`: one entry per series with samples in the window, sorted by (host, process),
//!   samples oldest first.
//! - `history`: points at bucket starts aligned to multiples of `step_ms` (`ts - ts mod step`),
//!   empty buckets omitted; `step_ms == 0` gives one point per raw sample. `NotFound` when the
//!   series was never written.
//! - `history_answer`: `agg::pick_resolution(q, now - raw retention)` decides; at `"5m"` the
//!   points are those of `history` at the picked step (a multiple of `ROLLUP_MS`), computed
//!   from 5-minute buckets, so min/mean/max over each bucket are exact over its raw samples
//!   (means within 1e-9 relative), late samples included, even once the raw samples are past
//!   their retention.
//! - Hosts and `seq`: the first batch of a host opens no gap; a batch whose `seq` exceeds the
//!   highest seen adds `seq - last_seq - 1` to `seq_gaps`; a batch at or below it (a retry or a
//!   late batch) adds nothing, and does not add its `dropped_samples` again. A `seq` more than
//!   `agg::SEQ_WINDOW` (1,000) away from the highest seen, either way, is a reset: no gap, new
//!   baseline, counted as new (so one forged `seq` cannot make the real agent's batches old). `last_seen` is the
//!   newest sample or host-total `ts`; `latest` the host total with the newest `ts`.
//! - `apply_retention(cutoff)`: samples and host totals with `ts < cutoff` go, hosts not seen
//!   since `cutoff` go, closed alarm events that ended before `cutoff` go.
//! - Alarm events: newest first by `start` (ties by `id`, descending).
//! - Directives (`put_directive`, `directives`): every record kept, whatever its age, listed
//!   by version oldest first; putting a version again replaces it.
//! - `retire_host(host, at)`: the host leaves `hosts()` (so nothing judges it silent) until a
//!   batch brings a sample or host total newer than `max(at, its last_seen)`; its samples stay
//!   queryable until retention drops them. `NotFound` when `hosts()` does not list it.
//!
//! Modules: `memory::MemoryStore` (the in-memory reference backend, also handy in tests),
//! `agg` (the shared arithmetic: numpy-linear p95, history buckets, seq bookkeeping) and,
//! behind the `conformance` feature, `conformance` (the suite every backend runs from its
//! tests: `procwatch-store = { workspace = true, features = ["conformance"] }` as a
//! dev-dependency, then `conformance::run_all(|| async { ... }).await`).
#![deny(missing_docs)]

pub mod agg;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod extras;
pub mod host_book;
pub mod memory;
pub mod rollup;

use async_trait::async_trait;
use procwatch_model::directive::DirectiveRecord;
use procwatch_model::{AlarmEvent, Batch, HostTotal, Level, Metric, Sample, TsMs};
use serde::{Deserialize, Serialize};

/// What went wrong in a backend. Kept small on purpose: the HTTP layer maps each variant to
/// one status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller asked for something malformed (400).
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// No such host or (host, process) (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend cannot be reached or is overloaded; the caller may retry (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error("store error: {0}")]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// The result of a [`Storage`] call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a durable write did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Samples written (new or replaced).
    pub samples: usize,
    /// Host-total rows written.
    pub host_totals: usize,
    /// Batches missing between the previous `seq` seen from this host and this one.
    pub seq_gap: u64,
}

/// A host as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name, as the agent sends it in [`Batch::host`].
    pub host: String,
    /// Timestamp of the newest sample or host total received from the host.
    pub last_seen: TsMs,
    /// Interval the agent declared in its last batch (0 if unknown).
    pub interval_ms: u64,
    /// Highest batch `seq` received.
    pub last_seq: u64,
    /// Total batches missing in the `seq` numbers received so far.
    pub seq_gaps: u64,
    /// Total samples the agent reported dropped.
    pub dropped_samples: u64,
    /// The newest host totals, if any.
    pub latest: Option<HostTotal>,
}

/// Statistics of one metric over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Arithmetic mean of the values.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The value at the newest timestamp in the window.
    pub last: f64,
    /// 95th percentile (linear interpolation between closest ranks).
    pub p95: f64,
}

/// Usage of one process group over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// `None` when rows of all hosts were merged (`UsageQuery::per_host == false`).
    pub host: Option<String>,
    /// Process name: the group of every process of that name on the host (or hosts).
    pub process: String,
    /// CPU, percent of the host's total capacity (0–100).
    pub cpu: Stats,
    /// CPU in cores (1.0 = one core fully busy).
    pub cores: Stats,
    /// Resident memory, percent of the host's `MemTotal` (0–100).
    pub mem: Stats,
    /// Resident set size, bytes.
    pub rss: Stats,
    /// Process count at the newest sample.
    pub count: u32,
    /// Samples in the window.
    pub samples: u64,
    /// Timestamp of the newest sample in the window, Unix ms.
    pub last_ts: TsMs,
}

/// Long reads of a backend that takes turns ([`Storage::long_reads`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongReads {
    /// Holding one of the backend's turns.
    pub running: u64,
    /// Waiting for one (first come, first served).
    pub waiting: u64,
}

/// Filters for `usage` and `window`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageQuery {
    /// Start of the window, Unix ms, inclusive.
    pub from: TsMs,
    /// End of the window, Unix ms, exclusive (`to <= from` selects nothing).
    pub to: TsMs,
    /// Exact host name; `None` = all hosts.
    pub host: Option<String>,
    /// Exact process name; `None` = all processes.
    pub process: Option<String>,
    /// `true`: one row per (host, process). `false`: one row per process name, the
    /// statistics taken over every host's samples together.
    pub per_host: bool,
}

/// An order of usage rows (ascending) for [`Storage::usage_top`].
pub type RowOrder =
    std::sync::Arc<dyn Fn(&UsageRow, &UsageRow) -> std::cmp::Ordering + Send + Sync>;

/// Which statistics a caller of [`Storage::usage_of`] reads; the others may be left 0. Lets a
/// backend that computes statistics remotely (InfluxDB) ask only for those: `get-all` reads two
/// means, not the ~20 statistics of a full [`UsageRow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageNeeds {
    /// Metrics whose [`Stats`] are read, in the order cpu, cores, mem, rss.
    pub metrics: [bool; 4],
    /// `min`, `max` and `p95` of those metrics (`mean` is always computed).
    pub spread: bool,
    /// `last` of those metrics, and the row's `count` and `last_ts`.
    pub last: bool,
    /// The row's `samples`.
    pub samples: bool,
}

impl UsageNeeds {
    /// Everything: what [`Storage::usage`] answers.
    pub const ALL: UsageNeeds =
        UsageNeeds { metrics: [true; 4], spread: true, last: true, samples: true };
    /// The seed route `get-all`: the means of `mem` and `cpu`.
    pub const GET_ALL: UsageNeeds = UsageNeeds {
        metrics: [true, false, true, false],
        spread: false,
        last: false,
        samples: false,
    };
}

impl Default for UsageNeeds {
    fn default() -> Self {
        Self::ALL
    }
}

/// All samples of one series in a window, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesWindow {
    /// Host of the series.
    pub host: String,
    /// Process name of the series.
    pub process: String,
    /// The series' samples with `ts` in `[from, to)`, oldest first (never empty). Each
    /// sample's `process` is left empty: the name is the window's `process`, held once per
    /// series and not once per sample (the alarm evaluator reads every series' recent samples
    /// at each pass; a name per sample was one more allocation per sample read).
    pub samples: Vec<Sample>,
}

impl SeriesWindow {
    /// The samples with the series' name filled in, as they were written.
    pub fn named_samples(&self) -> Vec<Sample> {
        self.samples.iter().map(|s| Sample { process: self.process.clone(), ..s.clone() }).collect()
    }
}

/// History of one (host, process), downsampled by `step` (0 = raw samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Host of the series (exact name).
    pub host: String,
    /// Process name of the series (exact).
    pub process: String,
    /// Start of the range, Unix ms, inclusive.
    pub from: TsMs,
    /// End of the range, Unix ms, exclusive.
    pub to: TsMs,
    /// Step width in ms; steps are aligned to multiples of it (`agg::bucket_start`).
    /// `<= 0`: one point per raw sample.
    pub step_ms: i64,
}

/// One step of a history: the mean, min and max of cpu and mem and the mean of the other
/// metrics over `[ts, ts + step)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Start of the step, Unix ms (with raw points, the sample's own `ts`).
    pub ts: TsMs,
    /// Mean cpu over the step, percent of the host (0–100).
    pub cpu: f64,
    /// Lowest cpu in the step (absent from answers of older servers: 0).
    #[serde(default)]
    pub cpu_min: f64,
    /// Highest cpu in the step.
    pub cpu_max: f64,
    /// Mean cores over the step (1.0 = one core fully busy).
    pub cores: f64,
    /// Mean mem over the step, percent of the host's memory (0–100).
    pub mem: f64,
    /// Lowest mem in the step (absent from answers of older servers: 0).
    #[serde(default)]
    pub mem_min: f64,
    /// Highest mem in the step.
    pub mem_max: f64,
    /// Mean resident set size over the step, bytes.
    pub rss: f64,
    /// Mean process count over the step (fractional when the count changed within it).
    pub count: f64,
}

/// Width of a roll-up bucket: 5 minutes.
pub const ROLLUP_MS: i64 = 5 * 60_000;

/// Raw retention assumed when a backend knows no better (the server's default): 48 h.
pub const DEFAULT_RAW_RETENTION_MS: i64 = 48 * 3_600_000;

/// Which data answered a history: every raw sample, or the 5-minute roll-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// Raw samples (`"raw"`).
    #[serde(rename = "raw")]
    Raw,
    /// 5-minute roll-ups: per bucket, min/mean/max of cpu and mem, means of the rest (`"5m"`).
    #[serde(rename = "5m")]
    Rollup5m,
}

impl Resolution {
    /// `"raw"` or `"5m"`, as in the HTTP answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Rollup5m => "5m",
        }
    }
}

/// A history and the resolution it was computed at (see `agg::pick_resolution`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryAnswer {
    /// Whether the points come from raw samples or 5-minute roll-ups.
    pub resolution: Resolution,
    /// The step the points are at: the query's, or with roll-ups a multiple of `ROLLUP_MS`.
    pub step_ms: i64,
    /// The points, oldest first, one per non-empty step.
    pub points: Vec<HistoryPoint>,
}

/// Filters for alarm events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlarmQuery {
    /// Only events still open (`end == None`).
    pub active_only: bool,
    /// Only events of this host (exact name).
    pub host: Option<String>,
    /// Only events of this process name (exact; `""` selects host alarms).
    pub process: Option<String>,
    /// Only events of this metric.
    pub metric: Option<Metric>,
    /// Only events entering this level.
    pub level: Option<Level>,
    /// Events that started at or after `from`.
    pub from: Option<TsMs>,
    /// Events that started before `to`.
    pub to: Option<TsMs>,
    /// Newest first, at most this many (0 = no limit).
    pub limit: usize,
}

/// The storage engine behind the server. Object-safe: the server keeps an `Arc<dyn Storage>`.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// A short name for logs and `/readyz` ("sqlite", "influxdb", "memory").
    fn backend(&self) -> &'static str;

    /// Stores a batch durably, whole or not at all.
    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome>;

    /// Every host ever seen (within retention), sorted by name.
    async fn hosts(&self) -> StoreResult<Vec<HostInfo>>;

    /// Statistics per process group over a window.
    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>>;

    /// [`Storage::usage`] where only the statistics in `needs` must be right (the others may
    /// be 0). The same rows as `usage`. Backends that compute everything at once keep this
    /// default; wrappers must forward it.
    async fn usage_of(&self, q: &UsageQuery, needs: UsageNeeds) -> StoreResult<Vec<UsageRow>> {
        let _ = needs;
        self.usage(q).await
    }

    /// The first `keep` rows of `usage_of(q, needs)` in the order `order` (ties in the
    /// order `usage_of` lists them), and how many rows that listing has; `Ok(None)` when
    /// this backend cannot rank them cheaper than its caller sorting `usage_of`'s rows (the
    /// default). `order` must not read the rows' names: a backend may rank rows whose names
    /// it fills in only once they are kept. A page of a fleet sorted by one figure then
    /// builds 50 named rows, not 300,000.
    async fn usage_top(
        &self,
        q: &UsageQuery,
        needs: UsageNeeds,
        order: RowOrder,
        keep: usize,
    ) -> StoreResult<Option<(Vec<UsageRow>, usize)>> {
        let _ = (q, needs, order, keep);
        Ok(None)
    }

    /// Whether `usage_of` for one series (exact host and process) and `window` for one host
    /// are answered in process, without a round trip to a database server: the server then
    /// reads a short page of a listing row by row after choosing it on one figure
    /// (`GET /api/v1/usage?sort=…&limit=…`), and the alarm evaluator reads its pass host by
    /// host. Remote backends keep the default (`false`) and answer each with one query.
    fn series_usage_is_local(&self) -> bool {
        false
    }

    /// Raw samples per series over a window (`per_host` is ignored: always per series).
    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>>;

    /// History of one series at the query's step from raw samples. `NotFound` if the store
    /// has never seen it.
    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>>;

    /// History of one series at the resolution `agg::pick_resolution` picks from the range
    /// and step: raw samples, or 5-minute roll-ups when the range reaches past the raw
    /// retention or the step is a multiple of 5 minutes. Backends with roll-ups override it;
    /// the default answers `history` (raw) and says so.
    async fn history_answer(&self, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
        Ok(HistoryAnswer {
            resolution: Resolution::Raw,
            step_ms: q.step_ms,
            points: self.history(q).await?,
        })
    }

    /// Host totals of one host over a window, oldest first.
    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>>;

    /// Drops everything older than `cutoff`. Returns the number of samples removed (backends
    /// that drop whole chunks may report an estimate).
    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64>;

    /// Retires a host that is gone for good (decommissioned, renamed, a test): it leaves
    /// `hosts()` until it sends data newer than `max(at, last_seen)` again. Its samples stay
    /// until retention. `NotFound` if `hosts()` does not list it. Returns its last `last_seen`.
    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs>;

    /// Inserts or replaces (by `id`) an alarm event.
    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()>;

    /// Inserts or replaces (by `id`) several alarm events, in order (a later event with the
    /// same `id` wins): what one evaluation pass raised. The default stores them one by one
    /// with [`Storage::put_alarm_event`], every one even when another fails, and returns the
    /// first error; a backend where each write is a costly round trip (the ClickHouse
    /// cluster) writes them in one request, all or none.
    async fn put_alarm_events(&self, events: &[AlarmEvent]) -> StoreResult<()> {
        let mut first = Ok(());
        for e in events {
            if let Err(error) = self.put_alarm_event(e).await {
                if first.is_ok() {
                    first = Err(error);
                }
            }
        }
        first
    }

    /// Alarm events matching the query, newest first.
    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>>;

    /// Stores a directive change of the control channel durably (`Ok`: it survives a restart);
    /// a record with a version already stored replaces it. Directives are configuration, not
    /// data: retention never drops them. The default refuses (a backend that does not keep
    /// them cannot steer agents).
    async fn put_directive(&self, record: &DirectiveRecord) -> StoreResult<()> {
        let _ = record;
        Err(StoreError::Unavailable(format!(
            "the {} store does not keep directives",
            self.backend()
        )))
    }

    /// Every directive change stored, by version, oldest first. The default: none.
    async fn directives(&self) -> StoreResult<Vec<DirectiveRecord>> {
        Ok(Vec::new())
    }

    /// `Ok` when the backend can take writes and answer queries.
    async fn health(&self) -> StoreResult<()>;

    /// Flushes whatever is buffered; called once at shutdown.
    async fn close(&self) -> StoreResult<()>;

    /// Estimated heap bytes of the backend's in-memory recent window (samples, their index and
    /// names), from capacities: cheap, for the `procwatch_store_window_bytes` gauge. `None`
    /// when the backend keeps no such window in this process.
    fn window_bytes(&self) -> Option<u64> {
        None
    }

    /// How long the backend's last periodic maintenance pass in this process took (folding,
    /// compaction, retention), for the `procwatch_store_maintenance_seconds` gauge. `None`
    /// when it runs none here, or none has finished yet.
    fn last_maintenance(&self) -> Option<std::time::Duration> {
        None
    }

    /// Reads whose cost the client chooses (several series over a window reaching below the
    /// backend's in-memory recent window) running now and waiting for their turn, for the
    /// `procwatch_store_long_reads_*` gauges. `None` when the backend does not take turns.
    fn long_reads(&self) -> Option<LongReads> {
        None
    }

    /// The opt-in extra metrics (issue 19, [`extras`]) of the series matching `q.host` and
    /// `q.process` (`per_host` is ignored) with `ts` in `[from, to)`, sorted by (host, process,
    /// ts), one record per stored sample that carried extras. Retention drops them with their
    /// samples. The default stores none and answers empty; wrappers must forward it.
    async fn extras_window(&self, q: &UsageQuery) -> StoreResult<Vec<extras::ExtrasRecord>> {
        let _ = q;
        Ok(Vec::new())
    }
}
