//! `GET /api/v1/openapi.json`: a hand-written OpenAPI 3.0 document of every route the server
//! serves: those of [`crate::ROUTES`] (a unit test checks each is documented) and those of the
//! routers merged beside it (dashboard, `/metrics`, listed in [`MERGED_ROUTES`]). An
//! integration test requests every documented route and checks none falls through to the
//! "no route" 404.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{json, Value};

/// `GET /api/v1/openapi.json`: the OpenAPI document built from [`crate::ROUTES`].
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}

fn p(name: &str, place: &str, required: bool, description: &str) -> Value {
    json!({"name": name, "in": place, "required": required,
           "schema": {"type": "string"}, "description": description})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn err(description: &str) -> Value {
    ok(description, json!({"$ref": "#/components/schemas/Error"}))
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Routes served by routers merged beside [`crate::ROUTES`] (method, path).
pub const MERGED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/index.html"),
    ("GET", "/assets/{name}"),
    ("GET", "/api/v1/hosts/{host}/processes/{process}/chart.svg"),
    ("GET", "/metrics"),
    ("GET", "/ressources-usage/query-alarm/"),
    ("GET", "/ressources-usage/query-alarm"),
    ("GET", "/api/v1/alarms"),
    ("GET", "/api/v1/alarms/stream"),
    ("GET", "/api/v1/rules"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/agents/directives"),
    ("POST", "/api/v1/agents/directives"),
];

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = build();
        doc["paths"]["/api/v1/health"] = crate::health::openapi();
        crate::agents::openapi::extend(&mut doc);
        doc
    })
}

fn build() -> Value {
    let host = p("host", "query", false, "Exact host name; all hosts when absent.");
    let time_doc = "Unix ms, RFC 3339 UTC, or relative to now (`now`, `-2h`, `now-30m`).";
    let from = p("from", "query", false, time_doc);
    let to = p("to", "query", false, &format!("{time_doc} Default: now + 5 min."));
    let auth_read = json!([{"readToken": []}, {}]);
    let auth_write = json!([{"writeToken": []}, {}]);
    let std_errors = |extra: &[(&str, &str)]| {
        let mut m = serde_json::Map::new();
        m.insert(
            "400".into(),
            err("Bad parameter or refused batch; `problems` names index and field."),
        );
        m.insert("401".into(), err("Missing or wrong bearer token."));
        m.insert("403".into(), err("A token of the other role."));
        m.insert("408".into(), err("The request timed out."));
        m.insert("503".into(), err("The store is unavailable; retry."));
        for (code, d) in extra {
            m.insert((*code).into(), err(d));
        }
        m
    };
    let with = |ok_code: &str, ok_body: Value, extra: &[(&str, &str)]| {
        let mut m = std_errors(extra);
        m.insert(ok_code.into(), ok_body);
        Value::Object(m)
    };
    let forecasts_schema = json!({"type": "object", "properties": {
                "warming_up": {"type": "integer", "description": "Series whose forecast is not ready yet."},
                "first_ready_in_ms": {"type": ["integer", "null"], "description": "The shortest ready_in_ms of those; null when none is warming up."},
                "series": {"type": "array", "items": {"type": "object", "properties": {
                    "host": {"type": "string"}, "process": {"type": "string"}, "metric": {"type": "string", "enum": ["cpu", "cores", "mem"]},
                    "ready": {"type": "boolean"}, "ready_in_ms": {"type": "integer"}, "history_ms": {"type": "integer"}, "warmup_ms": {"type": "integer"}}}}}});
    let gzip = p("Content-Encoding", "header", false, "`gzip` or absent.");
    json!({
      "openapi": "3.0.3",
      "info": {
        "title": "procwatch server",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Per-process CPU and memory monitor. Times are Unix milliseconds; cpu and mem are percent 0-100 of the host; cores is CPU time in cores."
      },
      "paths": {
        "/healthz": {"get": {"summary": "The process answers.", "responses": {"200": ok("Alive.", json!({"type": "object"}))}}},
        "/readyz": {"get": {"summary": "The store answers.", "responses": {
            "200": ok("Ready.", json!({"type": "object", "properties": {"status": {"type": "string"}, "store": {"type": "string"}}})),
            "503": err("The store is not ready.")}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document.", "responses": {"200": ok("OpenAPI 3 document.", json!({"type": "object"}))}}},
        "/api/v1/samples": {"post": {
            "summary": "Ingest one agent batch, all or nothing, durable on 2xx, idempotent per (host, process, ts).",
            "security": auth_write,
            "parameters": [gzip],
            "requestBody": {"required": true, "content": {"application/json": {"schema": r("Batch")}}},
            "responses": with("200", ok("Stored.", r("Accepted")), &[
                ("413", "Body over 16 MiB on the wire or after decompression."),
                ("415", "Unsupported Content-Encoding.")])}},
        "/ressources-usage/save-all": {"put": {
            "summary": "Legacy ingestion (the seed system's collector). cpu and mem points of one (process, timestamp) join into one sample; legacy cpu is per-core percent, up to 102400, stored as cores = value/100 and cpu = min(value, 100). A point with only one of the two takes the other from the nearest point in time of the same process in the same request, else 0.",
            "security": auth_write,
            "parameters": [gzip],
            "requestBody": {"required": true, "content": {"application/json": {"schema": r("LegacyPayload")}}},
            "responses": with("200", ok("Stored.", json!({"type": "object", "properties": {"Response": {"type": "string", "enum": ["Ok"]}}})), &[
                ("413", "Body too large."), ("415", "Unsupported Content-Encoding.")])}},
        "/ressources-usage/get-all": {"get": {
            "summary": "Per process: [mem_mean, cpu_mean] over the last 5 minutes. Without host: the mean over every host's samples.",
            "security": auth_read,
            "parameters": [host],
            "responses": with("200", ok("Means.", json!({"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}})), &[])}},
        "/ressources-usage/get-all-detailed": {"get": {
            "summary": "Per process: the values of one metric over the last 5 minutes, oldest first. Without host: per timestamp the mean over the hosts with a sample there.",
            "security": auth_read,
            "parameters": [host, {"name": "metric", "in": "query", "required": false, "schema": {"type": "string", "enum": ["mem", "cpu", "cores"], "default": "mem"}}],
            "responses": with("200", ok("Values.", json!({"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}})), &[])}},
        "/api/v1/hosts": {"get": {
            "summary": "Every host within retention: last seen, stale (no data for 3 intervals), seq gaps, dropped samples, latest host totals.",
            "security": auth_read,
            "parameters": [
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 50000}, "description": "Page size (default and most: 50,000)."},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "The `next` of the previous page."}],
            "responses": with("200", ok("Hosts.", json!({"type": "object", "properties": {
                "now": {"type": "integer"}, "hosts": {"type": "array", "items": r("Host")}, "next": {"type": ["string", "null"], "description": "Cursor of the next page; null on the last."}}})), &[])}},
        "/api/v1/usage": {"get": {
            "summary": "Statistics (mean, min, max, last, p95) of cpu, cores, mem and rss per process over a window.",
            "security": auth_read,
            "parameters": [
                p("window", "query", false, "Duration back from now (`5m`, `2h`, or ms). Default 5m. Not with `from`."),
                from, to.clone(),
                p("host", "query", false, "Exact host, or a glob with `*`. 404 if an exact host is unknown."),
                p("process", "query", false, "Exact process name, or a glob with `*`."),
                {"name": "per_host", "in": "query", "required": false, "schema": {"type": "boolean", "default": true}, "description": "false: one row per process name over all hosts."},
                p("sort", "query", false, "`process`, `host`, `samples`, `count` or `<cpu|cores|mem|rss>.<mean|min|max|last|p95>`."),
                {"name": "order", "in": "query", "required": false, "schema": {"type": "string", "enum": ["asc", "desc"]}, "description": "Default desc for figures, asc for names."},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "Page size after sorting (at most 50,000, the default)."},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "The `next` of the previous page."},
                p("metrics", "query", false, "Comma list of cpu, cores, mem, rss: only these in each row (default all). May also name the opt-in extras (issue 19): read_bps, write_bps (or io), fds, fds_pct, threads, ctxsw_vol, ctxsw_invol (or ctxsw): their statistics in the row's `extras` object; owner, unit: those strings in the row. Extras are absent from rows unless named."),
                {"name": "group_by", "in": "query", "required": false, "schema": {"type": "string", "enum": ["unit", "owner"]}, "description": "One row per systemd unit / container id (or per user) instead of per process: `process` is the unit (`(none)` for series without one), `host` null; each statistic is the sum over the group's series (exact for mean and last, bounds for min, max, p95). At most 1,000 groups, the rest summed into `(other)`. Needs agents run with `--metrics unit` (or owner)."},
                p("stats", "query", false, "Comma list of mean, min, max, last, p95: only these in each metric (default all).")],
            "responses": with("200", ok("Rows.", json!({"type": "object", "properties": {
                "from": {"type": "integer"}, "to": {"type": "integer"}, "rows": {"type": "array", "items": r("UsageRow")}, "next": {"type": ["string", "null"], "description": "Cursor of the next page; null on the last."}}})), &[("404", "Unknown host.")])}},
        "/api/v1/hosts/{host}/processes/{process}/history": {"get": {
            "summary": "History of one (host, process), downsampled server-side: per step bucket (aligned to multiples of the step) the mean, min and max. `resolution` says what answered: `raw` samples, or `5m` roll-ups when the range starts before the raw retention (default 48 h; the embedded store keeps roll-ups 30 days, --rollup-retention) or the step is a multiple of 5 minutes; with `5m` the step is rounded up to a multiple of 5 minutes (`step_ms`) and the range widened to whole steps.",
            "security": auth_read,
            "parameters": [
                p("host", "path", true, "Host name."),
                p("process", "path", true, "Process name (percent-encoded)."),
                p("from", "query", false, &format!("{time_doc} Default: now-1h.")), to.clone(),
                p("step", "query", false, "Bucket width (`1m`, `10s`, or ms); 0 or absent: raw samples.")],
            "responses": with("200", ok("Points, oldest first.", json!({"type": "object", "properties": {
                "host": {"type": "string"}, "process": {"type": "string"}, "from": {"type": "integer"}, "to": {"type": "integer"},
                "step_ms": {"type": "integer", "description": "The step of the points (the query's, rounded up to a multiple of 5 min at `5m`)."},
                "resolution": {"type": "string", "enum": ["raw", "5m"], "description": "What answered: raw samples or 5-minute roll-ups."},
                "points": {"type": "array", "items": r("HistoryPoint")},
                "extras": {"type": "array", "description": "The opt-in extra metrics (issue 19) at the same step, oldest first: `ts` and the means of read_bps, write_bps, fds, fds_pct, threads, ctxsw_vol, ctxsw_invol, the newest owner and unit. Absent when the series has none.", "items": {"type": "object"}}}})), &[("404", "Unknown host or process.")])}},
        "/": {"get": {"summary": "The web dashboard (HTML). Always open.", "responses": {
            "200": {"description": "The page.", "content": {"text/html": {}}}}}},
        "/index.html": {"get": {"summary": "The web dashboard (HTML), as `/`.", "responses": {
            "200": {"description": "The page.", "content": {"text/html": {}}}}}},
        "/assets/{name}": {"get": {"summary": "The dashboard's script, stylesheet and icon. Always open; cached by content hash, ETag answered with 304.",
            "parameters": [p("name", "path", true, "Asset file name.")],
            "responses": {"200": {"description": "The asset."}, "304": {"description": "Not modified."}, "404": err("No such asset.")}}},
        "/api/v1/hosts/{host}/processes/{process}/chart.svg": {"get": {
            "summary": "An SVG chart of one series: history, threshold and forecast.",
            "security": auth_read,
            "parameters": [
                p("host", "path", true, "Host name."),
                p("process", "path", true, "Process name (percent-encoded)."),
                {"name": "metric", "in": "query", "required": false, "schema": {"type": "string", "enum": ["cpu", "mem", "cores"], "default": "cpu"}},
                p("window", "query", false, "History shown (default 1h)."),
                {"name": "threshold", "in": "query", "required": false, "schema": {"type": "number"}, "description": "Default 80 for cpu and mem, none for cores."},
                p("horizon", "query", false, "Forecast horizon (default 10m)."),
                p("forecast_window", "query", false, "Samples the forecast is fitted on (default 10m)."),
                {"name": "theme", "in": "query", "required": false, "schema": {"type": "string", "enum": ["light", "dark"]}},
                {"name": "width", "in": "query", "required": false, "schema": {"type": "integer"}},
                {"name": "height", "in": "query", "required": false, "schema": {"type": "integer"}}],
            "responses": with("200", json!({"description": "The chart.", "content": {"image/svg+xml": {}}}), &[("404", "Unknown host or process.")])}},
        "/ressources-usage/query-alarm/": {"get": {
            "summary": "Processes in alarm now: {process: RED|AMBER|STALE}, the worst level over their metrics; without host the worst across hosts.",
            "security": auth_read,
            "parameters": [host],
            "responses": with("200", ok("Levels.", json!({"type": "object", "additionalProperties": {"type": "string", "enum": ["RED", "AMBER", "STALE"]}})), &[])}},
        "/ressources-usage/query-alarm": {"get": {
            "summary": "The same as /ressources-usage/query-alarm/.",
            "security": auth_read,
            "parameters": [host],
            "responses": with("200", ok("Levels.", json!({"type": "object", "additionalProperties": {"type": "string"}})), &[])}},
        "/api/v1/alarms": {"get": {
            "summary": "Alarm events, newest first by start: active (open) ones or the history.",
            "security": auth_read,
            "parameters": [
                {"name": "active", "in": "query", "required": false, "schema": {"type": "boolean", "default": false}, "description": "true: only open events (no end)."},
                p("host", "query", false, "Exact host."),
                p("process", "query", false, "Exact process name."),
                {"name": "metric", "in": "query", "required": false, "schema": {"type": "string", "enum": ["cpu", "cores", "mem", "fds", "fds_pct", "threads", "read_bps", "write_bps", "ctxsw_vol", "ctxsw_invol"]}},
                {"name": "level", "in": "query", "required": false, "schema": {"type": "string", "enum": ["OK", "STALE", "AMBER", "RED"]}},
                p("from", "query", false, &format!("Events that started at or after. {time_doc}")),
                p("to", "query", false, &format!("Events that started before. {time_doc}")),
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "default": 100}, "description": "Page size; 0: the largest page (50,000)."},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "The `next` of the previous page."}],
            "responses": with("200", ok("Events.", json!({"type": "object", "properties": {
                "alarms": {"type": "array", "items": r("AlarmEvent")}, "next": {"type": ["string", "null"], "description": "Cursor of the next page; null on the last."}}})), &[])}},
        "/api/v1/alarms/stream": {"get": {
            "summary": "Server-Sent Events: `event: alarm`, `data:` one AlarmEvent JSON per transition, `id: <boot>-<n>`, a keep-alive comment every 15 s. On connect the open alarms are sent first; with Last-Event-ID (of this server run, within its last 1024 events) the missed events instead.",
            "security": auth_read,
            "parameters": [p("Last-Event-ID", "header", false, "The id of the last event received.")],
            "responses": {"200": {"description": "The stream.", "content": {"text/event-stream": {}}}, "401": err("Missing or wrong bearer token."), "403": err("A token of the other role.")}}},
        "/api/v1/rules": {"get": {
            "summary": "The effective alarm rules: the defaults and the [[rules]] of the server's config file, first match wins.",
            "security": auth_read,
            "responses": with("200", ok("Rules.", json!({"type": "object", "properties": {
                "interval_ms": {"type": "integer"}, "defaults": r("Rule"), "rules": {"type": "array", "items": r("Rule")}}})), &[])}},
        "/api/v1/forecasts": {"get": {
            "summary": "Forecast warm-up per series the alarm engine follows: a new series (or one back after a gap) needs `warmup_ms` of samples before its forecaster can raise AMBER; until then only RED fires. `ready_in_ms` is how much more history it needs (0 = ready).",
            "security": auth_read,
            "parameters": [host.clone()],
            "responses": with("200", ok("Warm-up per series.", forecasts_schema), &[])}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics of the server (text exposition format).",
            "security": auth_read,
            "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {}}}, "401": err("Missing or wrong bearer token.")}}},
        "/api/v1/hosts/{host}/totals": {"get": {
            "summary": "Host totals (host cpu, host mem, unattributed cpu) over a range, oldest first.",
            "security": auth_read,
            "parameters": [p("host", "path", true, "Host name."), p("from", "query", false, &format!("{time_doc} Default: now-1h.")), to],
            "responses": with("200", ok("Totals.", json!({"type": "object", "properties": {
                "host": {"type": "string"}, "from": {"type": "integer"}, "to": {"type": "integer"},
                "totals": {"type": "array", "items": r("HostTotal")}}})), &[("404", "Unknown host.")])}},
        "/api/v1/hosts/{host}/retire": {"post": {
            "summary": "Retires a host gone for good: it leaves /api/v1/hosts (until it sends newer data), its open alarms close with a reason, and a host_retired event records it. Samples stay until retention. Write token (there is no admin token).",
            "security": auth_write,
            "parameters": [p("host", "path", true, "Host name."), p("X-Procwatch-Actor", "header", false, "Who retires it, for the event's reason.")],
            "responses": with("200", ok("Retired.", json!({"type": "object", "properties": {
                "host": {"type": "string"}, "retired_at": {"type": "integer"}, "last_seen": {"type": "integer"},
                "events": {"type": "array", "items": r("AlarmEvent")}}})), &[("404", "The store lists no such host (never seen, or already retired).")])}}
      },
      "components": {
        "securitySchemes": {
          "readToken": {"type": "http", "scheme": "bearer", "description": "Needed on query routes when the server has a read token."},
          "writeToken": {"type": "http", "scheme": "bearer", "description": "Needed on ingestion routes when the server has a write token."}
        },
        "schemas": {
          "Error": {"type": "object", "required": ["error", "problems"], "properties": {
            "error": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "object", "properties": {
              "index": {"type": "integer", "nullable": true, "description": "Index in samples / host_totals / data; null for batch-level fields."},
              "field": {"type": "string"}, "reason": {"type": "string"}}}}}},
          "Sample": {"type": "object", "required": ["ts", "process", "cpu", "mem"], "properties": {
            "ts": {"type": "integer", "description": "Unix ms; not older than the retention, at most 5 min ahead."},
            "process": {"type": "string", "description": "1-255 bytes of UTF-8, no control characters."},
            "cpu": {"type": "number", "minimum": 0, "maximum": 100},
            "cores": {"type": "number", "minimum": 0, "default": 0},
            "mem": {"type": "number", "minimum": 0, "maximum": 100},
            "rss": {"type": "integer", "minimum": 0, "default": 0},
            "count": {"type": "integer", "minimum": 0, "default": 1}}},
          "HostTotal": {"type": "object", "required": ["ts", "cpu", "mem"], "properties": {
            "ts": {"type": "integer"}, "cpu": {"type": "number", "minimum": 0, "maximum": 100},
            "mem": {"type": "number", "minimum": 0, "maximum": 100},
            "unattributed_cpu": {"type": "number", "minimum": 0, "maximum": 100}}},
          "Batch": {"type": "object", "required": ["host"], "properties": {
            "host": {"type": "string", "description": "1-253 bytes of [A-Za-z0-9._:-]."},
            "agent": {"type": "string"}, "seq": {"type": "integer", "minimum": 0},
            "interval_ms": {"type": "integer", "minimum": 0},
            "dropped_samples": {"type": "integer", "minimum": 0},
            "host_totals": {"type": "array", "items": r("HostTotal")},
            "samples": {"type": "array", "maxItems": 100000, "items": r("Sample")}}},
          "Accepted": {"type": "object", "properties": {
            "samples": {"type": "integer"}, "host_totals": {"type": "integer"}, "seq_gap": {"type": "integer"},
            "received": {"type": "integer"}, "host": {"type": "string"}, "seq": {"type": "integer"}}},
          "LegacyPayload": {"type": "object", "required": ["ipaddress", "data"], "properties": {
            "ipaddress": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object", "required": ["timestamp", "value", "process_name", "type_data"], "properties": {
              "timestamp": {"type": "number", "description": "Unix seconds, float."},
              "value": {"type": "number"}, "process_name": {"type": "string"},
              "type_data": {"type": "string", "enum": ["cpu", "mem"]}}}}}},
          "Host": {"type": "object", "properties": {
            "host": {"type": "string"}, "last_seen": {"type": "integer"}, "age_ms": {"type": "integer"},
            "stale": {"type": "boolean"}, "interval_ms": {"type": "integer"}, "last_seq": {"type": "integer"},
            "seq_gaps": {"type": "integer"}, "dropped_samples": {"type": "integer"},
            "latest": {"allOf": [r("HostTotal")], "nullable": true},
            "folded": {"type": "integer", "description": "Processes the cardinality governor folded into the host's `(other)` series at its newest sweep; absent when the governor is off."}}},
          "Stats": {"type": "object", "properties": {
            "mean": {"type": "number"}, "min": {"type": "number"}, "max": {"type": "number"},
            "last": {"type": "number"}, "p95": {"type": "number"}}},
          "UsageRow": {"type": "object", "properties": {
            "host": {"type": "string", "nullable": true, "description": "null when per_host=false."},
            "process": {"type": "string"}, "cpu": r("Stats"), "cores": r("Stats"), "mem": r("Stats"), "rss": r("Stats"),
            "count": {"type": "integer", "description": "Processes in the group at the newest sample (for the `(other)` row: processes folded)."},
            "samples": {"type": "integer"}, "last_ts": {"type": "integer"},
            "other": {"type": "boolean", "description": "true on the `(other)` row: the host's tail folded by the cardinality governor (sums of cpu, cores, mem, rss). Absent otherwise."}}},
          "AlarmEvent": {"type": "object", "required": ["id", "host", "process", "metric", "level", "previous", "start", "value", "peak", "threshold"], "properties": {
            "id": {"type": "string"}, "kind": {"type": "string", "enum": ["series", "host_silent", "host_retired"]},
            "host": {"type": "string"}, "process": {"type": "string", "description": "Empty for a host alarm."},
            "metric": {"type": "string", "enum": ["cpu", "cores", "mem", "fds", "fds_pct", "threads", "read_bps", "write_bps", "ctxsw_vol", "ctxsw_invol"], "description": "cpu, cores, mem, or an opt-in extra metric a rule names (issue 19)."},
            "level": {"type": "string", "enum": ["OK", "STALE", "AMBER", "RED"]},
            "previous": {"type": "string", "enum": ["OK", "STALE", "AMBER", "RED"]},
            "start": {"type": "integer"}, "end": {"type": "integer", "description": "Absent while open."},
            "value": {"type": "number"}, "peak": {"type": "number"}, "threshold": {"type": "number"},
            "forecast": {"type": "number"}, "eta_seconds": {"type": "number"},
            "reason": {"type": "string", "description": "Why it closed without a recovery (process exited, host retired, host left the store), or what a host_retired event records."}}},
          "Rule": {"type": "object", "properties": {
            "host": {"type": "string", "description": "Glob."}, "process": {"type": "string", "description": "Glob."},
            "metric": {"type": "string", "nullable": true, "description": "null: cpu and mem."},
            "threshold": {"type": "number"}, "hysteresis": {"type": "number"}, "clear_for": {"type": "integer"},
            "horizon_ms": {"type": "integer"}, "window_ms": {"type": "integer"}, "debounce": {"type": "integer"},
            "method": {"type": "string", "enum": ["procwatch", "linear", "holt", "persistence"]},
            "alpha": {"type": "number"}, "beta": {"type": "number"},
            "sensitivity": {"type": "number", "description": "procwatch's forecaster: noise widths of margin (higher = more AMBER); absent = the metric's default."},
            "warmup_ms": {"type": "integer", "description": "How long a new series must be sampled before this rule's forecaster can raise AMBER (procwatch: its trend window, at the defaults 30 min for cpu and 1 h for mem, and for a rule on both metrics the longer; linear: its window; never less than the window, which must be full first). Per series: GET /api/v1/forecasts."}}},
          "HistoryPoint": {"type": "object", "properties": {
            "ts": {"type": "integer", "description": "Bucket start."}, "cpu": {"type": "number"}, "cpu_min": {"type": "number"}, "cpu_max": {"type": "number"},
            "cores": {"type": "number"}, "mem": {"type": "number"}, "mem_min": {"type": "number"}, "mem_max": {"type": "number"},
            "rss": {"type": "number"}, "count": {"type": "number"}}}
        }
      }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn document_lists_exactly_the_served_routes() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let mut served: BTreeSet<(String, String)> =
            crate::ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_owned())).collect();
        served.extend(MERGED_ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())));
        assert_eq!(documented, served);
    }

    #[test]
    fn every_ref_resolves() {
        let text = document().to_string();
        let schemas = document()["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
    }
}
