//! The config file through the real binary.
//!
//! - Every file in `tests/invalid_configs/` is refused: non-zero exit, and stderr names the
//!   file and contains the fragment of its `# expect:` line. The command is `status --server
//!   http://127.0.0.1:1` (nothing listens there, so a file that wrongly passed would fail with
//!   "cannot reach", not with its fragment) unless a `# args:` line gives another.
//! - `procwatch.example.toml` covers every flag of `server`, `agent`, `alarm`, `up` and
//!   `status` (each appears as a `key =` line in the section that subcommand reads), every
//!   value in it passes validation with all its commented settings switched on, its
//!   `[[notifiers]]` build, and `procwatch up` starts and stops cleanly with the file as is.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_procwatch"));
    c.env_remove("PROCWATCH_CONFIG").stdin(Stdio::null());
    c
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../procwatch.example.toml")
}

/// Runs `procwatch --config FILE ARGS` to completion (at most 20 s, then killed).
fn run(file: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = bin()
        .arg("--config")
        .arg(file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = common::poll_for(Duration::from_secs(20), || child.try_wait().unwrap())
    else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("procwatch --config {} {args:?} did not exit", file.display());
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn every_invalid_config_is_refused_with_file_key_and_reason() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is in {}", dir.display());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let args: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("# args: "))
            .unwrap_or("status --server http://127.0.0.1:1")
            .split_whitespace()
            .collect();
        let (code, err) = run(&file, &args);
        assert_eq!(code, Some(2), "{}: not refused with exit 2: {err}", file.display());
        assert!(
            err.contains(&format!("config file {}", file.display())),
            "{}: the error does not name the file: {err}",
            file.display()
        );
        assert!(err.contains(expect), "{}: expected {expect:?} in: {err}", file.display());
    }
}

/// Long flags listed by `procwatch <sub> --help`, as config keys.
fn keys_of(sub: &str) -> Vec<String> {
    let out = bin().args([sub, "--help"]).output().unwrap();
    assert!(out.status.success());
    let mut keys: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("-v, ").or(l.strip_prefix("-h, ")).unwrap_or(l);
            let flag = l.strip_prefix("--")?;
            Some(flag.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next()?.to_owned())
        })
        .filter(|f| !["help", "version", "config", "verbose"].contains(&f.as_str()))
        .map(|f| f.replace('-', "_"))
        .collect();
    keys.dedup();
    keys
}

/// The `key =` names of each section (commented or not); top-level keys under "".
fn keys_by_section(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if !line.starts_with('#') {
                section = s.trim_matches(['[', ']']).to_owned();
            }
            continue;
        }
        let l = l.strip_prefix("or: ").unwrap_or(l);
        if let Some((k, _)) = l.split_once(" = ") {
            if k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.push((section.clone(), k.to_owned()));
            }
        }
    }
    out
}

#[test]
fn example_covers_every_flag() {
    let text = std::fs::read_to_string(example()).unwrap();
    let keys = keys_by_section(&text);
    let has = |sections: &[&str], k: &str| {
        keys.iter().any(|(s, key)| key == k && (sections.contains(&s.as_str()) || s.is_empty()))
    };
    for (sub, sections) in [
        ("server", &["server"][..]),
        ("agent", &["agent"][..]),
        ("alarm", &["alarm"][..]),
        ("up", &["up", "agent", "server"][..]),
        ("status", &["status"][..]),
    ] {
        let flags = keys_of(sub);
        assert!(flags.len() >= 3, "{sub}: {flags:?}");
        let missing: Vec<&String> = flags.iter().filter(|f| !has(sections, f)).collect();
        assert!(missing.is_empty(), "procwatch.example.toml lacks {sub} settings {missing:?}");
    }
}

/// The example with every `# key = value` and `# [[table]]` line switched on.
fn all_on(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else { return line.to_owned() };
            let is_setting = rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            let is_table = rest.starts_with("[[") && rest.ends_with("]]");
            if is_setting || is_table {
                rest.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_values_all_pass_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let on = tmp.path().join("all-on.toml");
    let text = all_on(&std::fs::read_to_string(example()).unwrap());
    assert!(text.contains("\n[[notifiers]]\ntype = \"webhook\""), "{text}");
    std::fs::write(&on, &text).unwrap();
    // Every section is checked whatever the subcommand; `status` then fails on the network.
    let (code, err) = run(&on, &["status", "--server", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot reach") && !err.contains("config file"), "{err}");

    // The notifier tables build: `procwatch alarm` gets as far as following (it says it is
    // reconnecting to the unreachable server) instead of exiting on a config error.
    let mut alarm = bin()
        .arg("--config")
        .arg(&on)
        .args(["alarm", "--server", "http://127.0.0.1:1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = alarm.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut err = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let following = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("reconnecting") => break true,
            Ok(line) => err.push(line),
            Err(_) => break false, // exited (stderr closed), or nothing for 60 s
        }
    };
    let exited = alarm.try_wait().unwrap();
    let _ = alarm.kill();
    let _ = alarm.wait();
    assert!(following && exited.is_none(), "procwatch alarm exited ({exited:?}): {err:?}");
}

#[test]
fn up_runs_with_the_example_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let mut up = bin()
        .arg("--config")
        .arg(example())
        .args(["up", "--listen", "127.0.0.1:0", "--interval", "1s", "--color", "never"])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(first.starts_with("procwatch is up: dashboard at http://127.0.0.1:"), "{first}");
    let pid = up.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let Some(status) = common::poll_for(Duration::from_secs(30), || up.try_wait().unwrap()) else {
        let _ = up.kill();
        panic!("procwatch up did not stop");
    };
    assert!(status.success(), "{status}");
}
