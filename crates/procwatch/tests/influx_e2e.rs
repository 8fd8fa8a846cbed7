//! `procwatch server --store influxdb` end to end, with the real binaries on a real influxd
//! (started by the test on free loopback ports in a temp dir; `SKIPPED` when influxd is not
//! installed and `CI` is unset):
//! - two server processes on one InfluxDB: a batch written through one is visible through the
//!   other, with the same host bookkeeping, and both report the same alarms;
//! - influxd stopped while an agent sends: the server answers 503, the agent spools, and after
//!   influxd comes back every sweep the agent took is stored, with no gap.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procwatch_store_influx::testing::Influxd;
use serde_json::{json, Value};

mod common;
use common::{post_json, LoggedServer};

const INTERVAL_MS: u64 = 200;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A running `procwatch server --store influxdb` on `influx_url`'s database `db`.
fn start_server(influx_url: &str, db: &str, dir: &Path, name: &str) -> LoggedServer {
    let interval = format!("{INTERVAL_MS}ms");
    let args = ["--store", "influxdb", "--influx-url", influx_url, "--influx-db", db];
    LoggedServer::start(dir, name, &[&args[..], &["--interval", &interval]].concat())
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = client.get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn host<'a>(hosts: &'a Value, name: &str) -> &'a Value {
    hosts["hosts"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["host"] == name))
        .unwrap_or_else(|| panic!("host {name} missing in {hosts}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_influxdb_agree() {
    let Some(influxd) = Influxd::start_or_skip("two_servers_on_one_influxdb_agree") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start_server(&influxd.url(), "shared", dir.path(), "a");
    let b = start_server(&influxd.url(), "shared", dir.path(), "b");
    let client = reqwest::Client::new();

    // Recent samples from a host with a 10 s interval: fresh for the alarm evaluators.
    let t = now_ms() - 1_000;
    let batch = |seq: u64, ts: i64, java: f64| {
        json!({"host": "two-1", "agent": "e2e", "seq": seq, "interval_ms": 10_000,
               "host_totals": [{"ts": ts, "cpu": 60.0, "mem": 40.0}],
               "samples": [
                   {"ts": ts, "process": "java", "cpu": java, "cores": java / 50.0, "mem": 12.5,
                    "rss": 1_000_000, "count": 2},
                   {"ts": ts, "process": "nginx web", "cpu": 3.0, "cores": 0.06, "mem": 1.5,
                    "rss": 200_000, "count": 4}]})
    };
    let (s, body) =
        post_json(&client, &format!("{}/api/v1/samples", a.url), &batch(1, t, 95.0)).await;
    assert_eq!(s, 200, "{body}");

    // Written through A, read through B: same answers as A, and the values written.
    let get_all = "/ressources-usage/get-all?host=two-1";
    let (sa, from_a) = get(&client, &format!("{}{get_all}", a.url)).await;
    let (sb, from_b) = get(&client, &format!("{}{get_all}", b.url)).await;
    assert_eq!((sa, sb), (200, 200));
    assert_eq!(from_b, json!({"java": [12.5, 95.0], "nginx web": [1.5, 3.0]}));
    assert_eq!(from_a, from_b);

    // The host bookkeeping is shared too: B continues A's seq.
    let (s, body) =
        post_json(&client, &format!("{}/api/v1/samples", b.url), &batch(2, t + 200, 96.0)).await;
    assert_eq!((s, body["seq_gap"].as_u64()), (200, Some(0)), "{body}");
    let (_, ha) = get(&client, &format!("{}/api/v1/hosts", a.url)).await;
    let (_, hb) = get(&client, &format!("{}/api/v1/hosts", b.url)).await;
    let (ha, hb) = (host(&ha, "two-1"), host(&hb, "two-1"));
    assert_eq!(ha["last_seq"], 2);
    assert_eq!(ha["seq_gaps"], 0);
    assert_eq!(ha["last_seen"], hb["last_seen"]);
    assert_eq!(ha["last_seq"], hb["last_seq"]);

    // Alarms: java at 95-96 % is RED; both servers evaluate the same stored data. Fresh
    // batches keep coming (through either server) so the series never goes stale meanwhile.
    let alarms = "/ressources-usage/query-alarm/?host=two-1";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 3;
    loop {
        let via = if seq % 2 == 0 { &a.url } else { &b.url };
        let (s, body) =
            post_json(&client, &format!("{via}/api/v1/samples"), &batch(seq, now_ms(), 95.0)).await;
        assert_eq!(s, 200, "{body}");
        seq += 1;
        let (_, xa) = get(&client, &format!("{}{alarms}", a.url)).await;
        let (_, xb) = get(&client, &format!("{}{alarms}", b.url)).await;
        if xa["java"] == "RED" && xa == xb {
            break;
        }
        assert!(Instant::now() < deadline, "servers disagree on alarms: {xa} vs {xb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stored events: both servers evaluate the same transitions and store each under the
    // same id, so both see the same events, and no transition is stored twice (one per
    // server) under two ids.
    let events = "/api/v1/alarms?host=two-1&process=java&metric=cpu";
    let (sa, ea) = get(&client, &format!("{}{events}", a.url)).await;
    let (sb, eb) = get(&client, &format!("{}{events}", b.url)).await;
    assert_eq!((sa, sb), (200, 200), "{ea} {eb}");
    let list = |v: &Value| -> Vec<Value> { v["alarms"].as_array().expect("alarms").clone() };
    let ids = |v: &Value| -> BTreeSet<String> {
        list(v).iter().map(|e| e["id"].as_str().expect("id").to_string()).collect()
    };
    assert_eq!(ids(&ea), ids(&eb));
    let events = list(&ea);
    assert!(events.iter().any(|e| e["level"] == "RED"), "a stored RED event: {ea}");
    let transitions: BTreeSet<String> =
        events.iter().map(|e| format!("{} {} {}", e["start"], e["previous"], e["level"])).collect();
    assert_eq!(transitions.len(), events.len(), "a transition stored twice: {ea}");
}

/// `procwatch agent` on this machine, shipping to `server` with a spool; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(server: &str, spool: &Path, log: &Path) -> Agent {
        let child = common::procwatch()
            .args(["--log-format", "json", "agent", "--server", server, "--host", "influx-e2e"])
            .args(["--interval", &format!("{INTERVAL_MS}ms"), "--retry-max", "300ms"])
            .arg("--spool-dir")
            .arg(spool)
            .env("PROCWATCH_LOG", "procwatch_agent=debug,procwatch=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn procwatch agent");
        Agent { child, log: log.to_path_buf() }
    }

    /// Sweeps on disk in the spool so far: ts → samples (from the agent's log).
    fn taken(&self) -> BTreeMap<i64, u64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["fields"]["message"] == "Sweep spooled.")
            .map(|e| {
                (e["fields"]["ts"].as_i64().unwrap(), e["fields"]["samples"].as_u64().unwrap())
            })
            .collect()
    }

    fn wait_sweeps(&self, n: usize) {
        common::wait_until(
            &format!("the agent to take {n} sweeps"),
            Duration::from_secs(30),
            || (self.taken().len() >= n).then_some(()),
        );
    }

    /// SIGTERM: the agent delivers what it can, then exits.
    fn stop(&mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
        common::wait_exit(&mut self.child, "the agent", Duration::from_secs(30));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Samples the server holds for the agent's host, per ts (raw history of every process).
async fn arrived(client: &reqwest::Client, server: &str, from: i64, to: i64) -> BTreeMap<i64, u64> {
    let mut url = reqwest::Url::parse(&format!("{server}/api/v1/usage")).unwrap();
    url.query_pairs_mut()
        .append_pair("host", "influx-e2e")
        .append_pair("from", &from.to_string())
        .append_pair("to", &to.to_string())
        .append_pair("per_host", "true")
        .append_pair("limit", "100000");
    let (s, usage) = get(client, url.as_str()).await;
    assert_eq!(s, 200, "{usage}");
    let mut out = BTreeMap::new();
    for row in usage["rows"].as_array().expect("rows") {
        let mut url = reqwest::Url::parse(server).unwrap();
        url.path_segments_mut().unwrap().extend([
            "api",
            "v1",
            "hosts",
            "influx-e2e",
            "processes",
            row["process"].as_str().expect("process"),
            "history",
        ]);
        url.query_pairs_mut()
            .append_pair("from", &from.to_string())
            .append_pair("to", &to.to_string())
            .append_pair("step", "0");
        let (s, h) = get(client, url.as_str()).await;
        assert_eq!(s, 200, "{h}");
        for p in h["points"].as_array().expect("points") {
            *out.entry(p["ts"].as_i64().unwrap()).or_insert(0) += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxd_stopped_while_an_agent_sends_loses_no_sample() {
    let Some(mut influxd) = Influxd::start_or_skip("influxd_stopped_while_an_agent_sends") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&influxd.url(), "outage", dir.path(), "server");
    let mut agent =
        Agent::start(&server.url, &dir.path().join("spool"), &dir.path().join("agent.log"));
    let client = reqwest::Client::new();
    agent.wait_sweeps(3);

    influxd.stop();
    let before = agent.taken().len();
    // While influxd is down: ingestion and queries answer 503 with a clear message.
    let batch = json!({"host": "probe", "seq": 1, "interval_ms": 1000,
                       "samples": [{"ts": now_ms(), "process": "x", "cpu": 1.0, "mem": 1.0}]});
    let (s, body) = post_json(&client, &format!("{}/api/v1/samples", server.url), &batch).await;
    assert_eq!(s, 503, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("store unavailable"), "{body}");
    let (s, body) = get(&client, &format!("{}/ressources-usage/get-all", server.url)).await;
    assert_eq!(s, 503, "{body}");
    // The agent keeps sampling into its spool meanwhile.
    agent.wait_sweeps(before + 5);

    influxd.restart();
    let after = agent.taken().len();
    agent.wait_sweeps(after + 3);
    agent.stop();

    let taken = agent.taken();
    let from = *taken.keys().next().unwrap();
    let to = *taken.keys().last().unwrap() + 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = arrived(&client, &server.url, from, to).await;
        if got == taken || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got, taken, "every sweep the agent took, with all its samples");
    let (_, hosts) = get(&client, &format!("{}/api/v1/hosts", server.url)).await;
    let h = host(&hosts, "influx-e2e");
    assert_eq!(h["seq_gaps"], 0, "{h}");
    assert_eq!(h["dropped_samples"], 0, "{h}");
}
