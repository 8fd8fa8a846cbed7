//! A stop signal right after a subcommand says it is ready stops it cleanly.
//!
//! `procwatch up` and `procwatch server` once installed their SIGINT/SIGTERM handlers only
//! after the banner (the address file): a signal sent right after it killed the process by
//! its default action (on two busy cores, about one run in three). Each test here starts the
//! real binary several times, signals it the moment it announces readiness, and requires exit
//! code 0. The deadline only tells a hang from a stop; `--header-read-timeout 10m` makes any
//! connection that held the graceful shutdown hang past it instead of ending after 30 s.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

mod common;
use common::KillOnDrop;

/// Rounds per test: the race was a narrow window, so one round proves little.
const ROUNDS: usize = 8;
/// Not a latency bound: a clean stop takes well under a second even on a loaded machine.
const HANG: Duration = Duration::from_secs(60);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_procwatch"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PROCWATCH_") {
            c.env_remove(k);
        }
    }
    c.env("PROCWATCH_LOG", "warn");
    c
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
}

/// Waits for the child to exit; a child still running after [`HANG`] is a hang.
fn wait_exit(p: &mut KillOnDrop, what: &str) -> ExitStatus {
    common::wait_exit(&mut p.0, &format!("{what} (a hang if it does not) after the signal"), HANG)
}

#[test]
fn up_stops_cleanly_on_sigint_right_after_the_banner() {
    for round in 0..ROUNDS {
        let tmp = tempfile::tempdir().unwrap();
        let child = bin()
            .args(["up", "--listen", "127.0.0.1:0", "--interval", "1s", "--color", "never"])
            .args(["--header-read-timeout", "10m", "--host", "sig-test"])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut up = KillOnDrop(child);
        let stdout = up.0.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().expect("a banner line").unwrap();
        assert!(first.starts_with("procwatch is up: dashboard at http://127.0.0.1:"), "{first}");
        signal(&up.0, "-INT");
        let status = wait_exit(&mut up, "procwatch up");
        assert!(status.success(), "round {round}: procwatch up ended with {status}");
    }
}

#[test]
fn server_stops_cleanly_on_sigterm_right_after_the_address_file() {
    for round in 0..ROUNDS {
        let tmp = tempfile::tempdir().unwrap();
        let addr_file = tmp.path().join("addr");
        let child = bin()
            .args(["server", "--listen", "127.0.0.1:0", "--header-read-timeout", "10m"])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = KillOnDrop(child);
        wait_for_file(&mut server, &addr_file);
        signal(&server.0, if round % 2 == 0 { "-TERM" } else { "-INT" });
        let status = wait_exit(&mut server, "procwatch server");
        assert!(status.success(), "round {round}: procwatch server ended with {status}");
    }
}

/// Polls for the address file (written whole, then renamed into place).
fn wait_for_file(p: &mut KillOnDrop, path: &Path) {
    common::wait_until(&format!("the address file {}", path.display()), HANG, || {
        if let Some(s) = p.0.try_wait().unwrap() {
            panic!("exited before writing {}: {s}", path.display());
        }
        path.exists().then_some(())
    });
}
