//! The web dashboard: a page of our own (HTML, CSS and vanilla JavaScript, no framework, no
//! third-party code) embedded in the binary, and server-side SVG charts drawn with `plotters`.
//!
//! Routes:
//! - `GET /` — the page; `GET /assets/{name}` — its script, stylesheet and icon. Always open
//!   (they hold no data). The page links its assets with `?v=<content hash>`; such requests are
//!   cached for a year (`immutable`), the page itself is `no-cache`, and every asset has an
//!   `ETag` answered with `304`. The page, its assets and the charts are gzipped when the
//!   client accepts it.
//! - `GET /api/v1/hosts/{host}/processes/{process}/chart.svg` — a read route (needs the read
//!   token when one is set). Parameters: `metric` (`cpu` default, `mem`, `cores`), `window`
//!   (default `1h`), `threshold`, `horizon` and `forecast_window` (default: those of the alarm
//!   rule that matches the series and metric; no threshold for cores without a rule), `theme`
//!   (`light` default, `dark`), `width` and `height` in pixels. The chart shows the history
//!   (mean per step, a marker per point), the threshold as a dashed red line and, to the right
//!   of "now", the forecast at now + horizon as a dashed amber line, made by the forecaster of
//!   that rule (built as the alarm engine builds it: procwatch's by default, from the last 2 h
//!   of raw samples; `predict_linear` over `forecast_window` for `method = "linear"` rules and
//!   for cores without a rule); while the series has an active alarm that carries a forecast
//!   (AMBER), the alarm engine's own forecast is drawn instead.
//!   The x axis is minutes relative to the server's clock (no time zone to get wrong); it
//!   zooms on the data when the data covers less than `window`.
//!
//! The page (see `assets/app.js`):
//! - Data comes from the v1 API: `/api/v1/hosts`, `/api/v1/usage`, the chart route, and the
//!   alarm routes `/api/v1/alarms?active=true`, `/api/v1/alarms?limit=50` and the stream
//!   `/api/v1/alarms/stream` (Server-Sent Events, read with `fetch` so the token can be sent).
//!   When the alarm routes answer 404 the page shows "alarms unavailable" and goes on.
//! - Refresh: every agent interval (the smallest `interval_ms` of the hosts), clamped to
//!   1–10 s; alarms are refreshed at once on every stream event, and polled at the same
//!   interval while the stream is down.
//! - Token: with `--read-token` set, the page asks for it once and keeps it in the browser's
//!   `localStorage` (key `procwatch.token`); opening `/#token=<token>` stores it too and clears
//!   it from the address bar. It is sent as `Authorization: Bearer`.

use std::sync::OnceLock;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use procwatch_alarm::forecast::{Forecaster, Linear};
use procwatch_alarm::Method;
use procwatch_model::TsMs;
use procwatch_store::{AlarmQuery, HistoryPoint, HistoryQuery};
use serde::Deserialize;

use crate::error::ApiError;
use crate::time::parse_duration_ms;
use crate::AppState;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("../assets/index.html");

/// FNV-1a, 64 bit: a content hash for cache busting and ETags (not for security).
pub fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The page with each `{{name}}` placeholder replaced by `/assets/name?v=<hash>`.
fn index() -> &'static (String, String) {
    static INDEX: OnceLock<(String, String)> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut page = INDEX_TEMPLATE.to_owned();
        for a in ASSETS {
            let url = format!("/assets/{}?v={}", a.name, &content_hash(a.body)[..12]);
            page = page.replace(&format!("{{{{{}}}}}", a.name), &url);
        }
        page = page.replace("{{version}}", env!("CARGO_PKG_VERSION"));
        let etag = format!("\"{}\"", content_hash(page.as_bytes()));
        (page, etag)
    })
}

/// Bytes of the page and all its assets, as served (uncompressed).
pub fn page_weight() -> usize {
    index().0.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
}

/// The page, its assets, and the chart route.
pub fn router(state: &AppState) -> Router<AppState> {
    let charts = Router::new()
        .route("/api/v1/hosts/{host}/processes/{process}/chart.svg", get(chart))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::require_read));
    Router::new()
        .route("/", get(serve_index))
        .route("/index.html", get(serve_index))
        .route("/assets/{name}", get(serve_asset))
        .merge(charts)
        // Text compresses well (the page and its assets ~3x, the SVG charts ~10x).
        .layer(tower_http::compression::CompressionLayer::new())
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn serve_index(headers: HeaderMap) -> Response {
    let (page, etag) = index();
    if not_modified(&headers, etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::ETAG, etag.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
                    .to_owned(),
            ),
        ],
        page.clone(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct AssetParams {
    v: Option<String>,
}

async fn serve_asset(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<AssetParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (Path(name), Query(p)) = match (path, q) {
        (Ok(n), Ok(p)) => (n, p),
        (Err(e), _) => return ApiError::from(e).into_response(),
        (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::NotFound(format!("no asset {name:?}")).into_response();
    };
    let hash = content_hash(a.body);
    let etag = format!("\"{hash}\"");
    // A versioned URL never changes content; an unversioned one is revalidated.
    let cache = if p.v.as_deref().is_some_and(|v| v.len() >= 12 && hash.starts_with(v)) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if not_modified(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut resp =
        ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, cache)], a.body)
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

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
    fn of(self, p: &HistoryPoint) -> f64 {
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

/// Colours of one theme.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// The chart's background.
    pub background: (u8, u8, u8),
    /// Title, labels and tick text.
    pub text: (u8, u8, u8),
    /// The grid lines.
    pub grid: (u8, u8, u8),
    /// The measured series.
    pub line: (u8, u8, u8),
    /// The threshold line.
    pub threshold: (u8, u8, u8),
    /// The forecast line.
    pub forecast: (u8, u8, u8),
}

/// The light theme (the default).
pub const LIGHT: Theme = Theme {
    background: (255, 255, 255),
    text: (55, 60, 70),
    grid: (228, 231, 236),
    line: (37, 99, 235),
    threshold: (220, 38, 38),
    forecast: (217, 119, 6),
};

/// The dark theme.
pub const DARK: Theme = Theme {
    background: (24, 27, 33),
    text: (200, 205, 215),
    grid: (52, 58, 68),
    line: (96, 165, 250),
    threshold: (248, 113, 113),
    forecast: (251, 191, 36),
};

/// Everything one chart shows, already fetched: pure input of [`render_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChartData {
    /// The chart's title (host and process).
    pub title: String,
    /// The y axis label, with its unit (`cpu %`, `mem %`, `cores`).
    pub y_label: &'static str,
    /// (minutes relative to now, value), oldest first.
    pub points: Vec<(f64, f64)>,
    /// x range in minutes relative to now.
    pub x_from: f64,
    /// The x range's end, minutes relative to now.
    pub x_to: f64,
    /// The threshold line, in the metric's unit (none: not drawn).
    pub threshold: Option<f64>,
    /// (minutes relative to now, value) of the forecast, starting at the last point.
    pub forecast: Option<[(f64, f64); 2]>,
    /// Percent metrics start at 0 and reach at least the threshold.
    pub percent: bool,
}

/// Charts rendered at once at most (each on the blocking pool); more are answered 503.
pub const MAX_RENDERS: usize = 4;

/// The largest value a chart's y axis shows, and the largest `threshold` accepted: plotters
/// loops without end on an infinite axis (a stored 1.7e308 times 1.15), and no cpu %, mem % or
/// core count comes near it. Larger values are drawn at the cap.
pub const Y_CAP: f64 = 1e9;

/// `s` with every character XML 1.0 forbids (controls but tab/LF/CR, U+FFFE, U+FFFF, lone
/// surrogates cannot occur in `str`) replaced by U+FFFD, so the SVG stays well-formed.
pub fn xml_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `d` with every number made drawable: non-finite points dropped, values clamped to
/// `0..=Y_CAP`, x within the finite range; `Err` when the x range itself is not finite.
fn sanitize(d: &ChartData) -> Result<ChartData, String> {
    if !(d.x_from.is_finite() && d.x_to.is_finite() && d.x_from < d.x_to) {
        return Err(format!("bad x range {}..{}", d.x_from, d.x_to));
    }
    let y = |v: f64| v.clamp(0.0, Y_CAP);
    let ok = |p: &(f64, f64)| p.0.is_finite() && !p.1.is_nan();
    let pt = |p: (f64, f64)| (p.0.clamp(d.x_from, d.x_to), y(p.1));
    Ok(ChartData {
        title: xml_safe(&d.title),
        y_label: d.y_label,
        points: d.points.iter().filter(|p| ok(p)).map(|&p| pt(p)).collect(),
        x_from: d.x_from,
        x_to: d.x_to,
        threshold: d.threshold.filter(|t| !t.is_nan()).map(y),
        forecast: d.forecast.filter(|f| f.iter().all(ok)).map(|f| [pt(f[0]), pt(f[1])]),
        percent: d.percent,
    })
}

/// Renders a chart as an SVG document. Pure: same data, same bytes. Every number is made
/// drawable first (see [`Y_CAP`]), and every character of the title valid XML.
pub fn render_svg(d: &ChartData, theme: &Theme, width: u32, height: u32) -> Result<String, String> {
    use plotters::prelude::*;
    let d = &sanitize(d)?;
    let rgb = |c: (u8, u8, u8)| RGBColor(c.0, c.1, c.2);
    let mut y_max = d.points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    if let Some(t) = d.threshold {
        y_max = y_max.max(t);
    }
    if let Some(f) = d.forecast {
        y_max = y_max.max(f[1].1);
    }
    y_max = if d.percent { (y_max * 1.12).clamp(5.0, 112.0) } else { (y_max * 1.15).max(0.1) };
    // Short spans are labelled in seconds; `+ 0.0` turns -0 into 0.
    let span = d.x_to - d.x_from;
    let seconds = span <= 3.0;
    let x_label = |x: &f64| {
        if seconds {
            format!("{:.0}", (x * 60.0).round() + 0.0)
        } else if span <= 30.0 {
            format!("{:.1}", x + 0.0)
        } else {
            format!("{:.0}", x.round() + 0.0)
        }
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&rgb(theme.background)).map_err(|e| err(&e))?;
        let text = rgb(theme.text);
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .caption(&d.title, ("sans-serif", 14).into_font().color(&text))
            .x_label_area_size(30)
            .y_label_area_size(42)
            .build_cartesian_2d(d.x_from..d.x_to, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .light_line_style(rgb(theme.grid).mix(0.5))
            .bold_line_style(rgb(theme.grid))
            .axis_style(rgb(theme.grid))
            .label_style(("sans-serif", 11).into_font().color(&text))
            .axis_desc_style(("sans-serif", 11).into_font().color(&text))
            .x_desc(if seconds { "seconds from now" } else { "minutes from now" })
            .y_desc(d.y_label)
            .x_labels(7)
            .y_labels(6)
            .x_label_formatter(&x_label)
            .y_label_formatter(&|y| {
                if y_max >= 10.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(t) = d.threshold {
            chart
                .draw_series(DashedLineSeries::new(
                    [(d.x_from, t), (d.x_to, t)],
                    6,
                    4,
                    rgb(theme.threshold).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        let line = rgb(theme.line);
        chart
            .draw_series(LineSeries::new(d.points.iter().copied(), line.stroke_width(2)))
            .map_err(|e| err(&e))?;
        let r = if d.points.len() > 150 { 1 } else { 2 };
        chart
            .draw_series(d.points.iter().map(|&p| Circle::new(p, r, line.filled())))
            .map_err(|e| err(&e))?;
        if let Some(f) = d.forecast {
            chart
                .draw_series(DashedLineSeries::new(f, 5, 3, rgb(theme.forecast).stroke_width(2)))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Circle::new(f[1], 3, rgb(theme.forecast).filled())))
                .map_err(|e| err(&e))?;
        }
        // "now"
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (0.0, y_max)],
                rgb(theme.grid).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

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

async fn chart(
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
    let interval = st
        .store
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.host == host)
        .map(|h| h.interval_ms as i64)
        .filter(|i| *i > 0)
        .unwrap_or(st.config.interval.as_millis() as i64);
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

/// How far back the chart reads raw samples for `method`'s forecast: the forecast window for
/// `predict_linear`; procwatch's forecaster needs its trend and noise history (2 h at
/// H = 10 min, 12 × H) before it says anything.
pub fn forecast_history_ms(method: Method, window_ms: i64, horizon_ms: i64) -> i64 {
    match method {
        Method::Linear => window_ms,
        _ => window_ms.max(13 * horizon_ms),
    }
}

/// The forecast the chart draws: `method` (the series' alarm rule's, as the alarm engine
/// builds it) fed the raw samples, read at `last + horizon`.
pub fn forecast(
    raw: &[HistoryPoint],
    metric: ChartMetric,
    method: Method,
    window_ms: i64,
    interval_ms: i64,
    horizon_ms: i64,
    threshold: f64,
) -> Option<((TsMs, f64), TsMs, f64)> {
    let last = raw.last()?;
    // A trend from a few seconds of data read 10 minutes ahead is noise: wait until the
    // samples cover half the window (procwatch's forecaster has its own warm-up).
    let first = raw.first()?;
    if method == Method::Linear && (raw.len() < 3 || last.ts - first.ts < window_ms / 2) {
        return None;
    }
    let mut f = match method {
        Method::Linear => {
            Box::new(Linear::new(Linear::samples_for(window_ms, interval_ms).min(raw.len())))
                as Box<dyn Forecaster>
        }
        m => m.forecaster(window_ms, horizon_ms, interval_ms),
    };
    for p in raw {
        f.push(p.ts, metric.of(p));
    }
    let at = last.ts + horizon_ms;
    let out = f.forecast(at, threshold)?;
    let value =
        if metric == ChartMetric::Cores { out.value.max(0.0) } else { out.value.clamp(0.0, 100.0) };
    Some(((last.ts, metric.of(last)), at, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: TsMs, cpu: f64) -> HistoryPoint {
        HistoryPoint {
            ts,
            cpu,
            cpu_max: cpu,
            cores: cpu / 50.0,
            mem: 1.0,
            mem_max: 1.0,
            rss: 1.0,
            count: 1.0,
            ..HistoryPoint::default()
        }
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }

    #[test]
    fn index_links_versioned_assets() {
        let (page, etag) = index();
        for a in ASSETS {
            assert!(page.contains(&format!("/assets/{}?v=", a.name)), "{} not linked", a.name);
        }
        assert!(!page.contains("{{"), "placeholder left in the page");
        assert!(etag.starts_with('"'));
        assert!(page_weight() > page.len());
    }

    #[test]
    fn svg_has_points_threshold_and_forecast() {
        let data = ChartData {
            title: "java on web-1 — cpu %".into(),
            y_label: "cpu %",
            points: vec![(-3.0, 10.0), (-2.0, 20.0), (-1.0, 30.0)],
            x_from: -5.0,
            x_to: 10.0,
            threshold: Some(80.0),
            forecast: Some([(-1.0, 30.0), (10.0, 90.0)]),
            percent: true,
        };
        let svg = render_svg(&data, &LIGHT, 400, 200).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        // 3 markers + the forecast's end marker
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("java on web-1"));
        assert!(
            svg.contains("#DC2626") || svg.to_lowercase().contains("#dc2626"),
            "threshold colour"
        );
        assert_eq!(render_svg(&data, &LIGHT, 400, 200).unwrap(), svg, "deterministic");
        let dark = render_svg(&data, &DARK, 400, 200).unwrap();
        assert_ne!(dark, svg);
    }

    #[test]
    fn forecast_follows_the_trend() {
        // +1 per 10 s: 10 minutes ahead is +60.
        let raw: Vec<HistoryPoint> = (0..5).map(|i| point(i * 10_000, 10.0 + i as f64)).collect();
        let ((ts, v), at, f) =
            forecast(&raw, ChartMetric::Cpu, Method::Linear, 20_000, 10_000, 600_000, 80.0)
                .unwrap();
        assert_eq!((ts, v), (40_000, 14.0));
        assert_eq!(at, 640_000);
        assert!((f - 74.0).abs() < 1e-6, "{f}");
        let lin = Method::Linear;
        assert!(forecast(&raw[..1], ChartMetric::Cpu, lin, 20_000, 10_000, 600_000, 80.0).is_none());
        assert!(forecast(&[], ChartMetric::Cpu, lin, 20_000, 10_000, 600_000, 80.0).is_none());
        // Three samples over 4 s do not make a trend of a 20 s window.
        let short: Vec<HistoryPoint> = (0..3).map(|i| point(i * 2_000, 10.0 + i as f64)).collect();
        assert!(forecast(&short, ChartMetric::Cpu, lin, 20_000, 2_000, 600_000, 80.0).is_none());
    }

    #[test]
    fn forecast_is_the_rules_forecaster() {
        // 2 h of a steady ramp, +0.5 per minute at 10 s sampling, ending at 70.
        let raw: Vec<HistoryPoint> =
            (0..720).map(|i| point(i * 10_000, 10.0 + 0.5 * i as f64 / 6.0)).collect();
        let last = 10.0 + 0.5 * 719.0 / 6.0;
        let at = |m: Method| {
            forecast(&raw, ChartMetric::Cpu, m, 600_000, 10_000, 600_000, 80.0).unwrap().2
        };
        // predict_linear reads the line on: +5 in 10 minutes.
        assert!((at(Method::Linear) - (last + 5.0)).abs() < 1e-6);
        // procwatch's forecaster damps its trend to half: +2.5.
        let ours = at(Method::PROCWATCH.for_metric(procwatch_model::Metric::Cpu));
        assert!((ours - (last + 2.5)).abs() < 0.1, "{ours} vs {}", last + 2.5);
        // It reads 2 h back at H = 10 min, predict_linear its window.
        assert_eq!(forecast_history_ms(Method::PROCWATCH, 600_000, 600_000), 7_800_000);
        assert_eq!(forecast_history_ms(Method::Linear, 600_000, 600_000), 600_000);
    }

    mod http {
        use std::sync::Arc;

        use axum::body::Body;
        use axum::http::{header, Request, StatusCode};
        use procwatch_model::{Batch, Sample};
        use procwatch_store::memory::MemoryStore;
        use tower::ServiceExt;

        use crate::{AppState, ServerConfig};

        async fn app(read_token: Option<&str>) -> (axum::Router, AppState) {
            let config =
                ServerConfig { read_token: read_token.map(str::to_owned), ..Default::default() };
            app_with(config).await
        }

        async fn app_with(config: ServerConfig) -> (axum::Router, AppState) {
            let state = AppState::new(Arc::new(MemoryStore::new()), config);
            let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
            let samples = (0..5)
                .map(|i| Sample {
                    ts: now - (5 - i) * 10_000,
                    process: "java".into(),
                    cpu: 10.0 * i as f64,
                    cores: 0.2 * i as f64,
                    mem: 5.0,
                    rss: 1 << 30,
                    count: 2,
                    extras: None,
                })
                .collect();
            let batch = Batch {
                host: "web-1".into(),
                agent: "test".into(),
                seq: 1,
                interval_ms: 10_000,
                host_totals: vec![],
                samples,
                dropped_samples: 0,
            };
            state.store.write_batch(&batch).await.unwrap();
            (crate::router(state.clone()), state)
        }

        async fn get(
            app: &axum::Router,
            uri: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, axum::http::HeaderMap, String) {
            let mut req = Request::get(uri);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
        }

        #[tokio::test]
        async fn page_and_assets_with_cache_headers() {
            let (app, _) = app(Some("secret")).await;
            let (status, h, body) = get(&app, "/", &[]).await;
            assert_eq!(status, StatusCode::OK, "the page is open even with a read token");
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert!(body.contains("<title>procwatch</title>"));
            let etag = h[header::ETAG].to_str().unwrap().to_owned();
            let (status, _, _) = get(&app, "/", &[("if-none-match", &etag)]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED);

            let versioned = body
                .split('"')
                .find(|s| s.starts_with("/assets/app.js?v="))
                .expect("the page links app.js")
                .to_owned();
            let (status, h, js) = get(&app, &versioned, &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
            assert_eq!(h[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
            assert!(js.contains("EventSource") || js.contains("text/event-stream"));
            let (_, h, _) = get(&app, "/assets/app.js?v=1", &[]).await;
            assert_eq!(h[header::CACHE_CONTROL], "no-cache", "a wrong version is not immutable");
            let (_, h, _) = get(&app, "/assets/app.css", &[("accept-encoding", "gzip")]).await;
            assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
            assert_eq!(h[header::CONTENT_ENCODING], "gzip");
            let (status, h, body) = get(&app, "/assets/nope.js", &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
            assert!(body.contains("nope.js"));
        }

        /// The chart draws the threshold of the alarm rule matching the series: the built-in
        /// `cores` rule or a `cores` rule for java gives java's cores chart a threshold line
        /// (none with the built-in rule off and no rule).
        #[tokio::test]
        async fn chart_draws_the_rules_threshold() {
            use procwatch_alarm::{Glob, RuleSet, RuleSpec};
            let threshold_colour = |svg: &str| svg.to_lowercase().contains("#dc2626");
            let uri = "/api/v1/hosts/web-1/processes/java/chart.svg?metric=cores";
            // The built-in cores rule (0.9 cores) is a rule for every process's cores.
            let (builtin, _) = app(None).await;
            let (status, _, svg) = get(&builtin, uri, &[]).await;
            assert_eq!(status, StatusCode::OK, "{svg}");
            assert!(threshold_colour(&svg), "the built-in cores rule's threshold is drawn");
            let off = RuleSpec { cores_threshold: Some(0.0), ..RuleSpec::default() };
            let none = RuleSet::from_specs(&off, &[]).unwrap();
            let (plain, _) =
                app_with(ServerConfig { alarm_rules: none, ..Default::default() }).await;
            let (status, _, svg) = get(&plain, uri, &[]).await;
            assert_eq!(status, StatusCode::OK, "{svg}");
            assert!(!threshold_colour(&svg), "no rule for cores: no threshold");
            let rule = RuleSpec {
                process: Some(Glob::new("java")),
                metric: Some(procwatch_model::Metric::Cores),
                threshold: Some(0.5),
                ..RuleSpec::default()
            };
            let rules = RuleSet::from_specs(&RuleSpec::default(), &[rule]).unwrap();
            let (ruled, _) =
                app_with(ServerConfig { alarm_rules: rules, ..Default::default() }).await;
            let (status, _, svg) = get(&ruled, uri, &[]).await;
            assert_eq!(status, StatusCode::OK, "{svg}");
            assert!(threshold_colour(&svg), "the cores rule's threshold is drawn");
        }

        #[tokio::test]
        async fn chart_route() {
            let (app, _) = app(Some("secret")).await;
            let auth = [("authorization", "Bearer secret")];
            let base = "/api/v1/hosts/web-1/processes/java/chart.svg";
            let (status, _, _) = get(&app, base, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "charts are a read route");
            let (status, h, svg) = get(&app, &format!("{base}?window=5m&theme=dark"), &auth).await;
            assert_eq!(status, StatusCode::OK, "{svg}");
            assert_eq!(h[header::CONTENT_TYPE], "image/svg+xml");
            assert!(svg.starts_with("<svg"));
            assert_eq!(svg.matches("<circle").count(), 5, "one marker per sample");
            let (status, _, body) = get(&app, &format!("{base}?metric=disk"), &auth).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("metric"));
            let (status, _, _) = get(&app, &format!("{base}?window=1s"), &auth).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            let (status, _, _) =
                get(&app, "/api/v1/hosts/web-1/processes/nope/chart.svg", &auth).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }

        #[tokio::test]
        async fn metrics_route() {
            let (app, _) = app(None).await;
            let (status, h, text) = get(&app, "/metrics", &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert!(h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"));
            assert!(
                text.contains(
                    "procwatch_process_cpu_percent{host=\"web-1\",process=\"java\"} 40.0"
                ),
                "{text}"
            );
            assert!(text.contains(
                "procwatch_process_rss_bytes{host=\"web-1\",process=\"java\"} 1073741824"
            ));
            assert!(text.contains("procwatch_ingested_samples_total{format=\"v1\"} 5"));
            assert!(text.contains("procwatch_refused_batches_total{reason=\"invalid\"} 0"));
            // A refused batch is counted by reason, and the request by route.
            let req = Request::post("/api/v1/samples")
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            let (_, _, text) = get(&app, "/metrics", &[]).await;
            assert!(
                text.contains("procwatch_refused_batches_total{reason=\"invalid\"} 1"),
                "{text}"
            );
            assert!(text.contains(
                "procwatch_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/samples\",status=\"400\"} 1"
            ));
        }
    }

    #[test]
    fn steps() {
        assert_eq!(chart_step_ms(3_600_000, 240), 15_000);
        assert_eq!(chart_step_ms(60_000, 240), 0);
    }
}
