//! Backend-level benchmark: ingestion samples/s and `get-all` latency (a usage query over
//! 5 min of one host with 300 processes) through the `Storage` trait, for InfluxDB (a real
//! influxd started in a temp dir) and for the embedded SQLite store, in the same run.
//!
//! ```text
//! cargo run --release -p procwatch-store-influx --example bench -- [--hosts 20] [--sweeps 60]
//!     [--procs 300] [--concurrency 4] [--queries 200] [--merged-queries 20]
//! ```
//!
//! Ingestion: `hosts × sweeps` batches of `procs` samples and one host total each (one agent
//! sweep per batch, 10 s apart, ending now), written by `concurrency` concurrent writers.
//! Query: `usage(host = h, per_host, last 5 min)`, the store side of
//! `GET /ressources-usage/get-all?host=h`, `queries` times one after another; and the same
//! without a host filter, merged (`get-all` over every host), `merged-queries` times. Then the
//! same data (re-timestamped to end now) through the real server over HTTP, on a fresh
//! influxd and a fresh SQLite store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwatch_model::{Batch, HostTotal, Sample};
use procwatch_store::{Storage, UsageQuery};
use procwatch_store_influx::testing::Influxd;
use procwatch_store_influx::InfluxStore;
use procwatch_store_sqlite::{Durability, SqliteOptions, SqliteStore};

struct Args {
    hosts: usize,
    sweeps: usize,
    procs: usize,
    concurrency: usize,
    queries: usize,
    merged_queries: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        hosts: 20,
        sweeps: 60,
        procs: 300,
        concurrency: 4,
        queries: 200,
        merged_queries: 20,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v: usize = pair.get(1).and_then(|v| v.parse().ok()).expect("a number after the flag");
        match pair[0].as_str() {
            "--hosts" => a.hosts = v,
            "--sweeps" => a.sweeps = v,
            "--procs" => a.procs = v,
            "--concurrency" => a.concurrency = v,
            "--queries" => a.queries = v,
            "--merged-queries" => a.merged_queries = v,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn batches(a: &Args, now: i64) -> Vec<Batch> {
    let start = now - a.sweeps as i64 * 10_000;
    let mut out = Vec::with_capacity(a.hosts * a.sweeps);
    for sweep in 0..a.sweeps {
        let ts = start + sweep as i64 * 10_000;
        for h in 0..a.hosts {
            let samples = (0..a.procs)
                .map(|p| {
                    let x = ((p * 7919 + sweep * 104_729 + h * 31) % 10_000) as f64 / 100.0;
                    Sample {
                        ts,
                        process: format!("proc-{p:03}"),
                        cpu: x,
                        cores: x / 50.0,
                        mem: x / 4.0,
                        rss: (x * 1e7) as u64,
                        count: 1 + (p % 4) as u32,
                    }
                })
                .collect();
            out.push(Batch {
                host: format!("bench-{h:02}"),
                agent: "bench".into(),
                seq: sweep as u64 + 1,
                interval_ms: 10_000,
                host_totals: vec![HostTotal {
                    ts,
                    cpu: 50.0,
                    mem: 40.0,
                    unattributed_cpu: Some(1.0),
                }],
                samples,
                dropped_samples: 0,
            });
        }
    }
    out
}

async fn ingest(store: Arc<dyn Storage>, batches: Arc<Vec<Batch>>, concurrency: usize) -> f64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (store, batches, next) = (store.clone(), batches.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(b) = batches.get(i) else { break };
                store.write_batch(b).await.expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let samples: usize = batches.iter().map(|b| b.samples.len()).sum();
    samples as f64 / t.elapsed().as_secs_f64()
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn query_latency(store: &dyn Storage, q: &UsageQuery, n: usize, rows: usize) -> (f64, f64) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = store.usage(q).await.expect("usage");
        lat.push(t.elapsed());
        assert_eq!(r.len(), rows, "every process answers");
    }
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99))
}

async fn run(name: &str, store: Arc<dyn Storage>, a: &Args, data: Arc<Vec<Batch>>, now: i64) {
    let rate = ingest(store.clone(), data, a.concurrency).await;
    let one = UsageQuery {
        from: now - 300_000,
        to: now + 1,
        host: Some("bench-00".into()),
        process: None,
        per_host: true,
    };
    let (p50, p99) = query_latency(store.as_ref(), &one, a.queries, a.procs).await;
    let all = UsageQuery { host: None, per_host: false, ..one };
    let (ap50, ap99) = query_latency(store.as_ref(), &all, a.merged_queries, a.procs).await;
    println!("| {name} | {rate:.0} | {p50:.2} | {p99:.2} | {ap50:.2} | {ap99:.2} |");
    store.close().await.expect("close");
}

/// The same through the real server over HTTP (`POST /api/v1/samples` as JSON from
/// `concurrency` connections, `GET /ressources-usage/get-all[?host=]`).
async fn run_http(name: &str, store: Arc<dyn Storage>, a: &Args, data: &[Batch]) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = procwatch_server::ServerConfig::default();
    let server = tokio::spawn(procwatch_server::run(listener, config, store, async {
        let _ = rx.await;
    }));
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new(data.iter().map(|b| serde_json::to_vec(b).expect("json")).collect());
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, bodies, next, url) =
            (client.clone(), bodies.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(body) = bodies.get(i) else { break };
                let resp = client
                    .post(format!("{url}/api/v1/samples"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("POST");
                assert!(resp.status().is_success(), "POST: {}", resp.status());
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let samples: usize = data.iter().map(|b| b.samples.len()).sum();
    let rate = samples as f64 / t.elapsed().as_secs_f64();
    let lat = |path: String, n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let resp = client.get(format!("{url}{path}")).send().await.expect("GET");
                assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
                let body: serde_json::Value = resp.json().await.expect("json");
                v.push(t.elapsed());
                assert_eq!(body.as_object().map(|o| o.len()), Some(a.procs), "{path}");
            }
            v.sort();
            (pct(&v, 0.5), pct(&v, 0.99))
        }
    };
    let (p50, p99) = lat("/ressources-usage/get-all?host=bench-00".into(), a.queries).await;
    let (ap50, ap99) = lat("/ressources-usage/get-all".into(), a.merged_queries).await;
    println!("| {name} | {rate:.0} | {p50:.2} | {p99:.2} | {ap50:.2} | {ap99:.2} |");
    let _ = tx.send(());
    server.await.expect("server task").expect("server");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = parse_args();
    let now = now_ms();
    let data = Arc::new(batches(&a, now));
    println!(
        "{} hosts x {} sweeps x {} processes = {} samples in {} batches, {} writers, {} queries",
        a.hosts,
        a.sweeps,
        a.procs,
        a.hosts * a.sweeps * a.procs,
        data.len(),
        a.concurrency,
        a.queries
    );
    println!(
        "| backend | ingestion samples/s | get-all 1 host p50 ms | p99 ms | get-all all hosts \
         (merged) p50 ms | p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");

    let influxd = Influxd::start_or_skip("bench").expect("influxd is needed for this benchmark");
    let mut cfg = influxd.config("bench");
    cfg.timeout = Duration::from_secs(60);
    let influx = InfluxStore::connect(cfg).await.expect("influx");
    run("influxdb 1.6 (WAL fsync per write)", Arc::new(influx), &a, data.clone(), now).await;
    drop(influxd);
    let influxd_http = Influxd::start_or_skip("bench").expect("influxd");

    for (name, durability) in [
        ("sqlite (default, Durability::Process)", Durability::Process),
        ("sqlite (Durability::Power, fsync per commit)", Durability::Power),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        run(name, sqlite(dir.path(), durability).await, &a, data.clone(), now).await;
    }

    println!("\nThrough the server over HTTP (JSON batches, seed route get-all):\n");
    println!(
        "| backend | ingestion samples/s | GET get-all?host= p50 ms | p99 ms | GET get-all \
         (all hosts) p50 ms | p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let data = Arc::new(batches(&a, now_ms()));
    let mut cfg = influxd_http.config("bench_http");
    cfg.timeout = Duration::from_secs(60);
    let influx = InfluxStore::connect(cfg).await.expect("influx");
    run_http("influxdb 1.6", Arc::new(influx), &a, &data).await;
    drop(influxd_http);
    let dir = tempfile::tempdir().expect("tempdir");
    run_http("sqlite (default)", sqlite(dir.path(), Durability::Process).await, &a, &data).await;
}

async fn sqlite(dir: &std::path::Path, durability: Durability) -> Arc<dyn Storage> {
    let opts = SqliteOptions {
        durability,
        maintenance_interval: Duration::ZERO,
        ..SqliteOptions::default()
    };
    let path = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, opts))
        .await
        .unwrap()
        .expect("sqlite");
    Arc::new(store)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}
