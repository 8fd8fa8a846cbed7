//! A real `influxd` for tests (feature `testing`): its own temp directory, free loopback
//! ports, killed by PID on drop.
//!
//! When `influxd` is not installed, [`Influxd::start_or_skip`] prints
//! `SKIPPED: influxd not installed` and returns `None` so the test passes, unless the
//! environment variable `CI` is set, where a missing daemon fails the test (CI installs
//! Debian's `influxdb` package from `.ci/packages.txt`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use procwatch_model::clock::Clock;

use crate::InfluxConfig;

/// `sh -c WATCHDOG <influxd> <config>`: starts influxd, kills it when stdin reaches EOF, exits
/// with influxd's status.
const WATCHDOG: &str = r#"exec 3<&0
"$0" -config "$1" & pid=$!
( cat <&3 >/dev/null; kill -9 "$pid" ) & wpid=$!
wait "$pid"; status=$?
kill "$wpid" 2>/dev/null
exit "$status"
"#;

/// A running `influxd` started by a test.
pub struct Influxd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    http_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `influxd` binary: `$INFLUXD` (if it is a file) or the first `influxd` on `PATH`.
pub fn influxd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFLUXD") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("influxd")).find(|p| p.is_file())
    })
}

/// `GET /ping` with a raw HTTP/1.0 request; true on 204.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.0 204")
        || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204")
}

/// Says `SKIPPED: why` on stderr past libtest's output capture (which takes only the
/// `print!` macros), so the line shows even though the test passes; `.ci/run` counts these
/// lines and fails if there is any.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// Lines a benchmark adds to the tests' `influxdb.conf`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Added to `[data]`, e.g. `cache-snapshot-write-cold-duration = "1s"`.
    pub data: &'static str,
    /// Added to `[http]`, e.g. `max-body-size = 0`.
    pub http: &'static str,
}

impl Influxd {
    /// Starts `influxd`, or returns `None` after printing `SKIPPED: ...` when it is not
    /// installed and `CI` is unset. Panics when it is missing under `CI`, or fails to start.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        Self::start_tuned_or_skip(test, Tuning::default())
    }

    /// [`Influxd::start_or_skip`] with `tuning` added to the configuration (benchmarks).
    pub fn start_tuned_or_skip(test: &str, tuning: Tuning) -> Option<Self> {
        let Some(bin) = influxd_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: influxd is not installed but CI is set (apt-get install influxdb)");
            }
            skipped(&format!("influxd not installed ({test})"));
            return None;
        };
        // A port picked free may be taken before influxd binds it: try fresh ports again.
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let mut d = Influxd::configure(tuning);
            match d.try_spawn(&bin) {
                Ok(()) => return Some(d),
                Err(e) => last_error = e,
            }
        }
        panic!("{test}: influxd did not start: {last_error}");
    }

    /// A temp dir with an `influxdb.conf` on fresh free loopback ports.
    fn configure(tuning: Tuning) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let http_port = free_port();
        let rpc_port = free_port();
        let conf = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
{data}
[coordinator]
  log-queries-after = "0s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
{http}
[logging]
  level = "warn"
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
"#,
            d = dir.path().display(),
            data = tuning.data,
            http = tuning.http,
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("write influxdb.conf");
        Influxd { child: None, dir, http_port }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    /// Starts influxd and waits for `/ping`; on failure it is stopped and its log returned.
    fn try_spawn(&mut self, bin: &Path) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("influxd log");
        // influxd runs under a small sh that kills exactly it (by its PID) as soon as our end
        // of the pipe on its stdin closes: on drop, and also when the test process dies
        // without dropping (a panic in a static, a SIGKILL), so no influxd outlives a test.
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(bin)
            .arg(self.dir.path().join("influxdb.conf"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn sh for influxd");
        self.child = Some(child);
        let clock = procwatch_model::clock::SystemClock;
        let deadline = clock.instant() + Duration::from_secs(30);
        while clock.instant() < deadline {
            if ping(self.http_port) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("influxd exited with {status}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(format!("influxd did not answer /ping within 30 s:\n{}", self.log()))
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The directory holding `data/`, `wal/` and `meta/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A store configuration for database `db` on this daemon (short timeout for tests).
    pub fn config(&self, db: &str) -> InfluxConfig {
        let mut c = InfluxConfig::new(self.url(), db);
        c.timeout = Duration::from_secs(5);
        c
    }

    /// Kills the daemon (SIGKILL to its PID) and waits for it; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Closing the pipe makes the watchdog kill influxd; then the watchdog exits.
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same directories and ports.
    pub fn restart(&mut self) {
        self.stop();
        let bin = influxd_binary().expect("influxd");
        if let Err(e) = self.try_spawn(&bin) {
            panic!("influxd did not restart: {e}");
        }
    }

    /// Whether the daemon is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one HTTP/1 request (head and `Content-Length` body) from `s`, for fake servers in
/// tests; the text is lossy past the head (a gzipped body).
pub fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let len = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return text;
        }
    }
}
