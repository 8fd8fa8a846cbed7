//! Reads below the memory floor in a store at its steady state (issue 16).
//!
//! `cargo run --release -p procwatch-store-sqlite --example steady_reads_bench [-- --hosts N --hours H]`
//!
//! A store that has run for a while holds, for each series, one level-1 chunk per closed 2 h
//! block of the 48 h retention and one level-0 chunk per fold (a minute, the server's
//! default) of the open block: up to ≈ 144 chunk rows a series. A store loaded for a
//! benchmark a few minutes before holds two or three. This loads `N` hosts × 300 processes
//! (default 2) over `H` hours (default 50: past the retention, so that retention runs too) the
//! way a server sees them: one sweep every 10 s on a manual clock, a maintenance pass every
//! minute, the server's 5-minute memory window and 1-minute fold step. It then times the
//! fleet reads the dashboard makes over windows longer than the memory (10 min, 1 h), per
//! series, and one process' raw history over 10 min; `--hours 0.25` gives the freshly loaded
//! store to compare with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procwatch_model::clock::ManualClock;
use procwatch_model::TsMs;
use procwatch_store::{HistoryQuery, Storage, UsageNeeds, UsageQuery};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use support::{sweep, time_ms};

mod support;

const PROCS: usize = 300;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hosts: usize = arg(&args, "--hosts", 2);
    let hours: f64 = arg(&args, "--hours", 50.0);
    let runs: usize = arg(&args, "--runs", 30);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A fixed, block-aligned origin: the same layout on every run.
    let t0: TsMs = 1_780_000_000_000 - 1_780_000_000_000 % 7_200_000;
    let clock = Arc::new(ManualClock::new(t0));
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path(),
        SqliteOptions {
            maintenance_interval: Duration::ZERO,
            memory_window_ms: 5 * 60_000,
            fold_step_ms: 60_000,
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .unwrap();

    let sweeps = (hours * 360.0) as u64;
    let start = Instant::now();
    let mut maint = Duration::ZERO;
    // Maintenance time per simulated hour: flat once the retention is full, or growing?
    let mut per_hour: Vec<Duration> = Vec::new();
    let mut ts = t0;
    rt.block_on(async {
        for seq in 1..=sweeps {
            ts = t0 + seq as i64 * 10_000;
            clock.set_ms(ts);
            for h in 0..hosts {
                store
                    .write_batch(&sweep(&format!("host-{h:04}"), PROCS, ts + h as i64, seq))
                    .await
                    .unwrap();
            }
            if seq % 6 == 0 {
                let m = Instant::now();
                store.maintain_at(ts).unwrap();
                maint += m.elapsed();
                let hour = (seq / 360) as usize;
                if per_hour.len() <= hour {
                    per_hour.resize(hour + 1, Duration::ZERO);
                }
                per_hour[hour] += m.elapsed();
            }
        }
    });
    let now = ts + 5_000;
    clock.set_ms(now);
    let series = hosts * PROCS;
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0) };
    let (chunks, l1) =
        (one("SELECT count(*) FROM chunks"), one("SELECT count(*) FROM chunks WHERE level = 1"));
    drop(conn);
    println!(
        "# steady reads: {hosts} hosts × {PROCS} processes over {hours} h ({} samples): load {:.0} s, of which maintenance {:.0} s",
        sweeps as usize * series,
        start.elapsed().as_secs_f64(),
        maint.as_secs_f64()
    );
    println!(
        "chunk rows: {chunks} ({:.1} a series, {:.1} of them level 1)",
        chunks as f64 / series as f64,
        l1 as f64 / series as f64
    );
    let full: Vec<String> = per_hour
        .iter()
        .take((hours as usize).saturating_sub(1))
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0 / 60.0))
        .collect();
    println!("maintenance ms a pass, each full hour in turn: {}", full.join(" "));
    for (label, window) in [("10 min", 600_000), ("1 h", 3_600_000)] {
        let q =
            UsageQuery { from: now - window, to: now, host: None, process: None, per_host: true };
        let rows = rt.block_on(store.usage_of(&q, UsageNeeds::ALL)).unwrap();
        assert_eq!(rows.len(), series);
        let (p50, p99) = time_ms(runs, || {
            rt.block_on(store.usage_of(&q, UsageNeeds::ALL)).unwrap();
        });
        println!(
            "usage of every series, {label}: p50 {p50:.2} ms, p99 {p99:.2} ms, {:.2} µs a series (p50)",
            p50 * 1000.0 / series as f64
        );
    }
    let hq = HistoryQuery {
        host: "host-0000".into(),
        process: "process-009".into(),
        from: now - 600_000,
        to: now,
        step_ms: 0,
    };
    let (p50, p99) = time_ms(runs * 10, || {
        rt.block_on(store.history(&hq)).unwrap();
    });
    println!("raw history of one process, 10 min: p50 {p50:.3} ms, p99 {p99:.3} ms");
}
