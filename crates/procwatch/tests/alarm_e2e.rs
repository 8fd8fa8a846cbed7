//! Alarms end to end, with real processes and the real binary: `procwatch server` (rules from
//! its `--config` file, evaluation every 500 ms), `procwatch agent` sampling this machine every
//! 500 ms, `procwatch alarm` following the stream and notifying a webhook receiver (an axum
//! server in this test) and a real Prometheus Alertmanager (Debian package
//! `prometheus-alertmanager`, started here on a loopback port with clustering off).
//!
//! - A busy child (`/bin/sh` run through a link named `pwburn<N>` spinning `while :; do :; done`) with
//!   the cpu threshold lowered to 2 % (hysteresis 1: a spinning child on a machine whose cores
//!   are busy with other work may get only a few percent of it): RED at `query-alarm`, on `procwatch alarm`'s stdout, at
//!   the webhook and in Alertmanager; stopped with SIGSTOP (alive, no CPU) it clears: absent
//!   at `query-alarm`, an OK line, an OK event at the webhook, the alert resolved. Then the
//!   agent is killed: the host raises its own RED alarm (host silent).
//! - A child whose memory grows steadily (`tests/helpers/memory_ramp.py` named `pwramp<N>`,
//!   allocating 4 MiB every 100 ms) with the mem threshold set to what ~400 MiB is on this machine and a
//!   linear forecast: AMBER comes before RED; killed, the series goes STALE (not resolved).
//!
//! Without an Alertmanager binary the Alertmanager checks print "SKIPPED: ..." and the rest
//! runs, unless `CI` is set (then the test fails). Every child is killed by PID on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, named_shell, which, Proc};
use serde_json::Value;

const INTERVAL: &str = "500ms";
const INTERVAL_MS: i64 = 500;
/// How long a wait for an event may take before the test gives up: generous, because the
/// machine may be busy; a passing run never waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

/// A short name no other test or process uses (≤ 15 bytes, so `comm` is not truncated).
fn unique(prefix: &str) -> String {
    let n =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
            % 100_000;
    format!("{prefix}{}{n:05}", std::process::id() % 100)
}

fn start_server(dir: &Path, config: &str) -> (Proc, String) {
    let config_file = dir.join("server.toml");
    std::fs::write(&config_file, config).unwrap();
    let addr_file = dir.join("server.addr");
    let mut server = Proc::spawn(
        "procwatch server",
        common::procwatch()
            .arg("--config")
            .arg(&config_file)
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--interval", INTERVAL, "--store", "memory"])
            .arg("--addr-file")
            .arg(&addr_file),
    );
    let url = common::wait_addr_file(&mut server.child, &addr_file, "procwatch server", PATIENCE);
    (server, url)
}

fn start_agent(dir: &Path, url: &str, host: &str) -> Proc {
    common::start_agent(dir, url, &["--interval", INTERVAL, "--host", host])
}

/// `procwatch alarm --server URL`, its stdout lines collected as they come.
struct Follower {
    _proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(dir: &Path, url: &str, config: &str) -> Follower {
        Self::start_with(dir, url, config, &[])
    }

    fn start_with(dir: &Path, url: &str, config: &str, extra: &[&str]) -> Follower {
        let config_file = dir.join("alarm.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut child = common::procwatch()
            .arg("--config")
            .arg(&config_file)
            .args(["alarm", "--server", url])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn procwatch alarm");
        let lines = common::collect_lines(child.stdout.take().unwrap());
        Follower { _proc: Proc { child, name: "procwatch alarm".into() }, lines }
    }

    /// The lines about `process` so far.
    fn about(&self, process: &str) -> Vec<String> {
        let needle = format!(" {process} ");
        self.lines.lock().unwrap().iter().filter(|l| l.contains(&needle)).cloned().collect()
    }

    /// Waits (at most [`PATIENCE`]) for a line that starts with `prefix`.
    async fn wait_line(&self, what: &str, prefix: &str) {
        wait_for(what, PATIENCE, || async {
            self.lines.lock().unwrap().iter().any(|l| l.starts_with(prefix)).then_some(())
        })
        .await
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    common::try_get_json(client, url, None).await
}

/// Polls `f` every 100 ms until it returns `Some`, at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::wait_until_async_every(what, limit, Duration::from_millis(100), f).await
}

/// A real Alertmanager on a free loopback port, or `None` (SKIPPED) when not installed.
async fn start_alertmanager(dir: &Path) -> Option<(Proc, String)> {
    let Some(bin) = which("prometheus-alertmanager").or_else(|| which("alertmanager")) else {
        let why =
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)";
        assert!(std::env::var_os("CI").is_none(), "{why} (CI is set: see .ci/packages.txt)");
        common::skipped(&format!("{why}; the Alertmanager checks are left out"));
        return None;
    };
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
        .unwrap();
    std::fs::create_dir_all(dir.join("am-data")).unwrap();
    let client = reqwest::Client::new();
    // A free port may be taken between the probe and the bind: try a few.
    for _ in 0..3 {
        let url = format!("http://127.0.0.1:{}", free_port());
        let mut am = Proc::spawn(
            "alertmanager",
            Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.join("am-data").display()))
                .arg(format!("--web.listen-address={}", url.trim_start_matches("http://")))
                .arg("--cluster.listen-address="),
        );
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{url}/-/ready")).send().await {
                if r.status().is_success() {
                    return Some((am, url));
                }
            }
            if am.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("alertmanager did not become ready");
}

/// Alertmanager's active alerts about `process`.
async fn am_alerts(client: &reqwest::Client, am: &str, process: &str) -> Vec<Value> {
    let all =
        get_json(client, &format!("{am}/api/v2/alerts?active=true")).await.unwrap_or_default();
    all.as_array()
        .map(|a| a.iter().filter(|x| x["labels"]["process"] == process).cloned().collect())
        .unwrap_or_default()
}

fn hook_events(bodies: &Mutex<Vec<Value>>, process: &str) -> Vec<Value> {
    bodies.lock().unwrap().iter().filter(|v| v["process"] == process).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_child_raises_red_everywhere_and_clears_when_it_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let client = reqwest::Client::new();
    let burn = unique("pwburn");
    let host = "alarm-e2e-red";
    let am = start_alertmanager(dir).await;
    let (hook_url, hook) = common::webhook_receiver().await;
    let mut notifiers = format!("[[notifiers]]\ntype = \"webhook\"\nurl = \"{hook_url}\"\n");
    if let Some((_, am_url)) = &am {
        notifiers += &format!(
            "[[notifiers]]\ntype = \"alertmanager\"\nurl = \"{am_url}\"\nresend = \"2s\"\n"
        );
    }
    // The built-in cores rule is off: the busy child would (rightly) raise a cores RED too,
    // and this test counts the cpu alarm's lines and events (the cores rule has its own test,
    // first_hour_e2e.rs).
    let rules = format!(
        "[alarm_defaults]\ncores_threshold = 0\n[[rules]]\nprocess = \"{burn}\"\nmetric = \"cpu\"\nthreshold = 2\nhysteresis = 1\n"
    );
    let (_server, url) = start_server(dir, &rules);
    let follower = Follower::start(dir, &url, &notifiers);
    let agent = start_agent(dir, &url, host);

    // The rule is in effect, and listed.
    let listed = get_json(&client, &format!("{url}/api/v1/rules")).await.unwrap();
    assert_eq!(listed["rules"][0]["process"], burn.as_str());
    assert_eq!(listed["rules"][0]["threshold"], 2.0);
    assert_eq!(listed["defaults"]["threshold"], 80.0);
    // Wait until the agent's batches arrive, so the clock below measures the alarm only.
    wait_for("the agent's first batch", PATIENCE, || async {
        let h = get_json(&client, &format!("{url}/api/v1/hosts")).await?;
        h["hosts"].as_array()?.iter().any(|x| x["host"] == host).then_some(())
    })
    .await;

    // The shell under a unique name (a link, see `named_shell`), spinning: one full core.
    let exe = named_shell(dir, &burn);
    let started = Instant::now();
    let started_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let child = Proc::spawn(&burn, Command::new(&exe).args(["-c", "while :; do :; done"]));
    let query = format!("{url}/ressources-usage/query-alarm/?host={host}");
    wait_for("RED at query-alarm", PATIENCE, || async {
        let v = get_json(&client, &query).await?;
        (v[burn.as_str()] == "RED").then_some(())
    })
    .await;
    let red_after = started.elapsed();
    // Without ?host= the worst level across hosts: the same here.
    let all = get_json(&client, &format!("{url}/ressources-usage/query-alarm/")).await.unwrap();
    assert_eq!(all[burn.as_str()], "RED");
    let red = format!("RED   {host} {burn} cpu ");
    follower.wait_line("the RED line of procwatch alarm", &red).await;
    let line_after = started.elapsed();
    println!("RED at query-alarm {red_after:?} and on the console {line_after:?} after the child started (interval {INTERVAL})");
    let line = follower.about(&burn).into_iter().find(|l| l.starts_with("RED")).unwrap();
    assert!(line.ends_with("% > 2%"), "{line}");
    assert!(!line.contains('\x1b'), "colour codes on a pipe: {line:?}");
    // The event is in the store, active, with the rule's threshold.
    let active = get_json(&client, &format!("{url}/api/v1/alarms?active=true&process={burn}"))
        .await
        .unwrap();
    let ev = &active["alarms"][0];
    assert_eq!((ev["level"].as_str(), ev["metric"].as_str()), (Some("RED"), Some("cpu")));
    assert!(ev.get("end").is_none());
    assert_eq!(ev["threshold"], 2.0);
    assert!(ev["value"].as_f64().unwrap() > 2.0);
    // Cause before effect, not a latency: the RED sample is one the agent took while the child
    // ran. A sweep's timestamp is taken as it starts, so a sweep that started up to one
    // interval before the spawn may be the first to see the child. How soon RED comes depends
    // on how busy the machine is, and is only printed.
    let red_sample_after = ev["start"].as_i64().unwrap() - started_ms;
    println!("the RED sample was taken {red_sample_after} ms after the child started");
    assert!(
        red_sample_after >= -INTERVAL_MS,
        "RED from a sample {red_sample_after} ms after the child started: before it existed"
    );
    wait_for("the RED event at the webhook", PATIENCE, || async {
        hook_events(&hook, &burn)
            .iter()
            .any(|e| e["level"] == "RED" && e["end"].is_null())
            .then_some(())
    })
    .await;
    if let Some((_, am_url)) = &am {
        let alert = wait_for("the alert in Alertmanager", PATIENCE, || async {
            am_alerts(&client, am_url, &burn).await.into_iter().next()
        })
        .await;
        assert_eq!(alert["labels"]["alertname"], "ProcwatchRed");
        assert_eq!(alert["labels"]["host"], host);
        assert_eq!(alert["labels"]["metric"], "cpu");
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["status"]["state"], "active");
        assert!(alert["annotations"]["summary"].as_str().unwrap().starts_with("RED   "));
    }

    // Stopped (alive, using no CPU): the alarm clears after clear_for = 2 low samples.
    child.signal("-STOP");
    wait_for("the alarm to clear at query-alarm", PATIENCE, || async {
        let v = get_json(&client, &query).await?;
        v.get(burn.as_str()).is_none().then_some(())
    })
    .await;
    follower.wait_line("the OK line", &format!("OK    {host} {burn} cpu ")).await;
    let lines = follower.about(&burn);
    assert_eq!(lines.len(), 2, "one line per transition: {lines:?}");
    wait_for("the OK event at the webhook", PATIENCE, || async {
        hook_events(&hook, &burn)
            .iter()
            .any(|e| e["level"] == "OK" && e["previous"] == "RED")
            .then_some(())
    })
    .await;
    // The webhook got the RED event, its closing copy (end set), then OK, in that order.
    let got: Vec<(String, bool)> = hook_events(&hook, &burn)
        .iter()
        .map(|e| (e["level"].as_str().unwrap().to_owned(), e["end"].is_number()))
        .collect();
    assert_eq!(got, [("RED".into(), false), ("RED".into(), true), ("OK".into(), true)]);
    if let Some((_, am_url)) = &am {
        wait_for("the alert to resolve in Alertmanager", PATIENCE, || async {
            am_alerts(&client, am_url, &burn).await.is_empty().then_some(())
        })
        .await;
    }
    let history =
        get_json(&client, &format!("{url}/api/v1/alarms?process={burn}&metric=cpu")).await.unwrap();
    let levels: Vec<&str> = history["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["OK", "RED"], "newest first");
    drop(child);

    // The agent dies: after 3 of its intervals the host raises its own alarm (dead man's
    // switch), on the console and in the store.
    drop(agent);
    let silent = format!("RED   {host} host silent: no data for ");
    follower.wait_line("the host-silent line", &silent).await;
    let active =
        get_json(&client, &format!("{url}/api/v1/alarms?active=true&host={host}")).await.unwrap();
    let silent: Vec<&Value> = active["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "host_silent")
        .collect();
    assert_eq!(silent.len(), 1, "{active}");
    assert_eq!(silent[0]["level"], "RED");
    if let Some((_, am_url)) = &am {
        wait_for("the host-silent alert in Alertmanager", PATIENCE, || async {
            let all = get_json(&client, &format!("{am_url}/api/v2/alerts")).await?;
            all.as_array()?
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "ProcwatchHostSilent" && a["labels"]["host"] == host
                })
                .then_some(())
        })
        .await;
    }
}

fn mem_total_bytes() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_ramp_goes_amber_then_red_and_stale_when_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let client = reqwest::Client::new();
    let ramp = unique("pwramp");
    let host = "alarm-e2e-ramp";
    // The threshold is what 400 MiB is on this machine: crossed ~10 s into a 40 MiB/s ramp,
    // while the linear forecast (2 s window, 10 s ahead) says so from ~3.5 s on.
    let threshold = 100.0 * (400u64 << 20) as f64 / mem_total_bytes();
    let rules = format!(
        "[[rules]]\nprocess = \"{ramp}\"\nmetric = \"mem\"\nthreshold = {threshold:.4}\n\
         method = \"linear\"\nwindow = \"2s\"\nhorizon = \"10s\"\n"
    );
    let (_server, url) = start_server(dir, &rules);
    let follower = Follower::start(dir, &url, "");
    let _agent = start_agent(dir, &url, host);
    wait_for("the agent's first batch", PATIENCE, || async {
        let h = get_json(&client, &format!("{url}/api/v1/hosts")).await?;
        h["hosts"].as_array()?.iter().any(|x| x["host"] == host).then_some(())
    })
    .await;

    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/memory_ramp.py");
    let child = Proc::spawn(&ramp, Command::new("python3").arg(helper).arg(&ramp));
    let query = format!("{url}/ressources-usage/query-alarm/?host={host}");
    wait_for("RED at query-alarm", PATIENCE, || async {
        let v = get_json(&client, &query).await?;
        (v[ramp.as_str()] == "RED").then_some(())
    })
    .await;
    let prefix = |level: &str| format!("{level:5} {host} {ramp} mem ");
    follower.wait_line("the RED line", &prefix("RED")).await;
    let lines = follower.about(&ramp);
    let amber = lines.iter().position(|l| l.starts_with(&prefix("AMBER")));
    let red = lines.iter().position(|l| l.starts_with(&prefix("RED")));
    assert!(amber.is_some() && amber < red, "AMBER must come before RED: {lines:?}");
    let amber_line = &lines[amber.unwrap()];
    assert!(amber_line.contains(" forecast "), "{amber_line}");
    // The stored history says the same: AMBER started before RED.
    let history =
        get_json(&client, &format!("{url}/api/v1/alarms?process={ramp}&metric=mem&limit=0"))
            .await
            .unwrap();
    let start_of = |level: &str| {
        history["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == level)
            .map(|e| e["start"].as_i64().unwrap())
            .min()
    };
    let (a, r) =
        (start_of("AMBER").expect("an AMBER event"), start_of("RED").expect("a RED event"));
    assert!(a < r, "AMBER at {a}, RED at {r}");
    let amber_ev =
        history["alarms"].as_array().unwrap().iter().find(|e| e["level"] == "AMBER").unwrap();
    assert!(amber_ev["forecast"].as_f64().unwrap() > threshold);
    assert!(amber_ev["value"].as_f64().unwrap() <= threshold);

    // Killed: no more samples, so after 3 intervals the alarm is STALE, not resolved.
    drop(child);
    wait_for("STALE at query-alarm", PATIENCE, || async {
        let v = get_json(&client, &query).await?;
        (v[ramp.as_str()] == "STALE").then_some(())
    })
    .await;
    follower.wait_line("the STALE line", &prefix("STALE")).await;
    assert!(
        !follower.about(&ramp).iter().any(|l| l.starts_with("OK ")),
        "a vanished series is not resolved"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

const READ_TOKEN: &str = "alarm-e2e-read";

/// Starts `procwatch server` on a fixed port and an SQLite data dir (so it can be restarted
/// at the same address with the same store), with a read token.
fn start_server_at(dir: &Path, port: u16) -> Proc {
    let mut server = Proc::spawn(
        "procwatch server",
        common::procwatch()
            .arg("server")
            .args(["--listen", &format!("127.0.0.1:{port}"), "--interval", INTERVAL])
            .args(["--read-token", READ_TOKEN])
            .arg("--data-dir")
            .arg(dir.join("data")),
    );
    common::wait_until(&format!("procwatch server to listen on {port}"), PATIENCE, || {
        server.assert_running();
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    server
}

/// The server restarts under `procwatch alarm --token`: the open alarm is restored (not raised
/// twice), the follower reconnects by itself and prints the recovery that happens after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reconnects_across_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let client = reqwest::Client::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let post = |samples: Vec<(i64, f64)>, seq: u64| {
        let body = serde_json::json!({
            "host": "restart-1", "agent": "e2e", "seq": seq, "interval_ms": 10_000,
            "samples": samples.iter().map(|(ts, cpu)| serde_json::json!({
                "ts": ts, "process": "hotproc", "cpu": cpu, "cores": cpu / 200.0, "mem": 1.0,
                "rss": 1024, "count": 1})).collect::<Vec<_>>()
        });
        let req = client.post(format!("{url}/api/v1/samples")).json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let server = start_server_at(dir, port);
    let follower = Follower::start_with(dir, &url, "", &["--token", READ_TOKEN]);
    post(vec![(now_ms(), 95.0)], 1).await;
    follower.wait_line("the RED line", "RED   restart-1 hotproc cpu 95.0% > 80%").await;

    let mut server = server;
    server.signal("-TERM");
    let what = "the server, after SIGTERM (an open stream held it?),";
    common::wait_exit(&mut server.child, what, PATIENCE);
    let _server = start_server_at(dir, port);
    // The follower is back on the new server's stream before the recovery happens: an alarm
    // that closes while a follower is away reaches it only as `event: synced` (no OK line).
    wait_for("the follower to reconnect", PATIENCE, || async {
        let r = client.get(format!("{url}/metrics")).bearer_auth(READ_TOKEN).send().await.ok()?;
        let text = r.text().await.ok()?;
        let streams: f64 = text
            .lines()
            .filter(|l| l.starts_with("procwatch_http_request_duration_seconds_count{"))
            .filter(|l| l.contains("route=\"/api/v1/alarms/stream\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (streams >= 1.0).then_some(())
    })
    .await;
    // Still hot after the restart: no second RED. Then two cool samples: recovered.
    let t = now_ms();
    post(vec![(t, 96.0)], 2).await;
    post(vec![(t + 100, 10.0), (t + 200, 12.0)], 3).await;
    follower.wait_line("the OK line after the restart", "OK    restart-1 hotproc cpu ").await;
    let lines = follower.about("hotproc");
    assert_eq!(lines.len(), 2, "RED once, then OK: {lines:?}");
    let active = common::json_of(
        client.get(format!("{url}/ressources-usage/query-alarm/")).bearer_auth(READ_TOKEN),
    )
    .await;
    assert!(active.get("hotproc").is_none(), "{active}");

    // A wrong token does not fix itself: procwatch alarm stops with an error.
    let err_file = dir.join("wrong-token.err");
    let mut wrong = Proc {
        child: common::procwatch()
            .args(["alarm", "--server", &url, "--token", "wrong"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap(),
        name: "procwatch alarm --token wrong".into(),
    };
    let what = "procwatch alarm with a wrong token";
    let status = common::wait_exit(&mut wrong.child, what, PATIENCE);
    assert!(!status.success());
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("401"), "{err}");
}
