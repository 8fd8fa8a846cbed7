//! The alarm read routes: `query-alarm`, `/api/v1/alarms`, `/api/v1/rules` and
//! `/api/v1/forecasts` (see the module documentation of [`crate::alarms`]).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use procwatch_alarm::{Method, Rule};
use procwatch_model::{AlarmEvent, Level, Metric, TsMs};
use procwatch_store::AlarmQuery;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::time::parse_time_ms;
use crate::AppState;

/// The alarm routes (read routes).
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/ressources-usage/query-alarm/", get(query_alarm))
        .route("/ressources-usage/query-alarm", get(query_alarm))
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/stream", get(super::stream::stream))
        .route("/api/v1/rules", get(rules))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::require_read))
}

/// Query string of `GET /ressources-usage/query-alarm/`.
#[derive(Debug, Default, Deserialize)]
pub struct HostParam {
    /// Only this host's alarms (absent or empty: every host).
    pub host: Option<String>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// Processes in alarm now, worst level per process name.
pub fn worst_by_process(active: &[AlarmEvent], host: Option<&str>) -> BTreeMap<String, Level> {
    let mut out: BTreeMap<String, Level> = BTreeMap::new();
    for ev in active {
        if ev.process.is_empty() || ev.level == Level::Ok || host.is_some_and(|h| h != ev.host) {
            continue;
        }
        let slot = out.entry(ev.process.clone()).or_insert(ev.level);
        *slot = (*slot).max(ev.level);
    }
    out
}

/// `GET /ressources-usage/query-alarm/` → `{"postgres": "RED", "java": "AMBER"}`.
async fn query_alarm(
    State(st): State<AppState>,
    q: QueryResult<HostParam>,
) -> Result<Json<BTreeMap<String, Level>>, ApiError> {
    let p = q?.0;
    let host = p.host.filter(|h| !h.is_empty());
    Ok(Json(worst_by_process(&st.alarms.active(), host.as_deref())))
}

/// Query string of `GET /api/v1/alarms`, as given; parsed by [`alarm_query`].
#[derive(Debug, Default, Deserialize)]
pub struct AlarmParams {
    /// `true`/`1`: only the alarms open now; `false`/`0` or absent: the history too.
    pub active: Option<String>,
    /// Only this host (exact name).
    pub host: Option<String>,
    /// Only this process (exact name).
    pub process: Option<String>,
    /// Only this metric (`cpu`, `mem`, …).
    pub metric: Option<String>,
    /// Only this level: `OK`, `STALE`, `AMBER` or `RED` (any case).
    pub level: Option<String>,
    /// Events that started at or after this time (Unix ms, RFC 3339 or relative like `-1h`).
    pub from: Option<String>,
    /// Events that started before this time (same forms as `from`); not before `from`.
    pub to: Option<String>,
    /// Page size (default 100; 0 = the largest page, `page::MAX_PAGE`).
    pub limit: Option<String>,
    /// The `next` of the previous page (see [`crate::page`]).
    pub cursor: Option<String>,
}

/// Parses the query string of `GET /api/v1/alarms`.
pub fn alarm_query(p: AlarmParams, now: TsMs) -> Result<AlarmQuery, ApiError> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let active_only = match nonempty(p.active).as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_param("active", format!("{other:?}: true or false")))
        }
    };
    let metric = nonempty(p.metric)
        .map(|m| m.parse::<Metric>().map_err(|e| ApiError::bad_param("metric", e)))
        .transpose()?;
    let level = nonempty(p.level)
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "OK" => Ok(Level::Ok),
            "STALE" => Ok(Level::Stale),
            "AMBER" => Ok(Level::Amber),
            "RED" => Ok(Level::Red),
            _ => Err(ApiError::bad_param("level", format!("{l:?}: OK, STALE, AMBER or RED"))),
        })
        .transpose()?;
    let time = |name: &str, v: Option<String>| {
        nonempty(v)
            .map(|s| parse_time_ms(&s, now).map_err(|e| ApiError::bad_param(name, e)))
            .transpose()
    };
    let from = time("from", p.from)?;
    let to = time("to", p.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_param("from", "after to"));
        }
    }
    let limit = match nonempty(p.limit) {
        None => 100,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_param("limit", format!("{s:?}: a number ≥ 0")))?,
    };
    Ok(AlarmQuery {
        active_only,
        host: nonempty(p.host),
        process: nonempty(p.process),
        metric,
        level,
        from,
        to,
        limit,
    })
}

/// The answer of `GET /api/v1/alarms`.
#[derive(Debug, Serialize)]
pub struct AlarmsResponse {
    /// The events of this page, as the store returns them.
    pub alarms: Vec<AlarmEvent>,
    /// The cursor of the next page (`null`: this is the last). See [`crate::page`].
    pub next: Option<String>,
}

/// `GET /api/v1/alarms`.
async fn list(
    State(st): State<AppState>,
    q: QueryResult<AlarmParams>,
) -> Result<Json<AlarmsResponse>, ApiError> {
    let p = q?.0;
    let offset = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(crate::page::Cursor::decode)
        .transpose()?
        .map_or(0, |c| c.offset);
    let mut q = alarm_query(p, st.config.clock.now_ms())?;
    // `limit` is the page size (0 = the largest page); one more event tells whether a next
    // page exists.
    let size = crate::page::size(Some(q.limit).filter(|&l| l > 0), crate::page::MAX_PAGE);
    q.limit = offset.saturating_add(size).saturating_add(1);
    let events = st.store.alarm_events(&q).await?;
    let (alarms, next) = crate::page::take(events, offset, size, None);
    Ok(Json(AlarmsResponse { alarms, next }))
}

/// A rule as `GET /api/v1/rules` shows it (also what `procwatch status` reads).
#[derive(Debug, Serialize, Deserialize)]
pub struct RuleView {
    /// The rule's host glob (`*` = every host).
    pub host: String,
    /// The rule's process glob (`*` = every process).
    pub process: String,
    /// `null`: cpu and mem.
    pub metric: Option<Metric>,
    /// T, the RED threshold, in the metric's unit (percent for cpu and mem).
    pub threshold: f64,
    /// How far below T the value must fall for RED to clear, in the metric's unit.
    pub hysteresis: f64,
    /// Evaluations below `T - hysteresis` in a row before RED clears.
    pub clear_for: u32,
    /// H, how far ahead AMBER's forecast looks, ms.
    pub horizon_ms: i64,
    /// W, the history the forecast is made from, ms.
    pub window_ms: i64,
    /// Evaluations in a row the forecast must be above T for AMBER.
    pub debounce: u32,
    /// The forecaster: `procwatch`, `linear`, `holt` or `persistence`.
    pub method: String,
    /// Holt's level smoothing factor (present for `holt` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Holt's trend smoothing factor (present for `holt` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// procwatch's forecaster: the rule's sensitivity (absent = the metric's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<f64>,
    /// How long a new series must be sampled before this rule's forecaster can raise AMBER:
    /// the method's warm-up for the rule's metric (for a rule on cpu and mem, the longer of
    /// the two), and at least the window (the engine waits for a full window).
    /// Read as 0 from servers older than this field.
    #[serde(default)]
    pub warmup_ms: i64,
}

impl From<&Rule> for RuleView {
    fn from(r: &Rule) -> Self {
        let sensitivity = match r.method {
            Method::Procwatch { sensitivity, .. } => sensitivity,
            _ => None,
        };
        let (method, alpha, beta) = match r.method {
            Method::Procwatch { .. } => ("procwatch", None, None),
            Method::Linear => ("linear", None, None),
            Method::Holt { alpha, beta } => ("holt", Some(alpha), Some(beta)),
            Method::Persistence => ("persistence", None, None),
        };
        RuleView {
            host: r.host.as_str().to_owned(),
            process: r.process.as_str().to_owned(),
            metric: r.metric,
            threshold: r.threshold,
            hysteresis: r.hysteresis,
            clear_for: r.clear_for,
            horizon_ms: r.horizon_ms,
            window_ms: r.window_ms,
            debounce: r.debounce,
            method: method.to_owned(),
            alpha,
            beta,
            sensitivity,
            warmup_ms: warmup_ms(r),
        }
    }
}

/// A rule's warm-up for its metric (the method resolved as the engine resolves it); a rule
/// for cpu and mem alike: the longer of the two.
fn warmup_ms(r: &Rule) -> i64 {
    let of = |m: Metric| r.method.for_metric(m).warmup_ms(r.window_ms, r.horizon_ms);
    let method = match r.metric {
        Some(m) => of(m),
        None => of(Metric::Cpu).max(of(Metric::Mem)),
    };
    method.max(r.window_ms)
}

/// The answer of `GET /api/v1/rules`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RulesResponse {
    /// The server's sampling interval, ms (hosts that declare none are judged by it).
    pub interval_ms: u64,
    /// The rule that applies where no rule matches.
    pub defaults: RuleView,
    /// The configured rules, in order.
    pub rules: Vec<RuleView>,
}

/// `GET /api/v1/rules`.
async fn rules(State(st): State<AppState>) -> Json<RulesResponse> {
    let set = st.alarms.rules();
    Json(RulesResponse {
        interval_ms: st.config.interval.as_millis() as u64,
        defaults: RuleView::from(&set.defaults),
        rules: set.rules.iter().map(RuleView::from).collect(),
    })
}

/// One series of `GET /api/v1/forecasts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForecastView {
    /// The series' host.
    pub host: String,
    /// The series' process name.
    pub process: String,
    /// The series' metric.
    pub metric: Metric,
    /// Whether the forecaster has its warm-up of history: AMBER can fire.
    pub ready: bool,
    /// How much more sample history it needs, ms (0 when ready).
    pub ready_in_ms: i64,
    /// How much sample history the series has now, ms.
    pub history_ms: i64,
    /// The warm-up the series' rule needs before AMBER can fire, ms.
    pub warmup_ms: i64,
}

/// The answer of `GET /api/v1/forecasts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForecastsResponse {
    /// Series whose forecast is not ready yet.
    pub warming_up: usize,
    /// The shortest `ready_in_ms` of those; null when none is warming up.
    pub first_ready_in_ms: Option<i64>,
    /// Every series the evaluator holds a forecaster for.
    pub series: Vec<ForecastView>,
}

/// `GET /api/v1/forecasts`: per series the engine follows, whether its forecast (AMBER) is
/// warmed up and, if not, in how many ms of samples it will be. Bounded by the engine's series,
/// which the store's own caps bound; the optional `host` filter is an exact match.
pub async fn forecasts(
    State(st): State<AppState>,
    q: QueryResult<HostParam>,
) -> Result<Json<ForecastsResponse>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let series: Vec<ForecastView> = st
        .alarms
        .warmups()
        .into_iter()
        .filter(|w| q.host.as_deref().is_none_or(|h| h == w.host))
        .map(|w| ForecastView {
            ready: w.ready_in_ms == 0,
            ready_in_ms: w.ready_in_ms,
            history_ms: w.history_ms,
            warmup_ms: w.warmup_ms,
            host: w.host,
            process: w.process,
            metric: w.metric,
        })
        .collect();
    let warming: Vec<i64> = series.iter().filter(|s| !s.ready).map(|s| s.ready_in_ms).collect();
    Ok(Json(ForecastsResponse {
        warming_up: warming.len(),
        first_ready_in_ms: warming.iter().copied().min(),
        series,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_view_warm_up_is_the_metrics_own_and_the_longer_for_both() {
        let min = 60_000;
        let rule = |metric| Rule { metric, ..Rule::default() };
        // procwatch's default: a 30-minute trend for cpu, 1 h for mem; a rule on both says 1 h.
        assert_eq!(RuleView::from(&rule(Some(Metric::Cpu))).warmup_ms, 30 * min);
        assert_eq!(RuleView::from(&rule(Some(Metric::Mem))).warmup_ms, 60 * min);
        assert_eq!(RuleView::from(&rule(None)).warmup_ms, 60 * min);
        // linear: its window.
        let linear = Rule { method: Method::Linear, ..rule(None) };
        assert_eq!(RuleView::from(&linear).warmup_ms, linear.window_ms);
    }
}
