//! Every `curl` example of `docs/guide.md` runs against a live server, so the guide and the
//! server cannot drift apart.
//!
//! The examples are the ```sh blocks whose command starts with `curl`. Each is run as written
//! by `sh -c` with the real `curl` binary, in the guide's order (the first writes the data the
//! later ones query), with `http://127.0.0.1:8000` replaced by the test server's address and
//! `--fail-with-body` added so an HTTP error fails the example; `$WRITE_TOKEN` and
//! `$READ_TOKEN` are set (the server has no tokens, so the headers are ignored). Each must
//! exit 0 and print JSON (`/metrics`: Prometheus text).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::KillOnDrop;

/// The ```sh blocks that start with `curl`, in order.
fn curl_examples(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(Vec::new()),
            (Some(lines), "```") => {
                let cmd = lines.join("\n");
                if cmd.trim_start().starts_with("curl ") {
                    out.push(cmd);
                }
                block = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    out
}

#[test]
fn extracts_sh_curl_blocks_only() {
    let md = "```sh\ncurl -s http://x/a\n```\n```text\ncurl -sN http://x/stream\n```\n```sh\ncargo run\n```\n";
    assert_eq!(curl_examples(md), vec!["curl -s http://x/a".to_owned()]);
}

/// Whether `curl` is installed; when it is not, SKIPPED (a failure under `CI`: it is in
/// `.ci/packages.txt`).
fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok();
    if !ok {
        common::skip_or_fail("no curl binary");
    }
    ok
}

/// Waits (at most 60 s) for two more alarm evaluation passes of the server, counted by its
/// own histogram in `/metrics`, read by `curl -s <args>`.
fn wait_two_evaluation_passes(args: &[&str]) {
    let passes = || {
        let out = Command::new("curl").arg("-s").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("procwatch_alarm_evaluation_duration_seconds_count"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let start = passes();
    common::wait_until("two more evaluation passes", Duration::from_secs(60), || {
        (passes() >= start + 2).then_some(())
    });
}

/// The text of `docs/guide.md`.
fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md"))
        .unwrap()
}

#[test]
fn every_curl_example_of_the_guide_works() {
    if !have_curl() {
        return;
    }
    let examples = curl_examples(&guide());
    assert!(examples.len() >= 15, "only {} curl examples found in the guide", examples.len());

    let tmp = tempfile::tempdir().unwrap();
    let addr_file = tmp.path().join("addr");
    let mut server = KillOnDrop(
        common::procwatch()
            .args(["server", "--listen", "127.0.0.1:0", "--store", "memory", "--interval", "1s"])
            .arg("--addr-file")
            .arg(&addr_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base =
        common::wait_addr_file(&mut server.0, &addr_file, "the server", Duration::from_secs(30));

    for example in &examples {
        assert!(
            example.contains("http://127.0.0.1:8000"),
            "example without the base URL: {example}"
        );
        let cmd = example.replace("http://127.0.0.1:8000", &base).replacen(
            "curl ",
            "curl --fail-with-body --max-time 20 ",
            1,
        );
        let out = Command::new("sh")
            .args(["-c", &cmd])
            .env("WRITE_TOKEN", "unused-write")
            .env("READ_TOKEN", "unused-read")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "example failed ({}):\n{example}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if example.contains("/metrics") {
            assert!(stdout.contains("procwatch_"), "{example}: {stdout}");
        } else {
            let v: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{example}: not JSON ({e}): {stdout}"));
            assert!(v.get("error").is_none(), "{example}: {v}");
        }
    }

    // The data the first examples sent is what the later ones read.
    let out = Command::new("curl")
        .args(["-s", &format!("{base}/ressources-usage/get-all?host=web-1")])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("postgres").is_some(), "{v}");

    // The guide ends by retiring the hosts its examples created: no alarm is left open
    // (the legacy example's cpu of 130 raised RED on 10.0.0.5), and several evaluation
    // passes later none has come back.
    let active = || {
        let out = Command::new("curl")
            .args(["-s", &format!("{base}/api/v1/alarms?active=true&limit=0")])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["alarms"].as_array().unwrap().clone()
    };
    assert_eq!(active(), Vec::<serde_json::Value>::new());
    let hosts =
        Command::new("curl").args(["-s", &format!("{base}/api/v1/hosts")]).output().unwrap();
    let hosts: serde_json::Value = serde_json::from_slice(&hosts.stdout).unwrap();
    assert_eq!(hosts["hosts"], serde_json::json!([]), "the guide's hosts are retired");
    let retired = Command::new("curl")
        .args(["-s", &format!("{base}/api/v1/alarms?limit=0")])
        .output()
        .unwrap();
    let events: serde_json::Value = serde_json::from_slice(&retired.stdout).unwrap();
    let n =
        events["alarms"].as_array().unwrap().iter().filter(|e| e["kind"] == "host_retired").count();
    assert_eq!(n, 2, "{events}");
    // Two more evaluation passes (counted by the server's own histogram) change nothing.
    wait_two_evaluation_passes(&[&format!("{base}/metrics")]);
    assert_eq!(active(), Vec::<serde_json::Value>::new());
}

/// The inline code spans of `markdown` (outside fenced blocks) that are a `procwatch` command
/// line, each once, in order.
fn procwatch_commands(markdown: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("procwatch ") && !out.iter().any(|c| c == span) {
                out.push(span.to_owned());
            }
        }
    }
    out
}

#[test]
fn extracts_procwatch_spans_outside_fences() {
    let md = "Run `procwatch up` or `procwatch up`, not `cargo run`.\n```text\n`procwatch x`\n```\nThen `procwatch status --server http://h:8000`.";
    assert_eq!(
        procwatch_commands(md),
        vec!["procwatch up".to_owned(), "procwatch status --server http://h:8000".to_owned()]
    );
}

/// The guide's `procwatch` commands that this walk does not run, with the reason. Every other
/// command the guide shows in the text is run below; a new one fails the walk until it is run
/// or listed here.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "procwatch up",
        "listens on the fixed 127.0.0.1:8000 and writes ./procwatch-data; up_e2e.rs runs it on port 0",
    ),
    ("procwatch server", "a service's name; its typical command line (section 2) is run"),
    ("procwatch agent", "a service's name; its typical command line (section 2) is run"),
    ("procwatch alarm", "a service's name; its typical command line (section 2) is run"),
    (
        "procwatch alarm --state-file FILE",
        "a flag in context; alarm_e2e.rs and first_hour_e2e.rs resume from a state file",
    ),
    ("procwatch loadgen", "a benchmark load generator (BENCHMARKS.md), minutes long"),
    (
        "procwatch agents set HOST-GLOB key=value...",
        "the syntax; agents_e2e.rs runs `agents set` against a server with an admin token",
    ),
    (
        "procwatch alarm backtest --trace DIR",
        "needs recorded traces; alarm_backtest.rs runs it on the bundled ones",
    ),
    (
        "procwatch alarm backtest --cv --trace DIR...",
        "needs recorded traces and minutes of CPU; alarm_backtest.rs runs it",
    ),
];

/// A guide command line run by `sh -c` in `dir` with `env` (and no config file), its output
/// discarded; stopped by PID.
fn spawn_line(line: &str, dir: &Path, env: &[(&str, &str)]) -> KillOnDrop {
    KillOnDrop(
        Command::new("sh")
            .args(["-c", line])
            .current_dir(dir)
            .envs(env.iter().copied())
            .env_remove("PROCWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A child stopped by PID: SIGTERM, then its exit status within `limit`.
fn terminate(child: &mut Child, what: &str, limit: Duration) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    common::wait_exit(child, &format!("{what}, after SIGTERM,"), limit)
}

fn curl_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("curl").args(["-s", "--max-time", "20"]).args(args).output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("curl {args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `cmd` (a guide command after substitution) by `sh -c` in `dir`, to completion within
/// `limit`; asserts exit 0 and returns stdout.
fn run_to_end(cmd: &str, dir: &Path, env: &[(&str, &str)], limit: Duration) -> String {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("exec {cmd}")]).current_dir(dir);
    for var in [
        "PROCWATCH_CONFIG",
        "PROCWATCH_SERVER",
        "PROCWATCH_WRITE_TOKEN_FILE",
        "PROCWATCH_READ_TOKEN_FILE",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    let out_file = dir.join("cmd.out");
    let err_file = dir.join("cmd.err");
    let mut child = KillOnDrop(
        c.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = common::wait_exit(&mut child.0, &format!("`{cmd}`"), limit);
    let stdout = std::fs::read_to_string(&out_file).unwrap();
    let stderr = std::fs::read_to_string(&err_file).unwrap();
    assert!(status.success(), "`{cmd}` failed ({status}):\nstdout: {stdout}\nstderr: {stderr}");
    stdout
}

#[test]
fn the_guides_procwatch_commands_run_on_loopback() {
    if !have_curl() {
        return;
    }
    let commands = procwatch_commands(&guide());
    for (cmd, _) in NOT_RUN {
        assert!(commands.iter().any(|c| c == cmd), "NOT_RUN lists {cmd:?}, the guide does not");
    }
    let mut to_run: Vec<&str> = commands
        .iter()
        .map(String::as_str)
        .filter(|c| !NOT_RUN.iter().any(|(n, _)| n == c))
        .collect();
    let mut take = |prefix: &str| -> String {
        let i = to_run
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("the guide shows no `{prefix}…` command: {commands:?}"));
        to_run.remove(i).to_owned()
    };
    let bin = env!("CARGO_BIN_EXE_procwatch");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const WRITE: &str = "guide-walk-write-token";
    const READ: &str = "guide-walk-read-token";

    // The server of section 2's table, on loopback port 0, with the token files it names.
    let server_cmd = take("procwatch server --listen 0.0.0.0:8000");
    for (flag, token) in [("--write-token-file", WRITE), ("--read-token-file", READ)] {
        let file = server_cmd
            .split_whitespace()
            .skip_while(|w| *w != flag)
            .nth(1)
            .unwrap_or_else(|| panic!("{server_cmd}: no {flag}"));
        std::fs::write(dir.join(file), format!("{token}\n")).unwrap();
    }
    let addr_file = dir.join("addr");
    let server_line = format!(
        "exec {} --store memory --interval 200ms --addr-file {}",
        server_cmd.replacen("procwatch", bin, 1).replace("0.0.0.0:8000", "127.0.0.1:0"),
        addr_file.display()
    );
    let mut server = KillOnDrop(
        Command::new("sh")
            .args(["-c", &server_line])
            .current_dir(dir)
            .env_remove("PROCWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base =
        common::wait_addr_file(&mut server.0, &addr_file, &server_cmd, Duration::from_secs(30));
    let auth = format!("Authorization: Bearer {READ}");
    // The guide's placeholders: hosts `host`/`mon` are this server, `$WRITE_TOKEN`,
    // `$READ_TOKEN` and `T` (a read token in `status`) the tokens.
    let env: Vec<(&str, &str)> = vec![
        ("PROCWATCH_READ_TOKEN", READ),
        ("PROCWATCH_WRITE_TOKEN", WRITE),
        ("WRITE_TOKEN", WRITE),
        ("READ_TOKEN", READ),
        ("PROCWATCH_SERVER", &base),
        ("PROCWATCH_SPOOL_DIR", "spool"),
    ];
    let subst = |cmd: &str| -> String {
        cmd.replacen("procwatch", bin, 1)
            .replace("http://host:8000", &base)
            .replace("http://mon:8000", &base)
            .replace("--token T", &format!("--token {READ}"))
    };
    let quick = Duration::from_secs(30);

    let help = run_to_end(&subst(&take("procwatch up --help")), dir, &env, quick);
    assert!(help.contains("--listen"), "{help}");
    // "No server": the agent would ship its sweep to PROCWATCH_SERVER.
    let no_server: Vec<(&str, &str)> =
        env.iter().copied().filter(|(k, _)| *k != "PROCWATCH_SERVER").collect();
    let once = run_to_end(&subst(&take("procwatch agent --once")), dir, &no_server, quick);
    assert!(once.lines().count() > 1, "one sweep as a table: {once}");

    // The alarm service of the table follows the stream while the agent ships.
    let alarm_cmd = take("procwatch alarm --server");
    let mut alarm = spawn_line(&format!("exec {}", subst(&alarm_cmd)), dir, &env);
    // The agent of the table, for a couple of short intervals.
    let agent_cmd = take("procwatch agent --server");
    let mut agent = spawn_line(&format!("exec {} --interval 200ms", subst(&agent_cmd)), dir, &env);
    let hosts_url = format!("{base}/api/v1/hosts");
    let what = format!("`{agent_cmd}` to deliver a sweep");
    let (host, first_seen) = common::wait_until(&what, Duration::from_secs(60), || {
        assert!(agent.0.try_wait().unwrap().is_none(), "`{agent_cmd}` exited");
        let v = curl_json(&["-H", &auth, &hosts_url]);
        let h = v["hosts"].as_array().and_then(|h| h.first())?;
        Some((h["host"].as_str().unwrap().to_owned(), h["last_seen"].clone()))
    });
    // A second sweep arrives: the agent runs on, interval after interval.
    let what = format!("`{agent_cmd}` to deliver a second sweep");
    common::wait_until(&what, Duration::from_secs(60), || {
        let v = curl_json(&["-H", &auth, &hosts_url]);
        (v["hosts"][0]["last_seen"] != first_seen).then_some(())
    });
    let status = terminate(&mut agent.0, &agent_cmd, Duration::from_secs(30));
    assert!(status.success(), "`{agent_cmd}` stopped with {status}");

    // The client commands see what the agent sent (`status` cuts long host names to 20
    // columns, so a long hostname is looked for by its first 19 characters).
    let short: String = host.chars().take(19).collect();
    let status_bare = run_to_end(&subst(&take("procwatch status --server")), dir, &env, quick);
    assert!(status_bare.contains(&short), "{status_bare}");
    let status_env = run_to_end(&subst(&take("procwatch status")), dir, &env, quick);
    assert!(status_env.contains(&short), "{status_env}");
    let retire_cmd = take("procwatch hosts retire");
    let hosts = run_to_end(&subst(&take("procwatch hosts")), dir, &env, quick);
    assert!(hosts.contains(&host), "{hosts}");
    let agents = run_to_end(&subst(&take("procwatch agents")), dir, &env, quick);
    assert!(agents.contains(&host) && agents.contains("running"), "{agents}");
    // The walk ends by retiring the host it created (the guide's example host is web-1).
    run_to_end(&subst(&retire_cmd).replace("web-1", &host), dir, &env, quick);

    assert!(alarm.0.try_wait().unwrap().is_none(), "`{alarm_cmd}` exited during the walk");
    let status = terminate(&mut alarm.0, &alarm_cmd, Duration::from_secs(30));
    assert!(status.success(), "`{alarm_cmd}` stopped with {status}");

    assert!(to_run.is_empty(), "guide commands neither run nor in NOT_RUN: {to_run:?}");

    // No alarm is left active, now and two evaluation passes later.
    let active_url = format!("{base}/api/v1/alarms?active=true&limit=0");
    let active = || curl_json(&["-H", &auth, &active_url])["alarms"].clone();
    assert_eq!(active(), serde_json::json!([]));
    wait_two_evaluation_passes(&["-H", &auth, &format!("{base}/metrics")]);
    assert_eq!(active(), serde_json::json!([]));
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
}
