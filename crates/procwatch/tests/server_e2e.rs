//! End-to-end tests of `procwatch server` as a real child process: start on `127.0.0.1:0`
//! with `--addr-file`, talk HTTP, stop with SIGTERM or SIGKILL, restart on the same data dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod common;
use common::{wait_addr_file, wait_exit, KillOnDrop};

/// A running `procwatch server`; killed (SIGKILL, by PID) on drop.
struct Server {
    child: KillOnDrop,
    url: String,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let addr_file = data_dir.with_extension(format!("addr-{}", nanos()));
        let child = common::procwatch()
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn procwatch server");
        let mut server = Server { child: KillOnDrop(child), url: String::new() };
        server.url = wait_addr_file(
            &mut server.child.0,
            &addr_file,
            "procwatch server",
            Duration::from_secs(30),
        );
        let _ = std::fs::remove_file(&addr_file);
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.0.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGKILL and reap.
    fn kill9(self) {
        self.child.kill9();
    }

    /// SIGTERM; the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        wait_exit(&mut self.child.0, "the server, after SIGTERM,", Duration::from_secs(30))
    }
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn batch(host: &str, seq: u64, samples: &[(i64, &str, f64, f64)]) -> Value {
    json!({
        "host": host, "agent": "e2e", "seq": seq, "interval_ms": 10_000,
        "samples": samples.iter().map(|(ts, p, cpu, mem)| json!({
            "ts": ts, "process": p, "cpu": cpu, "cores": cpu / 50.0, "mem": mem, "rss": 1024, "count": 1
        })).collect::<Vec<_>>()
    })
}

async fn post(client: &reqwest::Client, s: &Server, body: &Value) -> (u16, Value) {
    let resp = client.post(s.url("/api/v1/samples")).json(body).send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn get(client: &reqwest::Client, s: &Server, path: &str) -> (u16, Value) {
    let resp = client.get(s.url(path)).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    (dir, data)
}

#[tokio::test]
async fn serves_then_stops_cleanly_on_sigterm() {
    let (_tmp, data) = temp_dir();
    let s = Server::start(&data, &["--store", "memory"]);
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &s, "/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(get(&client, &s, "/readyz").await.0, 200);
    let t = now_ms();
    let (status, body) = post(&client, &s, &batch("e2e-1", 1, &[(t, "java", 30.0, 10.0)])).await;
    assert_eq!(status, 200, "{body}");
    let (_, all) = get(&client, &s, "/ressources-usage/get-all").await;
    assert_eq!(all, json!({"java": [10.0, 30.0]}));
    let status = s.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn tokens_from_flags_and_files() {
    let (tmp, data) = temp_dir();
    let token_file = tmp.path().join("read.token");
    std::fs::write(&token_file, "read-me\n").unwrap();
    let s = Server::start(
        &data,
        &[
            "--store",
            "memory",
            "--write-token",
            "write-me",
            "--read-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let body = batch("tok", 1, &[(now_ms(), "a", 1.0, 1.0)]);
    let denied = client.post(s.url("/api/v1/samples")).json(&body).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let ok = client
        .post(s.url("/api/v1/samples"))
        .bearer_auth("write-me")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let read = client.get(s.url("/api/v1/hosts")).bearer_auth("read-me").send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(client.get(s.url("/api/v1/hosts")).send().await.unwrap().status(), 401);
}

/// A 2xx means durable: the data is still there after SIGKILL and a restart on the same dir.
#[tokio::test]
async fn data_survives_sigkill_and_restart() {
    let (_tmp, data) = temp_dir();
    let client = reqwest::Client::new();
    let t = now_ms() - 30_000;
    let s = Server::start(&data, &[]);
    let samples: Vec<(i64, &str, f64, f64)> = (0..3)
        .flat_map(|i| {
            [
                (t + i * 10_000, "postgres", 10.0 * (i + 1) as f64, 5.0),
                (t + i * 10_000, "nginx", 1.0, 0.5),
            ]
        })
        .collect();
    let (status, body) = post(&client, &s, &batch("durable-1", 1, &samples)).await;
    assert_eq!(status, 200, "{body}");
    s.kill9();

    let s = Server::start(&data, &[]);
    let (_, all) = get(&client, &s, "/ressources-usage/get-all?host=durable-1").await;
    assert_eq!(all, json!({"nginx": [0.5, 1.0], "postgres": [5.0, 20.0]}));
    let (_, hosts) = get(&client, &s, "/api/v1/hosts").await;
    assert_eq!(hosts["hosts"][0]["host"], "durable-1");
    // A retry after the restart is still idempotent.
    assert_eq!(post(&client, &s, &batch("durable-1", 1, &samples)).await.0, 200);
    let (_, usage) = get(&client, &s, "/api/v1/usage?host=durable-1&process=postgres").await;
    assert_eq!(usage["rows"][0]["samples"], 3);
    s.kill9();
}

/// Retention runs at start: restarted with a shorter `--retention`, the server drops what is
/// now too old and keeps the rest.
#[tokio::test]
async fn retention_removes_old_samples_on_restart() {
    let (_tmp, data) = temp_dir();
    let client = reqwest::Client::new();
    let now = now_ms();
    let s = Server::start(&data, &["--retention", "48h"]);
    let samples = [(now - 3 * 3_600_000, "old", 50.0, 50.0), (now - 60_000, "new", 1.0, 1.0)];
    assert_eq!(post(&client, &s, &batch("ret-1", 1, &samples)).await.0, 200);
    let (_, before) = get(&client, &s, "/api/v1/usage?host=ret-1&from=-4h").await;
    assert_eq!(before["rows"].as_array().unwrap().len(), 2);
    assert!(s.terminate().success());

    let s = Server::start(&data, &["--retention", "1h"]);
    let (_, after) = get(&client, &s, "/api/v1/usage?host=ret-1&from=-4h").await;
    let names: Vec<&str> =
        after["rows"].as_array().unwrap().iter().map(|r| r["process"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["new"]);
    // Its raw samples are gone, but its 5-minute roll-up outlives them (`--rollup-retention`,
    // 30 days): a range reaching past the raw retention answers from roll-ups and says so.
    let (status, hist) =
        get(&client, &s, "/api/v1/hosts/ret-1/processes/old/history?from=-4h").await;
    assert_eq!(status, 200, "{hist}");
    assert_eq!(hist["resolution"], "5m", "{hist}");
    let points = hist["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{hist}");
    assert_eq!(
        (points[0]["cpu_min"].as_f64(), points[0]["cpu_max"].as_f64()),
        (Some(50.0), Some(50.0))
    );
    assert!(s.terminate().success());
}

/// An agent started with `--server` shows up in `/api/v1/hosts`, and its processes in
/// `get-all`. How soon is printed, not asserted (it depends on how busy the machine is); the
/// wait gives up after 60 s.
#[tokio::test]
async fn agent_shows_up_in_hosts_and_get_all() {
    let (tmp, data) = temp_dir();
    let s = Server::start(&data, &[]);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut agent = common::procwatch()
        .arg("agent")
        .args(["--server", &s.url, "--interval", "1s", "--host", "e2e-agent", "--spool-dir"])
        .arg(tmp.path().join("spool"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn procwatch agent");
    let deadline = started + Duration::from_secs(60);
    let seen = loop {
        let (_, hosts) = get(&client, &s, "/api/v1/hosts").await;
        let (_, all) = get(&client, &s, "/ressources-usage/get-all?host=e2e-agent").await;
        let host_seen = hosts["hosts"].as_array().unwrap().iter().any(|h| h["host"] == "e2e-agent");
        if host_seen && all.get("procwatch").is_some() {
            break started.elapsed();
        }
        if Instant::now() > deadline || matches!(agent.try_wait(), Ok(Some(_))) {
            let _ = agent.kill();
            let _ = agent.wait();
            panic!("agent not visible after {:?}: hosts {hosts}, get-all {all}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("agent visible after {seen:?}");
    let (_, hosts) = get(&client, &s, "/api/v1/hosts").await;
    let host =
        hosts["hosts"].as_array().unwrap().iter().find(|h| h["host"] == "e2e-agent").unwrap();
    assert_eq!(host["stale"], false);
    assert_eq!(host["interval_ms"], 1000);
    agent.kill().expect("kill agent");
    agent.wait().expect("wait agent");
}
