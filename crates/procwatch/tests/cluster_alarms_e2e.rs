//! Two `procwatch server`s sharing the real 2-shard × 2-replica ClickHouse cluster and its
//! ZooKeeper with `--cluster-zookeeper` (one harness start for every case; `SKIPPED` when
//! clickhouse-server or zookeeperd is not installed and `CI` is unset):
//! - while both live, each evaluates only its share of the hosts (rendezvous hashing over the
//!   member ids that `GET /api/v1/health` reports): each server's alarm stream carries only
//!   the alarms of its own hosts, and each of the two busy hosts goes RED once, on its owner;
//! - the owner of one RED host is SIGKILLed: the other takes all its hosts over (its health
//!   says 1 member, every host owned), continues the open RED (the same event, restored from
//!   the cluster, not raised again) and clears it normally when the host calms down;
//! - ZooKeeper killed: the survivor pauses evaluation and says so (health, `/metrics`); back,
//!   it resumes and raises a new RED once;
//! - over the whole run, no transition (event id, open or closed) reaches the two streams twice.
//!
//! Batches are posted by the test (every 500 ms, 6 hosts at once, declaring the 1 s interval)
//! to the surviving server, so the hosts never go silent.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{procwatch, try_get_json, wait_until_async, Proc};
use procwatch_server::rendezvous;
use procwatch_store_clickhouse::testing::{Cluster, CLUSTER};
use serde_json::{json, Value};

const INTERVAL_MS: i64 = 1_000;
/// A wait for something that must happen: generous, the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(90);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `procwatch server` on the cluster with membership; its log goes to `<name>.log`.
fn start_server(cluster: &Cluster, node: usize, dir: &Path, name: &'static str) -> (Proc, String) {
    let addr_file = dir.join(format!("{name}.addr"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut child = procwatch();
    child
        .args(["server", "--listen", "127.0.0.1:0", "--store", "clickhouse"])
        .args(["--clickhouse-url", &cluster.url(node), "--clickhouse-cluster", CLUSTER])
        .args(["--clickhouse-shard-urls", &cluster.shard_urls_flag()])
        .args(["--clickhouse-database", "fleet", "--interval", &format!("{INTERVAL_MS}ms")])
        .args(["--cluster-zookeeper", &cluster.zookeeper_addr(), "--cluster-root", "/pw-e2e"])
        .arg("--data-dir")
        .arg(dir.join(format!("{name}.data")))
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null());
    let child = child.stderr(log).spawn().expect("spawn procwatch server");
    let mut p = Proc { child, name: name.into() };
    let url = p.wait_for_addr(&addr_file, PATIENCE);
    (p, url)
}

/// One alarm event as a stream delivered it.
#[derive(Debug, Clone)]
struct Delivered {
    server: &'static str,
    event: Value,
}

type Log = Arc<Mutex<Vec<Delivered>>>;

/// Follows `url`'s alarm stream, appending each `event: alarm` to `log`, until the connection
/// ends (its server dies).
fn follow(client: &reqwest::Client, url: &str, server: &'static str, log: Log) {
    let req = client.get(format!("{url}/api/v1/alarms/stream"));
    tokio::spawn(async move {
        let Ok(mut resp) = req.send().await else { return };
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let is_alarm = frame.lines().any(|l| l == "event: alarm");
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                if let (true, Some(data)) = (is_alarm, data) {
                    let event: Value = serde_json::from_str(data).expect("event JSON");
                    log.lock().unwrap().push(Delivered { server, event });
                }
            }
        }
    });
}

/// The server's `GET /api/v1/health` `alarm_evaluation`, when it reports `state`.
async fn evaluation(client: &reqwest::Client, url: &str, state: &str) -> Option<Value> {
    let h = try_get_json(client, &format!("{url}/api/v1/health"), None).await?;
    (h["alarm_evaluation"]["state"] == state).then(|| h["alarm_evaluation"].clone())
}

/// What the feeder posts: per host, whether its `burner` process burns.
type Load = Arc<Mutex<BTreeMap<String, bool>>>;

/// Posts one batch per host every 500 ms to whichever URL `target` holds (5xx are retried
/// by the next round, like an agent would). The hosts' batches of a round go out together, and
/// declare the cluster's 1 s interval: a round of six one-by-one posts to a loaded cluster
/// once took more than three of the 500 ms it declared, so the series went STALE between two
/// samples and came back as a new RED (the engine right, the feeder too slow for its claim).
fn feed(client: reqwest::Client, target: Arc<Mutex<String>>, load: Load) {
    tokio::spawn(async move {
        let mut seq: HashMap<String, u64> = HashMap::new();
        loop {
            let ts = now_ms();
            let hosts: Vec<(String, bool)> =
                load.lock().unwrap().iter().map(|(h, b)| (h.clone(), *b)).collect();
            let url = target.lock().unwrap().clone();
            let mut posts = Vec::new();
            for (host, burning) in hosts {
                let s = seq.entry(host.clone()).or_insert(0);
                *s += 1;
                let cpu = if burning { 97.0 } else { 2.0 };
                let batch = json!({"host": host, "agent": "e2e", "seq": *s,
                    "interval_ms": INTERVAL_MS,
                    "host_totals": [{"ts": ts, "cpu": 50.0, "mem": 30.0}],
                    "samples": [
                        {"ts": ts, "process": "sshd", "cpu": 1.0, "cores": 0.01, "mem": 1.0,
                         "rss": 1000, "count": 1},
                        {"ts": ts, "process": "burner", "cpu": cpu, "cores": 0.1, "mem": 2.0,
                         "rss": 2000, "count": 1}]});
                let post = client.post(format!("{url}/api/v1/samples")).json(&batch).send();
                posts.push(tokio::spawn(post));
            }
            for p in posts {
                let _ = p.await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// The RED events of `host`'s burner delivered so far: (server, event).
fn reds(log: &Log, host: &str) -> Vec<Delivered> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|d| {
            d.event["host"] == host && d.event["process"] == "burner" && d.event["level"] == "RED"
        })
        .cloned()
        .collect()
}

/// Prints the servers' logs when the test fails.
struct Logs<'a>(&'a Path);

impl Drop for Logs<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["a", "b"] {
                let log = std::fs::read_to_string(self.0.join(format!("{name}.log")));
                eprintln!("--- server {name}:\n{}", log.unwrap_or_default());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_fire_once_across_two_servers_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let _logs = Logs(dir.path());
    let Some(mut cluster) =
        Cluster::start_or_skip("alarms_fire_once_across_two_servers_and_survive_a_kill")
    else {
        return;
    };
    let started = Instant::now();
    let (mut a, a_url) = start_server(&cluster, 0, dir.path(), "a");
    let (_b, b_url) = start_server(&cluster, 3, dir.path(), "b");
    let client = reqwest::Client::new();
    let log: Log = Arc::default();
    follow(&client, &a_url, "a", log.clone());
    follow(&client, &b_url, "b", log.clone());

    // Both joined: two members, each knows its id.
    let mut ids = Vec::new();
    for url in [&a_url, &b_url] {
        let e = wait_until_async("two cluster members", PATIENCE, || async {
            evaluation(&client, url, "share").await.filter(|e| e["members"] == 2)
        })
        .await;
        ids.push(e["member"].as_str().unwrap().to_owned());
    }
    let (a_id, b_id) = (ids[0].clone(), ids[1].clone());
    let owner = |host: &str| rendezvous::owner(host, &ids).unwrap().to_owned();
    // Three hosts of each server; the first of each burns.
    let names: Vec<String> = (0..64).map(|i| format!("node-{i}")).collect();
    let of = |id: &str| -> Vec<String> {
        names.iter().filter(|h| owner(h) == id).take(3).cloned().collect()
    };
    let (a_hosts, b_hosts) = (of(&a_id), of(&b_id));
    let (hot_a, hot_b) = (a_hosts[0].clone(), b_hosts[0].clone());
    let load: Load = Arc::new(Mutex::new(
        a_hosts.iter().chain(&b_hosts).map(|h| (h.clone(), *h == hot_a || *h == hot_b)).collect(),
    ));
    let target = Arc::new(Mutex::new(b_url.clone()));
    feed(client.clone(), target.clone(), load.clone());

    // While both live: each hot host goes RED on its owner only.
    wait_until_async("RED on both servers", PATIENCE, || async {
        let (ra, rb) = (reds(&log, &hot_a), reds(&log, &hot_b));
        (!ra.is_empty() && !rb.is_empty()).then_some(())
    })
    .await;
    wait_until_async("both servers own their 3 hosts", PATIENCE, || async {
        let ea = evaluation(&client, &a_url, "share").await?;
        let eb = evaluation(&client, &b_url, "share").await?;
        (ea["hosts_owned"] == 3 && eb["hosts_owned"] == 3).then_some(())
    })
    .await;
    for d in log.lock().unwrap().iter() {
        let host = d.event["host"].as_str().unwrap();
        let want = if d.server == "a" { &a_id } else { &b_id };
        assert_eq!(
            &owner(host),
            want,
            "{} delivered an alarm of a host it does not own: {d:?}",
            d.server
        );
    }
    let red_a = reds(&log, &hot_a);
    assert_eq!(red_a.len(), 1, "{red_a:?}");
    assert_eq!(red_a[0].server, "a");
    let red_id = red_a[0].event["id"].as_str().unwrap().to_owned();

    // Kill A: B takes every host over, and continues A's RED.
    let killed = Instant::now();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    wait_until_async("B to own every host", PATIENCE, || async {
        evaluation(&client, &b_url, "share")
            .await
            .filter(|e| e["members"] == 1 && e["hosts_owned"] == 6)
    })
    .await;
    eprintln!(
        "takeover: B owns A's hosts {} ms after the SIGKILL (interval {INTERVAL_MS} ms)",
        killed.elapsed().as_millis()
    );
    let open =
        try_get_json(&client, &format!("{b_url}/api/v1/alarms?active=true&host={hot_a}"), None)
            .await
            .expect("B's alarms");
    let open_ids: Vec<&str> =
        open["alarms"].as_array().unwrap().iter().filter_map(|e| e["id"].as_str()).collect();
    assert!(open_ids.contains(&red_id.as_str()), "A's RED is still open on B: {open}");
    // The host calms down: B closes A's RED (same id) and says OK.
    load.lock().unwrap().insert(hot_a.clone(), false);
    wait_until_async("B to close A's RED", PATIENCE, || async {
        log.lock()
            .unwrap()
            .iter()
            .any(|d| {
                d.server == "b" && d.event["id"] == red_id.as_str() && !d.event["end"].is_null()
            })
            .then_some(())
    })
    .await;
    let reds_after = reds(&log, &hot_a);
    assert!(
        reds_after.iter().all(|d| d.event["id"] == red_id.as_str()),
        "A's RED was raised again after the takeover: {reds_after:?}"
    );

    // Nothing reached the streams twice: every transition (id, open or closed) once.
    let before_outage = log.lock().unwrap().clone();
    let mut seen: HashMap<(String, bool), Vec<&'static str>> = HashMap::new();
    for d in &before_outage {
        let key = (d.event["id"].as_str().unwrap().to_owned(), d.event["end"].is_null());
        seen.entry(key).or_default().push(d.server);
    }
    let twice: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}\n{before_outage:?}");

    // ZooKeeper down: B pauses and says so; back, it resumes and raises a new RED once. (The
    // outage also stalls ingestion, so series go STALE and hosts silent meanwhile, and late
    // samples withdraw a STALE, re-opening its RED: the engine's own corrections, not
    // doubles; so the check above ends before the outage.)
    cluster.kill_zookeeper();
    let paused = wait_until_async("B to pause", PATIENCE, || async {
        evaluation(&client, &b_url, "paused").await
    })
    .await;
    assert!(paused["reason"].as_str().is_some_and(|r| !r.is_empty()), "{paused}");
    let metrics =
        client.get(format!("{b_url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "procwatch_alarm_evaluation_paused 1"), "{metrics}");
    cluster.restart_zookeeper();
    wait_until_async("B to resume", PATIENCE, || async {
        evaluation(&client, &b_url, "share").await.filter(|e| e["hosts_owned"] == 6)
    })
    .await;
    let third = a_hosts[1].clone();
    load.lock().unwrap().insert(third.clone(), true);
    wait_until_async("a new RED after ZooKeeper came back", PATIENCE, || async {
        (!reds(&log, &third).is_empty()).then_some(())
    })
    .await;

    let third_reds: Vec<Delivered> =
        reds(&log, &third).into_iter().filter(|d| d.event["end"].is_null()).collect();
    assert_eq!(third_reds.len(), 1, "{third_reds:?}");
    eprintln!("cluster alarms e2e took {} s", started.elapsed().as_secs());
}
