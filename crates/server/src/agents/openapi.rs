//! The control channel's part of the OpenAPI document (`crate::openapi` merges it in).

use serde_json::{json, Value};

/// Adds the control channel's paths and schemas to `doc`.
pub fn extend(doc: &mut Value) {
    let e = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok = |d: &str, schema: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let read_errors =
        json!({"401": e("Missing or wrong read token."), "403": e("A token of another role.")});
    let mut list = read_errors.clone();
    list["200"] = ok("Every agent seen since the server started.", "AgentsResponse");
    let mut history = read_errors;
    history["200"] = ok("Every directive change, oldest first.", "DirectivesResponse");
    let paths = json!({
        "/api/v1/agents": {"get": {
            "summary": "The agents (control channel): host, agent version, interval, directive version (and the one pending), last seen, spool backlog, drops, last refused directive.",
            "security": [{"readToken": []}, {}],
            "responses": list}},
        "/api/v1/agents/directives": {
            "get": {"summary": "The directive log (who changed what of which hosts, when).",
                    "security": [{"readToken": []}, {}], "responses": history},
            "post": {
                "summary": "Steer agents: a partial settings change for a host or host glob, stored durably, versioned, delivered in the acknowledgement of each matching agent's next batch. The server checks shape and caps; range and metric names are the agent's to judge (it refuses what it cannot apply and says so in GET /api/v1/agents). Admin token only; 403 when the server has none.",
                "security": [{"adminToken": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DirectiveRequest"}}}},
                "responses": {
                    "201": ok("Stored (durable) and published as `event: directive` on the alarm stream.", "DirectiveAccepted"),
                    "400": e("Unknown key, bad host glob, too many or too long globs, a bad duration; `problems` names the field."),
                    "401": e("Missing or wrong admin token."),
                    "403": e("Admin routes disabled (no admin token configured), or a read/write token."),
                    "413": e("Body over 16 KiB."),
                    "415": e("Content-Type is not application/json."),
                    "503": e("The store is unavailable; retry."),
                    "507": e("The directive log is full (10,000 changes).")}}}
    });
    let change = json!({"type": "object", "additionalProperties": false, "properties": {
        "paused": {"type": "boolean", "description": "Stop (true) or resume (false) sampling; a paused agent posts heartbeat batches without samples."},
        "interval": {"type": "string", "description": "Sweep interval, a duration (5s, 1m); agents accept 1s to 1h."},
        "include": {"type": "array", "maxItems": 32, "items": {"type": "string", "maxLength": 128}, "description": "Process-name globs to keep; [] keeps every process."},
        "exclude": {"type": "array", "maxItems": 32, "items": {"type": "string", "maxLength": 128}, "description": "Process-name globs to leave out."},
        "metrics": {"type": "array", "maxItems": 16, "items": {"type": "string", "enum": procwatch_model::directive::EXTRA_METRIC_NAMES}, "description": "Extra metrics to collect; [] for none."},
        "sweep_now": {"type": "boolean", "description": "Take one sweep now (a one-shot)."}}});
    let record = json!({"type": "object", "properties": {
        "version": {"type": "integer"}, "at": {"type": "integer"}, "who": {"type": "string"},
        "hosts": {"type": "string"}, "set": {"$ref": "#/components/schemas/SettingsChange"}}});
    let derr = json!({"type": "object", "properties": {"version": {"type": "integer"}, "message": {"type": "string"}}});
    let schemas = json!({
        "SettingsChange": change,
        "DirectiveRecord": record,
        "DirectiveError": derr,
        "Directive": {"type": "object", "properties": {"version": {"type": "integer"}, "set": {"$ref": "#/components/schemas/SettingsChange"}},
            "description": "In an acknowledgement (Accepted.directive): the merge of every change whose host glob matches, in version order (a later key wins); version is the highest merged."},
        "AgentReport": {"type": "object", "description": "Batch.report: the agent's own state.", "properties": {
            "directive_version": {"type": "integer"}, "interval_ms": {"type": "integer"}, "paused": {"type": "boolean"},
            "spool_backlog": {"type": "integer"}, "dropped_samples": {"type": "integer"},
            "directive_error": {"$ref": "#/components/schemas/DirectiveError"}}},
        "DirectiveRequest": {"type": "object", "required": ["hosts", "set"], "additionalProperties": false, "properties": {
            "hosts": {"type": "string", "maxLength": 253, "description": "Host name or glob (web-*, *)."},
            "set": {"$ref": "#/components/schemas/SettingsChange"}}},
        "DirectiveAccepted": {"type": "object", "properties": {
            "directive": {"$ref": "#/components/schemas/DirectiveRecord"}, "matching_agents": {"type": "integer"}}},
        "AgentsResponse": {"type": "object", "properties": {
            "directive_version": {"type": "integer"},
            "agents": {"type": "array", "items": {"type": "object", "properties": {
                "host": {"type": "string"}, "agent": {"type": "string"}, "steerable": {"type": "boolean"},
                "interval_ms": {"type": "integer"}, "paused": {"type": "boolean"},
                "directive_version": {"type": "integer"}, "pending_version": {"type": "integer"},
                "last_seen": {"type": "integer"}, "spool_backlog": {"type": "integer"},
                "dropped_samples": {"type": "integer"}, "directive_error": {"$ref": "#/components/schemas/DirectiveError"}}}}}},
        "DirectivesResponse": {"type": "object", "properties": {
            "directives": {"type": "array", "items": {"$ref": "#/components/schemas/DirectiveRecord"}}}}
    });
    merge(&mut doc["paths"], paths);
    merge(&mut doc["components"]["schemas"], schemas);
    doc["components"]["securitySchemes"]["adminToken"] = json!({"type": "http", "scheme": "bearer", "description": "The admin token (--admin-token-file)."});
    doc["components"]["schemas"]["Batch"]["properties"]["report"] =
        json!({"$ref": "#/components/schemas/AgentReport"});
    doc["components"]["schemas"]["Accepted"]["properties"]["directive"] =
        json!({"$ref": "#/components/schemas/Directive"});
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}
