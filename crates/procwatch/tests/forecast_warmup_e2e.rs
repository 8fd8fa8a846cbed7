//! Issue 15, "AMBER's warm-up is invisible": the server says per series whether its forecast
//! (AMBER) is warmed up and, if not, in how many ms (`GET /api/v1/forecasts`), and
//! `procwatch status` prints "forecasts warming up: N series, first ready in M min".
//!
//! A real server (`--store memory`, evaluating every 200 ms, 127.0.0.1:0) with a `linear`
//! forecaster over a 20 s window; one series gets a single sample (warming up, ready in ≈ 20 s),
//! another gets 28 s of samples stamped in the past (ready at once): no waiting for history.
//!
//! And a hostile interval claim: a batch saying `interval_ms: 1` to a server whose `linear`
//! window is an hour must not make each of its series reserve a window of 3.6 M samples.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::Proc;
use serde_json::{json, Value};

const WRITE: &str = "w-token-warmup";
const READ: &str = "r-token-warmup";
const WINDOW_MS: i64 = 20_000;

fn start_server(dir: &Path) -> (Proc, String) {
    let config = "[alarm_defaults]\nmethod = \"linear\"\nwindow = \"20s\"\nhorizon = \"20s\"\n";
    common::start_memory_server(dir, config, WRITE, READ)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn sample(ts: i64, process: &str) -> Value {
    json!({"ts": ts, "process": process, "cpu": 1.0, "cores": 0.02, "mem": 1.0, "rss": 1000, "count": 1})
}

/// A batch at a 10 s interval: an OK series is forgotten after 3 intervals without a sample,
/// so 10 s leaves 30 s to look at it.
async fn post_batch(client: &reqwest::Client, url: &str, host: &str, samples: Value) {
    let batch = json!({
        "host": host, "agent": "warmup-test", "seq": 1, "interval_ms": 10_000,
        "host_totals": [], "samples": samples, "dropped_samples": 0
    });
    common::post_samples(client, url, WRITE, &batch).await;
}

async fn forecasts(client: &reqwest::Client, url: &str) -> Value {
    let r = client.get(format!("{url}/api/v1/forecasts")).bearer_auth(READ).send().await.unwrap();
    assert!(r.status().is_success(), "/api/v1/forecasts: {}", r.status());
    r.json().await.unwrap()
}

fn rows<'a>(f: &'a Value, host: &str) -> Vec<&'a Value> {
    f["series"].as_array().unwrap().iter().filter(|s| s["host"] == host).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_say_per_series_when_amber_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path());
    let client = reqwest::Client::new();

    // Needs the read token like every other read route.
    let anon = client.get(format!("{url}/api/v1/forecasts")).send().await.unwrap();
    assert_eq!(anon.status(), 401);

    let now = now_ms();
    post_batch(&client, &url, "fresh", json!([sample(now, "newcomer")])).await;
    let past: Vec<Value> =
        [28_000, 18_000, 8_000, 0].iter().map(|ago| sample(now - ago, "old")).collect();
    post_batch(&client, &url, "seasoned", Value::Array(past)).await;

    // Both hosts' series reach the engine (every metric with a rule: cpu, mem, cores).
    let deadline = Instant::now() + Duration::from_secs(60);
    let f = loop {
        let f = forecasts(&client, &url).await;
        if !rows(&f, "fresh").is_empty() && !rows(&f, "seasoned").is_empty() {
            break f;
        }
        assert!(Instant::now() < deadline, "the series never reached /api/v1/forecasts: {f}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let fresh = rows(&f, "fresh");
    for s in &fresh {
        assert_eq!(s["process"], "newcomer");
        assert_eq!(s["ready"], false, "{s}");
        assert_eq!(s["warmup_ms"], WINDOW_MS, "{s}");
        assert_eq!(s["history_ms"], 0, "{s}");
        assert_eq!(s["ready_in_ms"], WINDOW_MS, "one sample: the whole warm-up to go: {s}");
    }
    let seasoned = rows(&f, "seasoned");
    for s in &seasoned {
        assert_eq!(s["ready"], true, "28 s of history over a 20 s window: {s}");
        assert_eq!(s["ready_in_ms"], 0, "{s}");
        assert_eq!(s["history_ms"], 28_000, "{s}");
    }
    assert_eq!(f["warming_up"], fresh.len(), "{f}");
    assert_eq!(f["first_ready_in_ms"], WINDOW_MS, "{f}");

    // The host filter.
    let r = client
        .get(format!("{url}/api/v1/forecasts?host=seasoned"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let only: Value = r.json().await.unwrap();
    assert_eq!(only["warming_up"], 0, "{only}");
    assert!(only["first_ready_in_ms"].is_null(), "{only}");
    assert_eq!(rows(&only, "seasoned").len(), seasoned.len());

    // `procwatch status` says it where a user looks.
    let out = common::procwatch()
        .args(["status", "--server", &url])
        .env("PROCWATCH_READ_TOKEN", READ)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = text
        .lines()
        .find(|l| l.starts_with("forecasts warming up:"))
        .unwrap_or_else(|| panic!("no warm-up line in:\n{text}"));
    assert_eq!(
        line,
        format!(
            "forecasts warming up: {} series, first ready in 1 min (until then only RED fires for them)",
            fresh.len()
        )
    );
}

/// An agent claims a 1 ms interval, sending a batch every 100 ms; the rule's `linear` window
/// is 1 h. The server goes by the claim floored at the shorter of its own interval and 1 s
/// (here 200 ms). Before, it went by the claim itself: the host was "silent" 3 ms after each
/// batch (a RED `host silent`, and its series never reached the engine), and a client that
/// kept it alive would have had each series reserve a window of 3.6 M samples (57.6 MB) up
/// front. Now the series reach the engine, and their windows (18,001 samples at the floor)
/// reserve only what is pushed: reserving 18,001, the 40 with a forecaster (cpu and mem;
/// cores is RED only) held 11.5 MB by the engine's gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_interval_does_not_size_the_forecasters() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[alarm_defaults]\nmethod = \"linear\"\nwindow = \"1h\"\nhorizon = \"10m\"\n";
    let (_server, url) = common::start_memory_server(dir.path(), config, WRITE, READ);
    let client = reqwest::Client::new();
    let sender = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            // The agent's cadence, not a wait: a batch every 100 ms while the test looks.
            let mut cadence = tokio::time::interval(Duration::from_millis(100));
            for seq in 1.. {
                cadence.tick().await;
                let now = now_ms();
                let samples: Vec<Value> = (0..20).map(|i| sample(now, &format!("p{i}"))).collect();
                let batch = json!({"host": "liar", "agent": "hostile", "seq": seq,
                                   "interval_ms": 1, "host_totals": [], "samples": samples});
                common::post_samples(&client, &url, WRITE, &batch).await;
            }
        })
    };

    // Every series (20 processes × cpu, mem, cores) reaches the engine.
    common::wait_until_async("the 60 series in the engine", Duration::from_secs(60), || async {
        (rows(&forecasts(&client, &url).await, "liar").len() == 60).then_some(())
    })
    .await;
    let r = client.get(format!("{url}/metrics")).bearer_auth(READ).send().await.unwrap();
    let text = r.text().await.unwrap();
    sender.abort();
    let bytes: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("procwatch_alarm_engine_bytes "))
        .unwrap_or_else(|| panic!("no procwatch_alarm_engine_bytes in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(bytes < 1_000_000.0, "60 series of a few samples hold {bytes} bytes");
}
