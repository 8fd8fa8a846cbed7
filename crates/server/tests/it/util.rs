//! Helpers: a real server on `127.0.0.1:0` over a chosen store, and batch builders.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use procwatch_model::{Batch, HostTotal, Sample, TsMs};
use procwatch_server::ServerConfig;
use procwatch_store::memory::MemoryStore;
use procwatch_store::Storage;
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::sync::oneshot;

/// A running server. Dropping it without [`TestApp::stop`] aborts it.
pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Storage>,
    /// The data dir of a SQLite-backed app; removed on drop.
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), procwatch_server::ServerError>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// `procwatch_limit_breaches_total{reason}` from `/metrics` (0 when absent).
    pub async fn breaches(&self, reason: &str) -> u64 {
        breaches(&self.metrics_text().await, reason)
    }

    pub async fn post_batch(&self, batch: &Batch) -> (u16, serde_json::Value) {
        let resp =
            self.client.post(self.url("/api/v1/samples")).json(batch).send().await.expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// Graceful shutdown; waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server run");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Starts the real server on `127.0.0.1:0` over a fresh `SqliteStore` (the default backend)
/// in a temp dir.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open sqlite");
    let mut app = spawn_app_with(Arc::new(store), ServerConfig::default()).await;
    app._dir = Some(dir);
    app
}

/// Starts the real server on `127.0.0.1:0` over a fresh `MemoryStore`.
pub async fn spawn_memory_app() -> TestApp {
    spawn_app_with(Arc::new(MemoryStore::new()), ServerConfig::default()).await
}

/// Starts the real server on `127.0.0.1:0` over `store` with `config`.
pub async fn spawn_app_with(store: Arc<dyn Storage>, config: ServerConfig) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(procwatch_server::run(listener, config, store.clone(), async {
        let _ = rx.await;
    }));
    TestApp {
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        _dir: None,
        stop: Some(tx),
        handle: Some(handle),
    }
}

pub fn now_ms() -> TsMs {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as TsMs
}

pub fn sample(ts: TsMs, process: &str, cpu: f64, mem: f64) -> Sample {
    // cores below the built-in cores rule (0.9) even at 100 % cpu: these tests are about cpu.
    Sample {
        ts,
        process: process.into(),
        cpu,
        cores: cpu / 200.0,
        mem,
        rss: 1 << 20,
        count: 1,
        extras: None,
    }
}

pub fn batch(host: &str, seq: u64, samples: Vec<Sample>) -> Batch {
    let ts = samples.first().map(|s| s.ts).unwrap_or_else(now_ms);
    Batch {
        host: host.into(),
        agent: "test".into(),
        seq,
        interval_ms: 10_000,
        host_totals: vec![HostTotal { ts, cpu: 40.0, mem: 50.0, unattributed_cpu: Some(1.5) }],
        samples,
        dropped_samples: 0,
        report: None,
    }
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{what}: got {got}, want {want}");
}

/// `procwatch_limit_breaches_total{reason}` in a `/metrics` text (0 when absent).
pub fn breaches(metrics_text: &str, reason: &str) -> u64 {
    let key = format!("procwatch_limit_breaches_total{{reason=\"{reason}\"}} ");
    metrics_text.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse().unwrap())
}

/// `data` gzipped.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
