//! Issue 15, "the first hour", through the real binary: retiring a host (`procwatch hosts
//! retire`) closes its alarms with the reason and records the retirement; a `cores` rule at
//! 0.5 clears; the built-in cores rule fires for a process saturating a core; a bad
//! environment variable is named as such; the client commands' tokens are per role.
//!
//! The server runs with `--store memory`, evaluating every 200 ms, on 127.0.0.1:0; batches are
//! posted over real HTTP. Every child is stopped by PID on drop.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::Proc;
use serde_json::{json, Value};

const WRITE: &str = "w-token-first-hour";
const READ: &str = "r-token-first-hour";

fn bin() -> Command {
    common::procwatch()
}

fn start_server(dir: &Path, config: &str) -> (Proc, String) {
    common::start_memory_server(dir, config, WRITE, READ)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn post_batch(client: &reqwest::Client, url: &str, host: &str, seq: u64, samples: Value) {
    let batch = json!({
        "host": host, "agent": "first-hour-test", "seq": seq, "interval_ms": 200,
        "host_totals": [], "samples": samples, "dropped_samples": 0
    });
    common::post_samples(client, url, WRITE, &batch).await;
}

fn sample(process: &str, cpu: f64, cores: f64) -> Value {
    json!({"ts": now_ms(), "process": process, "cpu": cpu, "cores": cores, "mem": 1.0, "rss": 1000, "count": 1})
}

async fn get(client: &reqwest::Client, url: &str, path: &str) -> Value {
    let r = client.get(format!("{url}{path}")).bearer_auth(READ).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Polls `f` until it returns `Some`, for up to 60 s (the machine is shared and loaded).
async fn wait_for<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::wait_until_async(what, Duration::from_secs(60), f).await
}

async fn active(client: &reqwest::Client, url: &str) -> Vec<Value> {
    get(client, url, "/api/v1/alarms?active=true&limit=0").await["alarms"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_host_closes_its_alarms_with_the_reason_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(dir.path(), "");
    let client = reqwest::Client::new();
    // A host with a hot process (RED at once: 95 % > 80 %), then silent: host silent too.
    post_batch(&client, &url, "retire-me", 1, json!([sample("hog", 95.0, 0.1)])).await;
    post_batch(&client, &url, "stays", 1, json!([sample("calm", 1.0, 0.0)])).await;
    wait_for("a series alarm and a host-silent alarm on retire-me", || async {
        let a = active(&client, &url).await;
        let mine: Vec<&Value> = a.iter().filter(|e| e["host"] == "retire-me").collect();
        let kinds = |k: &str| mine.iter().any(|e| e["kind"] == k);
        (kinds("series") && kinds("host_silent")).then_some(())
    })
    .await;

    let token_file = dir.path().join("write.token");
    std::fs::write(&token_file, format!("{WRITE}\n")).unwrap();
    // The read token may not retire (write-guarded), an unknown host is an error: exit 1.
    let refused = bin()
        .args(["hosts", "retire", "retire-me", "--server", &url, "--token", READ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let unknown = bin()
        .args(["hosts", "retire", "never-seen", "--server", &url])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"), "{unknown:?}");

    // The token from PROCWATCH_WRITE_TOKEN_FILE, the role's own variable.
    let out = bin()
        .args(["hosts", "retire", "retire-me", "--server", &url])
        .env("PROCWATCH_WRITE_TOKEN_FILE", &token_file)
        .env("PROCWATCH_READ_TOKEN", "not-this-one")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("retired retire-me") && stdout.contains("2 open alarm(s) closed"),
        "{stdout}"
    );

    // No alarm of it left open, it is no longer listed, the other host is untouched.
    let a = active(&client, &url).await;
    assert!(a.iter().all(|e| e["host"] != "retire-me"), "{a:?}");
    let hosts = get(&client, &url, "/api/v1/hosts").await;
    let names: Vec<&str> =
        hosts["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert!(!names.contains(&"retire-me") && names.contains(&"stays"), "{names:?}");
    // The history says what happened: closed with the reason, and the retirement itself.
    let events = get(&client, &url, "/api/v1/alarms?host=retire-me&limit=0").await;
    let events = events["alarms"].as_array().unwrap();
    let retired = events.iter().find(|e| e["kind"] == "host_retired").expect("host_retired event");
    assert!(retired["reason"].as_str().unwrap().starts_with("host retired by "), "{retired}");
    let closed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] != "host_retired" && e["reason"] == retired["reason"])
        .collect();
    assert_eq!(closed.len(), 2, "{events:?}");
    assert!(closed.iter().all(|e| e["end"].is_i64()));
    // And it stays quiet: several evaluation passes later nothing re-opens.
    let before = Instant::now();
    wait_for("three more evaluation passes", || async {
        (before.elapsed() > Duration::from_millis(800)).then_some(())
    })
    .await;
    assert!(active(&client, &url).await.iter().all(|e| e["host"] != "retire-me"));
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cores_rule_at_half_a_core_clears_and_the_builtin_cores_rule_fires() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[rules]]\nprocess = \"half*\"\nmetric = \"cores\"\nthreshold = 0.5\n";
    let (_server, url) = start_server(dir.path(), config);
    let client = reqwest::Client::new();
    let mut seq = 0;
    let mut send = |samples: Value| {
        seq += 1;
        let (client, url) = (client.clone(), url.clone());
        async move { post_batch(&client, &url, "cores-host", seq, samples).await }
    };
    // A single-threaded hog: 1 core, 50 % of a 2-core host: below the cpu default (80 %),
    // above the built-in cores rule (0.9) and the 0.5 rule.
    let red_cores = |process: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let a = active(&client, &url).await;
                a.into_iter().find(|e| {
                    e["process"] == process && e["metric"] == "cores" && e["level"] == "RED"
                })
            }
        }
    };
    send(json!([sample("half1", 50.0, 1.0), sample("hog1", 50.0, 1.0)])).await;
    let half = wait_for("RED on the 0.5 cores rule", red_cores("half1")).await;
    assert_eq!(half["threshold"], 0.5);
    let hog = wait_for("RED on the built-in cores rule", red_cores("hog1")).await;
    assert_eq!(hog["threshold"], 0.9);
    // Back to idle: with a fixed 5-point hysteresis this stayed RED forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        send(json!([sample("half1", 0.0, 0.0), sample("hog1", 0.0, 0.0)])).await;
        let a = active(&client, &url).await;
        if a.iter().all(|e| e["host"] != "cores-host") {
            break;
        }
        assert!(Instant::now() < deadline, "cores alarms did not clear: {a:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The effective rules say so.
    let rules = get(&client, &url, "/api/v1/rules").await;
    let last = rules["rules"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["metric"].as_str(), last["threshold"].as_f64()), (Some("cores"), Some(0.9)));
    assert!(last["hysteresis"].as_f64().unwrap() < 0.9);
}

#[test]
fn a_bad_environment_variable_is_named_and_a_hysteresis_above_the_threshold_is_refused() {
    let out = bin().args(["agent", "--once"]).env("PROCWATCH_INTERVAL", "10").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("environment variable PROCWATCH_INTERVAL=\"10\""), "{err}");
    // One validation path: a hysteresis that could never clear is refused at start.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[alarm_defaults]\nhysteresis = 5\n[[rules]]\nmetric = \"cores\"\nthreshold = 0.5\n",
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&file)
        .args(["server", "--store", "memory", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("less than the threshold"), "{err}");
}

/// `procwatch alarm` with its stdout lines collected; stopped (SIGTERM, then waited for) by
/// [`Follower::stop`].
struct Follower {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Follower {
    fn start(url: &str, config: &Path, state: &Path) -> Follower {
        let mut child = bin()
            .arg("--config")
            .arg(config)
            .args(["alarm", "--server", url, "--color", "never"])
            .arg("--state-file")
            .arg(state)
            .env("PROCWATCH_READ_TOKEN", READ)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lines = common::collect_lines(child.stdout.take().unwrap());
        Follower { child, lines }
    }

    async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no {what}: {:?}", self.lines.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM by PID and wait: notifications in flight are finished when this returns.
    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_resumes_and_does_not_announce_twice() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path(), "");
    let client = reqwest::Client::new();
    // A webhook receiver: every POST body.
    let (hook, posts) = common::webhook_receiver().await;
    let config = dir.path().join("alarm.toml");
    std::fs::write(&config, format!("[[notifiers]]\ntype = \"webhook\"\nurl = \"{hook}\"\n"))
        .unwrap();
    let state = dir.path().join("alarm-state.json");

    // The server keeps a hot process RED (a batch every 100 ms keeps its host from going silent).
    let feeder = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            for seq in 1.. {
                post_batch(&client, &url, "replay-host", seq, json!([sample("hot", 95.0, 0.1)]))
                    .await;
                // Behaviour, not synchronisation: a host that keeps reporting, every 100 ms.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let red_posts = |posts: &Arc<Mutex<Vec<Value>>>| {
        posts
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["process"] == "hot" && v["level"] == "RED" && v["end"].is_null())
            .count()
    };
    let first = Follower::start(&url, &config, &state);
    let line =
        first.wait_line("the RED line", |l| l.starts_with("RED") && l.contains(" hot cpu ")).await;
    assert!(!line.contains("still active"), "{line}");
    wait_for("the webhook POST", || async { (red_posts(&posts) == 1).then_some(()) }).await;
    first.stop();
    assert!(std::fs::metadata(&state).unwrap().len() > 0, "the state file is written");

    // Restarted with the same state file: "still active since …", no second POST.
    let second = Follower::start(&url, &config, &state);
    let again = second.wait_line("the still-active line", |l| l.contains(" hot cpu ")).await;
    assert!(again.contains("(still active since "), "{again}");
    let lines = second.stop();
    assert_eq!(lines.iter().filter(|l| l.contains(" hot cpu ")).count(), 1, "{lines:?}");
    assert_eq!(red_posts(&posts), 1, "webhook posted again: {:?}", posts.lock().unwrap());
    feeder.abort();
}

#[test]
fn a_failed_up_leaves_no_data_dir_and_up_with_memory_logs_none() {
    let cwd = tempfile::tempdir().unwrap();
    // Port in use: `up` fails, and ./procwatch-data was not created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bin().current_dir(cwd.path()).args(["up", "--listen", &addr]).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"), "{out:?}");
    assert!(!cwd.path().join("procwatch-data").exists(), "a failed up created ./procwatch-data");

    // --store memory: no data dir in the log, none on disk; a short summary, no config dump.
    let addr_file = cwd.path().join("addr");
    let mut up = bin()
        .current_dir(cwd.path())
        .args(["up", "--store", "memory", "--listen", "127.0.0.1:0", "--interval", "500ms"])
        .arg("--addr-file")
        .arg(&addr_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_until("up to write its address", Duration::from_secs(60), || {
        assert!(up.try_wait().unwrap().is_none(), "up exited");
        addr_file.exists().then_some(())
    });
    let _ = Command::new("kill").args(["-TERM", &up.id().to_string()]).status();
    let out = up.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("data_dir=none") || log.contains("data_dir=\"none\""), "{log}");
    assert!(!log.contains("ServerConfig"), "the config struct is dumped: {log}");
    assert!(
        !cwd.path().join("procwatch-data").exists(),
        "up --store memory created ./procwatch-data"
    );
}
