//! Backend-level benchmark: ingestion samples/s and `get-all` latency through the `Storage`
//! trait on InfluxDB (a real influxd started in a temp dir), side by side with the same
//! influxd driven directly (`direct.rs`: the identical line protocol to `/write`, the
//! equivalent InfluxQL to `/query`), and the embedded SQLite store, in the same run.
//!
//! ```text
//! cargo run --release -p procwatch-store-influx --example bench -- [--hosts 20] [--sweeps 60]
//!     [--procs 300] [--concurrency 4] [--queries 200] [--merged-queries 20]
//!     [--direct-points 10000] [--rounds 2] [--no-sqlite 1]
//! ```
//!
//! Ingestion: `hosts × sweeps` batches of `procs` samples and one host total each (one agent
//! sweep per batch, 10 s apart, ending now), written by `concurrency` concurrent writers;
//! directly, the same batches one request each (gzip and plain), and cut into requests of
//! `direct-points` points (the engine's best). Each ingestion runs on a fresh influxd (none
//! pays for another's compactions), `rounds` times, the order reversed every other round.
//! Query: what `GET /ressources-usage/get-all?host=h` asks the store (usage of one host over
//! the last 5 min, merged per process), `queries` times, and the same over every host,
//! `merged-queries` times, each time followed by the direct query of the same shape (so both
//! see the same load). Then the same data (re-timestamped to end now) through the real server
//! over HTTP, on a fresh influxd (its direct peer in a second database of that influxd,
//! written first) and a fresh SQLite store.

mod direct;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwatch_model::{Batch, HostTotal, Sample};
use procwatch_store::{Storage, UsageNeeds, UsageQuery};
use procwatch_store_influx::testing::Influxd;
use procwatch_store_influx::InfluxStore;
use procwatch_store_sqlite::{Durability, SqliteOptions, SqliteStore};

use crate::direct::{Cut, Direct};

struct Args {
    hosts: usize,
    sweeps: usize,
    procs: usize,
    concurrency: usize,
    queries: usize,
    merged_queries: usize,
    direct_points: usize,
    sqlite: bool,
    rounds: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        hosts: 20,
        sweeps: 60,
        procs: 300,
        concurrency: 4,
        queries: 200,
        merged_queries: 20,
        direct_points: 10_000,
        sqlite: true,
        rounds: 2,
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
            "--direct-points" => a.direct_points = v,
            "--no-sqlite" => a.sqlite = v == 0,
            "--rounds" => a.rounds = v,
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
                        extras: None,
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
                report: None,
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

/// p50 and p99 in ms.
fn p50_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.99))
}

/// What `GET /ressources-usage/get-all[?host=]` asks the store (`query::seed_window`: merged
/// per process over the last 5 min).
fn get_all_query(now: i64, host: Option<&str>) -> UsageQuery {
    UsageQuery {
        from: now - 300_000,
        to: now + 1,
        host: host.map(str::to_string),
        process: None,
        per_host: false,
    }
}

/// The store's answer to get-all, as the server asks it.
async fn store_get_all(store: &dyn Storage, q: &UsageQuery) -> usize {
    store.usage_of(q, UsageNeeds::GET_ALL).await.expect("usage").len()
}

/// `n` rounds of: the store's get-all, then (if any) the direct query of the same shape.
async fn query_pair(
    store: &dyn Storage,
    direct: Option<(&Direct, &str)>,
    q: &UsageQuery,
    n: usize,
    rows: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ours, mut theirs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let got = store_get_all(store, q).await;
        ours.push(t.elapsed());
        assert_eq!(got, rows, "every process answers");
        if let Some((d, ql)) = direct {
            let (lat, got) = d.timed_query(ql).await;
            theirs.push(lat);
            assert_eq!(got, rows, "every process answers (direct)");
        }
    }
    (ours, theirs)
}

fn row(name: &str, rate: Option<f64>, one: Option<(f64, f64)>, all: Option<(f64, f64)>) {
    let rate = rate.map_or("–".to_string(), |r| format!("{r:.0}"));
    let lat = |l: Option<(f64, f64)>| {
        l.map_or("– | –".to_string(), |(a, b)| format!("{a:.2} | {b:.2}"))
    };
    println!("| {name} | {rate} | {} | {} |", lat(one), lat(all));
}

fn samples_in(data: &[Batch]) -> usize {
    data.iter().map(|b| b.samples.len()).sum()
}

/// A fresh influxd in a temp dir: each ingestion run gets its own, so none pays for the
/// compactions of another's data.
fn fresh_influxd() -> Influxd {
    Influxd::start_or_skip("bench").expect("influxd is needed for this benchmark")
}

async fn influx_store(d: &Influxd, db: &str) -> Arc<dyn Storage> {
    let mut cfg = d.config(db);
    cfg.timeout = Duration::from_secs(60);
    Arc::new(InfluxStore::connect(cfg).await.expect("influx"))
}

fn spread(v: &[f64]) -> String {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let each: Vec<String> = v.iter().map(|r| format!("{r:.0}")).collect();
    format!("{mean:.0} ({})", each.join(", "))
}

/// procwatch's `InfluxStore` and the direct peer, each ingestion on a fresh influxd, `rounds`
/// times in alternating order; then get-all through the store and directly, interleaved.
async fn run_influx(a: &Args, data: Arc<Vec<Batch>>, now: i64) {
    let samples = samples_in(&data);
    let cuts = [
        None,
        Some(("same requests as procwatch: one batch each, gzip", Cut { points: 0, gzip: true })),
        Some(("same requests, plain text", Cut { points: 0, gzip: false })),
        Some(("large requests, plain text", Cut { points: a.direct_points, gzip: false })),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cuts.len()];
    let mut labels = vec![String::new(); cuts.len()];
    let mut ours: Option<(Influxd, Arc<dyn Storage>)> = None;
    let mut theirs: Option<(Influxd, Direct)> = None;
    for round in 0..a.rounds.max(1) {
        let mut order: Vec<usize> = (0..cuts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for v in order {
            let d = fresh_influxd();
            match cuts[v] {
                None => {
                    let store = influx_store(&d, "bench").await;
                    rates[v].push(ingest(store.clone(), data.clone(), a.concurrency).await);
                    labels[v] = "procwatch InfluxStore, influxdb 1.6".into();
                    if ours.is_none() {
                        ours = Some((d, store));
                    }
                }
                Some((label, cut)) => {
                    let direct = Direct::create(&d.url(), "direct").await;
                    let bodies = Direct::bodies(&data, cut);
                    labels[v] = format!("direct /write, {label} ({} requests)", bodies.len());
                    rates[v].push(direct.ingest(bodies, cut.gzip, a.concurrency, samples).await);
                    if v == 1 && theirs.is_none() {
                        theirs = Some((d, direct));
                    }
                }
            }
        }
    }
    let ((_d1, store), (_d2, direct)) = (ours.expect("ours"), theirs.expect("theirs"));
    let one = get_all_query(now, Some("bench-00"));
    let all = get_all_query(now, None);
    let ql_one = direct.get_all_ql(one.from, one.to, Some("bench-00"));
    let ql_all = direct.get_all_ql(all.from, all.to, None);
    let (o1, d1) =
        query_pair(store.as_ref(), Some((&direct, &ql_one)), &one, a.queries, a.procs).await;
    let (oa, da) =
        query_pair(store.as_ref(), Some((&direct, &ql_all)), &all, a.merged_queries, a.procs).await;
    let (o1, oa, d1, da) = (p50_p99(o1), p50_p99(oa), p50_p99(d1), p50_p99(da));
    let lat = |(p50, p99): (f64, f64)| format!("{p50:.2} | {p99:.2}");
    for (v, label) in labels.iter().enumerate() {
        let (q1, qa) = match v {
            0 => (lat(o1), lat(oa)),
            1 => (lat(d1), lat(da)),
            _ => ("– | –".into(), "– | –".into()),
        };
        println!("| {label} | {} | {q1} | {qa} |", spread(&rates[v]));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let best = rates[1..].iter().map(|r| mean(r)).fold(0.0, f64::max);
    println!(
        "\nprocwatch / direct: ingestion {:.2}x of the same requests, {:.2}x of the best; \
         get-all 1 host p50 {:.2}x, all hosts p50 {:.2}x",
        mean(&rates[0]) / mean(&rates[1]),
        mean(&rates[0]) / best,
        o1.0 / d1.0,
        oa.0 / da.0
    );
    store.close().await.expect("close");
}

/// A store through the `Storage` trait (the embedded store, for reference).
async fn run(name: &str, store: Arc<dyn Storage>, a: &Args, data: Arc<Vec<Batch>>, now: i64) {
    let rate = ingest(store.clone(), data, a.concurrency).await;
    let one = get_all_query(now, Some("bench-00"));
    let all = get_all_query(now, None);
    let (o1, _) = query_pair(store.as_ref(), None, &one, a.queries, a.procs).await;
    let (oa, _) = query_pair(store.as_ref(), None, &all, a.merged_queries, a.procs).await;
    row(name, Some(rate), Some(p50_p99(o1)), Some(p50_p99(oa)));
    store.close().await.expect("close");
}

/// The same through the real server over HTTP (`POST /api/v1/samples` as JSON from
/// `concurrency` connections, `GET /ressources-usage/get-all[?host=]`); with `peer`, the
/// direct figures on the same influxd, interleaved.
async fn run_http(
    name: &str,
    store: Arc<dyn Storage>,
    a: &Args,
    data: &[Batch],
    peer: Option<&str>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = procwatch_server::ServerConfig::default();
    let server = tokio::spawn(procwatch_server::run(listener, config, store, async {
        let _ = rx.await;
    }));
    // The direct peer first, then procwatch.
    let samples = samples_in(data);
    let mut direct = None;
    if let Some(peer) = peer {
        let d = Direct::create(peer, "direct_http").await;
        let cut = Cut { points: 0, gzip: true };
        let r = d.ingest(Direct::bodies(data, cut), true, a.concurrency, samples).await;
        direct = Some((d, r));
    }
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
    let rate = samples as f64 / t.elapsed().as_secs_f64();
    let lat = |path: &'static str, host: Option<&'static str>, n: usize| {
        let (client, url, direct) =
            (client.clone(), url.clone(), direct.as_ref().map(|(d, _)| d.clone()));
        async move {
            let (mut ours, mut theirs) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let t = Instant::now();
                let resp = client.get(format!("{url}{path}")).send().await.expect("GET");
                assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
                let body: serde_json::Value = resp.json().await.expect("json");
                ours.push(t.elapsed());
                assert_eq!(body.as_object().map(|o| o.len()), Some(a.procs), "{path}");
                if let Some(d) = &direct {
                    // The server's window: the last 5 min up to now (+ its future slack).
                    let now = now_ms();
                    let ql = d.get_all_ql(now - 300_000, now + 300_001, host);
                    let (l, rows) = d.timed_query(&ql).await;
                    theirs.push(l);
                    assert_eq!(rows, a.procs, "direct {path}");
                }
            }
            (ours, theirs)
        }
    };
    let (o1, d1) =
        lat("/ressources-usage/get-all?host=bench-00", Some("bench-00"), a.queries).await;
    let (oa, da) = lat("/ressources-usage/get-all", None, a.merged_queries).await;
    row(name, Some(rate), Some(p50_p99(o1)), Some(p50_p99(oa)));
    if let Some((_, r)) = direct {
        row(
            "direct /write (one batch per request, gzip) and /query, same influxd",
            Some(r),
            Some(p50_p99(d1)),
            Some(p50_p99(da)),
        );
    }
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
        "| backend / path | ingestion samples/s | get-all 1 host p50 ms | p99 ms | get-all all \
         hosts (merged) p50 ms | p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");

    run_influx(&a, data.clone(), now).await;

    if a.sqlite {
        println!();
        for (name, durability) in [
            ("sqlite (default, Durability::Process)", Durability::Process),
            ("sqlite (Durability::Power, fsync per commit)", Durability::Power),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            run(name, sqlite(dir.path(), durability).await, &a, data.clone(), now).await;
        }
    }

    println!("\nThrough the server over HTTP (JSON batches, seed route get-all):\n");
    println!(
        "| backend / path | ingestion samples/s | GET get-all?host= p50 ms | p99 ms | GET get-all \
         (all hosts) p50 ms | p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let data = Arc::new(batches(&a, now_ms()));
    // Both in one fresh influxd (two databases), so the interleaved queries see the same
    // compactions; the direct peer writes first, so procwatch's ingestion pays for them.
    let influxd_http = fresh_influxd();
    let influx = influx_store(&influxd_http, "bench_http").await;
    let url = influxd_http.url();
    run_http("procwatch server on influxdb 1.6", influx, &a, &data, Some(&url)).await;
    drop(influxd_http);
    if a.sqlite {
        let dir = tempfile::tempdir().expect("tempdir");
        run_http(
            "sqlite (default)",
            sqlite(dir.path(), Durability::Process).await,
            &a,
            &data,
            None,
        )
        .await;
    }
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
