//! The control channel's routes: `GET /api/v1/agents` and `GET /api/v1/agents/directives`
//! (read token), `POST /api/v1/agents/directives` (admin token), and the admin check.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use procwatch_model::directive::{
    check_host_glob, DirectiveRecord, SettingsChange, MAX_DIRECTIVE_BODY,
};
use procwatch_model::validate::Problem;
use serde::{Deserialize, Serialize};

use super::AgentInfo;
use crate::error::ApiError;
use crate::{bearer, constant_time_eq, AppState};

/// The routes, each behind its token check.
pub fn router(state: &AppState) -> Router<AppState> {
    let read = Router::new()
        .route("/api/v1/agents", get(list))
        .route("/api/v1/agents/directives", get(history))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::require_read));
    let admin = Router::new()
        .route("/api/v1/agents/directives", axum::routing::post(post_directive))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    read.merge(admin)
}

/// The admin check: 403 when no admin token is configured (admin routes disabled), 401 without
/// a bearer token or with a wrong one, 403 with the read or write token. Then a JSON body.
async fn require_admin(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match check_admin(&st, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_admin(st: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(admin) = &st.config.admin_token else {
        return Err(ApiError::Forbidden(
            "admin routes are disabled: start the server with an admin token (--admin-token-file, PROCWATCH_ADMIN_TOKEN or admin_token in the config file), distinct from the read and write tokens".to_owned(),
        ));
    };
    let Some(given) = bearer(req) else {
        return Err(ApiError::Unauthorized(
            "this route needs the admin token: Authorization: Bearer <admin token>".to_owned(),
        ));
    };
    if !constant_time_eq(given, admin.as_bytes()) {
        let other = [&st.config.read_token, &st.config.write_token]
            .into_iter()
            .flatten()
            .any(|t| constant_time_eq(given, t.as_bytes()));
        return Err(if other {
            ApiError::Forbidden(
                "this token may not call admin routes: use the admin token".to_owned(),
            )
        } else {
            ApiError::Unauthorized("wrong admin token".to_owned())
        });
    }
    if req.method() == Method::POST {
        crate::guard::require_json(req)?;
    }
    Ok(())
}

/// Who made a change, for the record: the token's role, and the `X-Procwatch-Actor` header
/// (the CLI sends user@host) bounded and stripped of control characters, else `default`.
pub fn actor(headers: &HeaderMap, default: &str) -> String {
    headers
        .get("x-procwatch-actor")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(default)
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

/// The answer of `GET /api/v1/agents`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AgentsResponse {
    /// Every agent seen since the server started, by host.
    pub agents: Vec<AgentInfo>,
    /// The newest directive version handed out (0: none).
    pub directive_version: u64,
}

async fn list(State(st): State<AppState>) -> Json<AgentsResponse> {
    Json(AgentsResponse { agents: st.agents.list(), directive_version: st.agents.version() })
}

/// The answer of `GET /api/v1/agents/directives`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DirectivesResponse {
    /// Every directive change, oldest first.
    pub directives: Vec<DirectiveRecord>,
}

async fn history(State(st): State<AppState>) -> Json<DirectivesResponse> {
    Json(DirectivesResponse { directives: st.agents.directives() })
}

/// The body of `POST /api/v1/agents/directives`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveRequest {
    /// A host name or glob (`web-*`, `*`).
    pub hosts: String,
    /// The change.
    pub set: SettingsChange,
}

/// The answer of `POST /api/v1/agents/directives`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DirectiveAccepted {
    /// The change as stored, with its version.
    pub directive: DirectiveRecord,
    /// Agents listed now whose host the glob matches (they get it with their next batch).
    pub matching_agents: usize,
}

async fn post_directive(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<DirectiveAccepted>), ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_DIRECTIVE_BODY).await.map_err(|_| {
        st.metrics.limit_breach("directive_body");
        ApiError::PayloadTooLarge(format!("a directive body is at most {MAX_DIRECTIVE_BODY} bytes"))
    })?;
    let req: DirectiveRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "not a directive: {e}; send {{\"hosts\": \"web-*\", \"set\": {{\"interval\": \"5s\"}}}} with keys of paused, interval, include, exclude, metrics, sweep_now"
        ))
    })?;
    let mut problems: Vec<Problem> = Vec::new();
    if let Err(reason) = check_host_glob(&req.hosts) {
        problems.push(Problem { index: None, field: "hosts".into(), reason });
    }
    for (field, reason) in req.set.check_caps() {
        problems.push(Problem { index: None, field, reason });
    }
    if !problems.is_empty() {
        st.metrics.limit_breach("directive");
        let first = format!("{}: {}", problems[0].field, problems[0].reason);
        return Err(ApiError::BadRequest {
            message: format!("directive refused: {first}"),
            problems,
        });
    }
    let record = DirectiveRecord {
        version: 0,
        at: st.config.clock.now_ms(),
        who: format!("admin ({})", actor(&headers, "an API client")),
        hosts: req.hosts,
        set: req.set,
    };
    let directive = st.agents.add(&*st.store, record).await?;
    let glob = procwatch_model::glob::Glob::new(directive.hosts.as_str());
    let matching_agents = st.agents.list().iter().filter(|a| glob.matches(&a.host)).count();
    tracing::info!(
        message = "Directive stored.",
        version = directive.version,
        hosts = %directive.hosts,
        who = %directive.who,
        matching_agents
    );
    Ok((StatusCode::CREATED, Json(DirectiveAccepted { directive, matching_agents })))
}
