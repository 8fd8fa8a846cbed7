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
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

#[test]
fn every_curl_example_of_the_guide_works() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "curl is missing (in .ci/packages.txt)");
        // Past the output capture, so the line shows: `.ci/run` counts SKIPPED lines.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED: no curl binary\n");
        return;
    }
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md");
    let examples = curl_examples(&std::fs::read_to_string(&guide).unwrap());
    assert!(examples.len() >= 15, "only {} curl examples found in the guide", examples.len());

    let tmp = tempfile::tempdir().unwrap();
    let addr_file = tmp.path().join("addr");
    let mut server = Proc(
        Command::new(env!("CARGO_BIN_EXE_procwatch"))
            .args(["server", "--listen", "127.0.0.1:0", "--store", "memory", "--interval", "1s"])
            .arg("--addr-file")
            .arg(&addr_file)
            .env_remove("PROCWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            if !a.trim().is_empty() {
                break format!("http://{}", a.trim());
            }
        }
        assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "the server wrote no address");
        std::thread::sleep(Duration::from_millis(20));
    };

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
    let passes = || {
        let out = Command::new("curl").args(["-s", &format!("{base}/metrics")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("procwatch_alarm_evaluation_duration_seconds_count"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let start = passes();
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes() < start + 2 {
        assert!(Instant::now() < deadline, "the evaluator made no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(active(), Vec::<serde_json::Value>::new());
}
