//! Harness shared by the end-to-end tests of the real binary: child processes stopped by PID,
//! waiting for an observable condition with a deadline (never a fixed sleep), looking up a peer
//! daemon on PATH, the SKIPPED-or-fail rule for missing peers, free ports. Each test binary
//! uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a wait looks again. The harness's one pacing sleep: a wait ends on the condition
/// it polls for, or fails at its deadline; it never waits for time itself.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Some`, for at most `limit`; `None` past the deadline.
pub fn poll_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` until it returns `Some`; panics after `limit` saying what never happened.
pub fn wait_until<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll_for(limit, probe).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// [`wait_until`] for an async probe (an HTTP request, ...), pacing with the runtime's timer.
pub async fn wait_until_async<T, F>(what: &str, limit: Duration, probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    wait_until_async_every(what, limit, POLL, probe).await
}

/// [`wait_until_async`] looking again every `every` (a probe that costs its peer something: a
/// Prometheus query, a browser round trip).
pub async fn wait_until_async_every<T, F>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> F,
) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// `GET url` (with `token` as a bearer token): the JSON body of a 2xx, else `None` (a probe for
/// the waits above: not there yet).
pub async fn try_get_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Option<serde_json::Value> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// `POST url/api/v1/samples` of `batch` with the write `token`; panics unless it is a 2xx.
pub async fn post_samples(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    batch: &serde_json::Value,
) {
    let r = client
        .post(format!("{url}/api/v1/samples"))
        .bearer_auth(token)
        .json(batch)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}: {}", r.status(), r.text().await.unwrap());
}

/// Sends `req` and reads its answer as JSON; panics on a transport error or a body that is
/// not JSON.
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// Waits for `child` to exit (at most `limit`) and returns its status.
pub fn wait_exit(child: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    wait_until(&format!("{what} to exit"), limit, || child.try_wait().expect("try_wait"))
}

/// Waits for a server `child` to write its `--addr-file` and returns its `http://` URL;
/// panics if the child exits first or nothing is written within `limit`.
pub fn wait_addr_file(child: &mut Child, addr_file: &Path, what: &str, limit: Duration) -> String {
    wait_until(&format!("{what} to write its address"), limit, || {
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            if !addr.trim().is_empty() {
                return Some(format!("http://{}", addr.trim()));
            }
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("{what} exited early: {status}");
        }
        None
    })
}

/// A path `dir/name` that runs `/bin/sh`: a symbolic link, not a copy.
///
/// The kernel names a process (its `comm`) after the basename of the path it was executed
/// through, so the shell runs as `name` (≤ 15 bytes keeps it whole). A copy would be open for
/// writing while it is made, and any test thread that forks meanwhile inherits that descriptor
/// until its own exec: executing the copy then fails with "Text file busy" (ETXTBSY). A link
/// is never opened for writing, so it cannot race.
#[allow(dead_code)]
pub fn named_shell(dir: &Path, name: &str) -> PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink("/bin/sh", &link)
        .unwrap_or_else(|e| panic!("link {} -> /bin/sh: {e}", link.display()));
    link
}

/// A child process killed by PID (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { child, name: name.to_owned() }
    }

    /// Sends `sig` (`-STOP`, `-TERM`, ...) to the process, by its PID.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().expect("kill").success();
        assert!(ok, "kill {sig} {} failed", self.name);
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited early: {status}", self.name);
        }
    }

    /// Waits (at most `limit`) until this server has written its `--addr-file`, and returns
    /// its `http://` URL; panics if the server exits first.
    pub fn wait_for_addr(&mut self, addr_file: &Path, limit: Duration) -> String {
        wait_addr_file(&mut self.child, addr_file, &self.name, limit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let child = &mut self.child;
        if poll_for(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process SIGKILLed (by PID) on drop if it is still running.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// SIGKILL now, and reap.
    pub fn kill9(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("wait");
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The binary under test, without the `PROCWATCH_*` variables (config, server, tokens) that
/// would change what a test asks of it.
pub fn procwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_procwatch"));
    for var in [
        "PROCWATCH_CONFIG",
        "PROCWATCH_SERVER",
        "PROCWATCH_WRITE_TOKEN",
        "PROCWATCH_READ_TOKEN",
        "PROCWATCH_WRITE_TOKEN_FILE",
        "PROCWATCH_READ_TOKEN_FILE",
        "PROCWATCH_ADMIN_TOKEN",
        "PROCWATCH_ADMIN_TOKEN_FILE",
    ] {
        c.env_remove(var);
    }
    c
}

/// `procwatch server` on `127.0.0.1:0` with `args`, its data in `<dir>/data`; returns the
/// process and its URL once it has written its address.
pub fn start_server(dir: &Path, args: &[&str]) -> (Proc, String) {
    let addr_file = dir.join("server.addr");
    let mut server = Proc::spawn(
        "procwatch server",
        procwatch()
            .args(["server", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--addr-file")
            .arg(&addr_file),
    );
    let url = server.wait_for_addr(&addr_file, Duration::from_secs(60));
    (server, url)
}

/// `procwatch agent --server <url>` with `args`, its spool in `<dir>/spool`.
pub fn start_agent(dir: &Path, url: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        "procwatch agent",
        procwatch()
            .args(["agent", "--server", url])
            .args(args)
            .arg("--spool-dir")
            .arg(dir.join("spool")),
    )
}

/// A `procwatch server` on `127.0.0.1:0` whose stderr goes to `<dir>/<name>.log`, printed
/// when the test fails; SIGKILLed (by PID) on drop.
pub struct LoggedServer {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl LoggedServer {
    /// Starts `procwatch server` with `args`, its data in `<dir>/<name>.data`, and waits (at
    /// most 60 s) for its address; panics with its log if it exits first.
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> LoggedServer {
        let addr_file = dir.join(format!("{name}.addr"));
        let log = dir.join(format!("{name}.log"));
        let mut child = procwatch()
            .args(["server", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.join(format!("{name}.data")))
            .arg("--addr-file")
            .arg(&addr_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn procwatch server");
        let what = format!("server {name} to start");
        let url = wait_until(&what, Duration::from_secs(60), || {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if !a.trim().is_empty() {
                    return Some(format!("http://{}", a.trim()));
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("server {name} exited with {status}:\n{log}");
            }
            None
        });
        LoggedServer { child, url, log }
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {}:\n{log}", self.log.display());
        }
    }
}

/// POSTs `body` as JSON: the status and the JSON answer (`null` when it is not JSON).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = client.post(url).json(body).send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// An HTTP server on 127.0.0.1:0 that records every JSON body POSTed to `/hook`.
pub async fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies)
}

/// The lines read from `r` (a child's stdout or stderr), collected by a thread as they come.
pub fn collect_lines(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// `procwatch --config <dir>/server.toml server` with `config` as the file, on `127.0.0.1:0`,
/// the in-memory store, a 200 ms interval and the `write`/`read` tokens; returns the process
/// and its URL once it has written its address.
pub fn start_memory_server(dir: &Path, config: &str, write: &str, read: &str) -> (Proc, String) {
    let config_file = dir.join("server.toml");
    std::fs::write(&config_file, config).unwrap();
    let addr_file = dir.join("server.addr");
    let mut server = Proc::spawn(
        "procwatch server",
        procwatch()
            .arg("--config")
            .arg(&config_file)
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--interval", "200ms", "--store", "memory"])
            .args(["--write-token", write, "--read-token", read])
            .arg("--addr-file")
            .arg(&addr_file),
    );
    let url = server.wait_for_addr(&addr_file, Duration::from_secs(60));
    (server, url)
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
