//! Memory plateau (issue 16), with the real binary: under a time-compressed fleet
//! (`loadgen --time-warp`, the server on the same warped clock), the server's memory stops
//! growing once its head window is full. 20 hosts × 50 processes every 10 s of virtual time,
//! 40 virtual minutes in about 40 s: more than 3 times the head window (5 min query window +
//! 1 min fold step + a 1 min maintenance period, 7 min). The store's and the alarm engine's
//! estimated bytes (`/metrics`) and the server's RSS, at their highest over minutes 16–28
//! (the head full, its first fold done), are compared with their highest over minutes 28–40:
//! bounded growth, whatever the machine's speed. The bound is 15 %: a buffer may grow once by
//! an eighth past its expected size when maintenance runs late (`store-sqlite` `index.rs`);
//! without eviction the window grows by about half between the two spans.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_procwatch");
const SPEED: f64 = 60.0;
/// Virtual minutes of the run, and the bounds (virtual minutes) of the two spans compared.
const RUN_MIN: f64 = 40.0;
const SPAN_A: (f64, f64) = (16.0, 28.0);
const SPAN_B: (f64, f64) = (28.0, 40.0);

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(kb * 1024)
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// One reading: virtual minutes since the start, store window bytes, engine bytes, RSS.
#[derive(Debug, Clone, Copy)]
struct Reading {
    minute: f64,
    window: f64,
    engine: f64,
    rss: f64,
    dormant: f64,
}

fn max_in(readings: &[Reading], span: (f64, f64), f: impl Fn(&Reading) -> f64) -> f64 {
    readings.iter().filter(|r| r.minute >= span.0 && r.minute < span.1).map(f).fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_memory_plateaus_over_a_time_compressed_run() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let origin = wall_ms();
    let warp = format!("{SPEED}@{origin}");
    let mut server = Proc::spawn(
        "procwatch server",
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--ingest-rate", "0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("PROCWATCH_TIME_WARP", &warp)
            .env_remove("PROCWATCH_CONFIG"),
    );
    let url = server.wait_for_addr(&addr_file, Duration::from_secs(60));
    let pid = server.child.id();
    let start = Instant::now();
    let _loadgen = Proc::spawn(
        "procwatch loadgen",
        Command::new(BIN)
            .args(["loadgen", "--agents", "20", "--processes", "50", "--interval", "10s"])
            .args(["--duration", &format!("{}m", RUN_MIN as u64), "--server", &url])
            .env("PROCWATCH_TIME_WARP", &warp)
            .env_remove("PROCWATCH_CONFIG"),
    );
    let client = reqwest::Client::new();
    let minute_now = || (wall_ms() - origin) as f64 * SPEED / 60_000.0;
    let mut readings = Vec::new();
    let mut maintenance = 0.0f64;
    // Polls until the virtual clock passes the run's end (a deadline in real time too).
    while minute_now() < RUN_MIN {
        assert!(start.elapsed() < Duration::from_secs(120), "the run took too long");
        server.assert_running();
        let minute = minute_now();
        if let Ok(resp) = client.get(format!("{url}/metrics")).send().await {
            let text = resp.text().await.unwrap_or_default();
            let took = gauge(&text, "procwatch_store_maintenance_seconds").unwrap_or(0.0);
            maintenance = maintenance.max(took);
            if let (Some(window), Some(engine), Some(rss), Some(dormant)) = (
                gauge(&text, "procwatch_store_window_bytes"),
                gauge(&text, "procwatch_alarm_engine_bytes"),
                rss_bytes(pid),
                gauge(&text, "procwatch_alarm_dormant_series"),
            ) {
                readings.push(Reading { minute, window, engine, rss: rss as f64, dormant });
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (wa, wb) =
        (max_in(&readings, SPAN_A, |r| r.window), max_in(&readings, SPAN_B, |r| r.window));
    let (ea, eb) =
        (max_in(&readings, SPAN_A, |r| r.engine), max_in(&readings, SPAN_B, |r| r.engine));
    let (ra, rb) = (max_in(&readings, SPAN_A, |r| r.rss), max_in(&readings, SPAN_B, |r| r.rss));
    let mib = |b: f64| b / (1 << 20) as f64;
    println!(
        "{} readings; highest window {:.1} → {:.1} MiB, engine {:.1} → {:.1} MiB, RSS {:.0} → {:.0} MiB",
        readings.len(),
        mib(wa),
        mib(wb),
        mib(ea),
        mib(eb),
        mib(ra),
        mib(rb)
    );
    // loadgen's figures (cpu under 10 %, mem under 2 %) are too low for any forecast to
    // cross: once the fleet is followed, every cpu and mem series keeps no forecaster.
    let dormant = readings.iter().map(|r| r.dormant).fold(0.0, f64::max);
    assert!(dormant >= 2.0 * 20.0 * 50.0, "dormant series: {dormant}\n{readings:?}");
    // The store's maintenance passes (every 60 s virtual) ran and were timed.
    assert!(maintenance > 0.0, "no maintenance pass reported");
    // The head must have held something (the fleet really was sending): every one of the
    // 1,000 series a ring of at least 200 bytes (a packed ring of the window's capacity is
    // ≈ 480 bytes at loadgen's values).
    assert!(wa > 20.0 * 50.0 * 200.0 && ea > 0.0, "{readings:?}");
    // A packed ring's size follows its values' ranges and its timestamps' regularity: at 60×
    // a stall of 100 ms real is 6 s of virtual jitter, ≈ 10 more bits a sample for every
    // series at once (seen: +12 % in one pass under CI). A leak of a window per window is
    // +100 %.
    assert!(wb <= 1.4 * wa, "store window grew: {wa} → {wb} bytes\n{readings:?}");
    assert!(eb <= 1.15 * ea, "alarm engine grew: {ea} → {eb} bytes\n{readings:?}");
    // RSS: the allocator keeps some slack; a leak of a window per window is far above this.
    assert!(rb <= 1.25 * ra + (16 << 20) as f64, "RSS grew: {ra} → {rb} bytes\n{readings:?}");
}
