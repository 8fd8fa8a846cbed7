//! `GET /api/v1/health` (open, always 200): what this server is doing, for a person or a
//! dashboard, where `/readyz` is the load balancer's yes/no.
//!
//! `{"status": "ok" | "degraded", "store": {"backend", "up"}, "alarm_evaluation": {...}}`:
//! `status` is `degraded` while the store does not answer or alarm evaluation is paused;
//! `alarm_evaluation` is [`crate::ownership::Evaluation`]: `{"state": "starting"}`,
//! `{"state": "all"}` (one server evaluates every host), `{"state": "share", "member",
//! "members", "hosts_owned", "hosts"}` (this server's share of a cluster), or
//! `{"state": "paused", "reason"}` (no cluster membership: ZooKeeper unreachable).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::ownership::Evaluation;
use crate::AppState;

/// The handler.
pub async fn health(State(st): State<AppState>) -> Json<Value> {
    let up = st.store.health().await.is_ok();
    let evaluation = st.alarms.evaluation();
    let paused = matches!(evaluation, Evaluation::Paused { .. });
    Json(json!({
        "status": if up && !paused { "ok" } else { "degraded" },
        "store": {"backend": st.store.backend(), "up": up},
        "alarm_evaluation": evaluation,
    }))
}

/// The route's OpenAPI path item.
pub fn openapi() -> Value {
    let evaluation = json!({"type": "object", "properties": {
        "state": {"type": "string", "enum": ["starting", "all", "share", "paused"]},
        "member": {"type": "string"}, "members": {"type": "integer"},
        "hosts_owned": {"type": "integer"}, "hosts": {"type": "integer"},
        "reason": {"type": "string"}}});
    let schema = json!({"type": "object", "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "store": {"type": "object", "properties": {
            "backend": {"type": "string"}, "up": {"type": "boolean"}}},
        "alarm_evaluation": evaluation}});
    json!({"get": {
        "summary": "The store's state and what the alarm evaluator does: every host, this \
                    server's share of a cluster, or paused (no cluster membership).",
        "responses": {"200": {
            "description": "Always 200; `status` is `degraded` while the store is down or \
                            evaluation is paused.",
            "content": {"application/json": {"schema": schema}}}}}})
}
