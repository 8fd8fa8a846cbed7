//! Memory of the in-memory recent window under live ingest, at a scale that runs in a couple
//! of minutes: `cargo run --release -p procwatch-store-sqlite --example mem_probe -- [HOSTS] [SWEEPS]`
//! (default 334 hosts × 300 processes ≈ 100k series, 180 sweeps 10 s apart = 30 simulated
//! minutes, so the window reaches its steady state: 15 min + up to 5 min fold step).
//!
//! Hosts write concurrently from tasks on a 2-worker multi-thread runtime (as the server
//! does), and a maintenance pass runs every simulated minute. Prints the process RSS and
//! peak (VmRSS/VmHWM), the samples in the window, the bytes the columns reserve, and the RSS
//! after `malloc_trim(0)` (what the allocator held free but not returned).
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwatch_model::{Batch, Sample, TsMs};
use procwatch_store::Storage;
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

extern "C" {
    fn malloc_trim(pad: usize) -> i32;
}

fn status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn batch(host: usize, procs: usize, ts: TsMs, seq: u64) -> Batch {
    let samples = (0..procs)
        .map(|k| Sample {
            ts,
            process: format!("process-{k:03}"),
            cpu: ((seq as usize * 7 + k) % 100) as f64 * 0.5,
            cores: 0.01 * (k % 7) as f64,
            mem: 0.1 + 0.001 * (k % 13) as f64,
            rss: 4096 * (1000 + k as u64 + seq % 5),
            count: 1,
            extras: None,
        })
        .collect();
    procwatch_store::conformance::batch(&format!("host-{host:04}"), seq, samples)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let hosts = args.first().copied().unwrap_or(334);
    let sweeps = args.get(1).copied().unwrap_or(180) as i64;
    let procs = 300;
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // Simulated time runs from the wall clock on (the store's floor starts 15 min before it).
    let t0 = now;
    let store = Arc::new(
        SqliteStore::open(
            dir.path(),
            SqliteOptions { maintenance_interval: Duration::ZERO, ..Default::default() },
        )
        .unwrap(),
    );
    let rss0 = status("VmRSS:");
    let start = Instant::now();
    for i in 0..sweeps {
        let t = t0 + i * 10_000;
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for w in 0..8 {
                let store = store.clone();
                set.spawn(async move {
                    for h in (w..hosts).step_by(8) {
                        let b = batch(h, procs, t + (h % 40) as i64, i as u64 + 1);
                        store.write_batch(&b).await.unwrap();
                    }
                });
            }
            while set.join_next().await.is_some() {}
        });
        if i % 6 == 5 {
            store.maintain_at(t).unwrap();
        }
        if i % 30 == 29 {
            let (series, samples, bytes) = store.memory_usage();
            println!(
                "sweep {:>4} ({:>3} s): RSS {:>7.1} MiB, window {series} series {samples} samples, columns reserve {:.1} MiB",
                i + 1,
                start.elapsed().as_secs(),
                mib(status("VmRSS:")),
                mib(bytes as u64)
            );
        }
    }
    let (series, samples, bytes) = store.memory_usage();
    let rss = status("VmRSS:");
    let hwm = status("VmHWM:");
    unsafe { malloc_trim(0) };
    let trimmed = status("VmRSS:");
    println!("start RSS {:.1} MiB", mib(rss0));
    println!(
        "end: {series} series, {samples} samples in the window; RSS {:.1} MiB, peak {:.1} MiB, after malloc_trim {:.1} MiB",
        mib(rss),
        mib(hwm),
        mib(trimmed)
    );
    println!(
        "columns reserve {:.1} MiB ({:.1} B/sample); RSS growth per window sample {:.0} B, per series {:.0} B",
        mib(bytes as u64),
        bytes as f64 / samples as f64,
        (rss - rss0) as f64 / samples as f64,
        (rss - rss0) as f64 / series as f64
    );
}
