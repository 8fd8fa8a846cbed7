//! Server plumbing: health, errors, auth, routes vs OpenAPI, retention, shutdown.

use std::sync::Arc;
use std::time::Duration;

use procwatch_server::{ServerConfig, ROUTES};
use procwatch_store::memory::MemoryStore;
use procwatch_store::Storage;
use serde_json::{json, Value};

use crate::gated_store::{Call, Gate, GatedMemory};
use crate::util::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/healthz").await, (200, json!({"status": "ok"})));
    // The backend the app was built on (SQLite here; InfluxDB when store-influx reruns this).
    let store = app.store.backend();
    assert_eq!(app.get_json("/readyz").await, (200, json!({"status": "ready", "store": store})));
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let app = spawn_app().await;
    let (status, err) = app.get_json("/nope").await;
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("/nope"));
    assert_eq!(err["problems"], json!([]));
    let resp = app.client.delete(app.url("/api/v1/samples")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    app.stop().await;
}

/// Every route of the OpenAPI document is served (none falls through to the "no route" 404),
/// and every route of the table is documented.
#[tokio::test]
async fn every_documented_route_is_served() {
    let app = spawn_app().await;
    let (_, doc) = app.get_json("/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    for r in ROUTES {
        assert!(
            doc["paths"][r.path][r.method.as_str().to_lowercase()].is_object(),
            "{} {} is not documented",
            r.method,
            r.path
        );
    }
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete =
                path.replace("{host}", "h").replace("{process}", "p").replace("{name}", "app.js");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .client
                .request(method.clone(), app.url(&concrete))
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            // An event stream never ends: its status and headers are the answer.
            let is_stream = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = if is_stream { String::new() } else { resp.text().await.unwrap() };
            let fell_through = status == 404 && body.contains("no route");
            assert!(!fell_through, "{method} {path} is documented but not served");
            checked += 1;
        }
    }
    assert!(checked >= ROUTES.len());
    app.stop().await;
}

#[tokio::test]
async fn tokens_guard_reads_and_writes() {
    let config = ServerConfig {
        write_token: Some("w-secret".into()),
        read_token: Some("r-secret".into()),
        ..ServerConfig::default()
    };
    let app = spawn_app_with(Arc::new(MemoryStore::new()), config).await;
    let b = batch("auth-1", 1, vec![sample(now_ms(), "a", 1.0, 1.0)]);
    let post = |token: Option<&str>| {
        let mut req = app.client.post(app.url("/api/v1/samples")).json(&b);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(post(Some("r-secret")).await.unwrap().status(), 403);
    let ok = post(Some("w-secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let get = |token: Option<&str>| {
        let mut req = app.client.get(app.url("/ressources-usage/get-all"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let denied = get(None).await.unwrap();
    assert_eq!(denied.status(), 401);
    let err: Value = denied.json().await.unwrap();
    assert!(!err.to_string().contains("secret"), "tokens never echoed: {err}");
    assert_eq!(get(Some("w-secret")).await.unwrap().status(), 403);
    let ok = get(Some("r-secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"a": [1.0, 1.0]}));
    // Health and the document stay open.
    assert_eq!(app.get_json("/healthz").await.0, 200);
    assert_eq!(app.get_json("/api/v1/openapi.json").await.0, 200);
    app.stop().await;
}

/// Retention runs at start: a server restarted with a shorter retention over the same store
/// drops what is now too old, and keeps the rest.
#[tokio::test]
async fn retention_removes_old_samples() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let now = now_ms();
    let app = spawn_app_with(store.clone(), ServerConfig::default()).await;
    let samples =
        vec![sample(now - 2 * 3_600_000, "old", 1.0, 1.0), sample(now - 60_000, "new", 1.0, 1.0)];
    assert_eq!(app.post_batch(&batch("r", 1, samples)).await.0, 200);
    app.stop().await;

    let short = ServerConfig { retention: Duration::from_secs(3600), ..ServerConfig::default() };
    let app = spawn_app_with(store, short).await;
    let (_, usage) = app.get_json("/api/v1/usage?host=r&from=-3h").await;
    let names: Vec<&str> =
        usage["rows"].as_array().unwrap().iter().map(|r| r["process"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["new"]);
    // And ingestion refuses what is past the retention.
    let (status, err) =
        app.post_batch(&batch("r", 2, vec![sample(now - 2 * 3_600_000, "old", 1.0, 1.0)])).await;
    assert_eq!(status, 400);
    assert_eq!(err["problems"][0]["field"], "ts");
    app.stop().await;
}

/// The periodic retention task runs too, not only the one at start.
#[tokio::test]
async fn retention_runs_periodically() {
    let config = ServerConfig {
        retention: Duration::from_secs(2),
        retention_interval: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let app = spawn_app_with(Arc::new(MemoryStore::new()), config).await;
    assert_eq!(
        app.post_batch(&batch("p", 1, vec![sample(now_ms() - 1_000, "a", 1.0, 1.0)])).await.0,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, hosts) = app.get_json("/api/v1/hosts").await;
        if hosts["hosts"] == json!([]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran: {hosts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// What makes a write wait for a go-ahead (to hold a request in flight), and every write,
/// `hosts` and health check fail while `down` is set.
struct WriteGate {
    started: tokio::sync::Notify,
    go: tokio::sync::Semaphore,
    /// Writes, `hosts` and health checks fail with `Unavailable` while set.
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Gate for WriteGate {
    const NAME: &'static str = "gated";
    async fn before(&self, call: Call) -> procwatch_store::StoreResult<()> {
        if !matches!(call, Call::Write | Call::Hosts | Call::Health) {
            return Ok(());
        }
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(procwatch_store::StoreError::Unavailable("disk on fire".into()));
        }
        if call == Call::Write {
            self.started.notify_one();
            drop(self.go.acquire().await.expect("semaphore"));
        }
        Ok(())
    }
}

/// A memory store whose writes wait for a go-ahead, to hold a request in flight.
type GatedStore = GatedMemory<WriteGate>;

impl GatedStore {
    fn new(permits: usize) -> Self {
        GatedMemory {
            inner: MemoryStore::new(),
            gate: WriteGate {
                started: tokio::sync::Notify::new(),
                go: tokio::sync::Semaphore::new(permits),
                down: std::sync::atomic::AtomicBool::new(false),
            },
        }
    }
}

/// Shutdown waits for a write in flight: it is stored and answered 200 before `run` returns.
#[tokio::test]
async fn shutdown_finishes_writes_in_flight() {
    let gated = Arc::new(GatedStore::new(0));
    let app = spawn_app_with(gated.clone(), ServerConfig::default()).await;
    let b = batch("inflight", 1, vec![sample(now_ms(), "a", 5.0, 1.0)]);
    let (client, url) = (app.client.clone(), app.url("/api/v1/samples"));
    let request = tokio::spawn(async move { client.post(url).json(&b).send().await });
    gated.started.notified().await;
    // The write is in the store now; ask the server to stop, then let the write finish.
    let addr = app.url.trim_start_matches("http://").to_owned();
    let stopping = tokio::spawn(app.stop());
    // The shutdown is under way once the listener is closed (an event, not a fixed wait):
    // from then on only the write in flight holds `run`.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the server never stopped listening");
        tokio::task::yield_now().await;
    }
    // Not synchronisation: a negative check needs a window in which `run` could wrongly
    // return; it starts only once the shutdown is visibly under way.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "run returned with a write in flight");
    gated.go.add_permits(1);
    let resp = request.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(resp.status(), 200);
    stopping.await.unwrap();
    assert_eq!(gated.inner.hosts().await.unwrap()[0].host, "inflight");
}

/// A request running past the request timeout is answered 408 in the JSON error shape.
#[tokio::test]
async fn slow_request_is_408() {
    let config =
        ServerConfig { request_timeout: Duration::from_millis(200), ..ServerConfig::default() };
    let gated = Arc::new(GatedStore::new(0));
    let app = spawn_app_with(gated.clone(), config).await;
    let (status, err) =
        app.post_batch(&batch("slow", 1, vec![sample(now_ms(), "a", 1.0, 1.0)])).await;
    assert_eq!(status, 408, "{err}");
    assert_eq!(err["error"], "request timed out");
    gated.go.add_permits(1);
    app.stop().await;
}

/// A store that cannot be reached gives 503 (the agent retries) and a not-ready `/readyz`,
/// while `/healthz` stays up.
#[tokio::test]
async fn store_down_is_503() {
    let gated = Arc::new(GatedStore::new(100));
    let app = spawn_app_with(gated.clone(), ServerConfig::default()).await;
    gated.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, err) =
        app.post_batch(&batch("down", 1, vec![sample(now_ms(), "a", 1.0, 1.0)])).await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"].as_str().unwrap().contains("unavailable"), "{err}");
    assert_eq!(app.get_json("/api/v1/hosts").await.0, 503);
    assert_eq!(app.get_json("/readyz").await.0, 503);
    assert_eq!(app.get_json("/healthz").await.0, 200);
    gated.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(app.get_json("/readyz").await.0, 200);
    app.stop().await;
}

/// Past `max_inflight_writes` ingestion requests at once, the next is refused with 429 and
/// `Retry-After` (before its body is read), and accepted again once one finishes.
#[tokio::test]
async fn too_many_writes_in_flight_is_429() {
    let config = ServerConfig { max_inflight_writes: 1, ..ServerConfig::default() };
    let gated = Arc::new(GatedStore::new(0));
    let app = spawn_app_with(gated.clone(), config).await;
    let b = batch("busy", 1, vec![sample(now_ms(), "a", 1.0, 1.0)]);
    let (client, url, first) = (app.client.clone(), app.url("/api/v1/samples"), b.clone());
    let held = tokio::spawn(async move { client.post(url).json(&first).send().await });
    gated.started.notified().await;
    let resp = app.client.post(app.url("/api/v1/samples")).json(&b).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("retry"), "{err}");
    // Reads are not limited.
    assert_eq!(app.get_json("/api/v1/hosts").await.0, 200);
    gated.go.add_permits(2);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    assert_eq!(app.post_batch(&b).await.0, 200);
    app.stop().await;
}

/// A store that answers as a remote one would: `series_usage_is_local` is false, so
/// `/metrics` asks it once for every host's rows.
struct Remote;

#[async_trait::async_trait]
impl Gate for Remote {
    const NAME: &'static str = "remote";
    async fn before(&self, _: Call) -> procwatch_store::StoreResult<()> {
        Ok(())
    }
}

#[tokio::test]
async fn metrics_caps_each_host_alike_read_host_by_host_or_at_once() {
    // The embedded store is read host by host (only each host's capped rows are held), a
    // remote one at once: the exposition is the same.
    let mut texts = Vec::new();
    for remote in [false, true] {
        let app = match remote {
            false => spawn_app().await,
            true => {
                let store = Arc::new(GatedMemory { inner: MemoryStore::new(), gate: Remote });
                spawn_app_with(store, ServerConfig::default()).await
            }
        };
        // `spawn_app` is the embedded store, read host by host; when store-influx reruns this
        // file it is InfluxDB, read at once like the second.
        if remote {
            assert!(!app.store.series_usage_is_local());
        }
        let ts = now_ms() - 1_000;
        for (host, n) in [("a", 25), ("b", 3)] {
            let samples = (0..n).map(|i| sample(ts, &format!("p{i:02}"), i as f64, 1.0)).collect();
            assert_eq!(app.post_batch(&batch(host, 1, samples)).await.0, 200);
        }
        let text = app.metrics_text().await;
        let value = |name: &str| -> Option<String> {
            text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
        };
        assert_eq!(value("procwatch_process_series_capped{host=\"a\"}").as_deref(), Some("5"));
        assert_eq!(value("procwatch_process_series_capped{host=\"b\"}").as_deref(), Some("0"));
        assert_eq!(value("procwatch_store_series").as_deref(), Some("28"), "{text}");
        // Host a keeps its top 20 by cpu: p05..p24.
        let mut kept: Vec<&str> =
            text.lines().filter(|l| l.starts_with("procwatch_process_cpu_percent{")).collect();
        assert_eq!(kept.len(), 23, "{text}");
        assert!(!kept.iter().any(|l| l.contains("host=\"a\"") && l.contains("p04")));
        kept.sort();
        texts.push(kept.join("\n"));
        app.stop().await;
    }
    assert_eq!(texts[0], texts[1]);
}
