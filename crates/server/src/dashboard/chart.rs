//! The chart route: its parameters, the history it reads, the rule whose threshold and
//! forecast it draws, and the rendering on the blocking pool.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use procwatch_alarm::Method;
use procwatch_model::TsMs;
use procwatch_store::{AlarmQuery, HistoryPoint, HistoryQuery};
use serde::Deserialize;

use super::forecast::{forecast, forecast_history_ms};
use super::svg::{render_svg, ChartData, Theme, DARK, LIGHT, Y_CAP};
use crate::error::ApiError;
use crate::time::parse_duration_ms;
use crate::AppState;

/// Query string of the chart route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartParams {
    /// `cpu` (default), `mem` or `cores`.
    pub metric: Option<String>,
    /// How far back the chart reaches (a duration like `1h`).
    pub window: Option<String>,
    /// A horizontal line at this value, in the metric's unit.
    pub threshold: Option<f64>,
    /// How far ahead the forecast is drawn (a duration).
    pub horizon: Option<String>,
    /// The history the forecast is made from (a duration).
    pub forecast_window: Option<String>,
    /// `light` or `dark`.
    pub theme: Option<String>,
    /// Width of the SVG, pixels (default 640, clamped to 200–2000).
    pub width: Option<u32>,
    /// Height of the SVG, pixels (default 260, clamped to 120–1200).
    pub height: Option<u32>,
}

/// Which figure a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartMetric {
    /// CPU percent of the host.
    Cpu,
    /// Resident memory, percent of the host's `MemTotal`.
    Mem,
    /// CPU in cores (1.0 = one core fully busy).
    Cores,
}

impl ChartMetric {
    fn parse(s: Option<&str>) -> Result<Self, String> {
        match s.unwrap_or("cpu") {
            "cpu" => Ok(ChartMetric::Cpu),
            "mem" => Ok(ChartMetric::Mem),
            "cores" => Ok(ChartMetric::Cores),
            other => Err(format!("{other:?}: expected cpu, mem or cores")),
        }
    }
    pub(super) fn of(self, p: &HistoryPoint) -> f64 {
        match self {
            ChartMetric::Cpu => p.cpu,
            ChartMetric::Mem => p.mem,
            ChartMetric::Cores => p.cores,
        }
    }
    fn label(self) -> &'static str {
        match self {
            ChartMetric::Cpu => "cpu %",
            ChartMetric::Mem => "mem %",
            ChartMetric::Cores => "cores",
        }
    }
}

/// Charts rendered at once at most (each on the blocking pool); more are answered 503.
pub const MAX_RENDERS: usize = 4;

/// A history step that keeps a chart near `target` points.
pub fn chart_step_ms(window_ms: i64, target: i64) -> i64 {
    let step = window_ms / target.max(1);
    if step < 1000 {
        0
    } else {
        step
    }
}

fn dur(name: &str, v: Option<&str>, default_ms: i64) -> Result<i64, ApiError> {
    match v {
        None => Ok(default_ms),
        Some(s) => parse_duration_ms(s).map_err(|e| ApiError::bad_param(name, e)),
    }
}

pub(super) async fn chart(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    q: Result<Query<ChartParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((host, process)) = path?;
    let p = q?.0;
    let metric =
        ChartMetric::parse(p.metric.as_deref()).map_err(|e| ApiError::bad_param("metric", e))?;
    let window = dur("window", p.window.as_deref(), 3_600_000)?;
    if !(10_000..=7 * 86_400_000).contains(&window) {
        return Err(ApiError::bad_param("window", "between 10s and 7d"));
    }
    // The rule the alarm engine applies to this series: its threshold, horizon, window and
    // forecaster feed the chart (query parameters override the first three).
    let alarm_metric = match metric {
        ChartMetric::Cpu => procwatch_model::Metric::Cpu,
        ChartMetric::Mem => procwatch_model::Metric::Mem,
        ChartMetric::Cores => procwatch_model::Metric::Cores,
    };
    let rule = st.config.alarm_rules.rule_for(&host, &process, alarm_metric);
    let horizon = dur("horizon", p.horizon.as_deref(), rule.map_or(600_000, |r| r.horizon_ms))?;
    let fwindow = dur(
        "forecast_window",
        p.forecast_window.as_deref(),
        rule.map_or(600_000, |r| r.window_ms),
    )?;
    let method = rule.map_or(Method::Linear, |r| r.method.for_metric(alarm_metric));
    for (name, v) in [("horizon", horizon), ("forecast_window", fwindow)] {
        if !(0..=7 * 86_400_000).contains(&v) {
            return Err(ApiError::bad_param(name, "between 0 and 7d"));
        }
    }
    let theme = match p.theme.as_deref() {
        None | Some("light") => &LIGHT,
        Some("dark") => &DARK,
        Some(t) => return Err(ApiError::bad_param("theme", format!("{t:?}: light or dark"))),
    };
    let width = p.width.unwrap_or(640).clamp(200, 2000);
    let height = p.height.unwrap_or(260).clamp(120, 1200);
    let threshold = match (p.threshold, rule) {
        (Some(t), _) if (0.0..=Y_CAP).contains(&t) => Some(t),
        (Some(t), _) => {
            st.metrics.limit_breach("bad_number");
            return Err(ApiError::bad_param(
                "threshold",
                format!("{t}: a finite number from 0 to {Y_CAP:e}"),
            ));
        }
        (None, rule) => rule.map(|r| r.threshold.min(Y_CAP)),
    };
    let now = st.config.clock.now_ms();
    let to = now + procwatch_model::validate::MAX_FUTURE_MS + 1;
    let step = chart_step_ms(window, 240);
    let mut hq = HistoryQuery {
        host: host.clone(),
        process: process.clone(),
        from: now - window,
        to,
        step_ms: step,
    };
    let mut history = st.store.history(&hq).await?;
    // Data younger than the window: finer steps over what there is.
    if let Some(first) = history.first() {
        let finer = chart_step_ms((now - first.ts).max(10_000), 240);
        if finer < step {
            hq.from = first.ts;
            hq.step_ms = finer;
            history = st.store.history(&hq).await?;
        }
    }
    let minutes = |ts: TsMs| (ts - now) as f64 / 60_000.0;
    let points: Vec<(f64, f64)> = history.iter().map(|h| (minutes(h.ts), metric.of(h))).collect();
    // The forecast, from raw samples of the last forecast window.
    let server_interval = st.config.interval.as_millis() as i64;
    let interval =
        st.store.hosts().await?.into_iter().find(|h| h.host == host).map_or(server_interval, |h| {
            procwatch_model::trusted_interval_ms(h.interval_ms, server_interval)
        });
    let raw = st
        .store
        .history(&HistoryQuery {
            host: host.clone(),
            process: process.clone(),
            from: now - forecast_history_ms(method, fwindow, horizon),
            to,
            step_ms: 0,
        })
        .await?;
    let mut forecast = forecast(
        &raw,
        metric,
        method,
        fwindow,
        interval,
        horizon,
        threshold.unwrap_or(f64::INFINITY),
    );
    // An active AMBER alarm carries the alarm engine's own forecast: show that one.
    if let (Some(m), Some(last)) = (Some(alarm_metric), raw.last()) {
        let active = st
            .store
            .alarm_events(&AlarmQuery {
                active_only: true,
                host: Some(host.clone()),
                process: Some(process.clone()),
                metric: Some(m),
                ..Default::default()
            })
            .await?;
        if let Some(f) = active.iter().find_map(|e| e.forecast.filter(|f| f.is_finite())) {
            forecast = Some(((last.ts, metric.of(last)), last.ts + horizon, f));
        }
    }
    // Zoom on the data when it covers less than the window (a new process, a new server).
    let span = points.first().map_or(f64::INFINITY, |p| -p.0);
    let x_from = -(window as f64 / 60_000.0).min((span * 1.1).max(1.0));
    let x_to = if forecast.is_some() {
        minutes(now + horizon)
    } else {
        0.0f64.max(points.last().map_or(0.0, |p| p.0))
    };
    let data = ChartData {
        title: format!("{process} on {host} — {}", metric.label()),
        y_label: metric.label(),
        points,
        x_from,
        x_to: x_to.max(x_from + 0.1),
        threshold,
        forecast: forecast.map(|(last, f_ts, f)| [(minutes(last.0), last.1), (minutes(f_ts), f)]),
        percent: metric != ChartMetric::Cores,
    };
    let svg = render_blocking(&st, data, *theme, width, height).await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg)
        .into_response())
}

/// Renders on the blocking pool (at most [`MAX_RENDERS`] at once) under `render_timeout`, so a
/// slow render never holds an async worker.
async fn render_blocking(
    st: &AppState,
    data: ChartData,
    theme: Theme,
    width: u32,
    height: u32,
) -> Result<String, ApiError> {
    let busy = || {
        st.metrics.limit_breach("chart_render");
        ApiError::Busy("too many charts being drawn at once; retry in a moment".to_owned())
    };
    let Ok(permit) = st.render_permits.clone().try_acquire_owned() else { return Err(busy()) };
    let work = tokio::task::spawn_blocking(move || {
        let _held = permit;
        render_svg(&data, &theme, width, height)
    });
    match tokio::time::timeout(st.config.render_timeout, work).await {
        Ok(Ok(r)) => r.map_err(ApiError::Internal),
        Ok(Err(e)) => Err(ApiError::Internal(e.to_string())),
        Err(_) => Err(busy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(chart_step_ms(3_600_000, 240), 15_000);
        assert_eq!(chart_step_ms(60_000, 240), 0);
    }
}
