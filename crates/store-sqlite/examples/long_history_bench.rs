//! Long history from roll-ups (issue 16): a 30-day history query of one process.
//!
//! `cargo run --release -p procwatch-store-sqlite --example long_history_bench [-- --quick]`
//!
//! Loads one host × N processes (300; 50 with `--quick`): 30 days at one sweep per 5 minutes
//! (one sample per roll-up bucket: the table holds what 30 days at any interval give it, one
//! row per series and bucket), then the last 48 h at one sweep per minute (`--raw-interval`
//! to change it), all written as an agent replaying its spool would (older than the memory
//! floor: late rows). One maintenance pass then folds them, computing the roll-ups, and
//! drops raw samples past the 48 h retention. Measured: the load and the fold (roll-up
//! computation included), bytes on disk, and p50/p99 of `history_answer` over 30 days at
//! step 0 (every 5-minute bucket: 8,640 points) and at 1 h, next to the same process' raw
//! history over the last 2 h.

use std::time::{Duration, Instant};

use procwatch_model::clock::Clock;
use procwatch_store::{HistoryQuery, Resolution, Storage};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use support::{sweep, time_ms};

mod support;

const DAY: i64 = 86_400_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let procs = if quick { 50 } else { 300 };
    let raw_every: i64 = args
        .iter()
        .position(|a| a == "--raw-interval")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.trim_end_matches('s').parse::<i64>().ok())
        .map_or(60_000, |s| s * 1000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let now = procwatch_model::clock::SystemClock.now_ms();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path(),
        SqliteOptions { maintenance_interval: Duration::ZERO, ..Default::default() },
    )
    .unwrap();

    let start = Instant::now();
    let mut seq = 0u64;
    let mut samples = 0usize;
    let raw_from = now - 2 * DAY;
    let mut ts = now - 30 * DAY;
    rt.block_on(async {
        while ts < now - 60_000 {
            seq += 1;
            let b = sweep("host-000", procs, ts, seq);
            samples += b.samples.len();
            store.write_batch(&b).await.unwrap();
            ts += if ts < raw_from { 300_000 } else { raw_every };
        }
    });
    let load_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    store.maintain_at(now).unwrap();
    let fold_s = start.elapsed().as_secs_f64();
    store.vacuum().unwrap();
    println!(
        "# long history: 1 host × {procs} processes, 30 d at 5 min + 48 h at {} s ({samples} samples, {seq} batches)",
        raw_every / 1000
    );
    println!(
        "load (late rows): {load_s:.1} s; one maintenance pass (fold + roll-ups + retention): {fold_s:.1} s; on disk after VACUUM: {:.1} MiB",
        store.disk_bytes() as f64 / 1048576.0
    );
    // Where the roll-ups live: packed day blocks (closed buckets) and rows (recent ones).
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0) };
    let blocks = one("SELECT count(*) FROM rollup_blocks");
    let blob_bytes = one("SELECT COALESCE(SUM(length(data)), 0) FROM rollup_blocks");
    let rows = one("SELECT count(*) FROM rollups");
    let buckets = store.stored_rollups().unwrap().len() as i64;
    println!(
        "roll-ups: {buckets} buckets; {blocks} day blocks holding {} of them in {blob_bytes} bytes of blobs ({:.1} bytes/bucket packed); {rows} rows not packed yet",
        buckets - rows,
        blob_bytes as f64 / (buckets - rows).max(1) as f64
    );
    drop(conn);

    let runs = if quick { 50 } else { 200 };
    let q = |from, step_ms| HistoryQuery {
        host: "host-000".into(),
        process: "process-009".into(),
        from,
        to: now,
        step_ms,
    };
    for (step, label) in [(0, "step 0 (5 min buckets)"), (3_600_000, "step 1 h")] {
        let hq = q(now - 30 * DAY, step);
        let a = rt.block_on(store.history_answer(&hq)).unwrap();
        assert_eq!(a.resolution, Resolution::Rollup5m);
        let points = a.points.len();
        let (p50, p99) = time_ms(runs, || {
            let a = rt.block_on(store.history_answer(&hq)).unwrap();
            assert_eq!(a.points.len(), points);
        });
        println!("history of one process over 30 days, {label}, from roll-ups: {points} points, p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    let hq = q(now - 7_200_000, 60_000);
    let (p50, p99) = time_ms(runs, || {
        let a = rt.block_on(store.history_answer(&hq)).unwrap();
        assert_eq!(a.resolution, Resolution::Raw);
    });
    println!("history of one process over 2 h, step 60 s, raw (for comparison): p50 {p50:.2} ms, p99 {p99:.2} ms");
}
