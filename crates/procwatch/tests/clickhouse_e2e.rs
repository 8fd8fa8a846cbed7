//! `procwatch server --store clickhouse` end to end: the real binary, two servers on a real
//! 2-shard x 2-replica ClickHouse cluster with ZooKeeper (started by the test on loopback
//! ports in a temp dir; `SKIPPED` when clickhouse-server or zookeeperd is not installed and
//! `CI` is unset):
//! - a batch written through one server is answered by the other on the seed routes, the v1
//!   API and the dashboard;
//! - ZooKeeper killed: ingestion answers 503 with a JSON error (never a 2xx), reads still
//!   answer; after ZooKeeper returns ingestion answers 200 again.

use std::path::Path;
use std::time::{Duration, Instant};

use common::{post_json, LoggedServer};
use procwatch_store_clickhouse::testing::{Cluster, CLUSTER};
use serde_json::{json, Value};

mod common;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A running `procwatch server --store clickhouse` on `ch_url`'s database `db`, writing
/// straight to the shards when given their URLs (`--clickhouse-shard-urls`), else through the
/// `Distributed` tables.
fn start_server(
    ch_url: &str,
    shards: Option<&str>,
    db: &str,
    dir: &Path,
    name: &str,
) -> LoggedServer {
    let args = ["--store", "clickhouse", "--clickhouse-url", ch_url];
    let mut args =
        [&args[..], &["--clickhouse-cluster", CLUSTER, "--clickhouse-database", db]].concat();
    if let Some(s) = shards {
        args.extend(["--clickhouse-shard-urls", s]);
    }
    LoggedServer::start(dir, name, &[&args[..], &["--interval", "200ms"]].concat())
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
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
    // One server writes straight to the shards, the other through `Distributed`: they agree.
    let shards = cluster.shard_urls_flag();
    let a = start_server(&cluster.url(0), Some(&shards), "e2e", dir.path(), "a");
    let b = start_server(&cluster.url(3), None, "e2e", dir.path(), "b");
    let client = reqwest::Client::new();

    let t = now_ms() - 1_000;
    let (s, body) = post_json(&client, &format!("{}/api/v1/samples", a.url), &batch(1, t)).await;
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
    let (s, body) =
        post_json(&client, &format!("{}/api/v1/samples", a.url), &batch(2, t + 200)).await;
    assert_eq!(s, 503, "ingestion with ZooKeeper down: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("unavailable")), "{body}");
    let (s, _) = get(&client, &format!("{}/ressources-usage/get-all?host=ch-1", b.url)).await;
    assert_eq!(s, 200, "reads go on while ZooKeeper is down");

    // Back: the same batch is accepted again (the agent's retry).
    cluster.restart_zookeeper();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) =
            post_json(&client, &format!("{}/api/v1/samples", a.url), &batch(2, t + 200)).await;
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
