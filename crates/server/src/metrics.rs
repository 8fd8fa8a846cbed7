//! `GET /metrics`: the server's own metrics and the monitored processes, in the Prometheus
//! text format (version 0.0.4), encoded by the `prometheus-client` crate.
//!
//! What a user needs to know:
//! - **Per-process gauges** (labels `host`, `process`) are the newest values of the last
//!   query window (5 min by default): `procwatch_process_cpu_percent`,
//!   `procwatch_process_cores`, `procwatch_process_mem_percent`, `procwatch_process_rss_bytes`,
//!   `procwatch_process_instances` (processes in the group), and `procwatch_process_alarm_level` (labels `host`, `process`,
//!   `metric`; 0 OK, 1 STALE, 2 AMBER, 3 RED). A process without a sample in the window has no
//!   series (Prometheus marks it stale).
//! - **Cardinality cap**: per host, the top [`DEFAULT_PROCESS_CAP`] (20) processes by their
//!   newest cpu, plus every process with an active alarm, whatever its rank. How many were left
//!   out is `procwatch_process_series_capped{host}`. The full list stays in `/api/v1/usage`.
//! - **Per-host gauges**: `procwatch_host_cpu_percent`, `procwatch_host_mem_percent`,
//!   `procwatch_host_last_seen_timestamp_seconds`, `procwatch_host_stale` (1 after 3 intervals
//!   without data).
//! - **Server self-metrics**: `procwatch_ingested_batches_total{format}` and
//!   `procwatch_ingested_samples_total{format}` (`format` = `v1` or `legacy`),
//!   `procwatch_refused_batches_total{reason}` (`invalid`, `unauthorized`, `forbidden`,
//!   `too_large`, `unsupported_encoding`, `timeout`, `store_unavailable`, `other`),
//!   `procwatch_http_request_duration_seconds{method,route,status}` (method = GET, HEAD, POST,
//!   PUT, DELETE, PATCH, OPTIONS or `other`; route = the matched route template, `unmatched`
//!   otherwise; status = the answer's code, which the server chooses: no label value is ever
//!   taken from the request as sent, so a client cannot grow the label set),
//!   `procwatch_store_write_duration_seconds`, `procwatch_store_hosts`,
//!   `procwatch_store_series` (series with a sample in the window), `procwatch_store_up`,
//!   `procwatch_store_window_bytes` and `procwatch_alarm_engine_bytes` (estimated heap bytes of
//!   the store's in-memory window and of the alarm engine's state, from capacities),
//!   `procwatch_store_maintenance_seconds` (the last periodic maintenance pass of the
//!   embedded store: folding, compaction, retention; longer than its 60 s period means the
//!   passes run back to back),
//!   `procwatch_store_long_reads_running` and `procwatch_store_long_reads_waiting` (fleet
//!   reads over windows below the store's memory take turns: `DISK_READS_AT_ONCE` in the
//!   embedded store; a queue that does not drain means clients ask for more than it reads),
//!   `procwatch_alarm_dormant_series` (series whose forecaster is dropped while they stay
//!   low: `procwatch_alarm::Engine::set_dormancy`),
//!   `procwatch_heap_in_use_bytes` and `procwatch_heap_free_bytes` (glibc's own account,
//!   read after each periodic trim: [`crate::heap_stats`]),
//!   `procwatch_alarms_active{level}`, the evaluation's share of a cluster
//!   (`procwatch_alarm_evaluation_paused`, `procwatch_cluster_members`,
//!   `procwatch_alarm_hosts_owned`: [`crate::ownership::ShareGauges`]),
//!   `procwatch_alarm_evaluation_duration_seconds` (observed by
//!   the alarm engine through [`Metrics::observe_evaluation`]), and `procwatch_build_info`.
//!   The standard `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_open_fds`, `process_max_fds` and `process_start_time_seconds` of the server
//!   process follow (`procwatch_collector::selfmetrics`).
//!   The store's size on disk is not exported: `Storage` has no size query (hosts and series
//!   are the proxies).
//! - Access: `/metrics` is a read route: with `--read-token` set, Prometheus needs
//!   `authorization: {credentials: <token>}` in its scrape config.
//!
//! Ingestion is counted without touching the handlers: [`MeteredStore`] wraps the store (it
//! counts what `write_batch` durably wrote) and [`track`] classifies refused ingestion
//! requests by their status code.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use procwatch_model::clock::Clock;
use procwatch_model::{Batch, Level};
use procwatch_store::WriteOutcome;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::ApiError;

mod collect;
pub use crate::metered_store::MeteredStore;
use crate::AppState;
use collect::collect;
pub use collect::{cap_rows, ProcessRow};

/// Processes exported per host (by newest cpu), besides those in alarm.
pub const DEFAULT_PROCESS_CAP: usize = 20;

/// The ingestion routes whose refusals are counted.
const INGEST_ROUTES: [&str; 2] = ["/api/v1/samples", "/ressources-usage/save-all"];

type GaugeF = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcLabels {
    host: String,
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    host: String,
    process: String,
    metric: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The gauges rebuilt on every scrape from the store.
#[derive(Default)]
struct Snapshot {
    proc_cpu: Family<ProcLabels, GaugeF>,
    proc_cores: Family<ProcLabels, GaugeF>,
    proc_mem: Family<ProcLabels, GaugeF>,
    proc_rss: Family<ProcLabels, Gauge>,
    proc_count: Family<ProcLabels, Gauge>,
    proc_alarm: Family<AlarmLabels, Gauge>,
    capped: Family<HostLabels, Gauge>,
    host_cpu: Family<HostLabels, GaugeF>,
    host_mem: Family<HostLabels, GaugeF>,
    host_seen: Family<HostLabels, GaugeF>,
    host_stale: Family<HostLabels, Gauge>,
    alarms_active: Family<LevelLabels, Gauge>,
    store_hosts: Gauge,
    store_series: Gauge,
    store_up: Gauge,
    store_window_bytes: Gauge,
    store_maintenance: GaugeF,
    store_long_reads_running: Gauge,
    store_long_reads_waiting: Gauge,
    alarm_engine_bytes: Gauge,
    alarm_dormant_series: Gauge,
    heap_in_use: Gauge,
    heap_free: Gauge,
}

impl Snapshot {
    fn clear(&self) {
        self.proc_cpu.clear();
        self.proc_cores.clear();
        self.proc_mem.clear();
        self.proc_rss.clear();
        self.proc_count.clear();
        self.proc_alarm.clear();
        self.capped.clear();
        self.host_cpu.clear();
        self.host_mem.clear();
        self.host_seen.clear();
        self.host_stale.clear();
        self.alarms_active.clear();
    }
}

/// Every metric of one server. Cheap to share (`Arc`), one per [`AppState`].
pub struct Metrics {
    registry: Registry,
    batches: Family<FormatLabels, Counter>,
    samples: Family<FormatLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    limit_breaches: Family<ReasonLabels, Counter>,
    http: Family<HttpLabels, Histogram, fn() -> Histogram>,
    store_write: Histogram,
    evaluation: Histogram,
    snapshot: Snapshot,
    /// One scrape at a time rebuilds the snapshot.
    scrape: tokio::sync::Mutex<()>,
    process_cap: AtomicUsize,
    /// Times request latencies and store writes.
    pub(crate) clock: Arc<dyn Clock>,
    connections_open: Gauge,
    /// The alarm evaluation's share of the hosts ([`crate::ownership::ShareGauges`]).
    pub share: crate::ownership::ShareGauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every counter at zero, timing with the system clock (see [`Metrics::with_clock`]).
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("procwatch");
        let batches = Family::<FormatLabels, Counter>::default();
        let samples = Family::<FormatLabels, Counter>::default();
        let refused = Family::<ReasonLabels, Counter>::default();
        let http = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        // Every label value known up front starts at 0, so `rate()` sees the first increment.
        for format in ["v1", "legacy"] {
            batches.get_or_create_owned(&FormatLabels { format });
            samples.get_or_create_owned(&FormatLabels { format });
        }
        for reason in REFUSAL_REASONS {
            refused.get_or_create_owned(&ReasonLabels { reason });
        }
        let limit_breaches = Family::<ReasonLabels, Counter>::default();
        for reason in
            crate::limits::BREACH_REASONS.into_iter().chain(crate::limits::HTTP_BREACH_REASONS)
        {
            limit_breaches.get_or_create_owned(&ReasonLabels { reason });
        }
        let store_write = latency_histogram();
        let evaluation = latency_histogram();
        let snapshot = Snapshot::default();
        let build = Family::<VersionLabels, Gauge>::default();
        build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);

        r.register("ingested_batches", "Batches accepted and stored durably", batches.clone());
        r.register("ingested_samples", "Samples accepted and stored durably", samples.clone());
        r.register("refused_batches", "Ingestion requests refused, by reason", refused.clone());
        r.register(
            "limit_breaches",
            "Requests or connections refused by a server limit, by reason (see limits)",
            limit_breaches.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, matched route and status",
            http.clone(),
        );
        r.register(
            "store_write_duration_seconds",
            "Time to write one batch durably",
            store_write.clone(),
        );
        r.register(
            "alarm_evaluation_duration_seconds",
            "Time of one alarm evaluation round",
            evaluation.clone(),
        );
        r.register("build_info", "procwatch version", build);
        let connections_open = Gauge::default();
        r.register(
            "connections_open",
            "Client connections open (see max_connections)",
            connections_open.clone(),
        );
        let share = crate::ownership::ShareGauges::register(&mut r);
        let s = &snapshot;
        r.register("store_hosts", "Hosts the store knows", s.store_hosts.clone());
        r.register(
            "store_series",
            "Series with a sample in the query window",
            s.store_series.clone(),
        );
        r.register("store_up", "1 when the store answers its health check", s.store_up.clone());
        r.register(
            "store_window_bytes",
            "Estimated heap bytes of the store's in-memory recent window (0: none)",
            s.store_window_bytes.clone(),
        );
        r.register(
            "store_maintenance_seconds",
            "How long the store's last periodic maintenance pass took (0: none here yet)",
            s.store_maintenance.clone(),
        );
        r.register(
            "store_long_reads_running",
            "Fleet reads below the store's in-memory window holding a turn now",
            s.store_long_reads_running.clone(),
        );
        r.register(
            "store_long_reads_waiting",
            "Fleet reads below the store's in-memory window waiting for a turn",
            s.store_long_reads_waiting.clone(),
        );
        r.register(
            "alarm_engine_bytes",
            "Estimated heap bytes of the alarm engine's per-series state",
            s.alarm_engine_bytes.clone(),
        );
        r.register(
            "alarm_dormant_series",
            "Series whose forecaster is dropped while they stay too low to forecast a crossing",
            s.alarm_dormant_series.clone(),
        );
        r.register(
            "heap_in_use_bytes",
            "Heap bytes the server holds, as glibc last reported them (every 30 s; 0: no reading)",
            s.heap_in_use.clone(),
        );
        r.register(
            "heap_free_bytes",
            "Bytes glibc keeps free inside its heaps after the last periodic trim",
            s.heap_free.clone(),
        );
        r.register("alarms_active", "Active alarm events by level", s.alarms_active.clone());
        r.register("host_cpu_percent", "Host CPU busy, newest host total", s.host_cpu.clone());
        r.register("host_mem_percent", "Host memory used, newest host total", s.host_mem.clone());
        r.register(
            "host_last_seen_timestamp_seconds",
            "Newest sample or host total of the host",
            s.host_seen.clone(),
        );
        r.register(
            "host_stale",
            "1 when the host sent nothing for 3 intervals",
            s.host_stale.clone(),
        );
        r.register(
            "process_cpu_percent",
            "Newest cpu of the process group, percent of the host's capacity",
            s.proc_cpu.clone(),
        );
        r.register(
            "process_cores",
            "Newest cpu of the process group in cores",
            s.proc_cores.clone(),
        );
        r.register(
            "process_mem_percent",
            "Newest resident memory of the process group, percent of MemTotal",
            s.proc_mem.clone(),
        );
        r.register(
            "process_rss_bytes",
            "Newest resident memory of the process group",
            s.proc_rss.clone(),
        );
        // Not `process_count`: a gauge must not end in `_count` (promtool; it reads as the
        // count of a histogram or summary).
        r.register(
            "process_instances",
            "Live processes in the group at the newest sample",
            s.proc_count.clone(),
        );
        r.register(
            "process_alarm_level",
            "Alarm level of the series: 0 OK, 1 STALE, 2 AMBER, 3 RED",
            s.proc_alarm.clone(),
        );
        r.register(
            "process_series_capped",
            "Processes of the host left out of the process_* series by the cardinality cap",
            s.capped.clone(),
        );
        Metrics {
            registry: r,
            batches,
            samples,
            refused,
            limit_breaches,
            http,
            store_write,
            evaluation,
            snapshot,
            scrape: tokio::sync::Mutex::new(()),
            process_cap: AtomicUsize::new(DEFAULT_PROCESS_CAP),
            clock: procwatch_model::clock::system(),
            connections_open,
            share,
        }
    }

    /// [`Metrics::new`] timing with `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Metrics { clock, ..Self::new() }
    }

    /// Processes exported per host besides those in alarm (default [`DEFAULT_PROCESS_CAP`]).
    pub fn set_process_cap(&self, cap: usize) {
        self.process_cap.store(cap, Ordering::Relaxed);
    }

    /// The number of client connections open (set by the connection loop).
    pub fn set_connections_open(&self, n: usize) {
        self.connections_open.set(n as i64);
    }

    /// Records one alarm evaluation round (called by the alarm engine).
    pub fn observe_evaluation(&self, took: Duration) {
        self.evaluation.observe(took.as_secs_f64());
    }

    pub(crate) fn ingested(&self, batch: &Batch, out: &WriteOutcome, took: Duration) {
        // `procwatch_model::validate::decode_legacy` names the agent "legacy".
        let format = if batch.agent == "legacy" { "legacy" } else { "v1" };
        let l = FormatLabels { format };
        self.batches.get_or_create(&l).inc();
        self.samples.get_or_create(&l).inc_by(out.samples as u64);
        self.store_write.observe(took.as_secs_f64());
    }

    /// Counts one breach of a server limit (`crate::limits::BREACH_REASONS`).
    pub fn limit_breach(&self, reason: &'static str) {
        self.limit_breaches.get_or_create(&ReasonLabels { reason }).inc();
    }

    fn refused(&self, status: StatusCode) {
        self.refused.get_or_create(&ReasonLabels { reason: refusal_reason(status) }).inc();
    }

    /// Rebuilds the store-derived gauges and encodes everything.
    pub async fn render(&self, st: &AppState) -> Result<String, std::fmt::Error> {
        let _one = self.scrape.lock().await;
        let snap = collect(st, self.process_cap.load(Ordering::Relaxed)).await;
        let s = &self.snapshot;
        s.clear();
        s.store_up.set(i64::from(snap.up));
        s.store_hosts.set(snap.hosts.len() as i64);
        s.store_series.set(snap.series as i64);
        let window = st.store.window_bytes().unwrap_or(0);
        s.store_window_bytes.set(window.min(i64::MAX as u64) as i64);
        s.store_maintenance.set(st.store.last_maintenance().map_or(0.0, |d| d.as_secs_f64()));
        let long = st.store.long_reads().unwrap_or_default();
        s.store_long_reads_running.set(long.running.min(i64::MAX as u64) as i64);
        s.store_long_reads_waiting.set(long.waiting.min(i64::MAX as u64) as i64);
        let (engine_bytes, dormant) = st.alarms.engine_figures();
        s.alarm_engine_bytes.set(engine_bytes.min(i64::MAX as usize) as i64);
        s.alarm_dormant_series.set(dormant.min(i64::MAX as usize) as i64);
        let (in_use, free) = crate::heap_stats::last().unwrap_or((0, 0));
        s.heap_in_use.set(in_use.min(i64::MAX as u64) as i64);
        s.heap_free.set(free.min(i64::MAX as u64) as i64);
        for (level, n) in &snap.alarm_counts {
            s.alarms_active.get_or_create(&LevelLabels { level }).set(*n);
        }
        for h in &snap.hosts {
            let l = HostLabels { host: h.host.clone() };
            if let Some(t) = &h.latest {
                s.host_cpu.get_or_create(&l).set(t.cpu);
                s.host_mem.get_or_create(&l).set(t.mem);
            }
            s.host_seen.get_or_create(&l).set(h.last_seen as f64 / 1000.0);
            s.host_stale.get_or_create(&l).set(i64::from(h.stale));
            s.capped.get_or_create(&l).set(h.capped as i64);
        }
        for p in &snap.processes {
            let l = ProcLabels { host: p.host.clone(), process: p.process.clone() };
            s.proc_cpu.get_or_create(&l).set(p.cpu);
            s.proc_cores.get_or_create(&l).set(p.cores);
            s.proc_mem.get_or_create(&l).set(p.mem);
            s.proc_rss.get_or_create(&l).set(p.rss.min(i64::MAX as u64) as i64);
            s.proc_count.get_or_create(&l).set(i64::from(p.count));
            for (metric, level) in [("cpu", p.cpu_level), ("mem", p.mem_level)] {
                let al = AlarmLabels { host: p.host.clone(), process: p.process.clone(), metric };
                s.proc_alarm.get_or_create(&al).set(level_value(level));
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        out.push_str(&crate::metrics_extras::text(st, &snap.processes).await);
        out.push_str(&st.governor.metrics_text());
        out.push('\n');
        // The standard process_* self-metrics (cpu seconds, resident memory, fds, start time).
        out.push_str(&procwatch_collector::selfmetrics::text());
        Ok(out)
    }
}

/// The numeric value of a level in `procwatch_process_alarm_level`.
pub fn level_value(l: Level) -> i64 {
    match l {
        Level::Ok => 0,
        Level::Stale => 1,
        Level::Amber => 2,
        Level::Red => 3,
    }
}

/// Every value of the `reason` label of `procwatch_refused_batches_total`.
pub const REFUSAL_REASONS: [&str; 8] = [
    "invalid",
    "unauthorized",
    "forbidden",
    "too_large",
    "unsupported_encoding",
    "timeout",
    "store_unavailable",
    "other",
];

/// The `reason` label of a refused ingestion request.
pub fn refusal_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        413 => "too_large",
        415 => "unsupported_encoding",
        408 => "timeout",
        503 => "store_unavailable",
        _ => "other",
    }
}

/// `GET /metrics`, a read route.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/metrics", get(serve))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::require_read))
}

async fn serve(State(st): State<AppState>) -> Response {
    match st.metrics.render(&st).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => ApiError::Internal(format!("encoding metrics: {e}")).into_response(),
    }
}

/// Middleware: request latency by (method, matched route, status); refused ingestion requests
/// by reason. Install with `axum::middleware::from_fn_with_state(metrics, track)`.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    // Every label comes from a closed set: a client chooses the method and the path, so
    // neither may become a label value as sent (issue 13, finding 1).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let started = m.clock.instant();
    let resp = next.run(req).await;
    let status = resp.status();
    m.http
        .get_or_create(&HttpLabels { method, route: route.clone(), status: status.as_u16() })
        .observe(m.clock.instant().saturating_duration_since(started).as_secs_f64());
    if INGEST_ROUTES.contains(&route.as_str())
        && (status.is_client_error() || status.is_server_error())
    {
        m.refused(status);
    }
    resp
}

/// The `method` label of a request: one of the methods the server knows, else `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::collect::active_levels;
    use super::*;
    use procwatch_model::{AlarmEvent, Metric};

    fn row(host: &str, process: &str, cpu: f64, level: Level) -> ProcessRow {
        ProcessRow {
            host: host.into(),
            process: process.into(),
            cpu,
            cores: cpu / 50.0,
            mem: 1.0,
            rss: 1,
            count: 1,
            cpu_level: level,
            mem_level: Level::Ok,
        }
    }

    #[test]
    fn cap_keeps_top_n_per_host_and_every_alarm() {
        let rows = vec![
            row("a", "p1", 10.0, Level::Ok),
            row("a", "p2", 30.0, Level::Ok),
            row("a", "p3", 20.0, Level::Ok),
            row("a", "idle", 0.0, Level::Red),
            row("b", "q1", 1.0, Level::Ok),
        ];
        let (kept, capped) = cap_rows(rows, 2);
        let names: Vec<(&str, &str)> =
            kept.iter().map(|r| (r.host.as_str(), r.process.as_str())).collect();
        assert_eq!(names, [("a", "idle"), ("a", "p2"), ("a", "p3"), ("b", "q1")]);
        assert_eq!(capped["a"], 1);
        assert_eq!(capped["b"], 0);
    }

    #[test]
    fn refusal_reasons() {
        assert_eq!(refusal_reason(StatusCode::BAD_REQUEST), "invalid");
        assert_eq!(refusal_reason(StatusCode::PAYLOAD_TOO_LARGE), "too_large");
        assert_eq!(refusal_reason(StatusCode::SERVICE_UNAVAILABLE), "store_unavailable");
        assert_eq!(refusal_reason(StatusCode::IM_A_TEAPOT), "other");
        for code in 400..600 {
            let r = refusal_reason(StatusCode::from_u16(code).unwrap());
            assert!(REFUSAL_REASONS.contains(&r), "{r}");
        }
    }

    #[test]
    fn active_levels_take_the_worst_open_event() {
        let ev = |level, end| AlarmEvent {
            id: format!("{level:?}{end:?}"),
            kind: Default::default(),
            host: "h".into(),
            process: "p".into(),
            metric: Metric::Cores,
            level,
            previous: Level::Ok,
            start: 0,
            end,
            value: 90.0,
            peak: 90.0,
            threshold: 80.0,
            forecast: None,
            eta_seconds: None,
            reason: None,
        };
        let m =
            active_levels(&[ev(Level::Amber, None), ev(Level::Red, None), ev(Level::Red, Some(5))]);
        assert_eq!(m[&("h".to_owned(), "p".to_owned(), "cpu")], Level::Red);
        let m = active_levels(&[ev(Level::Red, Some(5))]);
        assert!(m.is_empty());
    }
}
