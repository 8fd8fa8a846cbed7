//! Store-level benchmark of the embedded SQLite store (no HTTP).
//!
//! `cargo run --release -p procwatch-store-sqlite --example store_bench [-- --quick]`
//!
//! Measures, on data shaped like the agent's (integer CPU ticks over a jittered 10 s interval
//! on a 2-CPU host, RSS in pages, most processes idle):
//! - ingest: samples/s of durable `write_batch` calls (each one a committed transaction), for
//!   300- and 5,000-sample batches, with and without parsing the batch from JSON; against
//!   the same samples inserted as rows keyed (ts, series) in one WAL table (the peer);
//! - `get-all` (1 host × 300 processes, 2 h of history, last 5 min), the fleet query
//!   (100 hosts × 300 processes, 10 min), history of one process over 2 h: p50/p99;
//! - bytes on disk per sample once compacted and vacuumed, for agent-like and for random values.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwatch_model::{Batch, Sample, TsMs};
use procwatch_store::conformance::batch;
use procwatch_store::{HistoryQuery, Storage, UsageQuery};
use procwatch_store_influx::testing::{Influxd, Tuning};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use support::time_ms;

mod support;

fn now_ms() -> TsMs {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One host's processes, evolving like the agent would report them.
struct Host {
    name: String,
    rng: Rng,
    rss: Vec<u64>,
    count: Vec<u32>,
    last_ts: TsMs,
    random: bool,
}

const MEM_TOTAL: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0;

impl Host {
    fn new(i: usize, procs: usize, t0: TsMs, random: bool) -> Host {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) * 0x1234_5678_9abc));
        let rss = (0..procs).map(|_| (1 + rng.below(50_000)) * 4096).collect();
        let count =
            (0..procs).map(|k| if k % 10 == 0 { 1 + rng.below(8) as u32 } else { 1 }).collect();
        Host { name: format!("host-{i:03}"), rng, rss, count, last_ts: t0, random }
    }

    /// The sweep at nominal time `t` (10 s apart): one sample per process.
    fn sweep(&mut self, t: TsMs, seq: u64) -> Batch {
        let ts = t + self.rng.below(40) as i64; // sweep start jitter
        let dt = (ts - self.last_ts).max(1) as f64 / 1000.0;
        self.last_ts = ts;
        let n = self.rss.len();
        let mut samples = Vec::with_capacity(n);
        for k in 0..n {
            let class = k % 10; // 0..5 idle, 6..8 light, 9 busy
            let (ticks, p_rss) = match class {
                0..=5 => (u64::from(self.rng.below(20) == 0), 0.03),
                6..=8 => (self.rng.below(30), 0.3),
                _ => (100 + self.rng.below(100), 0.8),
            };
            if self.rng.f64() < p_rss {
                let d = self.rng.below(64) as i64 - 24;
                self.rss[k] = (self.rss[k] as i64 + d * 4096).max(4096) as u64;
            }
            let (cpu, cores, mem, rss) = if self.random {
                let r = self.rng.next();
                (self.rng.f64() * 100.0, self.rng.f64() * 2.0, self.rng.f64() * 100.0, r >> 20)
            } else {
                let cores = ticks as f64 / (dt * 100.0);
                (100.0 * cores / 2.0, cores, 100.0 * self.rss[k] as f64 / MEM_TOTAL, self.rss[k])
            };
            samples.push(Sample {
                ts,
                process: format!("process-{k:03}"),
                cpu: cpu.min(100.0),
                cores,
                mem,
                rss,
                count: self.count[k],
                extras: None,
            });
        }
        batch(&self.name, seq, samples)
    }
}

fn opts() -> SqliteOptions {
    SqliteOptions { maintenance_interval: Duration::ZERO, ..Default::default() }
}

/// Ingest `batches` (already built) into a fresh store; (samples/s, CPU µs per sample).
fn ingest(rt: &tokio::runtime::Runtime, batches: &[Batch], json: bool) -> (f64, f64) {
    ingest_with(rt, batches, json, opts())
}

fn ingest_with(
    rt: &tokio::runtime::Runtime,
    batches: &[Batch],
    json: bool,
    o: SqliteOptions,
) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), o).unwrap();
    let bodies: Vec<Vec<u8>> = if json {
        batches.iter().map(|b| serde_json::to_vec(b).unwrap()).collect()
    } else {
        vec![]
    };
    let n: usize = batches.iter().map(|b| b.samples.len()).sum();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    rt.block_on(async {
        for (i, b) in batches.iter().enumerate() {
            if json {
                let parsed: Batch = serde_json::from_slice(&bodies[i]).unwrap();
                store.write_batch(&parsed).await.unwrap();
            } else {
                store.write_batch(b).await.unwrap();
            }
        }
    });
    (n as f64 / start.elapsed().as_secs_f64(), (cpu_seconds() - cpu0) * 1e6 / n as f64)
}

/// The peer: the same samples as rows keyed (ts, series) in one WAL table.
fn ingest_rows_peer(batches: &[Batch], json: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("rows.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE series(id INTEGER PRIMARY KEY, host TEXT, process TEXT, UNIQUE(host, process));
         CREATE TABLE samples(ts INTEGER, series INTEGER, cpu REAL, cores REAL, mem REAL, rss INTEGER,
           count INTEGER, PRIMARY KEY(ts, series)) WITHOUT ROWID;",
    )
    .unwrap();
    let bodies: Vec<Vec<u8>> = if json {
        batches.iter().map(|b| serde_json::to_vec(b).unwrap()).collect()
    } else {
        vec![]
    };
    let mut ids: std::collections::HashMap<(String, String), i64> = Default::default();
    let n: usize = batches.iter().map(|b| b.samples.len()).sum();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    for (i, b) in batches.iter().enumerate() {
        let parsed;
        let b = if json {
            parsed = serde_json::from_slice::<Batch>(&bodies[i]).unwrap();
            &parsed
        } else {
            b
        };
        let tx = conn.transaction().unwrap();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO samples VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for s in &b.samples {
                let key = (b.host.clone(), s.process.clone());
                let next = ids.len() as i64 + 1;
                let id = *ids.entry(key).or_insert_with(|| {
                    tx.execute(
                        "INSERT INTO series(id, host, process) VALUES (?1, ?2, ?3)",
                        rusqlite::params![next, b.host, s.process],
                    )
                    .unwrap();
                    next
                });
                ins.execute(rusqlite::params![
                    s.ts,
                    id,
                    s.cpu,
                    s.cores,
                    s.mem,
                    s.rss as i64,
                    s.count
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    (n as f64 / start.elapsed().as_secs_f64(), (cpu_seconds() - cpu0) * 1e6 / n as f64)
}

/// Writes `sweeps` sweeps of `hosts` hosts ending now, through the head (a long memory
/// window), then reopens with the default options: the reopen folds what is older than 15
/// min into chunks as the live store would have, and complete blocks are merged.
fn load(
    dir: &std::path::Path,
    hosts: usize,
    procs: usize,
    sweeps: i64,
    random: bool,
) -> (SqliteStore, usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = now_ms();
    let t0 = now - sweeps * 10_000;
    let mut hs: Vec<Host> = (0..hosts).map(|i| Host::new(i, procs, t0 - 10_000, random)).collect();
    let store = SqliteStore::open(
        dir,
        SqliteOptions { memory_window_ms: sweeps * 10_000 + 3_600_000, ..opts() },
    )
    .unwrap();
    let mut n = 0;
    rt.block_on(async {
        for i in 0..sweeps {
            for h in hs.iter_mut() {
                let b = h.sweep(t0 + i * 10_000, i as u64 + 1);
                n += b.samples.len();
                store.write_batch(&b).await.unwrap();
            }
        }
    });
    drop(store);
    let store = SqliteStore::open(dir, opts()).unwrap();
    store.compact_at(now).unwrap();
    (store, n)
}

/// Prints what the roll-ups take in the database: packed day blocks and rows.
fn rollup_bytes(store: &SqliteStore) {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0) };
    let blocks = one("SELECT count(*) FROM rollup_blocks");
    let blob = one("SELECT COALESCE(SUM(length(data)), 0) FROM rollup_blocks");
    let rows = one("SELECT count(*) FROM rollups");
    let pages = |t: &str| {
        one(&format!("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE '{t}%'"))
    };
    let buckets = store.stored_rollups().unwrap().len() as i64;
    println!(
        "  roll-ups: {buckets} buckets, {} packed in {blocks} day blocks ({blob} bytes of blobs, {:.1} bytes/bucket; table pages {} bytes), {rows} rows (table pages {} bytes)",
        buckets - rows,
        blob as f64 / (buckets - rows).max(1) as f64,
        pages("rollup_blocks"),
        pages("rollups"),
    );
}

/// Bytes allocated on disk under `p` (InfluxDB preallocates sparse index files, so their
/// length would overstate it).
fn dir_bytes(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
        })
        .sum()
}

/// The peer: the same 1 host × 300 processes × 2 h of agent-like samples written through
/// `procwatch-store-influx` (measurement with host/process tags and the same five fields)
/// into a real influxd (Debian's 1.6), configured to snapshot and fully compact after 1 s of
/// write silence; bytes of its `data` directory (TSM files) once compaction settles.
fn influx_bytes_per_sample(rt: &tokio::runtime::Runtime) {
    let tuning = Tuning {
        data:
            "cache-snapshot-write-cold-duration = \"1s\"\ncompact-full-write-cold-duration = \"1s\"",
        http: "",
    };
    let Some(influxd) = Influxd::start_tuned_or_skip("store_bench influxdb peer", tuning) else {
        return;
    };
    let url = influxd.url();
    let n = rt.block_on(async {
        let store = procwatch_store_influx::InfluxStore::connect(
            procwatch_store_influx::InfluxConfig::new(&url, "bench"),
        )
        .await
        .unwrap();
        let now = now_ms();
        let t0 = now - 720 * 10_000;
        let mut h = Host::new(0, 300, t0 - 10_000, false);
        let mut n = 0;
        for i in 0..720 {
            let b = h.sweep(t0 + i * 10_000, i as u64 + 1);
            n += b.samples.len();
            store.write_batch(&b).await.unwrap();
        }
        n
    });
    // Wait for the snapshot and the full compaction: data stable, WAL empty.
    let data = influxd.dir().join("data");
    let wal = influxd.dir().join("wal");
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let size = dir_bytes(&data);
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) && dir_bytes(&wal) < 1_000_000 {
            break;
        }
        if Instant::now() > deadline {
            println!("influxdb peer: compaction did not settle in 120 s");
            break;
        }
    }
    let bytes = dir_bytes(&data);
    println!(
        "influxdb peer (same samples and fields, after snapshot + full compaction): {:.2} bytes/sample ({} samples, {} bytes allocated in data/; WAL {} bytes)",
        bytes as f64 / n as f64,
        n,
        bytes,
        dir_bytes(&wal)
    );
    if std::env::var_os("BENCH_LIST").is_some() {
        let out = std::process::Command::new("find")
            .arg(&data)
            .arg("-type")
            .arg("f")
            .arg("-size")
            .arg("+1k")
            .arg("-ls")
            .output()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rt = &rt;
    println!(
        "# procwatch embedded store benchmark ({} CPUs)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    if std::env::args().any(|a| a == "--influx-only") {
        influx_bytes_per_sample(rt);
        return;
    }

    if !std::env::args().any(|a| a == "--fleet-only") {
        single_host(rt, quick);
    }
    if !std::env::args().any(|a| a == "--ingest-only") {
        fleet(rt, quick);
    }
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn single_host(rt: &tokio::runtime::Runtime, quick: bool) {
    // --- Ingest.
    let now = now_ms();
    let total = if quick { 120_000 } else { 1_200_000 };
    for (procs, label) in [(300usize, "300-sample batches"), (5000, "5,000-sample batches")] {
        let sweeps = 40;
        let hosts = (total / procs / sweeps).max(1);
        let mut hs: Vec<Host> =
            (0..hosts).map(|i| Host::new(i, procs, now - 420_000, false)).collect();
        let mut batches = Vec::new();
        for i in 0..sweeps as i64 {
            for h in hs.iter_mut() {
                batches.push(h.sweep(now - 400_000 + i * 10_000, i as u64 + 1));
            }
        }
        let store = ingest(rt, &batches, false);
        let store_json = ingest(rt, &batches, true);
        let peer_json = ingest_rows_peer(&batches, true);
        println!(
            "ingest {label}: {:.0} samples/s, {:.2} µs CPU/sample (store only); {:.0} samples/s, {:.2} µs CPU/sample (JSON parse + store); peer rows keyed (ts, series): {:.0} samples/s, {:.2} µs CPU/sample (JSON parse + insert)",
            store.0, store.1, store_json.0, store_json.1, peer_json.0, peer_json.1
        );
        if procs == 300 {
            // Power-loss durability: an fsync of the WAL per batch (first 500 batches).
            let some = &batches[..batches.len().min(500)];
            let full = ingest_with(
                rt,
                some,
                false,
                SqliteOptions { durability: procwatch_store_sqlite::Durability::Power, ..opts() },
            );
            println!(
                "ingest {label} with Durability::Power (synchronous=FULL): {:.0} samples/s, {:.2} µs CPU/sample",
                full.0, full.1
            );
        }
    }

    // Sustained: current timestamps, a 60 s memory window, the maintenance thread folding the
    // head every 10 s while the writer runs for 30 s (15 s with --quick).
    {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            SqliteOptions {
                memory_window_ms: 60_000,
                fold_step_ms: 10_000,
                maintenance_interval: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .unwrap();
        let secs = if quick { 15 } else { 30 };
        // Ten sweeps per host built beforehand, replayed with fresh timestamps.
        let t0 = now_ms();
        let mut pool: Vec<Vec<Batch>> = (0..100)
            .map(|i| {
                let mut h = Host::new(i, 300, t0 - 10_000, false);
                (0..10).map(|k| h.sweep(t0 + k * 10_000, 0)).collect()
            })
            .collect();
        let start = Instant::now();
        let cpu0 = cpu_seconds();
        let mut n = 0usize;
        let mut seq = 0u64;
        rt.block_on(async {
            while start.elapsed() < Duration::from_secs(secs) {
                seq += 1;
                let t = now_ms();
                for sweeps in pool.iter_mut() {
                    let b = &mut sweeps[seq as usize % 10];
                    b.seq = seq;
                    b.samples.iter_mut().for_each(|x| x.ts = t);
                    n += b.samples.len();
                    store.write_batch(b).await.unwrap();
                }
            }
        });
        let el = start.elapsed().as_secs_f64();
        println!(
            "ingest sustained {secs} s with background folds (300-sample batches, 100 hosts): {:.0} samples/s, {:.2} µs CPU/sample (incl. the maintenance thread); head folded to floor {} s behind",
            n as f64 / el,
            (cpu_seconds() - cpu0) * 1e6 / n as f64,
            (now_ms() - store.memory_floor()) / 1000
        );
    }

    if std::env::args().any(|a| a == "--ingest-only") {
        return;
    }

    // --- get-all and history on 1 host × 300 processes × 2 h.
    let dir = tempfile::tempdir().unwrap();
    let (store, n) = load(dir.path(), 1, 300, 720, false);
    let store = Arc::new(store);
    let now = now_ms();
    let runs = if quick { 50 } else { 300 };
    let q = UsageQuery {
        from: now - 300_000,
        to: now + 1,
        host: Some("host-000".into()),
        process: None,
        per_host: false,
    };
    let (p50, p99) = time_ms(runs, || {
        let r = rt.block_on(store.usage(&q)).unwrap();
        assert_eq!(r.len(), 300);
    });
    println!("get-all (1 host × 300 processes, 2 h stored, last 5 min): p50 {p50:.3} ms, p99 {p99:.3} ms");
    for (step, label) in [(60_000, "step 60 s"), (0, "raw")] {
        let hq = HistoryQuery {
            host: "host-000".into(),
            process: "process-007".into(),
            from: now - 7_200_000,
            to: now + 1,
            step_ms: step,
        };
        let (p50, p99) = time_ms(runs, || {
            let r = rt.block_on(store.history(&hq)).unwrap();
            assert!(r.len() >= 100);
        });
        println!("history of one process over 2 h ({label}): p50 {p50:.3} ms, p99 {p99:.3} ms");
    }
    // Bytes per sample once compacted.
    store.compact_at(now + 86_400_000).unwrap();
    store.vacuum().unwrap();
    println!(
        "on disk, agent-like values: {:.2} bytes/sample ({} samples, {} bytes after compaction + VACUUM; {} bytes allocated)",
        store.disk_bytes() as f64 / n as f64,
        n,
        store.disk_bytes(),
        dir_bytes(dir.path())
    );
    rollup_bytes(&store);
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let (store, n) = load(dir.path(), 1, 300, 720, true);
    store.compact_at(now + 86_400_000).unwrap();
    store.vacuum().unwrap();
    println!(
        "on disk, random values (worst case): {:.2} bytes/sample ({} samples)",
        store.disk_bytes() as f64 / n as f64,
        n
    );
    drop(store);
    if !std::env::args().any(|a| a == "--no-influx") {
        influx_bytes_per_sample(rt);
    }

    // An agent replaying an hour of spool at once: every sample is older than the memory
    // floor, so it goes straight into level-0 chunks (one per series and batch) until the
    // 2 h block is complete and merged.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    let now = now_ms();
    let t0 = now - 75 * 60_000;
    let mut h = Host::new(7, 300, t0 - 10_000, false);
    let batches: Vec<Batch> = (0..360).map(|i| h.sweep(t0 + i * 10_000, i as u64 + 1)).collect();
    let start = Instant::now();
    rt.block_on(async {
        for b in &batches {
            store.write_batch(b).await.unwrap();
        }
    });
    let rate = 108_000.0 / start.elapsed().as_secs_f64();
    let hq = HistoryQuery {
        host: "host-007".into(),
        process: "process-007".into(),
        from: t0,
        to: now,
        step_ms: 60_000,
    };
    let runs = if quick { 20 } else { 100 };
    let (before, _) = time_ms(runs, || {
        rt.block_on(store.history(&hq)).unwrap();
    });
    // What the maintenance thread does as soon as 64 late rows are waiting.
    store.compact_at(now_ms()).unwrap();
    let (after, _) = time_ms(runs, || {
        rt.block_on(store.history(&hq)).unwrap();
    });
    store.vacuum().unwrap();
    println!(
        "spool replay of 1 h (360 batches × 300, all older than the memory floor): {rate:.0} samples/s; history of that hour p50 {before:.2} ms before the late rows are folded, {after:.2} ms after; {:.1} bytes/sample after the fold (before the 2 h block merge)",
        store.disk_bytes() as f64 / 108_000.0
    );
}

fn fleet(rt: &tokio::runtime::Runtime, quick: bool) {
    // --- Fleet: 100 hosts × 300 processes × 10 min.
    let hosts = if quick { 20 } else { 100 };
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = load(dir.path(), hosts, 300, 60, false);
    drop(store);
    let t = Instant::now();
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    println!(
        "reopen + rebuild of the recent window ({hosts} hosts × 300 × 10 min): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!("process RSS after the reopen (this window in memory; run with --fleet-only for a clean figure): {} MiB", rss_kb / 1024);
    let now = now_ms();
    let runs = if quick { 10 } else { 50 };
    for (per_host, label) in [(true, "per host and process"), (false, "per process, hosts merged")]
    {
        let q =
            UsageQuery { from: now - 600_000, to: now + 1, host: None, process: None, per_host };
        let cpu0 = cpu_seconds();
        let (p50, p99) = time_ms(runs, || {
            let r = rt.block_on(store.usage(&q)).unwrap();
            assert!(r.len() >= 300);
        });
        let cpu = (cpu_seconds() - cpu0) * 1000.0 / (runs + 1) as f64;
        println!("fleet usage ({hosts} hosts × 300 processes, 10 min, {label}): p50 {p50:.2} ms, p99 {p99:.2} ms, CPU {cpu:.1} ms/query (both threads)");
    }
}
