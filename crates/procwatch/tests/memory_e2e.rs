//! Hardening, round 2 (issue 13, finding 7), with the real binary: decoding is bounded in
//! memory. Sixteen concurrent 16 KB gzip bombs and a refused 16 MiB body are answered 413 /
//! 400, the server's peak RSS (`VmHWM` of its own process, from /proc) grows by a bounded
//! amount, it stays healthy and nothing stored changes.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Proc};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_procwatch");

/// Peak resident memory of `pid` so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb * 1024
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A body of about `bytes` of valid JSON whose last sample has a string `cpu`: refused only
/// after the whole body is parsed, which is where the diagnosis used to build a `Value` tree.
fn refused_body(bytes: usize) -> Vec<u8> {
    let t = now_ms();
    let one = format!(
        r#"{{"ts":{t},"process":"proc-0000000000","cpu":1.5,"cores":0.1,"mem":2.5,"rss":1048576,"count":1}},"#
    );
    let n = bytes / one.len() - 1;
    let mut body = String::with_capacity(bytes + 256);
    body.push_str(r#"{"host":"mem-e2e","agent":"e2e","seq":1,"interval_ms":10000,"samples":["#);
    for _ in 0..n {
        body.push_str(&one);
    }
    body.push_str(&format!(r#"{{"ts":{t},"process":"last","cpu":"x","mem":1}}]}}"#));
    body.into_bytes()
}

#[tokio::test]
async fn gzip_bombs_and_a_refused_16_mib_body_keep_memory_bounded() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::spawn(
        "procwatch server",
        Command::new(BIN)
            .args(["server", "--store", "memory", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("PROCWATCH_CONFIG"),
    );
    let pid = server.child.id();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |body: Vec<u8>, gz: bool| {
        let mut r = client
            .post(format!("{url}/api/v1/samples"))
            .header("content-type", "application/json")
            .body(body);
        if gz {
            r = r.header("content-encoding", "gzip");
        }
        async move {
            let resp = r.send().await.expect("an answer");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let ok = json!({"host": "mem-e2e", "agent": "e2e", "seq": 1, "interval_ms": 10000,
        "host_totals": [], "dropped_samples": 0, "samples": [{"ts": now_ms(), "process": "p",
            "cpu": 1.0, "cores": 0.01, "mem": 1.0, "rss": 1024, "count": 1}]});
    let (status, body) = post(gzip(&serde_json::to_vec(&ok).unwrap()), true).await;
    assert_eq!(status, 200, "{body}");
    let snapshot = || async {
        let r = client.get(format!("{url}/api/v1/usage?window=1h")).send().await.unwrap();
        r.json::<Value>().await.unwrap()["rows"].clone()
    };
    let before = snapshot().await;
    // Warm the paths up (allocator arenas, lazy statics) before the baseline.
    assert_eq!(post(refused_body(64 * 1024), false).await.0, 400);
    let base = peak_rss(pid);

    // 17 KB of gzip that inflates to 17 MiB of zeros (past the 16 MiB limit), sixteen at once.
    let bomb = gzip(&vec![0u8; 17 << 20]);
    assert!(bomb.len() < 32 * 1024, "{} bytes", bomb.len());
    let answers =
        futures_join_all((0..16).map(|_| post(bomb.clone(), true)).collect::<Vec<_>>()).await;
    for (status, body) in &answers {
        assert_eq!(*status, 413, "{body}");
    }
    // A refused body just under the 16 MiB limit, and one over it.
    let (status, body) = post(refused_body((16 << 20) - 4096), false).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"][0]["field"], "cpu", "the diagnosis still names the field");
    let over = refused_body(17 << 20);
    if let Ok(r) = client
        .post(format!("{url}/api/v1/samples"))
        .header("content-type", "application/json")
        .body(over)
        .send()
        .await
    {
        assert_eq!(r.status(), 413);
    }
    let grew = peak_rss(pid).saturating_sub(base);
    println!("peak RSS growth: {} MiB (baseline {} MiB)", grew >> 20, base >> 20);
    assert!(grew < 128 << 20, "peak RSS grew by {} MiB", grew >> 20);
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(snapshot().await, before, "stored data changed");
    drop(server);
}

/// `join_all` without a futures dependency: spawn each on the runtime.
async fn futures_join_all<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
