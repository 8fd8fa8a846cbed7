//! The server over real HTTP, beside InfluxDB 1.x fed the same data in the same run.
//!
//! ```text
//! cargo bench -p procwatch-server --bench http
//! ```
//!
//! Environment: `PROCWATCH_BENCH_STORE=sqlite|memory|clickhouse` (default sqlite; clickhouse:
//! a 2-shard x 2-replica cluster + ZooKeeper started on loopback, see docs/scaling-out.md),
//! `PROCWATCH_BENCH_INFLUX=0` to skip InfluxDB (else `influxd` must be on PATH),
//! `PROCWATCH_BENCH_HOSTS` (100), `PROCWATCH_BENCH_PROCS` (300), `PROCWATCH_BENCH_CONNS` (4),
//! `PROCWATCH_BENCH_CH_INFLIGHT` (the cluster store's data INSERTs in flight, default 4),
//! `PROCWATCH_BENCH_CH_LINGER_MS` (the cluster store's `insert_linger`, default the store's),
//! `PROCWATCH_BENCH_CH_SHARDS` (1, default: data straight to the shards, the store given every
//! shard's replica URLs; 0: through the `Distributed` tables), `PROCWATCH_BENCH_CH_PER_SHARD`
//! (with shard-aware writes, data INSERTs in flight per shard, default the store's),
//! `PROCWATCH_BENCH_INTERVAL_S` (the server's interval, default 10: how often its alarm
//! evaluator reads the fleet and stores events while the bench ingests),
//! `PROCWATCH_BENCH_WINDOW_MIN` (the SQLite store's memory window, the server's `--window`,
//! default 5), and `PROCWATCH_BENCH_QUERIES=0` to stop after the ingestion rows (no query rows, no bytes).
//!
//! What it does: starts `procwatch_server::run` on `127.0.0.1:0` (its own 2-thread runtime) over
//! the store in a temp dir, and a real `influxd` with a temp config on free loopback ports.
//! Every temp dir (store, cluster, influxd) is under `TMPDIR`, so setting it moves both peers
//! to another file system together (BENCHMARKS.md, "ClickHouse cluster", Run 8: the root file
//! system here is ext4 without a journal, which can slow the cluster's file churn).
//! Data (the same for both, pre-serialized before any timing): host `solo`, 300 processes,
//! 2 h at 10 s (216,000 samples) sent in batches of 5,000 samples; then the fleet, 100 hosts ×
//! 300 processes, 10 min at 10 s (1.8 M samples) sent one host sweep (300 samples) a batch.
//! Each sample carries the same fields on both sides: cpu, cores, mem (floats), rss, count
//! (integers); InfluxDB gets them as line protocol, tags host and process, `precision=ms`.
//! Ingestion is timed from the first request to the last 2xx with `CONNS` connections in
//! flight. The SQLite store runs with the server binary's default memory window (5 min) and
//! fold step (1 min); one maintenance pass runs between ingestion and the queries (steady
//! state: a 10-minute query reads its older half from chunks, a 5-minute one from memory). Queries run one at a time on one connection and are timed to the last body byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use procwatch_model::{Batch, HostTotal, Sample};
use procwatch_server::ServerConfig;
use procwatch_store::memory::MemoryStore;
use procwatch_store::{Storage, UsageNeeds};
use procwatch_store_influx::testing::{Influxd, Tuning};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

const STEP_MS: i64 = 10_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn process_names(n: usize) -> Vec<String> {
    let stems =
        ["postgres", "nginx", "java", "python3", "node", "redis-server", "sshd", "kworker/0:1"];
    (0..n).map(|i| format!("{}-{i:03}", stems[i % stems.len()])).collect()
}

/// Sweeps of one host: `sweeps` timestamps ending at `end`, every process at each.
fn host_samples(rng: &mut Lcg, procs: &[String], end: i64, sweeps: usize) -> Vec<Sample> {
    let mut out = Vec::with_capacity(sweeps * procs.len());
    let base: Vec<(f64, f64)> =
        procs.iter().map(|_| (rng.next() * 20.0, rng.next() * 5.0)).collect();
    for k in 0..sweeps {
        let ts = end - (sweeps - 1 - k) as i64 * STEP_MS;
        for (p, (c, m)) in procs.iter().zip(&base) {
            let cpu = (c + rng.next() * 10.0).min(100.0);
            let mem = m + rng.next() * 0.5;
            out.push(Sample {
                ts,
                process: p.clone(),
                cpu: (cpu * 1000.0).round() / 1000.0,
                cores: (cpu * 2.0 / 100.0 * 10_000.0).round() / 10_000.0,
                mem: (mem * 1000.0).round() / 1000.0,
                rss: (mem * 80_000_000.0) as u64 / 4096 * 4096,
                count: 1 + (p.len() % 4) as u32,
                extras: None,
            });
        }
    }
    out
}

/// A batch as an agent sends it: its samples and one host total per sweep (timestamp) in it.
fn batch_of(host: &str, seq: u64, samples: Vec<Sample>) -> Batch {
    let mut sweeps: std::collections::BTreeMap<i64, (f64, f64, f64)> = Default::default();
    for s in &samples {
        let t = sweeps.entry(s.ts).or_default();
        t.0 += s.cpu;
        t.1 += s.mem;
        t.2 += 1.0;
    }
    let host_totals = sweeps
        .into_iter()
        // A host's figures from its processes' means: in range, and a host under its
        // threshold, as most are (a bench of alarms would be another bench).
        .map(|(ts, (cpu, mem, n))| HostTotal {
            ts,
            cpu: (cpu / n).min(100.0).round(),
            mem: (mem / n).min(100.0).round(),
            unattributed_cpu: Some(0.5),
        })
        .collect();
    Batch {
        host: host.into(),
        agent: "bench".into(),
        seq,
        interval_ms: STEP_MS as u64,
        host_totals,
        samples,
        dropped_samples: 0,
        report: None,
    }
}

fn escape_tag(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

fn line_protocol(b: &Batch) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(b.samples.len() * 120);
    let host = escape_tag(&b.host);
    for s in &b.samples {
        let _ = writeln!(
            out,
            "procs,host={host},process={} cpu={},cores={},mem={},rss={}i,count={}i {}",
            escape_tag(&s.process),
            s.cpu,
            s.cores,
            s.mem,
            s.rss,
            s.count,
            s.ts
        );
    }
    for t in &b.host_totals {
        let u = t.unattributed_cpu.unwrap_or(0.0);
        let _ = writeln!(
            out,
            "host,host={host} cpu={},mem={},unattributed_cpu={u} {}",
            t.cpu, t.mem, t.ts
        );
    }
    out
}

struct Payloads {
    json: Vec<Bytes>,
    lines: Vec<Bytes>,
    samples: usize,
}

fn payloads(batches: &[Batch], lines: bool) -> Payloads {
    Payloads {
        json: batches.iter().map(|b| Bytes::from(serde_json::to_vec(b).unwrap())).collect(),
        // Line protocol only when InfluxDB runs (a 1,000-host fleet's is another GB).
        lines: if lines {
            batches.iter().map(|b| Bytes::from(line_protocol(b))).collect()
        } else {
            Vec::new()
        },
        samples: batches.iter().map(|b| b.samples.len()).sum(),
    }
}

/// Sends every body with `conns` requests in flight; returns the elapsed time.
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    bodies: &[Bytes],
    conns: usize,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(bodies.to_vec());
    // Request latencies, summed (µs), for the mean printed below.
    let busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, next, bodies, busy) =
            (client.clone(), url.to_owned(), next.clone(), bodies.clone(), busy.clone());
        let ct = content_type.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", &ct)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("send");
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                assert!(status.is_success(), "{url}: {status} {text}");
                busy.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    let n = bodies.len().max(1) as f64;
    println!(
        "{url}: {} requests, {conns} in flight, {:.2} s, mean request latency {:.1} ms",
        bodies.len(),
        took.as_secs_f64(),
        busy.load(Ordering::Relaxed) as f64 / n / 1000.0
    );
    took
}

struct Latency {
    p50: f64,
    p99: f64,
    bytes: usize,
}

/// Runs `n` GETs one after another; latencies in ms.
async fn latency(client: &reqwest::Client, url: &str, n: usize) -> Latency {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n + 2 {
        let t = Instant::now();
        let resp = client.get(url).send().await.expect("GET");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        assert!(status.is_success(), "{url}: {status} {}", String::from_utf8_lossy(&body));
        if i >= 2 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        bytes = body.len();
    }
    ms.sort_by(f64::total_cmp);
    let pct = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Latency { p50: pct(0.5), p99: pct(0.99), bytes }
}

/// Bytes of the files under `dir` whose name passes `keep`.
fn dir_bytes(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                total += dir_bytes(&e.path(), keep);
            } else if keep(&e.path()) {
                total += md.len();
            }
        }
    }
    total
}

/// The peer: a real `influxd` (as the influx tests start it, killed on drop), tuned to
/// snapshot and compact soon after writes stop, with no series or body limits.
fn start_influx() -> Option<Influxd> {
    let tuning = Tuning {
        data: "cache-snapshot-write-cold-duration = \"2s\"\ncompact-full-write-cold-duration = \"5s\"\nmax-series-per-database = 0\nmax-values-per-tag = 0",
        http: "max-body-size = 0",
    };
    Influxd::start_tuned_or_skip("http bench influxdb peer", tuning)
}

/// Creates the benchmark's database.
async fn create_bench_db(ix: &Influxd, client: &reqwest::Client) {
    let resp = client
        .post(format!("{}/query", ix.url()))
        .form(&[("q", "CREATE DATABASE bench")])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

/// The URL of InfluxQL `q` on the benchmark's database.
fn query_url(ix: &Influxd, q: &str) -> String {
    let mut u = reqwest::Url::parse(&format!("{}/query", ix.url())).unwrap();
    u.query_pairs_mut().append_pair("db", "bench").append_pair("q", q);
    u.to_string()
}

fn main() {
    let store_kind = std::env::var("PROCWATCH_BENCH_STORE").unwrap_or_else(|_| "sqlite".into());
    let with_influx = std::env::var("PROCWATCH_BENCH_INFLUX").map(|v| v != "0").unwrap_or(true);
    let hosts = env_usize("PROCWATCH_BENCH_HOSTS", 100);
    let nprocs = env_usize("PROCWATCH_BENCH_PROCS", 300);
    let conns = env_usize("PROCWATCH_BENCH_CONNS", 4);
    // Fleet sweeps at 10 s (60: 10 min); fewer keep a 1,000-host run's memory in bounds.
    let sweeps = env_usize("PROCWATCH_BENCH_SWEEPS", 60);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("procwatch");

    // Data, built and serialized before any timing.
    let procs = process_names(nprocs);
    let mut rng = Lcg(42);
    let end = now_ms() / STEP_MS * STEP_MS;
    let solo = host_samples(&mut rng, &procs, end, 720);
    let solo_batches: Vec<Batch> = solo
        .chunks(5_000)
        .enumerate()
        .map(|(i, c)| batch_of("solo", i as u64 + 1, c.to_vec()))
        .collect();
    let mut fleet_batches = Vec::new();
    let fleet_hosts: Vec<String> = (0..hosts).map(|h| format!("fleet-{h:03}")).collect();
    let per_host: Vec<Vec<Sample>> =
        fleet_hosts.iter().map(|_| host_samples(&mut rng, &procs, end, sweeps)).collect();
    for k in 0..sweeps {
        for (h, samples) in fleet_hosts.iter().zip(&per_host) {
            let sweep = samples[k * nprocs..(k + 1) * nprocs].to_vec();
            fleet_batches.push(batch_of(h, k as u64 + 1, sweep));
        }
    }
    let solo_p = payloads(&solo_batches, with_influx);
    let fleet_p = payloads(&fleet_batches, with_influx);
    drop((solo_batches, fleet_batches, per_host, solo));
    eprintln!(
        "data: solo {} samples in {} batches; fleet {} samples in {} batches",
        solo_p.samples,
        solo_p.json.len(),
        fleet_p.samples,
        fleet_p.json.len()
    );

    // The server, on its own 2-thread runtime.
    // `clickhouse`: a real ZooKeeper + 2-shard x 2-replica cluster on loopback (the test
    // harness of procwatch-store-clickhouse), kept until the end for the bytes on disk.
    let mut cluster = None;
    let mut ch_store: Option<Arc<procwatch_store_clickhouse::ClickHouseStore>> = None;
    let (store, sqlite): (Arc<dyn Storage>, Option<Arc<SqliteStore>>) = match store_kind.as_str() {
        "memory" => (Arc::new(MemoryStore::new()), None),
        "clickhouse" => {
            let c = procwatch_store_clickhouse::testing::Cluster::start_or_skip("http bench")
                .expect("clickhouse-server and zookeeperd for PROCWATCH_BENCH_STORE=clickhouse");
            let mut cfg = c.config("bench");
            if std::env::var("PROCWATCH_BENCH_CH_SHARDS").as_deref() == Ok("0") {
                cfg.shard_urls.clear();
            }
            if let Ok(n) = std::env::var("PROCWATCH_BENCH_CH_PER_SHARD") {
                cfg.max_inserts_in_flight_per_shard =
                    n.parse().expect("PROCWATCH_BENCH_CH_PER_SHARD: a count");
            }
            // The store's group commit: data INSERTs in flight (default 4).
            if let Ok(n) = std::env::var("PROCWATCH_BENCH_CH_INFLIGHT") {
                cfg.max_inserts_in_flight =
                    n.parse().expect("PROCWATCH_BENCH_CH_INFLIGHT: a count");
            }
            if let Ok(ms) = std::env::var("PROCWATCH_BENCH_CH_LINGER_MS") {
                let ms: u64 = ms.parse().expect("PROCWATCH_BENCH_CH_LINGER_MS: milliseconds");
                cfg.insert_linger = Duration::from_millis(ms);
            }
            if cfg.shard_urls.is_empty() {
                println!(
                    "clickhouse store: through Distributed, {} INSERTs in flight, linger {:?}",
                    cfg.max_inserts_in_flight, cfg.insert_linger
                );
            } else {
                println!(
                    "clickhouse store: straight to the {} shards, {} INSERT(s) in flight per \
                     shard, linger {:?}",
                    cfg.shard_urls.len(),
                    cfg.max_inserts_in_flight_per_shard,
                    cfg.insert_linger
                );
            }
            cluster = Some(c);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let s = rt.block_on(procwatch_store_clickhouse::ClickHouseStore::connect(cfg));
            let s = Arc::new(s.expect("connect to the cluster"));
            ch_store = Some(s.clone());
            (s, None)
        }
        _ => {
            // The server's default is `--durability durable` (Power, group commit).
            let durability = match std::env::var("PROCWATCH_BENCH_DURABILITY").as_deref() {
                Ok("relaxed") => procwatch_store_sqlite::Durability::Process,
                _ => procwatch_store_sqlite::Durability::Power,
            };
            println!("sqlite durability: {durability:?}");
            // The memory window and fold step `procwatch server` runs with by default (its
            // `--window 5m`, `--fold-step 1m`); no maintenance thread: one pass runs after
            // ingestion, before the queries (below), so they all see the steady state and
            // none races a first pass folding the whole run at once.
            // `PROCWATCH_BENCH_WINDOW_MIN`: the server's `--window` in minutes (default 5).
            let window_min = env_usize("PROCWATCH_BENCH_WINDOW_MIN", 5) as i64;
            println!("memory window: {window_min} min");
            let opts = SqliteOptions {
                durability,
                memory_window_ms: window_min * 60_000,
                fold_step_ms: 60_000,
                maintenance_interval: Duration::ZERO,
                ..SqliteOptions::default()
            };
            let s = Arc::new(SqliteStore::open(&data_dir, opts).unwrap());
            (s.clone(), Some(s))
        }
    };
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The benchmark measures how fast the server ingests, so the per-peer ingestion rate limit
    // (a defence against a runaway client, 200 requests/s by default) is off here.
    let interval = Duration::from_secs(env_usize("PROCWATCH_BENCH_INTERVAL_S", 10) as u64);
    let queries = std::env::var("PROCWATCH_BENCH_QUERIES").map(|v| v != "0").unwrap_or(true);
    let config = ServerConfig { ingest_rate: 0.0, interval, ..ServerConfig::default() };
    let server = server_rt.spawn(procwatch_server::run(listener, config, store.clone(), async {
        let _ = stop_rx.await;
    }));

    let client_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let influx = if with_influx { start_influx() } else { None };

    let mut results: BTreeMap<&str, (String, String)> = BTreeMap::new();
    client_rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(conns * 2).build().unwrap();
        if let Some(ix) = &influx {
            create_bench_db(ix, &client).await;
        }
        let ingest = format!("{base}/api/v1/samples");
        let rate = |n: usize, d: Duration| format!("{:.0} samples/s", n as f64 / d.as_secs_f64());

        let fmt = |l: &Latency| format!("p50 {:.2} ms, p99 {:.2} ms ({} B)", l.p50, l.p99, l.bytes);
        let d = send_all(&client, &ingest, "application/json", &solo_p.json, conns).await;
        let ours_5k = rate(solo_p.samples, d);
        let (mut theirs_5k, mut theirs_300) = ("-".to_owned(), "-".to_owned());
        if let Some(ix) = &influx {
            let url = format!("{}/write?db=bench&precision=ms", ix.url());
            let d = send_all(&client, &url, "text/plain", &solo_p.lines, conns).await;
            theirs_5k = rate(solo_p.samples, d);
        }
        // get-all right after the solo host's data, which ends when the data was built: after
        // the fleet's ingestion its last 5 minutes may be empty on a slow store.
        let ours = fmt(&latency(&client, &format!("{base}/ressources-usage/get-all?host=solo"), 200).await);
        let theirs = match &influx {
            Some(ix) => {
                let q = "SELECT mean(cpu), mean(mem) FROM procs WHERE host = 'solo' AND time > now() - 5m GROUP BY process";
                fmt(&latency(&client, &query_url(ix, q), 50).await)
            }
            None => "-".into(),
        };
        results.insert("3 get-all, 1 host x 300 processes, last 5 min", (ours, theirs));
        let d = send_all(&client, &ingest, "application/json", &fleet_p.json, conns).await;
        let ours_300 = rate(fleet_p.samples, d);
        if let Some(s) = &sqlite {
            // Group commit: how many WAL fsyncs the 6,044 ingestion requests cost.
            println!("WAL fsyncs during ingestion: {}", s.wal_syncs());
        }
        if let Some(s) = &ch_store {
            // Group commit: how many data INSERTs and `hosts` flushes the batches cost.
            let w = s.write_stats();
            println!(
                "clickhouse writes during ingestion: {w:?}; mean data INSERT {:.1} ms, {:.2} batches per INSERT",
                w.data_insert_time.as_secs_f64() * 1000.0 / w.data_inserts.max(1) as f64,
                w.batches as f64 / w.data_inserts.max(1) as f64
            );
        }
        if let Some(c) = &cluster {
            // What the server's alarm evaluator stored meanwhile (one INSERT per event; without
            // `FINAL` every write of an event counts).
            let q = "SELECT count() FROM bench.alarm_events";
            match c.sql(0, q) {
                Ok(n) => println!("alarm_events rows written during the run: {}", n.trim()),
                Err(e) => println!("alarm_events rows: {e}"),
            }
            // Parts made on the node the store writes to, merged or not: about one per INSERT.
            let q = "SELECT count() FROM system.parts \
                     WHERE database = 'bench' AND table = 'alarm_events'";
            match c.sql(0, q) {
                Ok(n) => println!("alarm_events parts (active or merged away): {}", n.trim()),
                Err(e) => println!("alarm_events parts: {e}"),
            }
        }
        if let Some(ix) = &influx {
            let url = format!("{}/write?db=bench&precision=ms", ix.url());
            let d = send_all(&client, &url, "text/plain", &fleet_p.lines, conns).await;
            theirs_300 = rate(fleet_p.samples, d);
        }
        results.insert("1 ingest, batches of 5,000 samples", (ours_5k, theirs_5k));
        results.insert("2 ingest, batches of 1 host x 300 processes", (ours_300, theirs_300));
        if !queries {
            return;
        }

        if let Some(s) = &sqlite {
            // Steady state: the head folded as the maintenance thread would have by now; the
            // last 5 min (+ a fold step) stay in memory, older samples are read from chunks.
            let t = Instant::now();
            let done = s.maintain_at(now_ms()).unwrap();
            println!(
                "maintenance pass before the queries: {:.1} s, {done:?}, memory floor now - {:.0} s",
                t.elapsed().as_secs_f64(),
                (now_ms() - s.memory_floor()) as f64 / 1000.0
            );
        }
        let proc7 = &procs[7];
        let queries: Vec<(&str, String, String, usize)> = vec![
            (
                "4 fleet means per host and process, 100 x 300, last 10 min",
                format!("{base}/api/v1/usage?window=10m&metrics=cpu,mem&stats=mean"),
                "SELECT mean(cpu), mean(mem) FROM procs WHERE time > now() - 10m GROUP BY host, process".into(),
                20,
            ),
            (
                "4b fleet usage, every figure (4 metrics x mean/min/max/last/p95), 100 x 300, 10 min",
                format!("{base}/api/v1/usage?window=10m"),
                String::new(), // no InfluxQL counterpart asked
                20,
            ),
            (
                "4d fleet page: top 50 rows by cpu mean (the dashboard's ask), every figure, 10 min",
                format!("{base}/api/v1/usage?window=10m&sort=cpu.mean&limit=50"),
                String::new(),
                20,
            ),
            (
                "4f fleet page: top 50 rows by cpu mean, every figure, 5 min (the dashboard's default window)",
                format!("{base}/api/v1/usage?window=5m&sort=cpu.mean&limit=50"),
                String::new(),
                20,
            ),
            (
                "4e fleet page: the 2nd page of 50 by cpu mean (cursor), 10 min",
                String::new(), // built from the first page's `next` below
                String::new(),
                20,
            ),
            (
                "5 history of one process, 2 h, step 1 min",
                format!("{base}/api/v1/hosts/solo/processes/{}/history?from=-2h&step=1m", urlencode(proc7)),
                format!("SELECT mean(cpu), max(cpu), mean(mem), max(mem) FROM procs WHERE host = 'solo' AND process = '{proc7}' AND time > now() - 2h GROUP BY time(1m)"),
                200,
            ),
            (
                "6 history of one process, 2 h, raw samples",
                format!("{base}/api/v1/hosts/solo/processes/{}/history?from=-2h", urlencode(proc7)),
                format!("SELECT cpu, cores, mem, rss, count FROM procs WHERE host = 'solo' AND process = '{proc7}' AND time > now() - 2h"),
                200,
            ),
        ];
        // Where the fleet time goes: the store call alone, in process.
        let q = procwatch_store::UsageQuery {
            from: now_ms() - 600_000,
            to: now_ms() + 300_000,
            host: None,
            process: None,
            per_host: true,
        };
        // And what a sorted page reads of every row first: the sort's one figure (cpu mean).
        let cpu_mean = UsageNeeds {
            metrics: [true, false, false, false],
            spread: false,
            last: false,
            samples: false,
        };
        for (name, needs) in [
            ("4c fleet: Storage::usage alone, in process (no HTTP, no JSON)", UsageNeeds::ALL),
            (
                "4c2 fleet: Storage::usage_of, cpu mean only (a sorted page's first read), in process",
                cpu_mean,
            ),
        ] {
            let mut ms = Vec::new();
            for _ in 0..10 {
                let t = Instant::now();
                let rows = store.usage_of(&q, needs).await.unwrap();
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                assert!(rows.len() >= hosts * nprocs * 9 / 10, "{} rows", rows.len());
            }
            ms.sort_by(f64::total_cmp);
            results.insert(name, (format!("p50 {:.2} ms", ms[ms.len() / 2]), "-".into()));
        }
        for (name, mut ours_url, influxql, n) in queries {
            if ours_url.is_empty() {
                let first = format!("{base}/api/v1/usage?window=10m&sort=cpu.mean&limit=50");
                let body: serde_json::Value =
                    client.get(&first).send().await.unwrap().json().await.unwrap();
                let next = body["next"].as_str().expect("a second page").to_owned();
                ours_url = format!("{first}&cursor={next}");
            }
            let ours = fmt(&latency(&client, &ours_url, n).await);
            let theirs = match &influx {
                Some(_) if influxql.is_empty() => "-".into(),
                Some(ix) => fmt(&latency(&client, &query_url(ix, &influxql), n.min(50)).await),
                None => "-".into(),
            };
            results.insert(name, (ours, theirs));
        }
    });

    // Bytes on disk, compacted: procwatch folds the head into chunks, merges and vacuums;
    // InfluxDB gets a few seconds past its cold-compaction durations.
    let total = (solo_p.samples + fleet_p.samples) as f64;
    let _ = stop_tx.send(());
    server_rt.block_on(server).unwrap().unwrap();
    let ours_disk = match &sqlite {
        _ if !queries => "- (PROCWATCH_BENCH_QUERIES=0)".into(),
        Some(s) => {
            let before = s.disk_bytes();
            s.compact_at(now_ms() + 4 * 3_600_000).unwrap();
            s.vacuum().unwrap();
            let after = s.disk_bytes();
            format!(
                "{:.2} B/sample compacted ({:.1} B/sample before compaction)",
                after as f64 / total,
                before as f64 / total
            )
        }
        None => match &cluster {
            Some(c) => clickhouse_disk(c, total),
            None => "- (memory store)".into(),
        },
    };
    let theirs_disk = match &influx {
        Some(_) if !queries => "-".into(),
        Some(ix) => {
            std::thread::sleep(Duration::from_secs(30));
            let is_tsm = |p: &Path| p.extension().is_some_and(|e| e == "tsm");
            let tsm = dir_bytes(&ix.dir().join("data"), &is_tsm);
            let other = dir_bytes(&ix.dir().join("data"), &|p| !is_tsm(p));
            let wal = dir_bytes(&ix.dir().join("wal"), &|_| true);
            format!(
                "{:.2} B/sample in TSM files ({:.2} B/sample with the series file and index: TSM {tsm} B, other {other} B, WAL {wal} B)",
                tsm as f64 / total,
                (tsm + other + wal) as f64 / total
            )
        }
        None => "-".into(),
    };
    results.insert("7 bytes on disk per sample", (ours_disk, theirs_disk));

    println!("\nprocwatch server ({store_kind} store) vs InfluxDB over HTTP, {conns} connections for ingestion");
    println!(
        "{} samples: solo 1 x {nprocs} x 2 h at 10 s, fleet {hosts} x {nprocs} x {sweeps} sweeps at 10 s\n",
        total
    );
    println!("| measure | procwatch | InfluxDB |");
    println!("| --- | --- | --- |");
    for (name, (ours, theirs)) in &results {
        println!("| {} | {ours} | {theirs} |", name.split_once(' ').map_or(*name, |x| x.1));
    }
}

/// Bytes per sample on disk per replica, after merging each shard's parts (`OPTIMIZE ...
/// FINAL`): every sample lives on the two replicas of its shard.
fn clickhouse_disk(c: &procwatch_store_clickhouse::testing::Cluster, total: f64) -> String {
    let optimize = "OPTIMIZE TABLE bench.samples_local ON CLUSTER procwatch FINAL";
    let before: u64 = (0..4).map(|i| c.bytes_on_disk(i, "bench", "samples_local")).sum();
    if let Err(e) = c.sql(0, optimize) {
        eprintln!("optimize: {e}");
    }
    // Replicas fetch the merged part: wait until both replicas of each shard hold the same.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let b: Vec<u64> = (0..4).map(|i| c.bytes_on_disk(i, "bench", "samples_local")).collect();
        if b[0] == b[1] && b[2] == b[3] {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after: u64 = (0..4).map(|i| c.bytes_on_disk(i, "bench", "samples_local")).sum();
    format!(
        "{:.2} B/sample per replica merged ({:.2} B/sample before the merge; x2 replicas)",
        after as f64 / 2.0 / total,
        before as f64 / 2.0 / total
    )
}

fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}
