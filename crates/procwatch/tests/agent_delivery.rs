//! Delivery end to end with the real binaries: `procwatch agent --server` against
//! `procwatch server` (started late, SIGKILLed and restarted), the agent SIGKILLed while
//! spooling, a spool cap that forces a drop, and two in-test servers that the real server
//! cannot imitate (one answering 500 to the first requests, one refusing a sweep with 400).
//!
//! What the agent took is read from its own log (`Sweep spooled.` with `ts` and `samples`,
//! written after the sweep is on disk); what arrived is read back from the server, per
//! timestamp.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{wait_until_async, KillOnDrop};

const INTERVAL_MS: u64 = 200;

/// A free loopback port (bound, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn kill_term(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM failed");
}

fn wait_exit(child: &mut Child, what: &str) {
    common::wait_exit(child, what, Duration::from_secs(30));
}

/// A running `procwatch server`; SIGKILLed (by PID) on drop.
struct Server {
    child: KillOnDrop,
    addr: SocketAddr,
}

impl Server {
    /// Starts on `addr` (port 0: any) with the embedded store in `data`.
    fn start(addr: SocketAddr, data: &Path, extra: &[&str]) -> Server {
        let addr_file = data.with_extension(format!("addr-{}", addr.port()));
        let _ = std::fs::remove_file(&addr_file);
        let mut child = common::procwatch()
            .args(["server", "--listen", &addr.to_string(), "--interval", "200ms"])
            .arg("--data-dir")
            .arg(data)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.with_extension("server.log")).expect("log file"))
            .spawn()
            .expect("spawn procwatch server");
        let url = common::wait_addr_file(
            &mut child,
            &addr_file,
            "procwatch server",
            Duration::from_secs(30),
        );
        let addr = url.trim_start_matches("http://").parse().expect("a socket address");
        Server { child: KillOnDrop(child), addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill9(self) {
        self.child.kill9();
    }
}

/// A running `procwatch agent --server`, logging JSON to a file; SIGKILLed on drop.
struct Agent {
    child: KillOnDrop,
    log: PathBuf,
}

impl Agent {
    fn start(server: &str, spool: &Path, log: &Path, extra: &[&str]) -> Agent {
        let err = std::fs::File::create(log).expect("log file");
        let child = common::procwatch()
            .args(["--log-format", "json", "agent", "--server", server, "--host", "e2e-host"])
            .args(["--interval", &format!("{INTERVAL_MS}ms"), "--retry-max", "400ms"])
            .arg("--spool-dir")
            .arg(spool)
            .args(extra)
            .env("PROCWATCH_LOG", "procwatch_agent=debug,procwatch=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn procwatch agent");
        Agent { child: KillOnDrop(child), log: log.to_path_buf() }
    }

    /// Sweeps spooled so far, per ts (from the log).
    fn taken(&self) -> BTreeMap<i64, u64> {
        taken_from_log(&self.log)
    }

    fn wait_sweeps(&self, n: usize) {
        common::wait_until(
            &format!("the agent to take {n} sweeps"),
            Duration::from_secs(30),
            || (self.taken().len() >= n).then_some(()),
        );
    }

    /// SIGTERM (the agent delivers what it can, then exits).
    fn stop(mut self) {
        kill_term(&self.child.0);
        wait_exit(&mut self.child.0, "agent");
    }

    fn kill9(self) {
        self.child.kill9();
    }
}

fn log_events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn taken_from_log(log: &Path) -> BTreeMap<i64, u64> {
    log_events(log)
        .iter()
        .filter(|e| e["fields"]["message"] == "Sweep spooled.")
        .map(|e| (e["fields"]["ts"].as_i64().unwrap(), e["fields"]["samples"].as_u64().unwrap()))
        .collect()
}

fn dropped_from_log(log: &Path) -> u64 {
    log_events(log)
        .iter()
        .filter(|e| e["fields"]["message"] == "Spool is full; dropped the oldest sweeps.")
        .map(|e| e["fields"]["samples"].as_u64().unwrap())
        .sum()
}

async fn get_json(client: &reqwest::Client, url: reqwest::Url) -> Value {
    let resp = client.get(url.clone()).send().await.expect("GET");
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.expect("JSON")
}

/// Samples the server holds for `host`, per ts, read back process by process (raw history).
async fn arrived(server: &str, host: &str, from: i64, to: i64) -> BTreeMap<i64, u64> {
    let client = reqwest::Client::new();
    let mut url = reqwest::Url::parse(&format!("{server}/api/v1/usage")).unwrap();
    url.query_pairs_mut()
        .append_pair("host", host)
        .append_pair("from", &from.to_string())
        .append_pair("to", &to.to_string())
        .append_pair("per_host", "true")
        .append_pair("limit", "100000");
    let usage = get_json(&client, url).await;
    let mut out = BTreeMap::new();
    for row in usage["rows"].as_array().expect("rows") {
        let process = row["process"].as_str().expect("process");
        let mut url = reqwest::Url::parse(server).unwrap();
        url.path_segments_mut().unwrap().extend([
            "api",
            "v1",
            "hosts",
            host,
            "processes",
            process,
            "history",
        ]);
        url.query_pairs_mut()
            .append_pair("from", &from.to_string())
            .append_pair("to", &to.to_string())
            .append_pair("step", "0");
        let h = get_json(&client, url).await;
        for p in h["points"].as_array().expect("points") {
            *out.entry(p["ts"].as_i64().unwrap()).or_insert(0) += 1;
        }
    }
    out
}

async fn host_info(server: &str, host: &str) -> Value {
    let client = reqwest::Client::new();
    let hosts = get_json(&client, format!("{server}/api/v1/hosts").parse().unwrap()).await;
    hosts["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == host)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the server holds every timestamp the agent logged (or 30 s), then reads them
/// once more: `arrived` lists the processes before it reads their histories, so a read that
/// overlapped a delivery can see a sweep's timestamp through one process and miss a process
/// that only that sweep holds. A batch is stored whole, so once every timestamp has been seen,
/// every sweep is stored and a read started afterwards counts them all.
async fn wait_arrived(server: &str, taken: &BTreeMap<i64, u64>) -> BTreeMap<i64, u64> {
    let (from, to) = span(taken);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = arrived(server, "e2e-host", from, to).await;
        if taken.keys().all(|ts| got.contains_key(ts)) {
            return arrived(server, "e2e-host", from, to).await;
        }
        if Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn span(taken: &BTreeMap<i64, u64>) -> (i64, i64) {
    let from = *taken.keys().next().expect("some sweep");
    let to = *taken.keys().last().expect("some sweep") + 1;
    (from, to)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_started_before_the_server_delivers_every_sweep_with_its_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let agent = Agent::start(
        &format!("http://{addr}"),
        &dir.path().join("spool"),
        &dir.path().join("agent.log"),
        &[],
    );
    // No server for 6 intervals (the first sweep primes the collector, so 5-6 sweeps).
    agent.wait_sweeps(5);
    let before_server = now_ms();
    let server = Server::start(addr, &dir.path().join("data"), &[]);
    agent.wait_sweeps(12);
    agent.stop();
    let taken = taken_from_log(&dir.path().join("agent.log"));
    let early = taken.keys().filter(|&&ts| ts < before_server).count();
    assert!(early >= 5, "only {early} sweeps before the server started");
    let got = wait_arrived(&server.url(), &taken).await;
    assert_eq!(got, taken, "samples per sweep timestamp: server vs agent");
    let info = host_info(&server.url(), "e2e-host").await;
    assert_eq!(info["seq_gaps"], 0, "{info}");
    assert_eq!(info["dropped_samples"], 0, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_mid_stream_leaves_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // With a write token on the server and the same token on the agent.
    let token = ["--write-token", "e2e-token"];
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &data, &token);
    let addr = server.addr;
    let agent = Agent::start(
        &server.url(),
        &dir.path().join("spool"),
        &dir.path().join("agent.log"),
        &["--token", "e2e-token"],
    );
    agent.wait_sweeps(4);
    server.kill9();
    let n = agent.taken().len();
    // Sweeps keep being taken while the server is down.
    agent.wait_sweeps(n + 4);
    let server = Server::start(addr, &data, &token);
    agent.wait_sweeps(n + 10);
    agent.stop();
    let taken = taken_from_log(&dir.path().join("agent.log"));
    let got = wait_arrived(&server.url(), &taken).await;
    assert_eq!(got, taken, "samples per sweep timestamp: server vs agent");
    let info = host_info(&server.url(), "e2e-host").await;
    assert_eq!(info["seq_gaps"], 0, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_while_spooling_then_restart_delivers_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let spool = dir.path().join("spool");
    let url = format!("http://{addr}");
    let first = Agent::start(&url, &spool, &dir.path().join("agent1.log"), &[]);
    first.wait_sweeps(5);
    first.kill9();
    let server = Server::start(addr, &dir.path().join("data"), &[]);
    let second = Agent::start(&url, &spool, &dir.path().join("agent2.log"), &[]);
    second.wait_sweeps(4);
    second.stop();
    let mut taken = taken_from_log(&dir.path().join("agent1.log"));
    let spooled_before_kill = taken.len();
    taken.extend(taken_from_log(&dir.path().join("agent2.log")));
    let got = wait_arrived(&server.url(), &taken).await;
    // Every sweep logged as spooled arrived whole. The kill may have cut one sweep between
    // its fsync and its log line: it arrives too, but is in no log.
    let logged: BTreeMap<i64, u64> =
        got.iter().filter(|(ts, _)| taken.contains_key(ts)).map(|(k, v)| (*k, *v)).collect();
    assert_eq!(logged, taken, "samples per sweep timestamp: server vs agents");
    assert!(got.len() <= taken.len() + 1, "{} arrived, {} logged", got.len(), taken.len());
    assert!(spooled_before_kill >= 5);
    let info = host_info(&server.url(), "e2e-host").await;
    assert_eq!(info["seq_gaps"], 0, "seq continues across the restart: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_cap_drop_is_counted_and_shown_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let log = dir.path().join("agent.log");
    let agent = Agent::start(
        &format!("http://{addr}"),
        &dir.path().join("spool"),
        &log,
        &["--spool-max-bytes", "12KiB"],
    );
    common::wait_until("the spool cap to be hit", Duration::from_secs(30), || {
        (dropped_from_log(&log) > 0).then_some(())
    });
    let server = Server::start(addr, &dir.path().join("data"), &[]);
    let n = agent.taken().len();
    agent.wait_sweeps(n + 3);
    agent.stop();
    let logged_drops = dropped_from_log(&log);
    let taken = taken_from_log(&log);
    let total: u64 = taken.values().sum();
    let (from, to) = span(&taken);
    // What arrived plus what the server was told was dropped is what was taken. (The log may
    // say more was dropped than finally was: a sweep dropped while its request was on the
    // wire and then accepted is taken off the count.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let (got, dropped) = loop {
        let info = host_info(&server.url(), "e2e-host").await;
        let dropped = info["dropped_samples"].as_u64().unwrap_or(0);
        let got: u64 = arrived(&server.url(), "e2e-host", from, to).await.values().sum();
        if (dropped > 0 && got + dropped == total) || Instant::now() > deadline {
            break (got, dropped);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(dropped > 0, "the server shows no dropped samples");
    assert!(dropped <= logged_drops, "server {dropped} > logged {logged_drops}");
    assert_eq!(got + dropped, total, "arrived {got} + dropped {dropped} != taken {total}");
}

/// An in-test ingestion endpoint: answers 500 to the first `fail_first` requests, refuses
/// (400) any batch holding the host total of the sweep it chose to poison, checks the token,
/// and keeps what it accepted.
#[derive(Default)]
struct Fake {
    fail_first: AtomicU64,
    token: Option<String>,
    /// Poison the first sweep of the `poison_request`-th request (1-based; 0: never).
    poison_request: u64,
    poisoned_ts: Mutex<Option<i64>>,
    requests: AtomicU64,
    refused: AtomicU64,
    unauthorized: AtomicU64,
    accepted: Mutex<Vec<procwatch_model::Batch>>,
}

async fn fake_ingest(
    axum::extract::State(f): axum::extract::State<Arc<Fake>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let n = f.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(t) = &f.token {
        let want = format!("Bearer {t}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            f.unauthorized.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::UNAUTHORIZED, r#"{"error":"bad token"}"#.into());
        }
    }
    if f.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"injected"}"#.into());
    }
    let mut json = Vec::new();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json).expect("gzip");
    } else {
        json = body.to_vec();
    }
    let batch: procwatch_model::Batch = serde_json::from_slice(&json).expect("batch JSON");
    {
        let mut p = f.poisoned_ts.lock().unwrap();
        if p.is_none() && n == f.poison_request {
            *p = batch.host_totals.first().map(|h| h.ts);
        }
        if let Some(ts) = *p {
            if batch.host_totals.iter().any(|h| h.ts == ts) {
                f.refused.fetch_add(1, Ordering::SeqCst);
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"invalid batch","problems":[{"index":0,"field":"ts","reason":"poisoned by the test"}]}"#.into(),
                );
            }
        }
    }
    // The server's acknowledgement (anything else keeps the batch in the agent's spool).
    let ack = serde_json::json!({
        "samples": batch.samples.len(),
        "host_totals": batch.host_totals.len(),
        "seq_gap": 0,
        "received": batch.samples.len(),
        "host": batch.host,
        "seq": batch.seq,
    });
    f.accepted.lock().unwrap().push(batch);
    (StatusCode::OK, ack.to_string())
}

async fn start_fake(fake: Arc<Fake>) -> SocketAddr {
    let app = axum::Router::new()
        .route("/api/v1/samples", axum::routing::post(fake_ingest))
        .with_state(fake);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn accepted_per_ts(fake: &Fake) -> BTreeMap<i64, u64> {
    let mut m = BTreeMap::new();
    for b in fake.accepted.lock().unwrap().iter() {
        for s in &b.samples {
            *m.entry(s.ts).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answering_500_first_gets_everything_exactly_once() {
    let fake = Arc::new(Fake {
        fail_first: AtomicU64::new(5),
        token: Some("e2e-secret".into()),
        ..Fake::default()
    });
    let addr = start_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &format!("http://{addr}"),
        &dir.path().join("spool"),
        &dir.path().join("agent.log"),
        &["--token", "e2e-secret"],
    );
    agent.wait_sweeps(8);
    // Wait until the backlog of the five refused attempts is delivered: under load the retry
    // backoff can outlast a stop's drain, and nothing would have been accepted yet.
    let log = dir.path().join("agent.log");
    let delivered = wait_until_async("the backlog's delivery", Duration::from_secs(60), || {
        let (taken, accepted) = (taken_from_log(&log), accepted_per_ts(&fake));
        let done = taken.len() >= 8 && taken.keys().all(|ts| accepted.contains_key(ts));
        std::future::ready(done.then_some(taken))
    })
    .await;
    agent.stop();
    let (taken, accepted) = (taken_from_log(&log), accepted_per_ts(&fake));
    // Each sweep accepted once: a duplicate would double its count. Every sweep taken before
    // the backlog was seen delivered is there; one taken just before the stop may still be in
    // the spool (kept, not lost), but none is accepted that was not taken.
    for (ts, n) in &delivered {
        assert_eq!(accepted.get(ts), Some(n), "sweep {ts}");
    }
    for (ts, n) in &accepted {
        assert_eq!(taken.get(ts), Some(n), "sweep {ts} accepted but not taken as such");
    }
    assert!(fake.requests.load(Ordering::SeqCst) > 5);
    assert_eq!(fake.unauthorized.load(Ordering::SeqCst), 0);
    let seqs: Vec<u64> = fake.accepted.lock().unwrap().iter().map(|b| b.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sweep_is_quarantined_not_retried_in_a_loop() {
    let fake = Arc::new(Fake { poison_request: 3, ..Fake::default() });
    let addr = start_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let agent = Agent::start(&format!("http://{addr}"), &spool, &dir.path().join("agent.log"), &[]);
    agent.wait_sweeps(8);
    agent.stop();
    let taken = taken_from_log(&dir.path().join("agent.log"));
    let bad_ts = fake.poisoned_ts.lock().unwrap().expect("a sweep was poisoned");
    let refused = fake.refused.load(Ordering::SeqCst);
    assert!((1..=2).contains(&refused), "refused {refused} times");
    // Everything else arrived, once.
    let mut want = taken.clone();
    let bad_n = want.remove(&bad_ts).expect("poisoned sweep was taken");
    assert_eq!(accepted_per_ts(&fake), want);
    // The refused sweep is in quarantine with the server's error, and reported as dropped.
    let files: Vec<PathBuf> = std::fs::read_dir(spool.join("quarantine"))
        .expect("quarantine dir")
        .map(|e| e.unwrap().path())
        .collect();
    let body = files.iter().find(|p| p.extension().is_some_and(|x| x == "json")).unwrap();
    let q: procwatch_model::Batch = serde_json::from_slice(&std::fs::read(body).unwrap()).unwrap();
    assert_eq!(q.host_totals.first().map(|h| h.ts), Some(bad_ts));
    assert_eq!(q.samples.len() as u64, bad_n);
    let err = files.iter().find(|p| p.to_string_lossy().ends_with(".error.txt")).unwrap();
    assert!(std::fs::read_to_string(err).unwrap().contains("poisoned by the test"));
    let dropped: u64 = fake.accepted.lock().unwrap().iter().map(|b| b.dropped_samples).sum();
    assert_eq!(dropped, bad_n);
}

/// Something that is not the procwatch server's ingestion route: each request gets the next
/// answer of `answers` (cycling), and the page a redirect points to counts its hits.
struct Impostor {
    answers: Vec<&'static str>,
    requests: AtomicU64,
    landing_hits: AtomicU64,
}

async fn impostor_ingest(
    axum::extract::State(f): axum::extract::State<Arc<Impostor>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let n = f.requests.fetch_add(1, Ordering::SeqCst) as usize;
    let mut json = Vec::new();
    let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json);
    let batch: Option<procwatch_model::Batch> = serde_json::from_slice(&json).ok();
    match f.answers[n % f.answers.len()] {
        "html" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Sign in to the guest wifi</body></html>",
        )
            .into_response(),
        "redirect" => (StatusCode::FOUND, [(header::LOCATION, "/landing")], "").into_response(),
        "wrong_count" => {
            let b = batch.expect("the agent sent a batch");
            let ack = serde_json::json!({
                "samples": b.samples.len() + 1,
                "host_totals": b.host_totals.len(),
                "seq_gap": 0,
                "received": b.samples.len() + 1,
                "host": b.host,
                "seq": b.seq,
            });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], ack.to_string())
                .into_response()
        }
        "404" => (StatusCode::NOT_FOUND, r#"{"error":"no route"}"#).into_response(),
        "405" => (StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method"}"#).into_response(),
        other => panic!("unknown answer {other}"),
    }
}

async fn landing(axum::extract::State(f): axum::extract::State<Arc<Impostor>>) -> &'static str {
    f.landing_hits.fetch_add(1, Ordering::SeqCst);
    "<html>landing page</html>"
}

async fn start_impostor(answers: Vec<&'static str>) -> (Arc<Impostor>, SocketAddr) {
    let f = Arc::new(Impostor {
        answers,
        requests: AtomicU64::new(0),
        landing_hits: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/api/v1/samples", axum::routing::post(impostor_ingest))
        .route("/landing", axum::routing::get(landing).post(landing))
        .with_state(f.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (f, addr)
}

/// Runs the real agent against answers that are not acknowledgements until it has tried
/// `min_requests` times; then the same spool against the real server must deliver every sweep
/// the first run took (nothing was deleted from the spool), and nothing was quarantined.
async fn unacknowledged_answers_keep_the_batches(answers: Vec<&'static str>, min_requests: u64) {
    let (imp, addr) = start_impostor(answers).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log1 = dir.path().join("agent1.log");
    let agent = Agent::start(&format!("http://{addr}"), &spool, &log1, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while imp.requests.load(Ordering::SeqCst) < min_requests || agent.taken().len() < 3 {
        assert!(Instant::now() < deadline, "the agent did not retry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop();
    let taken = taken_from_log(&log1);
    assert_eq!(imp.landing_hits.load(Ordering::SeqCst), 0, "a redirect was followed");
    let errors: Vec<Value> = log_events(&log1)
        .into_iter()
        .filter(|e| {
            e["level"] == "ERROR"
                && e["fields"]["message"].as_str().is_some_and(|m| m.contains("acknowledgement"))
        })
        .collect();
    assert!(errors.len() as u64 >= min_requests.min(3), "no loud error per refused answer");
    assert!(!spool.join("quarantine").exists(), "a misconfiguration must not quarantine");
    assert!(!log_events(&log1).iter().any(|e| e["fields"]["message"] == "Batch delivered."));

    // The real server: everything the first run took arrives.
    let server = Server::start("127.0.0.1:0".parse().unwrap(), &dir.path().join("data"), &[]);
    let log2 = dir.path().join("agent2.log");
    let agent = Agent::start(&server.url(), &spool, &log2, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_events(&log2).iter().any(|e| e["fields"]["message"] == "Batch delivered.") {
        assert!(Instant::now() < deadline, "nothing delivered to the real server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = wait_arrived(&server.url(), &taken).await;
    agent.stop();
    // A batch is stored whole or not at all: every sweep's timestamp must be there. (The
    // count per timestamp can be one lower than the agent logged when a sweep held two
    // samples of one name, which the idempotent write keeps as one.)
    for ts in taken.keys() {
        assert!(got.contains_key(ts), "sweep {ts} lost: the spool dropped an unacknowledged batch");
    }
    let short: Vec<_> = taken
        .iter()
        .filter(|(ts, n)| got.get(ts) != Some(n))
        .map(|(ts, n)| (ts, n, got.get(ts)))
        .collect();
    assert!(
        got.values().sum::<u64>() * 10 >= taken.values().sum::<u64>() * 9,
        "sweeps whose count differs (ts, taken, stored): {short:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_redirect_and_wrong_count_answers_are_not_acknowledgements() {
    unacknowledged_answers_keep_the_batches(vec!["html", "redirect", "wrong_count"], 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_url_404_405_is_retried_and_reported_not_quarantined() {
    unacknowledged_answers_keep_the_batches(vec!["404", "405"], 6).await;
}
