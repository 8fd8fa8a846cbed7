//! Harness shared by the end-to-end tests of the real binary: child processes stopped by PID,
//! looking up a peer daemon on PATH, the SKIPPED-or-fail rule for missing peers, free ports.
//! Each test binary uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed by PID (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { child, name }
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited early: {status}", self.name);
        }
    }

    /// Waits (at most `limit`) until this server has written its `--addr-file`, and returns
    /// its `http://` URL; panics if the server exits first.
    pub fn wait_for_addr(&mut self, addr_file: &std::path::Path, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(addr) = std::fs::read_to_string(addr_file) {
                if !addr.trim().is_empty() {
                    return format!("http://{}", addr.trim());
                }
            }
            self.assert_running();
            assert!(Instant::now() < deadline, "{} did not write its address", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

/// SKIPPED outside CI, a failure under `CI=true`.
pub fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI is set: the CI machine must have it, see .ci/packages.txt)");
    }
    skipped(why);
}

/// Says `SKIPPED: why` on stderr past libtest's output capture (which takes only the
/// `print!` macros), so the line shows even though the test passes; `.ci/run` counts these
/// lines and fails if there is any (README, Tests).
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
