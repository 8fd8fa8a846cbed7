//! Query handlers: the seed-compatible `get-all` / `get-all-detailed`, and the v1 API.
//!
//! Semantics a user needs to know:
//! - "The last 5 minutes" (`--window`, 5 min by default) means samples with
//!   `ts >= now - window`, including those up to 5 min ahead of the server's clock (the most
//!   ingestion accepts), so a slightly fast agent clock does not hide its newest samples.
//! - `get-all` without `?host=` gives per process name the mean over every host's samples
//!   together; `get-all-detailed` without `?host=` merges the series of every host by
//!   timestamp and gives, per timestamp, the mean over the hosts that have a sample there.
//!   An unknown host gives `{}` on these seed routes (as the seed did), `404` on the v1 ones.
//! - v1 `usage`: `window` (default the query window) or `from`/`to`; `host` and `process`
//!   filter exactly, or as a glob when they contain `*` or `?` (the alarm rules' matcher,
//!   `procwatch_alarm::Glob`; at most 128 bytes and 16 wildcards, else 400; matched on the
//!   blocking pool and stopped at the request deadline); `per_host` (default `true`);
//!   `sort` is `process`, `host`, `samples`, `count` or `<cpu|cores|mem|rss>.<mean|min|max|last|p95>`;
//!   `order` `asc`/`desc` (default `desc` for figures, `asc` for names); `limit` N keeps the
//!   first N rows after sorting (a page: at most `page::MAX_PAGE`, and `next` is the cursor
//!   of the following page, see [`crate::page`]); `metrics=cpu,mem` and `stats=mean,p95` (comma lists, default
//!   all) keep only those figures in each row, which makes a fleet-wide answer several times
//!   smaller. `metrics=` may also name the opt-in extras (`fds`, `threads`, `io`, `ctxsw`,
//!   `owner`, `unit`, …) and `group_by=unit|owner` sums the rows per service or user: see
//!   [`crate::usage_extras`].
//! - v1 `history`: `from` (default `now-1h`), `to` (default now + 5 min), `step` (default 0:
//!   raw samples; else buckets aligned to multiples of the step, mean and max of each).
//! - A host is `stale` when its newest sample is older than 3 intervals (its agent's declared
//!   `interval_ms`, or the server's `--interval` when unknown).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use procwatch_model::validate::MAX_FUTURE_MS;
use procwatch_model::{HostTotal, Metric, TsMs};
use procwatch_store::{
    HistoryPoint, HistoryQuery, HostInfo, Resolution, Stats, UsageNeeds, UsageQuery, UsageRow,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::page;
use crate::time::{parse_duration_ms, parse_time_ms};
pub use crate::usage_row::{Fields, RowView};
use crate::AppState;

/// Query string of the seed routes.
#[derive(Debug, Default, Deserialize)]
pub struct SeedParams {
    /// Only this host (absent: every host).
    pub host: Option<String>,
    /// `get-all-detailed` only: `mem` (default), `cpu` or `cores`; `get-all` refuses it.
    pub metric: Option<String>,
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    Ok(q?.0)
}

fn seed_window(st: &AppState, host: Option<String>) -> UsageQuery {
    let now = st.config.clock.now_ms();
    UsageQuery {
        from: now - st.config.query_window.as_millis() as i64,
        to: now + MAX_FUTURE_MS + 1,
        host: host.filter(|h| !h.is_empty()),
        process: None,
        per_host: false,
    }
}

/// `GET /ressources-usage/get-all` → `{"postgres": [mem_mean, cpu_mean], ...}`.
pub async fn get_all(
    State(st): State<AppState>,
    q: Result<Query<SeedParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BTreeMap<String, [f64; 2]>>, ApiError> {
    let p = query(q)?;
    if let Some(m) = p.metric {
        return Err(ApiError::bad_param("metric", format!("{m:?}: get-all takes no metric")));
    }
    let rows = st.store.usage_of(&seed_window(&st, p.host), UsageNeeds::GET_ALL).await?;
    Ok(Json(rows.into_iter().map(|r| (r.process, [r.mem.mean, r.cpu.mean])).collect()))
}

/// `GET /ressources-usage/get-all-detailed[?metric=mem|cpu|cores][&host=]` →
/// `{"postgres": [v_oldest, ..., v_newest]}`.
pub async fn get_all_detailed(
    State(st): State<AppState>,
    q: Result<Query<SeedParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BTreeMap<String, Vec<f64>>>, ApiError> {
    let p = query(q)?;
    let metric = match p.metric.as_deref() {
        None | Some("") => Metric::Mem,
        Some(m) => m.parse::<Metric>().map_err(|e| ApiError::bad_param("metric", e))?,
    };
    let series = st.store.window(&seed_window(&st, p.host)).await?;
    // process -> ts -> (sum, n)
    let mut merged: BTreeMap<String, BTreeMap<TsMs, (f64, u32)>> = BTreeMap::new();
    for s in series {
        let per_ts = merged.entry(s.process).or_default();
        for sample in &s.samples {
            let slot = per_ts.entry(sample.ts).or_insert((0.0, 0));
            slot.0 += metric.of(sample);
            slot.1 += 1;
        }
    }
    Ok(Json(
        merged
            .into_iter()
            .map(|(p, per_ts)| (p, per_ts.into_values().map(|(s, n)| s / f64::from(n)).collect()))
            .collect(),
    ))
}

/// One host in `GET /api/v1/hosts` (also what `procwatch status` and `hosts` read).
#[derive(Debug, Serialize, Deserialize)]
pub struct HostView {
    /// The host name.
    pub host: String,
    /// Newest sample or host-total timestamp, Unix ms.
    pub last_seen: TsMs,
    /// `now - last_seen`, ms.
    pub age_ms: i64,
    /// No data for 3 intervals.
    pub stale: bool,
    /// The interval the agent declared in its last batch, ms (0: unknown).
    pub interval_ms: u64,
    /// The highest batch `seq` received.
    pub last_seq: u64,
    /// Total batches missing in the `seq` numbers received so far.
    #[serde(default)]
    pub seq_gaps: u64,
    /// Total samples the agent reported dropped.
    #[serde(default)]
    pub dropped_samples: u64,
    /// The host's newest totals (cpu, mem percent), if any.
    pub latest: Option<HostTotal>,
    /// Processes folded into the host's `(other)` series at its newest sweep (present when
    /// the governor is on; see [`crate::governor`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<u64>,
}

/// The answer of `GET /api/v1/hosts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HostsResponse {
    /// The server's clock when it answered, Unix ms.
    pub now: TsMs,
    /// The hosts of this page, in the store's order.
    pub hosts: Vec<HostView>,
    /// The cursor of the next page (`null`: this is the last). See [`crate::page`].
    pub next: Option<String>,
}

/// Query string of `GET /api/v1/hosts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size (at most `page::MAX_PAGE`).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

fn host_view(st: &AppState, h: HostInfo, now: TsMs) -> HostView {
    let interval =
        procwatch_model::trusted_interval_ms(h.interval_ms, st.config.interval.as_millis() as i64);
    HostView {
        folded: st.governor.folded_of(&h.host),
        age_ms: now - h.last_seen,
        stale: procwatch_model::is_stale(now, h.last_seen, interval),
        host: h.host,
        last_seen: h.last_seen,
        interval_ms: h.interval_ms,
        last_seq: h.last_seq,
        seq_gaps: h.seq_gaps,
        dropped_samples: h.dropped_samples,
        latest: h.latest,
    }
}

/// `GET /api/v1/hosts`.
pub async fn hosts(
    State(st): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HostsResponse>, ApiError> {
    let p = query(q)?;
    let offset = p.cursor.as_deref().map(page::Cursor::decode).transpose()?.map_or(0, |c| c.offset);
    let now = st.config.clock.now_ms();
    let hosts = st.store.hosts().await?;
    let (hosts, next) = page::take(hosts, offset, page::size(p.limit, page::MAX_PAGE), None);
    Ok(Json(HostsResponse {
        now,
        hosts: hosts.into_iter().map(|h| host_view(&st, h, now)).collect(),
        next,
    }))
}

async fn ensure_host(st: &AppState, host: &str) -> Result<(), ApiError> {
    if st.store.hosts().await?.iter().any(|h| h.host == host) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("unknown host {host:?}")))
    }
}

/// Query string of `GET /api/v1/usage`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// How far back from now (a duration like `5m`); not with `from`. Default the server's
    /// query window.
    pub window: Option<String>,
    /// Start (Unix ms, RFC 3339 or relative); not with `window`.
    pub from: Option<String>,
    /// End, exclusive (default now, plus the tolerated clock skew ahead).
    pub to: Option<String>,
    /// Only this host, or the hosts a glob matches (`*`, `?`; at most 128 bytes, 16 wildcards).
    pub host: Option<String>,
    /// Only this process, or the processes a glob matches (same rules as `host`).
    pub process: Option<String>,
    /// One row per (host, process) (default `true`), else one per process across hosts.
    pub per_host: Option<bool>,
    /// `process`, `host`, `samples`, `count` or `<metric>.<stat>` like `cpu.p95`.
    pub sort: Option<String>,
    /// `asc` or `desc` (default `desc` for figures, `asc` for names).
    pub order: Option<String>,
    /// Rows per page (at most `page::MAX_PAGE`).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Comma list of cpu, cores, mem, rss (default all).
    pub metrics: Option<String>,
    /// Comma list of mean, min, max, last, p95 (default all).
    pub stats: Option<String>,
    /// `unit` or `owner`: one row per systemd unit / container or per user
    /// ([`crate::usage_extras`]).
    pub group_by: Option<String>,
}

/// The answer of `GET /api/v1/usage` (also what `procwatch status` reads).
#[derive(Debug, Serialize, Deserialize)]
pub struct UsageResponse {
    /// Start of the window answered, Unix ms (inclusive).
    pub from: TsMs,
    /// End of the window answered, Unix ms (exclusive).
    pub to: TsMs,
    /// The rows of this page.
    pub rows: Vec<RowView>,
    /// The cursor of the next page (`null`: this is the last). See [`crate::page`].
    pub next: Option<String>,
}

/// Resolves `window` / `from` / `to` into a half-open `[from, to)`.
fn resolve_range(
    window: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    default_window_ms: i64,
    now: TsMs,
) -> Result<(TsMs, TsMs), ApiError> {
    let to = match to {
        Some(t) => parse_time_ms(t, now).map_err(|e| ApiError::bad_param("to", e))?,
        None => now + MAX_FUTURE_MS + 1,
    };
    let from = match (window, from) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_param("window", "give either window or from, not both"))
        }
        (Some(w), None) => {
            now - parse_duration_ms(w).map_err(|e| ApiError::bad_param("window", e))?
        }
        (None, Some(f)) => parse_time_ms(f, now).map_err(|e| ApiError::bad_param("from", e))?,
        (None, None) => now - default_window_ms,
    };
    if from >= to {
        return Err(ApiError::bad_param("from", format!("from {from} is not before to {to}")));
    }
    Ok((from, to))
}

/// Matches `pattern` (`*` any run, `?` any one character) against the whole of `s`: the
/// alarm rules' matcher, [`procwatch_alarm::Glob`], the one glob of procwatch.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    procwatch_alarm::Glob::new(pattern).matches(s)
}

/// The glob of a `host`/`process` filter, within the caps (400 past them, counted as
/// `limit_breaches{reason="glob"}`).
fn parse_glob(st: &AppState, name: &str, v: &str) -> Result<procwatch_alarm::Glob, ApiError> {
    procwatch_alarm::Glob::parse(v).map_err(|e| {
        st.metrics.limit_breach("glob");
        ApiError::bad_param(name, e.to_string())
    })
}

/// Rows checked between two looks at the cancel flag.
const CANCEL_CHECK_ROWS: usize = 1024;

/// Set when the request that started blocking work is dropped (its deadline passed): the
/// work stops at its next check instead of running on unseen.
struct CancelOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Keeps the rows whose host and process match the globs; `None` when cancelled.
fn filter_rows(
    rows: Vec<UsageRow>,
    host: Option<&procwatch_alarm::Glob>,
    process: Option<&procwatch_alarm::Glob>,
    cancel: &std::sync::atomic::AtomicBool,
) -> Option<Vec<UsageRow>> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        if i % CANCEL_CHECK_ROWS == 0 && cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let h = host.is_none_or(|g| r.host.as_deref().is_some_and(|h| g.matches(h)));
        if h && process.is_none_or(|g| g.matches(&r.process)) {
            out.push(r);
        }
    }
    Some(out)
}

/// Compares two rows by a `sort` spec, without copying a name or building a key per row.
type SortCmp = procwatch_store::RowOrder;

/// What a sort needs of every row: nothing but names for `process`/`host`, else the one
/// figure it compares.
const NAMES_ONLY: UsageNeeds =
    UsageNeeds { metrics: [false; 4], spread: false, last: false, samples: false };

/// The comparator of `spec` (ascending), whether its default order is descending, and what
/// the store must compute of every row to sort by it.
fn sort_key(spec: &str) -> Result<(SortCmp, bool, UsageNeeds), String> {
    fn num(a: f64, b: f64) -> std::cmp::Ordering {
        // NaN never reaches the store (validation); equal when incomparable anyway.
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    }
    match spec {
        "process" => {
            return Ok((std::sync::Arc::new(|a, b| a.process.cmp(&b.process)), false, NAMES_ONLY))
        }
        "host" => return Ok((std::sync::Arc::new(|a, b| a.host.cmp(&b.host)), false, NAMES_ONLY)),
        "samples" => {
            let needs = UsageNeeds { samples: true, ..NAMES_ONLY };
            return Ok((std::sync::Arc::new(|a, b| a.samples.cmp(&b.samples)), true, needs));
        }
        "count" => {
            let needs = UsageNeeds { last: true, ..NAMES_ONLY };
            return Ok((std::sync::Arc::new(|a, b| a.count.cmp(&b.count)), true, needs));
        }
        _ => {}
    }
    let (metric, stat) = spec.split_once('.').unwrap_or((spec, "mean"));
    let (k, metric): (usize, fn(&UsageRow) -> &Stats) = match metric {
        "cpu" => (0, |r| &r.cpu),
        "cores" => (1, |r| &r.cores),
        "mem" => (2, |r| &r.mem),
        "rss" => (3, |r| &r.rss),
        _ => return Err(format!("{spec:?}: expected process, host, samples, count or <cpu|cores|mem|rss>.<mean|min|max|last|p95>")),
    };
    let mut needs = NAMES_ONLY;
    needs.metrics[k] = true;
    let stat: fn(&Stats) -> f64 = match stat {
        "mean" => |s| s.mean,
        "min" => |s| s.min,
        "max" => |s| s.max,
        "last" => |s| s.last,
        "p95" => |s| s.p95,
        _ => return Err(format!("{spec:?}: the statistic is one of mean, min, max, last, p95")),
    };
    needs.spread = matches!(stat_name(spec), "min" | "max" | "p95");
    needs.last = stat_name(spec) == "last";
    Ok((std::sync::Arc::new(move |a, b| num(stat(metric(a)), stat(metric(b)))), true, needs))
}

/// The statistic part of a `metric.stat` sort spec (`mean` when absent).
fn stat_name(spec: &str) -> &str {
    spec.split_once('.').map_or("mean", |(_, s)| s)
}

/// A page at most this long is chosen on one figure and then read whole row by row (one
/// exact lookup per row) when the store answers such lookups in process.
const REFILL_BY_ROW_MAX: usize = 200;
/// Row lookups of one page in flight at once.
const REFILL_CONCURRENCY: usize = 8;

/// The page's rows read whole (`needs`), in the page's order, by one exact (host, process)
/// query per row. A row gone since the page was chosen (retention, a retired host) is left
/// out.
async fn refill_page(
    st: &AppState,
    uq: &UsageQuery,
    page: Vec<UsageRow>,
    needs: UsageNeeds,
) -> Result<Vec<UsageRow>, ApiError> {
    use futures::StreamExt;
    let lookups = page.into_iter().map(|r| {
        let q = UsageQuery {
            host: r.host.clone().or_else(|| uq.host.clone()),
            process: Some(r.process.clone()),
            ..uq.clone()
        };
        async move {
            let rows = st.store.usage_of(&q, needs).await?;
            Ok::<_, ApiError>(rows.into_iter().find(|x| x.host == r.host && x.process == r.process))
        }
    });
    let found: Vec<Option<UsageRow>> = futures::stream::iter(lookups)
        .buffered(REFILL_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// `cmp`, reversed when `desc`.
fn directed(cmp: &SortCmp, desc: bool) -> impl Fn(&UsageRow, &UsageRow) -> std::cmp::Ordering + '_ {
    move |a, b| if desc { cmp(a, b).reverse() } else { cmp(a, b) }
}

/// The first `want` rows of the order `cmp`, sorted (stable: equal rows keep the store's
/// order); the others are dropped. A page of a fleet (50 rows of 300,000) is a selection,
/// O(n), then a sort of the page, not a sort of all, and each row is moved at most once.
fn sort_front(
    mut rows: Vec<UsageRow>,
    want: usize,
    cmp: impl Fn(&UsageRow, &UsageRow) -> std::cmp::Ordering,
) -> Vec<UsageRow> {
    if want >= rows.len() / 2 {
        rows.sort_by(|a, b| cmp(a, b));
        rows.truncate(want);
        return rows;
    }
    if want == 0 {
        return Vec::new();
    }
    // Ties at the cut are broken by position, so the pages of one query never overlap.
    let order: Vec<usize> = {
        let by = |a: &(usize, &UsageRow), b: &(usize, &UsageRow)| cmp(a.1, b.1).then(a.0.cmp(&b.0));
        let mut idx: Vec<(usize, &UsageRow)> = rows.iter().enumerate().collect();
        idx.select_nth_unstable_by(want - 1, by);
        idx.truncate(want);
        idx.sort_unstable_by(by);
        idx.into_iter().map(|(i, _)| i).collect()
    };
    let mut rank = vec![u32::MAX; rows.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as u32;
    }
    let mut front: Vec<Option<UsageRow>> = (0..want).map(|_| None).collect();
    for (i, row) in rows.into_iter().enumerate() {
        if let Some(slot) = front.get_mut(rank[i] as usize) {
            *slot = Some(row);
        }
    }
    front.into_iter().flatten().collect()
}

/// `GET /api/v1/usage`.
pub async fn usage(
    State(st): State<AppState>,
    q: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageResponse>, ApiError> {
    let p = query(q)?;
    let cursor = p.cursor.as_deref().map(page::Cursor::decode).transpose()?;
    let now = st.config.clock.now_ms();
    let default_window = st.config.query_window.as_millis() as i64;
    // A cursor pins the first page's range, so the pages cover one window.
    let (from, to) = match cursor.and_then(|c| c.range) {
        Some(r) => r,
        None => resolve_range(
            p.window.as_deref(),
            p.from.as_deref(),
            p.to.as_deref(),
            default_window,
            now,
        )?,
    };
    let fields = Fields::parse(p.metrics.as_deref(), p.stats.as_deref())?;
    let sort =
        p.sort.as_deref().map(sort_key).transpose().map_err(|e| ApiError::bad_param("sort", e))?;
    let desc = match p.order.as_deref() {
        None => sort.as_ref().is_some_and(|s| s.1),
        Some("desc") => true,
        Some("asc") => false,
        Some(o) => return Err(ApiError::bad_param("order", format!("{o:?}: asc or desc"))),
    };
    let is_glob = |v: &str| procwatch_alarm::Glob::is_pattern(v);
    let exact = |f: &Option<String>| f.clone().filter(|v| !v.is_empty() && !is_glob(v));
    let host_glob = p.host.as_deref().filter(|v| is_glob(v));
    let host_glob = host_glob.map(|v| parse_glob(&st, "host", v)).transpose()?;
    let process_glob = p.process.as_deref().filter(|v| is_glob(v));
    let process_glob = process_glob.map(|v| parse_glob(&st, "process", v)).transpose()?;
    let uq = UsageQuery {
        from,
        to,
        host: exact(&p.host),
        process: exact(&p.process),
        per_host: p.per_host.unwrap_or(true),
    };
    if host_glob.is_some() && !uq.per_host {
        return Err(ApiError::bad_param("host", "a host glob needs per_host=true"));
    }
    let group_by = p.group_by.as_deref().map(crate::usage_extras::GroupBy::parse).transpose()?;
    // A page of a listing is chosen on what its order needs (one figure of every row, or
    // only names), then only the page's rows are read whole: a page of 50 of a 300,000-row
    // fleet costs the store one figure per series, not twenty. Groups sum whole rows.
    let offset = cursor.map_or(0, |c| c.offset);
    let size = page::size(p.limit, page::MAX_PAGE);
    let full_needs = if group_by.is_some() { UsageNeeds::ALL } else { fields.needs() };
    let two_phase =
        group_by.is_none() && size <= REFILL_BY_ROW_MAX && st.store.series_usage_is_local();
    let first_needs = match &sort {
        Some((_, _, needs)) if two_phase => *needs,
        None if two_phase => NAMES_ONLY,
        _ => full_needs,
    };
    // A figure's order (name orders need no figure) without name filters: the store may rank
    // the rows itself and build only the page's (`Storage::usage_top`); `None` when it cannot.
    let ranked = match &sort {
        Some((cmp, _, needs))
            if two_phase
                && *needs != NAMES_ONLY
                && host_glob.is_none()
                && process_glob.is_none() =>
        {
            let order: SortCmp = {
                let cmp = cmp.clone();
                std::sync::Arc::new(move |a, b| directed(&cmp, desc)(a, b))
            };
            let keep = offset.saturating_add(size);
            st.store.usage_top(&uq, first_needs, order, keep).await?
        }
        _ => None,
    };
    let ranked_total = ranked.as_ref().map(|(_, n)| *n);
    let mut rows = match ranked {
        Some((front, _)) => front,
        None => st.store.usage_of(&uq, first_needs).await?,
    };
    if host_glob.is_some() || process_glob.is_some() {
        // Filtering a fleet costs rows × pattern: on the blocking pool, stopped when the
        // request's deadline drops this handler.
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _cancel = CancelOnDrop(flag.clone());
        let work = tokio::task::spawn_blocking(move || {
            filter_rows(rows, host_glob.as_ref(), process_glob.as_ref(), &flag)
        });
        rows =
            work.await.map_err(|e| ApiError::Internal(e.to_string()))?.ok_or(ApiError::Timeout)?;
    }
    if rows.is_empty() {
        if let Some(h) = &uq.host {
            ensure_host(&st, h).await?;
        }
    }
    let mut extras = crate::usage_extras::ExtrasIndex::default();
    if fields.wants_extras() || group_by.is_some() {
        extras = crate::usage_extras::ExtrasIndex::load(&st, &uq).await?;
    }
    if let Some(by) = group_by {
        rows = crate::usage_extras::group_rows(&rows, &extras, by);
    }
    let total = ranked_total.unwrap_or(rows.len());
    if ranked_total.is_some() {
        // Already the listing's first rows, in order.
    } else if let Some((cmp, _, _)) = &sort {
        // Only the rows up to the end of this page need their order, and only they are kept.
        let want = offset.saturating_add(size).min(rows.len());
        rows = sort_front(rows, want, directed(cmp, desc));
    } else if desc {
        rows.reverse();
    }
    let (mut rows, next) = page::take_of(rows, total, offset, size, Some((from, to)));
    if two_phase && first_needs != full_needs {
        rows = refill_page(&st, &uq, rows, full_needs).await?;
        if let Some((cmp, _, _)) = &sort {
            // Samples that arrived between the two reads may have moved a figure: the page
            // is ordered by what it shows (stable, so ties keep the listing's order).
            rows.sort_by(directed(cmp, desc));
        }
    }
    let rows = rows
        .into_iter()
        .map(|row| {
            let extras = if fields.wants_extras() { extras.take(&row) } else { None };
            RowView { row, fields, extras }
        })
        .collect();
    Ok(Json(UsageResponse { from, to, rows, next }))
}

/// Query string of history and totals.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// Start (Unix ms, RFC 3339 or relative; default 1 hour before now).
    pub from: Option<String>,
    /// End, exclusive (default now, plus the tolerated clock skew ahead).
    pub to: Option<String>,
    /// Bucket width (a duration; absent or 0: one point per raw sample).
    pub step: Option<String>,
}

/// The answer of `GET /api/v1/hosts/{host}/processes/{process}/history`.
#[derive(Debug, Serialize)]
pub struct HistoryResponse {
    /// The host.
    pub host: String,
    /// The process name.
    pub process: String,
    /// Start of the range, Unix ms (inclusive).
    pub from: TsMs,
    /// End of the range, Unix ms (exclusive).
    pub to: TsMs,
    /// Bucket width of the points, ms (0: one point per raw sample).
    pub step_ms: i64,
    /// What answered: raw samples or 5-minute roll-ups (`Storage::history_answer`).
    pub resolution: Resolution,
    /// The points, oldest first.
    pub points: Vec<HistoryPoint>,
    /// The opt-in extra metrics at the same step (raw records when the step is 0), oldest
    /// first; absent when the series has none in the range.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extras: Vec<procwatch_store::extras::ExtrasPoint>,
}

const DEFAULT_HISTORY_MS: i64 = 3_600_000;

/// `GET /api/v1/hosts/{host}/processes/{process}/history`.
pub async fn history(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let Path((host, process)) = path?;
    let p = query(q)?;
    let now = st.config.clock.now_ms();
    let (from, to) =
        resolve_range(None, p.from.as_deref(), p.to.as_deref(), DEFAULT_HISTORY_MS, now)?;
    let step_ms = match p.step.as_deref() {
        None => 0,
        Some(s) => parse_duration_ms(s).map_err(|e| ApiError::bad_param("step", e))?,
    };
    let hq = HistoryQuery { host, process, from, to, step_ms };
    let a = st.store.history_answer(&hq).await?;
    let (step_ms, resolution, points) = (a.step_ms, a.resolution, a.points);
    let xq = UsageQuery {
        from,
        to,
        host: Some(hq.host.clone()),
        process: Some(hq.process.clone()),
        per_host: true,
    };
    let extras = procwatch_store::extras::history(&st.store.extras_window(&xq).await?, step_ms);
    Ok(Json(HistoryResponse {
        host: hq.host,
        process: hq.process,
        from,
        to,
        step_ms,
        resolution,
        points,
        extras,
    }))
}

/// The answer of `GET /api/v1/hosts/{host}/totals`.
#[derive(Debug, Serialize)]
pub struct TotalsResponse {
    /// The host.
    pub host: String,
    /// Start of the range, Unix ms (inclusive).
    pub from: TsMs,
    /// End of the range, Unix ms (exclusive).
    pub to: TsMs,
    /// The host's totals in the range, oldest first.
    pub totals: Vec<HostTotal>,
}

/// `GET /api/v1/hosts/{host}/totals`.
pub async fn totals(
    State(st): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TotalsResponse>, ApiError> {
    let Path(host) = path?;
    let p = query(q)?;
    if p.step.is_some() {
        return Err(ApiError::bad_param("step", "totals take no step"));
    }
    let now = st.config.clock.now_ms();
    let (from, to) =
        resolve_range(None, p.from.as_deref(), p.to.as_deref(), DEFAULT_HISTORY_MS, now)?;
    let totals = st.store.host_totals(&host, from, to).await?;
    if totals.is_empty() {
        ensure_host(&st, &host).await?;
    }
    Ok(Json(TotalsResponse { host, from, to, totals }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*sql*", "postgresql"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("web-?", "web-1"), "one matcher: `?` works in queries too");
        assert!(!glob_match("web-?", "web-12"));
    }

    #[test]
    fn a_page_by_selection_equals_the_page_of_a_full_sort() {
        let st = |v: f64| Stats { mean: v, min: v, max: v, last: v, p95: v };
        let rows: Vec<UsageRow> = (0..500u32)
            .map(|i| UsageRow {
                host: Some(format!("h{}", i % 7)),
                process: format!("p{i}"),
                cpu: st(f64::from((i * 37) % 101)), // many ties
                cores: st(0.0),
                mem: st(0.0),
                rss: st(0.0),
                count: 1,
                samples: 1,
                last_ts: 0,
            })
            .collect();
        let (cmp, _, _) = sort_key("cpu.mean").unwrap();
        let desc = |a: &UsageRow, b: &UsageRow| cmp(a, b).reverse();
        let mut full = rows.clone();
        full.sort_by(desc);
        for want in [1, 10, 50, 249] {
            let front = sort_front(rows.clone(), want, desc);
            assert_eq!(front.len(), want);
            assert_eq!(front[..want], full[..want], "want {want}");
        }
    }

    #[test]
    fn sort_keys() {
        assert!(sort_key("cpu.p95").unwrap().1);
        assert!(sort_key("mem").unwrap().1);
        assert!(!sort_key("process").unwrap().1);
        assert!(sort_key("disk.mean").is_err());
        assert!(sort_key("cpu.median").is_err());
        // What a page's first read computes of every row: the sort's one figure.
        let needs = |spec| sort_key(spec).unwrap().2;
        let only = |k: usize, spread, last| {
            let mut n = UsageNeeds { spread, last, ..NAMES_ONLY };
            n.metrics[k] = true;
            n
        };
        assert_eq!(needs("cpu.p95"), only(0, true, false));
        assert_eq!(needs("mem"), only(2, false, false));
        assert_eq!(needs("rss.last"), only(3, false, true));
        assert_eq!(needs("cores.min"), only(1, true, false));
        assert_eq!(needs("process"), NAMES_ONLY);
        assert_eq!(needs("count"), UsageNeeds { last: true, ..NAMES_ONLY });
        assert_eq!(needs("samples"), UsageNeeds { samples: true, ..NAMES_ONLY });
    }
}
