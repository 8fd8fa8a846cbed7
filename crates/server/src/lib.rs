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
//!   (SSE), `/api/v1/rules`, `/api/v1/forecasts` (per-series forecast warm-up), and the
//!   evaluator task; see [`alarms`].
//! - `GET /healthz` (the process answers) and `GET /readyz` (the store answers; 503 if not);
//!   `GET /api/v1/health` (store and alarm evaluation state, see [`health`]).
//!
//! Decisions a user needs to know:
//! - Limits: body at most 16 MiB on the wire and after gunzip (413 past either, checked while
//!   decompressing, so a gzip bomb costs at most 16 MiB); at most 100,000 samples a batch.
//!   A `Content-Encoding` other than gzip/identity is 415, and so is a write whose
//!   `Content-Type` is not `application/json` (CSRF; see [`guard`], which also refuses foreign
//!   `Origin`s on writes with 403 and, on a loopback listener, foreign `Host`s with 421).
//!   A gzipped body may inflate at most 100 times; bodies in flight share
//!   `max_inflight_bytes` (429 past it); see [`ingest`].
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
//!   table of limits is in [`limits`]. Connections: see [`serve`] (first-request and idle
//!   timeouts for HTTP/1 and HTTP/2, `max_connections` with headroom for health checks);
//!   alarm streams at most `max_streams` (503).
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

#![deny(missing_docs)]

pub mod admission;
pub mod agents;
pub mod alarms;
pub mod dashboard;
pub mod error;
pub mod governor;
pub mod guard;
pub mod health;
pub mod heap_stats;
pub mod ingest;
pub mod limits;
pub mod metered_store;
pub mod metrics;
pub mod metrics_extras;
pub mod openapi;
pub mod ownership;
pub mod page;
pub mod query;
pub mod rendezvous;
pub mod retire;
pub mod serve;
pub mod time;
pub mod usage_extras;
pub mod usage_row;

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
    /// Bearer token for admin routes (steering agents, [`agents`]); `None` = admin routes
    /// disabled (403). Must differ from the read and write tokens.
    pub admin_token: Option<String>,
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
    /// Where time comes from (queries' "now", retention, alarm evaluation, rate limits).
    pub clock: Arc<dyn procwatch_model::clock::Clock>,
    /// Host names (besides localhost and loopback IPs) a loopback-bound server answers to
    /// (see [`guard`]).
    pub allowed_hosts: Vec<String>,
    /// A connection with no request in flight and no byte moving for this long is closed
    /// (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// Open connections at most; past it a few more ([`serve::headroom`]) are served one
    /// short request each (health checks), the rest are closed at once and counted.
    pub max_connections: usize,
    /// Alarm streams (SSE) open at once at most; more are answered 503.
    pub max_streams: usize,
    /// Request body bytes held at once by all ingestion requests together, on the wire and
    /// after gunzip; past it a request is answered 429 with `Retry-After: 1`.
    pub max_inflight_bytes: usize,
    /// A chart not rendered within this is answered 503 (rendering runs on the blocking pool).
    pub render_timeout: Duration,
    /// Per-host write tokens (`--host-tokens`); a batch must be for its token's host. See
    /// [`admission`].
    pub host_tokens: Option<Arc<admission::HostTokens>>,
    /// Refuse the global `write_token` on ingestion (only per-host tokens write).
    pub host_tokens_only: bool,
    /// Distinct series caps (per batch, per host, in total). See [`admission`].
    pub series_limits: admission::SeriesLimits,
    /// The cardinality governor (top-K per host, the tail folded). See [`governor`].
    pub governor: governor::GovernorConfig,
    /// Which hosts this server evaluates alarms for, when several servers share the store
    /// (`None`: every host). See [`ownership`].
    pub ownership: Option<Arc<dyn ownership::Ownership>>,
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
            admin_token: None,
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
            clock: procwatch_model::clock::system(),
            allowed_hosts: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1000,
            max_streams: 64,
            max_inflight_bytes: 64 << 20,
            render_timeout: Duration::from_secs(5),
            host_tokens: None,
            host_tokens_only: false,
            series_limits: admission::SeriesLimits::default(),
            governor: governor::GovernorConfig::default(),
            ownership: None,
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
            .field("admin_token", &redact(&self.admin_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_samples", &self.max_samples)
            .field("request_timeout", &self.request_timeout)
            .field("max_inflight_writes", &self.max_inflight_writes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("ingest_rate", &self.ingest_rate)
            .field("ingest_burst", &self.ingest_burst)
            .field("tls", &self.tls.is_some())
            .field("allowed_hosts", &self.allowed_hosts)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_streams", &self.max_streams)
            .field("max_inflight_bytes", &self.max_inflight_bytes)
            .field("render_timeout", &self.render_timeout)
            .field("host_tokens", &self.host_tokens.as_ref().map(|t| t.len()))
            .field("host_tokens_only", &self.host_tokens_only)
            .field("series_limits", &self.series_limits)
            .field("governor", &self.governor)
            .field("ownership", &self.ownership.is_some())
            .finish()
    }
}

/// What every handler can reach. Built in one place, [`AppState::new`].
#[derive(Clone)]
pub struct AppState {
    /// The store every handler reads and writes, wrapped to count its calls and latency.
    pub store: Arc<dyn Storage>,
    /// The server's settings, as started.
    pub config: Arc<ServerConfig>,
    /// The server's counters and histograms, exported at `GET /metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The alarm hub: rules, open alarms and the stream of changes.
    pub alarms: Arc<alarms::Alarms>,
    /// One permit per ingestion request in flight (`ServerConfig::max_inflight_writes`).
    pub write_permits: Arc<tokio::sync::Semaphore>,
    /// One permit per request in flight (`ServerConfig::max_concurrent_requests`).
    pub request_permits: Arc<tokio::sync::Semaphore>,
    /// Ingestion rate per host (`ServerConfig::ingest_rate`).
    pub rate: Arc<limits::RateLimiter>,
    /// The listener is on a loopback address: the `Host` check of [`guard`] is on. Set by
    /// [`run`]; `false` for a router built alone.
    pub loopback: bool,
    /// One permit per open alarm stream (`ServerConfig::max_streams`).
    pub stream_permits: Arc<tokio::sync::Semaphore>,
    /// One permit per KiB of request body held by ingestion (`ServerConfig::max_inflight_bytes`).
    pub body_bytes: Arc<tokio::sync::Semaphore>,
    /// One permit per chart being rendered on the blocking pool.
    pub render_permits: Arc<tokio::sync::Semaphore>,
    /// Distinct series per host and in total (`ServerConfig::series_limits`).
    pub series: Arc<admission::SeriesTracker>,
    /// The cardinality governor ([`ServerConfig::governor`]).
    pub governor: Arc<governor::Governor>,
    /// The control channel: agents registry and directive log ([`agents`]).
    pub agents: Arc<agents::Agents>,
}

impl AppState {
    /// Builds the state from a store and the settings: the semaphores sized from `config`, the
    /// store wrapped by [`metrics::MeteredStore`], and the alarm hub booted at the clock's now.
    pub fn new(store: Arc<dyn Storage>, config: ServerConfig) -> Self {
        let metrics = Arc::new(metrics::Metrics::with_clock(config.clock.clone()));
        let store = metrics::MeteredStore::wrap(store, metrics.clone());
        let boot = config.clock.now_ms();
        let alarms = Arc::new(alarms::Alarms::new(config.alarm_rules.clone(), boot));
        let write_permits = Arc::new(tokio::sync::Semaphore::new(config.max_inflight_writes));
        let request_permits = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests));
        let rate = Arc::new(limits::RateLimiter::new(config.ingest_rate, config.ingest_burst));
        let stream_permits = Arc::new(tokio::sync::Semaphore::new(config.max_streams));
        // At least two bodies of the largest size (on the wire and after gunzip) fit.
        let budget = config.max_inflight_bytes.max(config.max_body_bytes.saturating_mul(2));
        let kib = (budget / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let body_bytes = Arc::new(tokio::sync::Semaphore::new(kib));
        let render_permits = Arc::new(tokio::sync::Semaphore::new(dashboard::MAX_RENDERS));
        let governor = Arc::new(governor::Governor::new(config.governor.clone()));
        AppState {
            store,
            config: Arc::new(config),
            metrics,
            alarms,
            write_permits,
            request_permits,
            rate,
            loopback: false,
            stream_permits,
            body_bytes,
            render_permits,
            series: Arc::new(admission::SeriesTracker::default()),
            governor,
            agents: Arc::new(agents::Agents::default()),
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener or a connection failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed to open, serve or close.
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
    /// The HTTP method.
    pub method: Method,
    /// The path, axum syntax (`{name}` for a path parameter).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Builds the route's handler.
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    Route { method: Method::GET, path: "/healthz", access: Access::Open, handler: || get(healthz) },
    Route { method: Method::GET, path: "/readyz", access: Access::Open, handler: || get(readyz) },
    Route {
        method: Method::GET,
        path: "/api/v1/health",
        access: Access::Open,
        handler: || get(health::health),
    },
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
    Route {
        method: Method::GET,
        path: "/api/v1/forecasts",
        access: Access::Read,
        handler: || get(alarms::forecasts),
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
        .merge(agents::router(&state))
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
        .layer(middleware::from_fn_with_state(state.clone(), guard::browser_guard))
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
            {
                tracing::warn!(message = "Store not ready.", error = %e);
                Json(json!({"error": "store not ready: the server's log has the cause", "problems": [], "store": st.store.backend()}))
            },
        )
            .into_response(),
    }
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn bearer(req: &Request) -> Option<&[u8]> {
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

pub(crate) async fn require_read(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match check_token(&req, &st.config.read_token, &st.config.write_token, "read") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_write(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth = match write_auth(&st, &req) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = guard::require_json(&req) {
        st.metrics.limit_breach("not_json");
        return e.into_response();
    }
    // A per-host token names its host: rate-limit before the body is read. Other batches are
    // rate-limited by their `host` once decoded (`ingest`).
    if let admission::WriteAuth::Host(host) = &auth {
        if let Err(wait) = st.rate.check(host, st.config.clock.instant()) {
            return limits::too_many(&st, "rate_limited", wait);
        }
    }
    req.extensions_mut().insert(auth);
    let Ok(_permit) = st.write_permits.clone().try_acquire_owned() else {
        return limits::too_many(&st, "inflight_writes", Duration::from_secs(1));
    };
    next.run(req).await
}

/// Which hosts the request's token may write (see [`admission`]).
fn write_auth(st: &AppState, req: &Request) -> Result<admission::WriteAuth, ApiError> {
    let Some(tokens) = st.config.host_tokens.as_deref() else {
        check_token(req, &st.config.write_token, &st.config.read_token, "write")?;
        return Ok(admission::WriteAuth::AnyHost);
    };
    let Some(given) = bearer(req) else {
        return Err(ApiError::Unauthorized(
            "this route needs a write token (the host's own or the global one): Authorization: Bearer <token>"
                .to_owned(),
        ));
    };
    if let Some(host) = tokens.host_of(given) {
        return Ok(admission::WriteAuth::Host(host.to_owned()));
    }
    if let Some(global) = &st.config.write_token {
        if constant_time_eq(given, global.as_bytes()) {
            if st.config.host_tokens_only {
                return Err(ApiError::Forbidden(
                    "the global write token is disabled for ingestion (host_tokens_only): use the host's own token".to_owned(),
                ));
            }
            return Ok(admission::WriteAuth::AnyHost);
        }
    }
    if st.config.read_token.as_ref().is_some_and(|r| constant_time_eq(given, r.as_bytes())) {
        return Err(ApiError::Forbidden("this token may not call write routes".to_owned()));
    }
    Err(ApiError::Unauthorized("wrong write token".to_owned()))
}

/// Drops what is older than the retention; logs and carries on when the store fails.
pub async fn apply_retention(st: &AppState) {
    let cutoff = st.config.clock.now_ms() - st.config.retention.as_millis() as i64;
    st.series.forget_before(cutoff);
    st.governor.forget_before(cutoff);
    match st.store.apply_retention(cutoff).await {
        Ok(n) => tracing::info!(message = "Retention applied.", cutoff, removed = n),
        Err(error) => tracing::warn!(message = "Retention failed.", %error),
    }
}

/// The startup warning for a server reachable beyond this machine whose tokens travel in
/// clear text: listening on a non-loopback address with tokens set but without TLS.
pub fn exposure_warning(st: &AppState) -> Option<&'static str> {
    let tokens = st.config.write_token.is_some() || st.config.read_token.is_some();
    (!st.loopback && tokens && st.config.tls.is_none()).then_some(
        "Listening on a non-loopback address with tokens but without TLS: the tokens and the \
         data cross the network in clear text; set --tls-cert and --tls-key, or put a TLS \
         proxy in front.",
    )
}

/// Serves `listener` until `shutdown` completes, then drains requests in flight, stops the
/// retention task and closes the store.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    store: Arc<dyn Storage>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let mut state = AppState::new(store.clone(), config);
    state.loopback = listener.local_addr()?.ip().is_loopback();
    apply_retention(&state).await;
    let directives = state.agents.restore(&*state.store).await?;
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
        admin_token = c.admin_token.is_some(),
        directives,
    );
    tracing::debug!(message = "Server settings.", config = ?state.config);
    let evaluator = alarms::spawn_evaluator(
        state.alarms.clone(),
        alarms::EvalContext::from(&state),
        stop_tx.subscribe(),
    );
    let directive_refresh =
        agents::spawn_refresh(state.agents.clone(), state.store.clone(), stop_tx.subscribe());
    let hub = state.alarms.clone();
    let shutdown = async move {
        shutdown.await;
        hub.close_streams(); // open alarm streams would hold the graceful shutdown
    };
    let opts = serve::ConnOptions {
        tls: state.config.tls.clone(),
        header_read_timeout: state.config.header_read_timeout,
        metrics: state.metrics.clone(),
        idle_timeout: state.config.idle_timeout,
        max_connections: state.config.max_connections,
    };
    if let Some(warning) = exposure_warning(&state) {
        tracing::warn!(message = warning);
    }
    let served = serve::serve(listener, router(state), opts, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = retention.await;
    let _ = evaluator.await;
    let _ = directive_refresh.await;
    let closed = store.close().await;
    tracing::info!(message = "Server stopped.");
    served?;
    closed?;
    Ok(())
}
