//! `POST /api/v1/hosts/{host}/retire`: a host gone for good (decommissioned, renamed, a test
//! host) stops being judged. Guarded by the write token (whoever may write samples may retire
//! a host; the admin token only steers agents, see [`crate::agents`]).
//!
//! The store hides the host from `hosts()` until it sends data newer than the retirement
//! (`Storage::retire_host`; its samples stay until retention), its open alarms (host silent
//! and every series) are closed with the reason, and a `host_retired` event records who did
//! it; all of them are stored and published on the alarm stream like any transition.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use procwatch_model::{AlarmEvent, TsMs};
use serde::Serialize;

use crate::error::ApiError;
use crate::AppState;

/// The longest host name accepted on this route (the batch validation's own limit is
/// enforced on ingestion; this only bounds what is echoed back).
const MAX_HOST_LEN: usize = 255;

/// What a retirement did.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Retired {
    /// The retired host.
    pub host: String,
    /// When it was retired (Unix ms).
    pub retired_at: TsMs,
    /// The newest sample or host total the store had of it.
    pub last_seen: TsMs,
    /// The events stored: the closed alarms (with `reason`), then the `host_retired` event.
    pub events: Vec<AlarmEvent>,
}

/// `POST /api/v1/hosts/{host}/retire`.
pub async fn retire(
    State(st): State<AppState>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Retired>, ApiError> {
    if host.is_empty() || host.len() > MAX_HOST_LEN || host.chars().any(char::is_control) {
        return Err(ApiError::bad_param(
            "host",
            format!("a host name of 1 to {MAX_HOST_LEN} printable characters"),
        ));
    }
    // Who asked, for the record: an `X-Procwatch-Actor` header (the CLI sends user@host),
    // bounded and stripped of control characters.
    let actor = crate::agents::routes::actor(&headers, "an API client");
    let now = st.config.clock.now_ms();
    let reason = format!("host retired by {actor}");
    let (last_seen, events) = st.alarms.retire_host(&*st.store, &host, now, &reason).await?;
    tracing::info!(message = "Host retired.", %host, last_seen, %actor, closed = events.len().saturating_sub(1));
    Ok(Json(Retired { host, retired_at: now, last_seen, events }))
}
