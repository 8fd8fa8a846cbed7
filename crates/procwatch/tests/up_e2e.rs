//! `procwatch up` as a user runs it: the real binary, a real data directory, this machine's
//! real processes.
//!
//! - Started with `--listen 127.0.0.1:0 --addr-file F --data-dir TMP --interval 1s` and a
//!   config file whose one `[[rules]]` puts the cpu threshold of a busy child (`/bin/sh`
//!   run through a link named `pwup<N>`, spinning) at 2 % (hysteresis 1), which the child exceeds even
//!   when other work keeps the cores busy.
//! - Waits for `procwatch is up: dashboard at URL` on stdout (the URL matches the address
//!   file), then finds this machine's host (its hostname: no `--host` given) in
//!   `/api/v1/hosts` and the child in `get-all` and in `/api/v1/usage` (the dashboard's API),
//!   and the dashboard page at `/`. How long that took after the URL line is printed, not
//!   asserted: it depends on how busy the machine is. Every wait gives up after 60 s.
//! - The alarm console prints `RED   <host> pwup<N> cpu ...` on stdout, and `procwatch
//!   status` shows the host (fresh), the child among the top processes, and the alarm.
//! - SIGINT: exit code 0, and the log says the agent stopped before the server.
//! - Started again on the same data directory: the child's samples are all still there
//!   (at least as many as before the stop), and the host is listed; SIGTERM stops it with
//!   exit code 0 too.
//!
//! Every child is killed by PID on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::KillOnDrop;

const INTERVAL: Duration = Duration::from_secs(1);
/// How long a wait for an event may take before the test gives up: generous, because the
/// machine may be busy; a passing run never waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

/// `procwatch up` with its stdout and stderr collected line by line.
struct Up {
    proc: KillOnDrop,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(dir: &Path, data: &Path, config: &Path) -> Up {
        let addr_file = dir.join("up.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut child = common::procwatch()
            .arg("--config")
            .arg(config)
            .arg("up")
            .args(["--listen", "127.0.0.1:0", "--interval", "1s", "--color", "never"])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--data-dir")
            .arg(data)
            .env("PROCWATCH_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn procwatch up");
        let stdout = common::collect_lines(child.stdout.take().unwrap());
        let stderr = common::collect_lines(child.stderr.take().unwrap());
        Up { proc: KillOnDrop(child), stdout, stderr }
    }

    /// Waits for the URL line; checks it against the address file.
    fn url(&mut self, dir: &Path) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.stdout.lock().unwrap().iter().find_map(|l| {
                l.strip_prefix("procwatch is up: dashboard at ").map(|u| u.trim().to_owned())
            });
            if let Some(url) = found {
                let addr = std::fs::read_to_string(dir.join("up.addr")).expect("address file");
                assert_eq!(url, format!("http://{}/", addr.trim()));
                return url.trim_end_matches('/').to_owned();
            }
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                panic!(
                    "procwatch up exited early ({status}): {}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            assert!(Instant::now() < deadline, "procwatch up printed no URL");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`-INT`, `-TERM`), then the exit status (waits up to [`PATIENCE`]).
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.proc.0.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
        common::wait_exit(&mut self.proc.0, &format!("procwatch up, after {signal},"), PATIENCE)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let resp = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Samples of `process` on `host` over the last 10 minutes (0 when there is no row).
async fn samples(client: &reqwest::Client, url: &str, host: &str, process: &str) -> u64 {
    let q = format!("{url}/api/v1/usage?window=10m&host={host}&process={process}");
    let resp = client.get(&q).send().await.unwrap_or_else(|e| panic!("GET {q}: {e}"));
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return 0; // the host has sent nothing yet
    }
    assert!(resp.status().is_success(), "GET {q}: {}", resp.status());
    let v: Value = resp.json().await.unwrap();
    v["rows"].as_array().unwrap().first().map_or(0, |r| r["samples"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_shows_this_machine_alarms_and_keeps_data_across_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("procwatch-data");
    let n =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
            % 100_000;
    let name = format!("pwup{}{n:05}", std::process::id() % 100);
    let burn_bin = common::named_shell(dir, &name);
    let config = dir.join("procwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[rules]]\nprocess = \"{name}\"\nmetric = \"cpu\"\nthreshold = 2\nhysteresis = 1\n"
        ),
    )
    .unwrap();
    let burn = KillOnDrop(
        Command::new(&burn_bin)
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let host = hostname();
    let client = reqwest::Client::new();

    // First run.
    let mut up = Up::start(dir, &data, &config);
    let url = up.url(dir);
    let shown = Instant::now();
    let within = PATIENCE;
    loop {
        let all = get_json(&client, &format!("{url}/ressources-usage/get-all")).await;
        let usage = samples(&client, &url, &host, &name).await;
        let hosts = get_json(&client, &format!("{url}/api/v1/hosts")).await;
        let host_listed = hosts["hosts"].as_array().unwrap().iter().any(|h| h["host"] == host);
        if all.get(&name).is_some() && usage > 0 && host_listed {
            break;
        }
        assert!(
            shown.elapsed() < within,
            "{name} on {host} not in get-all/usage/hosts within {within:?}: get-all has {} names, usage {usage}, host listed {host_listed}",
            all.as_object().map_or(0, |m| m.len())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{name} visible {:?} after the URL line (interval {INTERVAL:?})", shown.elapsed());
    let page = client.get(format!("{url}/")).send().await.unwrap();
    assert!(page.status().is_success());
    assert!(page.text().await.unwrap().to_ascii_lowercase().contains("<html"));

    // The alarm console: a RED line for the busy child.
    let red = format!("RED   {host} {name} cpu");
    let deadline = Instant::now() + PATIENCE;
    while !up.stdout.lock().unwrap().iter().any(|l| l.starts_with(&red)) {
        assert!(
            Instant::now() < deadline,
            "no {red:?} line on stdout: {:?}",
            up.stdout.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `procwatch status` against the live server: the host, the busy child at the top, the
    // alarm; one screen of at most 100 columns.
    let out =
        common::procwatch().args(["status", "--top", "30", "--server", &url]).output().unwrap();
    let screen = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    assert!(screen.lines().all(|l| l.chars().count() <= 100), "{screen}");
    // (Other busy processes of the machine, a compiler say, may rank above the child.)
    let listed = screen
        .lines()
        .skip_while(|l| !l.starts_with("TOP PROCESSES"))
        .any(|l| l.contains(&name) && l.contains(&host));
    assert!(listed, "{name} not among the top processes:\n{screen}");
    assert!(screen.contains(&format!("  {red}")), "no alarm in:\n{screen}");
    let host_row = screen.lines().find(|l| l.starts_with(&format!("  {host} "))).unwrap_or("");
    assert!(host_row.contains(" ok "), "host not fresh:\n{screen}");

    // Stop with Ctrl-C: clean exit, the agent stopped before the server.
    let before = samples(&client, &url, &host, &name).await;
    assert!(before > 0);
    drop(burn);
    let status = up.stop("-INT");
    let log = up.stderr.lock().unwrap().join("\n");
    assert!(status.success(), "exit {status}; log:\n{log}");
    let agent_at = log.find("Agent stopped.").expect("agent stop logged");
    let server_at = log.find("Server stopped.").expect("server stop logged");
    assert!(agent_at < server_at, "the agent must stop before the server:\n{log}");

    // Second run on the same data directory: the data is still there.
    let mut again = Up::start(dir, &data, &config);
    let url = again.url(dir);
    let after = samples(&client, &url, &host, &name).await;
    assert!(after >= before, "{name}: {before} samples before the stop, {after} after the restart");
    let all = get_json(&client, &format!("{url}/ressources-usage/get-all")).await;
    assert!(all.get(&name).is_some(), "{name} missing from get-all after the restart");
    let hosts = get_json(&client, &format!("{url}/api/v1/hosts")).await;
    assert!(hosts["hosts"].as_array().unwrap().iter().any(|h| h["host"] == host));
    // SIGTERM (systemd, docker stop) stops it as cleanly.
    let status = again.stop("-TERM");
    assert!(status.success(), "second run exit {status}");
}
