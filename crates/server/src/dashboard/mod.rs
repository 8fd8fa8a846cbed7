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
//!
//! Files: `assets` serves the page and its assets, `chart` the chart route and its parameters,
//! `svg` draws a chart, `forecast` makes the forecast line a chart shows.

use axum::routing::get;
use axum::Router;

use crate::AppState;

mod assets;
mod chart;
mod forecast;
mod svg;
#[cfg(test)]
mod tests;

pub use assets::{content_hash, page_weight};
pub use chart::{chart_step_ms, ChartMetric, ChartParams, MAX_RENDERS};
pub use forecast::{forecast, forecast_history_ms};
pub use svg::{render_svg, xml_safe, ChartData, Theme, DARK, LIGHT, Y_CAP};

/// The page, its assets, and the chart route.
pub fn router(state: &AppState) -> Router<AppState> {
    let charts = Router::new()
        .route("/api/v1/hosts/{host}/processes/{process}/chart.svg", get(chart::chart))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::require_read));
    Router::new()
        .route("/", get(assets::serve_index))
        .route("/index.html", get(assets::serve_index))
        .route("/assets/{name}", get(assets::serve_asset))
        .merge(charts)
        // Text compresses well (the page and its assets ~3x, the SVG charts ~10x).
        .layer(tower_http::compression::CompressionLayer::new())
}
