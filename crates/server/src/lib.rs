//! procwatch-server: the REST server of procwatch, thin axum handlers over one
//! `Arc<dyn Storage>`.
//!
//! Entry point: [`run`] serves a bound listener until the `shutdown` future completes, then
//! finishes the requests in flight (so a write that started is stored and answered), stops the
//! retention task and closes the store. [`router`] builds the axum `Router` alone (for
//! `oneshot` tests).
//!
//! Routes (all documented in `/api/v1/openapi.json`, built from the same table [`ROUTES`]):
//! - ingestion: `POST /api/v1/samples` (JSON, `Content-Encoding: gzip` accepted) and the
//!   legacy `PUT /ressources-usage/save-all`; validation is `procwatch_model::validate`.
//! - seed queries: `GET /ressources-usage/get-all`, `GET /ressources-usage/get-all-detailed`.
//! - v1 queries: `GET /api/v1/hosts`, `/api/v1/usage`,
//!   `/api/v1/hosts/{host}/processes/{process}/history`, `/api/v1/hosts/{host}/totals`.
//! - alarms: `GET /ressources-usage/query-alarm/`, `/api/v1/alarms`, `/api/v1/alarms/stream`
//!   (SSE), `/api/v1/rules`, and the evaluator task; see [`alarms`].
//! - `GET /healthz` (the process answers) and `GET /readyz` (the store answers; 503 if not).
//!
//! Decisions a user needs to know:
//! - Limits: body at most 16 MiB on the wire and after gunzip (413 past either, checked while
//!   decompressing, so a gzip bomb costs at most 16 MiB); at most 100,000 samples a batch.
//!   A `Content-Encoding` other than gzip/identity is 415. The `Content-Type` is not checked
//!   (the body must be JSON whatever it says).
//! - Auth: with `write_token` set, ingestion needs `Authorization: Bearer <token>`; with
//!   `read_token` set, every query route does. A missing or wrong token is 401; the other
//!   role's token (a write token on a read route) is 403. Tokens are compared in constant time
//!   and never logged. `/healthz`, `/readyz` and `/api/v1/openapi.json` are always open.
//! - Every error is JSON `{"error": "...", "problems": [{"index", "field", "reason"}]}`;
//!   unknown routes are 404 and wrong methods 405, in the same shape. A request running past
//!   `request_timeout` (30 s) is 408. More than `max_inflight_writes` (64) ingestion requests
//!   at once: 429 with `Retry-After: 1` (agents retry).
//! - Hardening: a request head must arrive within `header_read_timeout` (30 s; the connection is
//!   closed otherwise, and idle keep-alive connections are closed after it too), at most
//!   `max_concurrent_requests` (1024) requests in flight, and ingestion is rate limited per
//!   write token (per peer IP without one) at `ingest_rate` (200/s, burst 400): 429 with
//!   `Retry-After`. Every breach is counted in `procwatch_limit_breaches_total{reason}`; the
//!   table of limits is in [`limits`].
//! - TLS: `ServerConfig::tls` (built by [`serve::tls_config`] from PEM files) serves HTTPS only,
//!   with rustls (ring), TLS 1.2/1.3, HTTP/1.1 and HTTP/2 by ALPN. The connection loop is
//!   [`serve::serve`] (hyper-util), which also hands handlers the peer address.
//! - Retention: everything older than `now - retention` is dropped when the server starts and
//!   then every `retention_interval` (1 min); ingestion refuses samples already past it.
//! - Times in query strings: Unix ms, RFC 3339 UTC, or relative (`now`, `-2h`, `now-30m`); see
//!   [`time`]. Query semantics: see [`query`].
//! - Legacy `save-all`: cpu and mem points of one (process, timestamp) join into one sample;
//!   a point with only one of the two takes the other from the nearest point in time of the
//!   same process in the same request, else 0; see
//!   `procwatch_model::validate::legacy_to_batch`.

pub mod alarms;
pub mod dashboard;
pub mod error;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod retire;
pub mod serve;
pub mod time;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{BoxError, Json, Router};
use procwatch_store::{Storage, StoreError};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// Settings of one server. `Debug` redacts the tokens.
#[derive(Clone)]
pub struct ServerConfig {
    /// Samples older than this are refused at ingestion and dropped from the store.
    pub retention: Duration,
    /// How often retention runs (also once at start).
    pub retention_interval: Duration,
    /// Expected agent interval, for `stale` when a host declared none.
    pub interval: Duration,
    /// The "last 5 minutes" of the seed routes, and the default v1 usage window.
    pub query_window: Duration,
    /// Bearer token for ingestion routes; `None` = open.
    pub write_token: Option<String>,
    /// Bearer token for query routes; `None` = open.
    pub read_token: Option<String>,
    /// Body limit, on the wire and after decompression.
    pub max_body_bytes: usize,
    /// Samples a batch at most.
    pub max_samples: usize,
    /// A request running longer is answered 408.
    pub request_timeout: Duration,
    /// Ingestion requests in flight at most (bodies being read, decoded or stored); more are
    /// answered 429 with `Retry-After: 1` at once, so memory stays bounded under a burst.
    pub max_inflight_writes: usize,
    /// Alarm rules (`[alarm_defaults]` and `[[rules]]` of the config file).
    pub alarm_rules: procwatch_alarm::RuleSet,
    /// A request head (request line and headers) not read within this closes the connection;
    /// also bounds a TLS handshake.
    pub header_read_timeout: Duration,
    /// Requests in flight at most, all routes but `/healthz`, `/readyz` and the alarm stream;
    /// more are answered 429 with `Retry-After: 1`.
    pub max_concurrent_requests: usize,
    /// Ingestion requests a second per key (the write token, else the peer IP); 0 = no limit.
    pub ingest_rate: f64,
    /// Ingestion requests a key may send at once after being idle.
    pub ingest_burst: u32,
    /// Serve HTTPS with this rustls config ([`serve::tls_config`]); `None` = plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            retention: Duration::from_secs(48 * 3600),
            retention_interval: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            query_window: Duration::from_secs(300),
            write_token: None,
            read_token: None,
            max_body_bytes: procwatch_model::validate::MAX_BODY_BYTES,
            max_samples: procwatch_model::validate::MAX_SAMPLES,
            request_timeout: Duration::from_secs(30),
            max_inflight_writes: 64,
            alarm_rules: procwatch_alarm::RuleSet::default(),
            header_read_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            ingest_rate: 200.0,
            ingest_burst: 400,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |t: &Option<String>| t.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServerConfig")
            .field("retention", &self.retention)
            .field("retention_interval", &self.retention_interval)
            .field("interval", &self.interval)
            .field("query_window", &self.query_window)
            .field("write_token", &redact(&self.write_token))
            .field("read_token", &redact(&self.read_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_samples", &self.max_samples)
            .field("request_timeout", &self.request_timeout)
            .field("max_inflight_writes", &self.max_inflight_writes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("ingest_rate", &self.ingest_rate)
            .field("ingest_burst", &self.ingest_burst)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What every handler can reach. Built in one place, [`AppState::new`].
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<metrics::Metrics>,
    pub alarms: Arc<alarms::Alarms>,
    /// One permit per ingestion request in flight (`ServerConfig::max_inflight_writes`).
    pub write_permits: Arc<tokio::sync::Semaphore>,
    /// One permit per request in flight (`ServerConfig::max_concurrent_requests`).
    pub request_permits: Arc<tokio::sync::Semaphore>,
    /// Ingestion rate per key (`ServerConfig::ingest_rate`).
    pub rate: Arc<limits::RateLimiter>,
}

impl AppState {
    pub fn new(store: Arc<dyn Storage>, config: ServerConfig) -> Self {
        let metrics = Arc::new(metrics::Metrics::new());
        let store = metrics::MeteredStore::wrap(store, metrics.clone());
        let alarms = Arc::new(alarms::Alarms::new(config.alarm_rules.clone()));
        let write_permits = Arc::new(tokio::sync::Semaphore::new(config.max_inflight_writes));
        let request_permits = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests));
        let rate = Arc::new(limits::RateLimiter::new(config.ingest_rate, config.ingest_burst));
        AppState {
            store,
            config: Arc::new(config),
            metrics,
            alarms,
            write_permits,
            request_permits,
            rate,
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Always open.
    Open,
    /// Needs the read token when one is set.
    Read,
    /// Needs the write token when one is set.
    Write,
}

/// One route: the table both the router and the OpenAPI document are built from.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    Route { method: Method::GET, path: "/healthz", access: Access::Open, handler: || get(healthz) },
    Route { method: Method::GET, path: "/readyz", access: Access::Open, handler: || get(readyz) },
    Route {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        access: Access::Open,
        handler: || get(openapi::serve),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/samples",
        access: Access::Write,
        handler: || post(ingest::post_samples),
    },
    Route {
        method: Method::PUT,
        path: "/ressources-usage/save-all",
        access: Access::Write,
        handler: || put(ingest::put_legacy),
    },
    Route {
        method: Method::GET,
        path: "/ressources-usage/get-all",
        access: Access::Read,
        handler: || get(query::get_all),
    },
    Route {
        method: Method::GET,
        path: "/ressources-usage/get-all-detailed",
        access: Access::Read,
        handler: || get(query::get_all_detailed),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/hosts",
        access: Access::Read,
        handler: || get(query::hosts),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/usage",
        access: Access::Read,
        handler: || get(query::usage),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/hosts/{host}/processes/{process}/history",
        access: Access::Read,
        handler: || get(query::history),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/hosts/{host}/totals",
        access: Access::Read,
        handler: || get(query::totals),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/hosts/{host}/retire",
        access: Access::Write,
        handler: || post(retire::retire),
    },
];

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let mut open = Router::new();
    let mut read = Router::new();
    let mut write = Router::new();
    for r in ROUTES {
        let target = match r.access {
            Access::Open => &mut open,
            Access::Read => &mut read,
            Access::Write => &mut write,
        };
        *target = std::mem::take(target).route(r.path, (r.handler)());
    }
    let read = read.route_layer(middleware::from_fn_with_state(state.clone(), require_read));
    let write = write
        .route_layer(middleware::from_fn_with_state(state.clone(), require_write))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    let timeout = state.config.request_timeout;
    let timeout_metrics = state.metrics.clone();
    open.merge(read)
        .merge(write)
        .merge(dashboard::router(&state))
        .merge(metrics::router(&state))
        .merge(alarms::router(&state))
        .fallback(no_route)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let path = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    tracing::info_span!("http", method = %req.method(), route = path)
                }))
                .layer(HandleErrorLayer::new(move |err: BoxError| {
                    let metrics = timeout_metrics.clone();
                    async move {
                        if err.is::<tower::timeout::error::Elapsed>() {
                            metrics.limit_breach("request_timeout");
                            ApiError::Timeout
                        } else {
                            ApiError::Internal(err.to_string())
                        }
                    }
                }))
                .timeout(timeout),
        )
        .layer(middleware::from_fn_with_state(state.clone(), limits::concurrency))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.store.health().await {
        Ok(()) => Json(json!({"status": "ready", "store": st.store.backend()})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("store not ready: {e}"), "problems": [], "store": st.store.backend()})),
        )
            .into_response(),
    }
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = v.split_at(v.len().min(7));
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

fn check_token(
    req: &Request,
    needed: &Option<String>,
    other: &Option<String>,
    what: &str,
) -> Result<(), ApiError> {
    let Some(needed) = needed else { return Ok(()) };
    let Some(given) = bearer(req) else {
        return Err(ApiError::Unauthorized(format!(
            "this route needs the {what} token: Authorization: Bearer <token>"
        )));
    };
    if constant_time_eq(given, needed.as_bytes()) {
        return Ok(());
    }
    if other.as_ref().is_some_and(|o| constant_time_eq(given, o.as_bytes())) {
        return Err(ApiError::Forbidden(format!("this token may not call {what} routes")));
    }
    Err(ApiError::Unauthorized(format!("wrong {what} token")))
}

async fn require_read(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match check_token(&req, &st.config.read_token, &st.config.write_token, "read") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_write(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = check_token(&req, &st.config.write_token, &st.config.read_token, "write") {
        return e.into_response();
    }
    if let Err(wait) = st.rate.check(&limits::rate_key(&st, &req), std::time::Instant::now()) {
        return limits::too_many(&st, "rate_limited", wait);
    }
    let Ok(_permit) = st.write_permits.clone().try_acquire_owned() else {
        return limits::too_many(&st, "inflight_writes", Duration::from_secs(1));
    };
    next.run(req).await
}

/// Drops what is older than the retention; logs and carries on when the store fails.
pub async fn apply_retention(st: &AppState) {
    let cutoff = time::now_ms() - st.config.retention.as_millis() as i64;
    match st.store.apply_retention(cutoff).await {
        Ok(n) => tracing::info!(message = "Retention applied.", cutoff, removed = n),
        Err(error) => tracing::warn!(message = "Retention failed.", %error),
    }
}

/// Serves `listener` until `shutdown` completes, then drains requests in flight, stops the
/// retention task and closes the store.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    store: Arc<dyn Storage>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = AppState::new(store.clone(), config);
    apply_retention(&state).await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let retention_state = state.clone();
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention_state.config.retention_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; retention already ran
        loop {
            tokio::select! {
                _ = tick.tick() => apply_retention(&retention_state).await,
                _ = stop_rx.changed() => break,
            }
        }
    });
    // A short summary a person reads at a glance (the whole config is `-v` material).
    let c = &state.config;
    tracing::info!(
        message = "Serving.",
        addr = %listener.local_addr()?,
        store = store.backend(),
        tls = c.tls.is_some(),
        write_token = c.write_token.is_some(),
        read_token = c.read_token.is_some(),
        interval = %humantime::format_duration(c.interval),
        retention = %humantime::format_duration(c.retention),
        rules = c.alarm_rules.rules.len(),
    );
    tracing::debug!(message = "Server settings.", config = ?state.config);
    let evaluator = alarms::spawn_evaluator(state.clone(), stop_tx.subscribe());
    let hub = state.alarms.clone();
    let shutdown = async move {
        shutdown.await;
        hub.close_streams(); // open alarm streams would hold the graceful shutdown
    };
    let opts = serve::ConnOptions {
        tls: state.config.tls.clone(),
        header_read_timeout: state.config.header_read_timeout,
        metrics: state.metrics.clone(),
    };
    let served = serve::serve(listener, router(state), opts, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = retention.await;
    let _ = evaluator.await;
    let closed = store.close().await;
    tracing::info!(message = "Server stopped.");
    served?;
    closed?;
    Ok(())
}
