//! `procwatch server --store clickhouse` end to end: the real binary, two servers on a real
//! 2-shard x 2-replica ClickHouse cluster with ZooKeeper (started by the test on loopback
//! ports in a temp dir; `SKIPPED` when clickhouse-server or zookeeperd is not installed and
//! `CI` is unset):
//! - a batch written through one server is answered by the other on the seed routes, the v1
//!   API and the dashboard;
//! - ZooKeeper killed: ingestion answers 503 with a JSON error (never a 2xx), reads still
//!   answer; after ZooKeeper returns ingestion answers 200 again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procwatch_store_clickhouse::testing::{Cluster, CLUSTER};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A running `procwatch server --store clickhouse`; SIGKILLed (by PID) on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(ch_url: &str, db: &str, dir: &Path, name: &str) -> Server {
        let addr_file = dir.join(format!("{name}.addr"));
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_procwatch"))
            .args(["server", "--listen", "127.0.0.1:0", "--store", "clickhouse"])
            .args(["--clickhouse-url", ch_url, "--clickhouse-cluster", CLUSTER])
            .args(["--clickhouse-database", db, "--interval", "200ms"])
            .arg("--data-dir")
            .arg(dir.join(format!("{name}.data")))
            .arg("--addr-file")
            .arg(&addr_file)
            .env_remove("PROCWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn procwatch server");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if !a.trim().is_empty() {
                    return Server { child, url: format!("http://{}", a.trim()), log };
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "server {name} exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "server {name} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = client.post(url).json(body).send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn batch(seq: u64, ts: i64) -> Value {
    json!({"host": "ch-1", "agent": "e2e", "seq": seq, "interval_ms": 10_000,
           "host_totals": [{"ts": ts, "cpu": 60.0, "mem": 40.0}],
           "samples": [
               {"ts": ts, "process": "java", "cpu": 42.0, "cores": 0.84, "mem": 12.5,
                "rss": 1_000_000, "count": 2},
               {"ts": ts, "process": "nginx web", "cpu": 3.0, "cores": 0.06, "mem": 1.5,
                "rss": 200_000, "count": 4}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_the_clickhouse_cluster_and_zookeeper_down() {
    let test = "two_servers_on_the_clickhouse_cluster_and_zookeeper_down";
    let Some(mut cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(&cluster.url(0), "e2e", dir.path(), "a");
    let b = Server::start(&cluster.url(3), "e2e", dir.path(), "b");
    let client = reqwest::Client::new();

    let t = now_ms() - 1_000;
    let (s, body) = post(&client, &format!("{}/api/v1/samples", a.url), &batch(1, t)).await;
    assert_eq!(s, 200, "{body}");
    // Written through A, answered by B: the seed route, the v1 API, the dashboard.
    let (s, all) = get(&client, &format!("{}/ressources-usage/get-all?host=ch-1", b.url)).await;
    assert_eq!(s, 200, "{all}");
    let all: Value = serde_json::from_str(&all).expect("get-all JSON");
    assert_eq!(all, json!({"java": [12.5, 42.0], "nginx web": [1.5, 3.0]}));
    // The host bookkeeping is replicated to B's node asynchronously (milliseconds).
    assert_eq!(last_seq(&client, &b.url, 1).await, 1);
    let (s, page) = get(&client, &format!("{}/", b.url)).await;
    assert_eq!(s, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));

    // ZooKeeper down: ingestion is refused with a JSON error, never acknowledged.
    cluster.kill_zookeeper();
    let (s, body) = post(&client, &format!("{}/api/v1/samples", a.url), &batch(2, t + 200)).await;
    assert_eq!(s, 503, "ingestion with ZooKeeper down: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("unavailable")), "{body}");
    let (s, _) = get(&client, &format!("{}/ressources-usage/get-all?host=ch-1", b.url)).await;
    assert_eq!(s, 200, "reads go on while ZooKeeper is down");

    // Back: the same batch is accepted again (the agent's retry).
    cluster.restart_zookeeper();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) =
            post(&client, &format!("{}/api/v1/samples", a.url), &batch(2, t + 200)).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{body}");
        assert!(Instant::now() < deadline, "ingestion did not resume after ZooKeeper returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last_seq(&client, &b.url, 2).await, 2);
}

/// Host ch-1's `last_seq` as `server` lists it, polled until it reaches `want` (30 s).
async fn last_seq(client: &reqwest::Client, server: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, hosts) = get(client, &format!("{server}/api/v1/hosts")).await;
        assert_eq!(s, 200, "{hosts}");
        let hosts: Value = serde_json::from_str(&hosts).expect("hosts JSON");
        let seq = hosts["hosts"]
            .as_array()
            .and_then(|a| a.iter().find(|h| h["host"] == "ch-1"))
            .and_then(|h| h["last_seq"].as_u64());
        if seq == Some(want) || Instant::now() > deadline {
            return seq.unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
