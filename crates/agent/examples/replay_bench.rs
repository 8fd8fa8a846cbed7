//! Replay benchmark: a spool holding 1 hour of sweeps (360 × 300 processes at 10 s) is replayed
//! to a real `procwatch server` while new sweeps keep being taken every `--interval`; reports
//! the replay rate and how late the sweeps started meanwhile. The same backlog is replayed
//! twice: merged (the agent's default, up to 360 sweeps a request) and one sweep per request
//! (the naive peer). It also times spool appends with and without fsync.
//!
//! ```text
//! cargo build --release -p procwatch
//! cargo run --release -p procwatch-agent --example replay_bench -- target/release/procwatch
//! ```
//! Optional further arguments: `--interval-ms 1000 --sweeps 360 --procs 300 --peer 1` (`--peer
//! 0` skips the one-sweep-per-request replay, which cannot keep up with very short intervals).

#[path = "shared/sweeps.rs"]
mod sweeps;
use sweeps::sweep;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwatch_agent::{Agent, AgentConfig, AgentStats, Spool, SpoolConfig};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(bin: &str, dir: &Path) -> (Server, String) {
    let addr_file = dir.join("addr");
    let child = Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0", "--addr-file"])
        .arg(&addr_file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("PROCWATCH_CONFIG")
        .env("PROCWATCH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn procwatch server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            if !a.trim().is_empty() {
                return (server, format!("http://{}", a.trim()));
            }
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fills a spool with `n` sweeps, 10 s apart, ending now; returns appends per second.
fn fill(dir: &Path, host: &str, n: u64, procs: usize, fsync: bool) -> f64 {
    let cfg = SpoolConfig { fsync, ..SpoolConfig::new(dir) };
    let (mut spool, _) = Spool::open(cfg).expect("spool");
    let start_ts = now_ms() - n as i64 * 10_000;
    let payloads: Vec<(i64, Vec<u8>)> = (0..n)
        .map(|k| {
            let ts = start_ts + k as i64 * 10_000;
            (ts, procwatch_agent::encode_sweep(host, 10_000, &sweep(ts, procs, k)))
        })
        .collect();
    let t = Instant::now();
    for (ts, p) in &payloads {
        spool.append(*ts, procs as u32, p, now_ms()).expect("append");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

struct Outcome {
    secs: f64,
    samples: u64,
    requests: u64,
    lateness_us: Vec<u64>,
    live_sweeps: u64,
    max_append_us: u64,
}

async fn replay(
    server: &str,
    spool_dir: &Path,
    host: &str,
    backlog: u64,
    procs: usize,
    interval: Duration,
    max_batch_records: usize,
) -> Outcome {
    let mut cfg = AgentConfig::new(host, server, spool_dir);
    cfg.interval = interval;
    cfg.max_batch_records = max_batch_records;
    let mut k = 1_000_000u64;
    let sweep_fn = Box::new(move |_: &procwatch_agent::Settings| {
        k += 1;
        Ok(Some(sweep(now_ms(), procs, k)))
    });
    let t = Instant::now();
    let agent = Agent::start(cfg, sweep_fn).expect("agent");
    let stats: Arc<AgentStats> = agent.stats();
    // Done when the backlog and every live sweep taken so far are delivered.
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = stats.sent_records.load(Ordering::Relaxed);
        if sent >= backlog && sent >= backlog + stats.sweeps.load(Ordering::Relaxed) {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let lateness_us = stats.lateness_us();
    let outcome = Outcome {
        secs,
        samples: stats.sent_samples.load(Ordering::Relaxed),
        requests: stats.requests_ok.load(Ordering::Relaxed),
        lateness_us,
        live_sweeps: stats.sweeps.load(Ordering::Relaxed),
        max_append_us: stats.max_append_us.load(Ordering::Relaxed),
    };
    agent.stop().await;
    outcome
}

fn report(name: &str, o: &Outcome) {
    let mut l = o.lateness_us.clone();
    let p50 = percentile(&mut l, 0.5);
    let p99 = percentile(&mut l, 0.99);
    let max = l.iter().copied().max().unwrap_or(0);
    println!(
        "| {name} | {:.2} s | {} | {:.0} | {} | {} | {:.1} / {:.1} / {:.1} ms | {:.1} ms |",
        o.secs,
        o.requests,
        o.samples as f64 / o.secs,
        o.live_sweeps,
        l.len(),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        max as f64 / 1000.0,
        o.max_append_us as f64 / 1000.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().expect("usage: replay_bench PATH/TO/procwatch [--interval-ms N]");
    let mut interval_ms = 1000u64;
    let mut backlog = 360u64;
    let mut procs = 300usize;
    let mut peer = true;
    while let Some(a) = args.next() {
        let v: u64 = args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--interval-ms" => interval_ms = v,
            "--sweeps" => backlog = v,
            "--procs" => procs = v as usize,
            "--peer" => peer = v != 0,
            other => panic!("unknown argument {other}"),
        }
    }
    let interval = Duration::from_millis(interval_ms);
    let tmp = tempfile::tempdir().expect("tempdir");

    println!("Spool appends ({procs} processes a sweep, {backlog} sweeps):");
    let nosync = fill(&tmp.path().join("nosync"), "bench-nosync", backlog, procs, false);
    let sync = fill(&tmp.path().join("sync"), "bench-sync", backlog, procs, true);
    println!("  without fsync: {nosync:.0} appends/s ({:.3} ms each)", 1000.0 / nosync);
    println!("  with fdatasync: {sync:.0} appends/s ({:.3} ms each)", 1000.0 / sync);
    let _ = std::fs::remove_dir_all(tmp.path().join("nosync"));

    let (_server, url) = start_server(&bin, tmp.path());
    println!(
        "\nReplay of {backlog} sweeps × {procs} processes ({:.0} h at 10 s) to procwatch server \
         (SQLite), live sweeps every {interval_ms} ms meanwhile:\n",
        backlog as f64 / 360.0
    );
    println!(
        "| replay | time | requests | samples/s | live sweeps | sweep starts | lateness p50 / p99 / max | slowest append |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let merged =
        replay(&url, &tmp.path().join("sync"), "bench-sync", backlog, procs, interval, 360).await;
    report("merged (default: ≤360 sweeps, 4 MiB a request)", &merged);
    if !peer {
        return;
    }
    fill(&tmp.path().join("single"), "bench-single", backlog, procs, true);
    let single =
        replay(&url, &tmp.path().join("single"), "bench-single", backlog, procs, interval, 1).await;
    report("one sweep per request (peer)", &single);
}
