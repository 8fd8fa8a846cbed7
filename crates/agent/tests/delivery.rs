//! Delivery against fake servers (real HTTP on 127.0.0.1): one that fails the first N
//! requests, one that refuses a bad batch, one that starts late, and a spool cap that forces
//! a drop. Every sample the agent took must arrive exactly once, or be counted as dropped.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use procwatch_agent::{AgentConfig, BackoffConfig, SweepData, SweepFn};
use procwatch_model::{Batch, HostTotal, Sample};

#[derive(Default)]
struct Fake {
    /// Answer 500 to this many requests first.
    fail_first: AtomicU64,
    /// Refuse (400) any batch holding a sample of this process.
    poison: Option<String>,
    token: Option<String>,
    accepted: Mutex<Vec<Batch>>,
    requests: AtomicU64,
    refused_400: AtomicU64,
    unauthorized: AtomicU64,
}

async fn ingest(
    State(f): State<Arc<Fake>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    f.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(t) = &f.token {
        let want = format!("Bearer {t}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            f.unauthorized.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::UNAUTHORIZED, r#"{"error":"bad token"}"#.into());
        }
    }
    if f.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"boom"}"#.into());
    }
    let json = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        body.to_vec()
    };
    let batch: Batch = match serde_json::from_slice(&json) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!(r#"{{"error":"{e}"}}"#)),
    };
    if let Some(p) = &f.poison {
        if let Some(i) = batch.samples.iter().position(|s| &s.process == p) {
            f.refused_400.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    r#"{{"error":"invalid batch","problems":[{{"index":{i},"field":"process","reason":"poisoned"}}]}}"#
                ),
            );
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

async fn serve(fake: Arc<Fake>, listener: tokio::net::TcpListener) {
    let app = Router::new().route("/api/v1/samples", post(ingest)).with_state(fake);
    axum::serve(listener, app).await.unwrap();
}

async fn start(fake: Arc<Fake>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(fake, l));
    addr
}

/// A recent whole second, Unix ms (the spool drops sweeps older than 48 h).
fn t0() -> i64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    now - now % 1000 - 60_000
}

/// A synthetic collector: sweep k has `3 + k % 4` samples at ts = t0 + k s; records what it
/// produced.
fn synthetic(taken: Arc<Mutex<BTreeMap<i64, usize>>>, poison_at: Option<i64>) -> SweepFn {
    let mut k = 0i64;
    let base = t0();
    Box::new(move |_: &procwatch_agent::Settings| {
        let ts = base + k * 1000;
        let n = 3 + (k % 4) as usize;
        let samples = (0..n)
            .map(|i| Sample {
                ts,
                process: if Some(k) == poison_at && i == 0 {
                    "poison".into()
                } else {
                    format!("proc-{i}")
                },
                cpu: 1.5,
                cores: 0.03,
                mem: 0.7,
                rss: 4096,
                count: 1,
                extras: None,
            })
            .collect();
        k += 1;
        taken.lock().unwrap().insert(ts, n);
        Ok(Some(SweepData {
            ts,
            host_totals: vec![HostTotal { ts, cpu: 12.0, mem: 40.0, unattributed_cpu: Some(1.0) }],
            samples,
        }))
    })
}

fn config(addr: SocketAddr, spool: &std::path::Path, sweeps: u64) -> AgentConfig {
    let mut c = AgentConfig::new("test-host", format!("http://{addr}"), spool);
    c.interval = Duration::from_millis(40);
    c.backoff = BackoffConfig {
        base: Duration::from_millis(10),
        factor: 2.0,
        max: Duration::from_millis(80),
    };
    c.spool.fsync = false;
    c.max_sweeps = Some(sweeps);
    c.drain_timeout = Duration::from_secs(10);
    c
}

/// Samples per ts the server accepted.
fn received(fake: &Fake) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for b in fake.accepted.lock().unwrap().iter() {
        for s in &b.samples {
            *m.entry(s.ts).or_insert(0) += 1;
        }
    }
    m
}

fn seqs(fake: &Fake) -> Vec<u64> {
    fake.accepted.lock().unwrap().iter().map(|b| b.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_failing_first_requests_gets_everything_exactly_once() {
    let fake = Arc::new(Fake {
        fail_first: AtomicU64::new(4),
        token: Some("s3cret".into()),
        ..Fake::default()
    });
    let addr = start(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let mut cfg = config(addr, dir.path(), 12);
    cfg.shipper.token = Some("s3cret".into());
    let stats = procwatch_agent::run(cfg, synthetic(taken.clone(), None), std::future::pending())
        .await
        .unwrap();
    assert_eq!(received(&fake), *taken.lock().unwrap());
    assert_eq!(taken.lock().unwrap().len(), 12);
    // Each accepted request has the next seq: no gap, no duplicate.
    let s = seqs(&fake);
    assert_eq!(s, (0..s.len() as u64).collect::<Vec<_>>());
    assert!(stats.retries.load(Ordering::Relaxed) >= 4);
    assert_eq!(fake.unauthorized.load(Ordering::SeqCst), 0);
    assert_eq!(stats.dropped_samples.load(Ordering::Relaxed), 0);
    assert!(fake
        .accepted
        .lock()
        .unwrap()
        .iter()
        .all(|b| b.host == "test-host" && b.interval_ms == 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batch_is_quarantined_and_reported_not_retried() {
    let fake = Arc::new(Fake { poison: Some("poison".into()), ..Fake::default() });
    let addr = start(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let cfg = config(addr, dir.path(), 8);
    let stats =
        procwatch_agent::run(cfg, synthetic(taken.clone(), Some(3)), std::future::pending())
            .await
            .unwrap();
    let taken = taken.lock().unwrap().clone();
    let bad_ts = *taken.keys().nth(3).unwrap();
    let mut want = taken.clone();
    let bad_n = want.remove(&bad_ts).unwrap();
    assert_eq!(received(&fake), want);
    // Refused at most twice (once in a merged request, once alone), never in a loop.
    let refused = fake.refused_400.load(Ordering::SeqCst);
    assert!((1..=2).contains(&refused), "refused {refused} times");
    assert_eq!(stats.quarantined_records.load(Ordering::Relaxed), 1);
    let q: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let body = q.iter().find(|p| p.extension().is_some_and(|x| x == "json")).unwrap();
    let quarantined: Batch = serde_json::from_slice(&std::fs::read(body).unwrap()).unwrap();
    assert_eq!(quarantined.samples.len(), bad_n);
    let err = q.iter().find(|p| p.to_string_lossy().ends_with(".error.txt")).unwrap();
    assert!(std::fs::read_to_string(err).unwrap().contains("poisoned"));
    // The refused samples are reported as dropped, once; seqs have no gap.
    let dropped: u64 = fake.accepted.lock().unwrap().iter().map(|b| b.dropped_samples).sum();
    assert_eq!(dropped, bad_n as u64);
    let s = seqs(&fake);
    assert_eq!(s, (0..s.len() as u64).collect::<Vec<_>>());
}

/// Waits until the synthetic sweep function has taken `n` sweeps.
async fn sweeps_taken<K, V>(taken: &Mutex<BTreeMap<K, V>>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while taken.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "fewer than {n} sweeps taken");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A loopback address reserved and closed again: nothing listens there until a test serves.
fn closed_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Serves `fake` on `addr` once the agent has taken `n` sweeps.
fn serve_after(
    fake: &Arc<Fake>,
    taken: &Arc<Mutex<BTreeMap<i64, usize>>>,
    addr: SocketAddr,
    n: usize,
) {
    let (fake, taken) = (fake.clone(), taken.clone());
    tokio::spawn(async move {
        sweeps_taken(&taken, n).await;
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        serve(fake, l).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_starting_late_gets_the_backlog_merged_and_in_order() {
    let addr = closed_addr();
    let fake = Arc::new(Fake::default());
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let cfg = config(addr, dir.path(), 16);
    // The server comes up once 6 sweeps are taken (and spooled behind a closed port).
    serve_after(&fake, &taken, addr, 6);
    let stats = procwatch_agent::run(cfg, synthetic(taken.clone(), None), std::future::pending())
        .await
        .unwrap();
    assert_eq!(received(&fake), *taken.lock().unwrap());
    let batches = fake.accepted.lock().unwrap().clone();
    // The backlog went in fewer requests than sweeps, oldest first.
    assert!(batches.len() < 16, "{} requests", batches.len());
    assert!(batches.iter().any(|b| b.host_totals.len() > 1));
    let ts: Vec<i64> = batches.iter().flat_map(|b| b.host_totals.iter().map(|h| h.ts)).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
    assert!(stats.retries.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.dropped_samples.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_cap_drop_is_counted_and_reported_to_the_server() {
    let addr = closed_addr();
    let fake = Arc::new(Fake::default());
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let mut cfg = config(addr, dir.path(), 20);
    // About 500 bytes a sweep: a 3000-byte spool in 1000-byte segments overflows.
    cfg.spool.max_bytes = 3000;
    cfg.spool.segment_bytes = 1000;
    // The server comes up once 15 sweeps (more than the spool holds) are taken.
    serve_after(&fake, &taken, addr, 15);
    let stats = procwatch_agent::run(cfg, synthetic(taken.clone(), None), std::future::pending())
        .await
        .unwrap();
    let taken: usize = taken.lock().unwrap().values().sum();
    let got: usize = received(&fake).values().sum();
    let dropped = stats.dropped_samples.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert_eq!(got as u64 + dropped, taken as u64);
    let reported: u64 = fake.accepted.lock().unwrap().iter().map(|b| b.dropped_samples).sum();
    assert_eq!(reported, dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_go_on_while_the_server_hangs_and_stay_spooled() {
    // A server that accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            held.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let mut cfg = config(addr, dir.path(), 10);
    cfg.drain_timeout = Duration::from_millis(100);
    let stats = procwatch_agent::run(cfg, synthetic(taken.clone(), None), std::future::pending())
        .await
        .unwrap();
    assert_eq!(stats.sweeps.load(Ordering::Relaxed), 10);
    assert_eq!(stats.requests_ok.load(Ordering::Relaxed), 0);
    assert_eq!(stats.lateness_us().len(), 10);
    // Everything taken is in the spool for the next start, oldest first.
    let (spool, report) =
        procwatch_agent::Spool::open(procwatch_agent::SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(report.pending_records, 10);
    assert!(report.inflight.is_some(), "the first request was on the wire");
    let recs = spool.read(100, usize::MAX).unwrap();
    let ts: Vec<i64> = recs.iter().map(|r| r.ts).collect();
    assert_eq!(ts, taken.lock().unwrap().keys().copied().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_retried_and_nothing_is_quarantined() {
    let fake = Arc::new(Fake { token: Some("right".into()), ..Fake::default() });
    let addr = start(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let mut cfg = config(addr, dir.path(), 6);
    cfg.shipper.token = Some("wrong".into());
    cfg.drain_timeout = Duration::from_millis(200);
    let stats = procwatch_agent::run(cfg, synthetic(taken.clone(), None), std::future::pending())
        .await
        .unwrap();
    assert!(fake.unauthorized.load(Ordering::SeqCst) >= 2);
    assert!(fake.accepted.lock().unwrap().is_empty());
    assert_eq!(stats.quarantined_records.load(Ordering::Relaxed), 0);
    assert!(!dir.path().join("quarantine").exists());
    // Everything waits in the spool for a fixed token.
    let (_, report) =
        procwatch_agent::Spool::open(procwatch_agent::SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(report.pending_records, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_in_flight_at_a_crash_is_resent_with_its_seq_then_the_sequence_goes_on() {
    // A spool as an agent leaves it when killed mid-request: 4 sweeps, the first two in a
    // request with seq 5 that was on the wire.
    let dir = tempfile::tempdir().unwrap();
    let base = t0();
    {
        let mut c = procwatch_agent::SpoolConfig::new(dir.path());
        c.fsync = false;
        let (mut spool, _) = procwatch_agent::Spool::open(c).unwrap();
        for k in 0..4 {
            let ts = base + k * 1000;
            let s = SweepData {
                ts,
                host_totals: vec![HostTotal { ts, cpu: 1.0, mem: 2.0, unattributed_cpu: None }],
                samples: vec![],
            };
            let p = procwatch_agent::encode_sweep("test-host", 40, &s);
            spool.append(ts, 0, &p, ts).unwrap();
        }
        spool
            .set_inflight(procwatch_agent::spool::Inflight { seq: 5, last_id: 1, dropped: 0 })
            .unwrap();
    }
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    let mut cfg = config(addr, dir.path(), 1);
    cfg.max_batch_records = 2;
    let stats = procwatch_agent::run(cfg, synthetic(taken.clone(), None), std::future::pending())
        .await
        .unwrap();
    assert_eq!(stats.resent_records.load(Ordering::Relaxed), 2);
    let batches = fake.accepted.lock().unwrap().clone();
    let shape: Vec<(u64, Vec<i64>)> = batches
        .iter()
        .map(|b| (b.seq, b.host_totals.iter().map(|h| h.ts - base).collect()))
        .collect();
    let live = *taken.lock().unwrap().keys().next().unwrap() - base;
    assert_eq!(shape, vec![(5, vec![0, 1000]), (6, vec![2000, 3000]), (7, vec![live])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_stays_under_its_cap_oldest_deleted_first() {
    let fake = Arc::new(Fake { poison: Some("poison".into()), ..Fake::default() });
    let addr = start(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(Mutex::new(BTreeMap::new()));
    // Every sweep is refused.
    let mut inner = synthetic(taken.clone(), None);
    let sweep: SweepFn = Box::new(move |settings: &procwatch_agent::Settings| {
        let mut s = inner(settings)?;
        if let Some(s) = s.as_mut() {
            s.samples[0].process = "poison".into();
        }
        Ok(s)
    });
    let cap = 3_000u64;
    let mut cfg = config(addr, dir.path(), 10);
    cfg.quarantine_max_bytes = cap;
    let stats = procwatch_agent::run(cfg, sweep, std::future::pending()).await.unwrap();
    let taken = taken.lock().unwrap().clone();
    assert_eq!(stats.quarantined_records.load(Ordering::Relaxed), 10);
    let qdir = dir.path().join("quarantine");
    let files: Vec<_> = std::fs::read_dir(&qdir).unwrap().map(|e| e.unwrap().path()).collect();
    let bytes: u64 = files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(bytes <= cap, "quarantine holds {bytes} bytes, cap {cap}");
    let kept: Vec<Batch> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert!(!kept.is_empty() && kept.len() < 10, "kept {} batches", kept.len());
    // Every kept batch has its error file; the newest refused batch is among the kept.
    assert_eq!(files.len(), 2 * kept.len());
    let newest = *taken.keys().last().unwrap();
    assert!(kept.iter().any(|b| b.samples[0].ts == newest));
    let evicted = stats.quarantine_evicted_files.load(Ordering::Relaxed);
    assert_eq!(evicted as usize, 10 - kept.len());
    // All refused samples are counted as dropped and reported, evicted or not.
    let all: usize = taken.values().sum();
    assert_eq!(stats.dropped_samples.load(Ordering::Relaxed) as usize, all);
}
