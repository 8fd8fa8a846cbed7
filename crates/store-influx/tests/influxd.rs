//! The InfluxDB backend against a real influxd: retention policy management, two stores on
//! one database, and InfluxDB going down, slow, and coming back.

use std::net::TcpListener;
use std::time::Duration;

use procwatch_model::{AlarmEvent, AlarmKind, Batch, Level, Metric, Sample};
use procwatch_store::conformance::{base_ts, sample};
use procwatch_store::{AlarmQuery, Storage, StoreError, UsageNeeds, UsageQuery};
use procwatch_store_influx::testing::Influxd;
use procwatch_store_influx::{InfluxConfig, InfluxStore};

fn batch(host: &str, seq: u64, samples: Vec<Sample>) -> Batch {
    Batch {
        host: host.into(),
        agent: "test".into(),
        seq,
        interval_ms: 10_000,
        host_totals: vec![],
        samples,
        dropped_samples: 0,
        report: None,
    }
}

fn usage_q(t0: i64) -> UsageQuery {
    UsageQuery { from: t0 - 60_000, to: t0 + 600_000, host: None, process: None, per_host: true }
}

/// Runs InfluxQL directly (not through the store) and returns the JSON answer.
async fn influxql(url: &str, db: &str, q: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{url}/query"))
        .query(&[("db", db)])
        .form(&[("q", q)])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json")
}

/// `SHOW RETENTION POLICIES` as (name, duration, shard duration, default).
async fn policies(url: &str, db: &str) -> Vec<(String, String, String, bool)> {
    let v = influxql(url, db, &format!("SHOW RETENTION POLICIES ON \"{db}\"")).await;
    v["results"][0]["series"][0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_str().unwrap().to_string(),
                r[4].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_policy_is_created_as_default_then_altered() {
    let Some(d) = Influxd::start_or_skip("retention_policy_is_created_as_default_then_altered")
    else {
        return;
    };
    let store = InfluxStore::connect(d.config("rpdb")).await.expect("connect");
    store.health().await.expect("healthy");
    let p = policies(&d.url(), "rpdb").await;
    assert!(p.contains(&("procwatch".into(), "48h0m0s".into(), "1h0m0s".into(), true)), "{p:?}");
    assert!(p.iter().any(|r| r.0 == "procwatch_events" && r.1 == "0s" && !r.3), "{p:?}");
    assert!(p.iter().any(|r| r.0 == "autogen" && !r.3), "autogen is no longer default: {p:?}");

    // Data lands in the policy.
    let t0 = base_ts();
    store.write_batch(&batch("rp-1", 1, vec![sample(t0, "x", 1.0, 1.0)])).await.expect("write");
    let v =
        influxql(&d.url(), "rpdb", r#"SELECT count("cpu") FROM "rpdb"."procwatch"."proc""#).await;
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], 1, "{v}");

    // A second server start with another retention ALTERs the policy.
    let mut cfg = d.config("rpdb");
    cfg.retention = Duration::from_secs(72 * 3600);
    let store2 = InfluxStore::connect(cfg).await.expect("connect");
    store2.health().await.expect("healthy");
    let p = policies(&d.url(), "rpdb").await;
    assert!(p.contains(&("procwatch".into(), "72h0m0s".into(), "24h0m0s".into(), true)), "{p:?}");
    // A named policy.
    let mut cfg = d.config("rpdb");
    cfg.rp = Some("short term".into());
    cfg.retention = Duration::from_secs(3600);
    InfluxStore::connect(cfg).await.expect("connect").health().await.expect("healthy");
    let p = policies(&d.url(), "rpdb").await;
    assert!(p.contains(&("short term".into(), "1h0m0s".into(), "1h0m0s".into(), true)), "{p:?}");
}

fn event(id: &str, host: &str, start: i64) -> AlarmEvent {
    AlarmEvent {
        id: id.into(),
        kind: AlarmKind::Series,
        host: host.into(),
        process: "java".into(),
        metric: Metric::Cpu,
        level: Level::Red,
        previous: Level::Ok,
        start,
        end: None,
        value: 95.0,
        peak: 95.0,
        threshold: 80.0,
        forecast: None,
        eta_seconds: None,
        reason: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_agree() {
    let Some(d) = Influxd::start_or_skip("two_stores_on_one_database_agree") else {
        return;
    };
    let a = InfluxStore::connect(d.config("shared")).await.expect("connect a");
    let b = InfluxStore::connect(d.config("shared")).await.expect("connect b");
    let t0 = base_ts();
    let s1: Vec<Sample> = (0..10).map(|i| sample(t0 + i * 10_000, "web", i as f64, 2.0)).collect();
    a.write_batch(&batch("two-1", 1, s1)).await.expect("write via a");
    // The seq bookkeeping is shared: b sees a's batch 1, so batch 3 opens a gap of 1.
    let s3 = vec![sample(t0 + 100_000, "web", 50.0, 2.0)];
    let out = b.write_batch(&batch("two-1", 3, s3)).await.expect("write via b");
    assert_eq!(out.seq_gap, 1);

    let (ua, ub) = (a.usage(&usage_q(t0)).await.unwrap(), b.usage(&usage_q(t0)).await.unwrap());
    assert_eq!(ua, ub);
    assert_eq!(ua[0].samples, 11);
    let (ha, hb) = (a.hosts().await.unwrap(), b.hosts().await.unwrap());
    assert_eq!(ha, hb);
    assert_eq!((ha[0].last_seq, ha[0].seq_gaps), (3, 1));

    a.put_alarm_event(&event("ev-1", "two-1", t0)).await.expect("put");
    let mut closed = event("ev-1", "two-1", t0);
    closed.end = Some(t0 + 50_000);
    b.put_alarm_event(&closed).await.expect("close via b");
    let q = AlarmQuery::default();
    let (ea, eb) = (a.alarm_events(&q).await.unwrap(), b.alarm_events(&q).await.unwrap());
    assert_eq!(ea, vec![closed.clone()]);
    assert_eq!(ea, eb);
}

/// Each store keeps a host's bookkeeping in memory while it handles the host's consecutive
/// batches, and reads it back from InfluxDB when it did not see the host's previous batch
/// within 1.5 intervals (the agent was talking to another replica): two replicas taking turns
/// every interval still count the seq gaps exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_taking_turns_keep_the_bookkeeping() {
    let Some(d) = Influxd::start_or_skip("replicas_taking_turns_keep_the_bookkeeping") else {
        return;
    };
    let t0 = base_ts();
    let clock = std::sync::Arc::new(procwatch_model::clock::ManualClock::new(t0));
    let a = InfluxStore::connect(d.config("turns")).await.expect("a").with_clock(clock.clone());
    let b = InfluxStore::connect(d.config("turns")).await.expect("b").with_clock(clock.clone());
    let mut gaps = Vec::new();
    // Batches 1, 2 via a; 3 via b; 5 via a (4 lost); 6 via b; 7 via b: one batch per
    // interval (10 s), so each store re-reads when the other wrote in between.
    for (i, (seq, via)) in [(1, &a), (2, &a), (3, &b), (5, &a), (6, &b), (7, &b)].iter().enumerate()
    {
        let ts = t0 + i as i64 * 10_000;
        let out = via.write_batch(&batch("turn-1", *seq, vec![sample(ts, "x", 1.0, 1.0)])).await;
        gaps.push(out.expect("write").seq_gap);
        clock.advance(Duration::from_secs(10));
    }
    assert_eq!(gaps, vec![0, 0, 0, 1, 0, 0]);
    for store in [&a, &b] {
        let h = store.hosts().await.expect("hosts");
        assert_eq!((h[0].last_seq, h[0].seq_gaps), (7, 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxd_down_is_unavailable_and_the_store_recovers() {
    let Some(mut d) = Influxd::start_or_skip("influxd_down_is_unavailable_and_the_store_recovers")
    else {
        return;
    };
    let store = InfluxStore::connect(d.config("outage")).await.expect("connect");
    let t0 = base_ts();
    let first: Vec<Sample> = (0..5).map(|i| sample(t0 + i * 10_000, "db", 1.0, 1.0)).collect();
    let second: Vec<Sample> = (5..10).map(|i| sample(t0 + i * 10_000, "db", 2.0, 1.0)).collect();
    store.write_batch(&batch("out-1", 1, first)).await.expect("write while up");

    d.stop();
    let unavailable = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("influxdb"), "{what}: {msg}"),
        other => panic!("{what} while influxd is down: {other:?}"),
    };
    let b2 = batch("out-1", 2, second.clone());
    unavailable(store.write_batch(&b2).await.map(drop), "write");
    unavailable(store.usage(&usage_q(t0)).await.map(drop), "usage");
    unavailable(store.window(&usage_q(t0)).await.map(drop), "window");
    unavailable(store.hosts().await.map(drop), "hosts");
    unavailable(store.alarm_events(&AlarmQuery::default()).await.map(drop), "alarm_events");
    unavailable(store.put_alarm_event(&event("x", "out-1", t0)).await, "put_alarm_event");
    unavailable(store.health().await, "health");

    // Back on the same data: the same store object carries on, the retried batch lands.
    d.restart();
    store.health().await.expect("healthy again");
    store.write_batch(&b2).await.expect("retry after restart");
    let u = store.usage(&usage_q(t0)).await.expect("usage");
    assert_eq!(u[0].samples, 10);
    let h = store.hosts().await.expect("hosts");
    assert_eq!((h[0].last_seq, h[0].seq_gaps), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_influxdb_times_out_as_unavailable() {
    // A socket that accepts connections (the kernel's backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut cfg = InfluxConfig::new(format!("http://{}", silent.local_addr().unwrap()), "slow");
    cfg.timeout = Duration::from_millis(500);
    let store = InfluxStore::new(cfg).expect("store");
    let t0 = base_ts();
    let r = store.write_batch(&batch("slow-1", 1, vec![sample(t0, "x", 1.0, 1.0)])).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store.usage(&usage_q(t0)).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

/// Usage statistics equal the reference store's (`MemoryStore`) on groups of very different
/// sample counts: 1, 2, 20, 21, 45 and 700 samples (both ways InfluxDB is asked for p95: `top()`
/// and `percentile()`), with ties, per host and merged, over the whole data and a sub-window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_matches_the_reference_store_on_mixed_sample_counts() {
    let Some(d) = Influxd::start_or_skip("usage_matches_the_reference_store") else {
        return;
    };
    let influx = InfluxStore::connect(d.config("mixed")).await.expect("connect");
    let reference = procwatch_store::memory::MemoryStore::new();
    let t0 = base_ts() - 3 * 3_600_000;
    let mut seed: u64 = 42;
    let mut rnd = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Coarse values so that ties happen.
        ((seed >> 33) % 400) as f64 / 4.0
    };
    for (h, host) in ["mx-1", "mx-2"].iter().enumerate() {
        let mut samples = Vec::new();
        for (p, n) in [1usize, 2, 20, 21, 45, 700].iter().enumerate() {
            for i in 0..*n + h * 3 {
                let mut s =
                    sample(t0 + i as i64 * 10_000 + h as i64, &format!("p{p}"), rnd(), rnd());
                s.count = (i % 5) as u32 + 1;
                samples.push(s);
            }
        }
        for (seq, chunk) in samples.chunks(500).enumerate() {
            let b = batch(host, seq as u64 + 1, chunk.to_vec());
            influx.write_batch(&b).await.expect("influx write");
            reference.write_batch(&b).await.expect("reference write");
        }
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    for per_host in [true, false] {
        for (from, to) in [(t0, t0 + 8_000_000), (t0 + 50_000, t0 + 260_000)] {
            let q = UsageQuery { from, to, host: None, process: None, per_host };
            let got = influx.usage(&q).await.expect("influx usage");
            let want = reference.usage(&q).await.expect("reference usage");
            assert_eq!(got.len(), want.len(), "{q:?}");
            for (g, w) in got.iter().zip(&want) {
                let what = format!("{q:?} {:?}/{}", w.host, w.process);
                assert_eq!(
                    (&g.host, &g.process, g.samples),
                    (&w.host, &w.process, w.samples),
                    "{what}"
                );
                assert_eq!(g.last_ts, w.last_ts, "{what}");
                if per_host {
                    // Merged rows may take `count` from either host on a timestamp tie.
                    assert_eq!(g.count, w.count, "{what}");
                }
                for (name, gs, ws) in [
                    ("cpu", g.cpu, w.cpu),
                    ("cores", g.cores, w.cores),
                    ("mem", g.mem, w.mem),
                    ("rss", g.rss, w.rss),
                ] {
                    for (stat, a, b) in [
                        ("mean", gs.mean, ws.mean),
                        ("min", gs.min, ws.min),
                        ("max", gs.max, ws.max),
                        ("last", gs.last, ws.last),
                        ("p95", gs.p95, ws.p95),
                    ] {
                        assert!(close(a, b), "{what} {name}.{stat}: influx {a}, reference {b}");
                    }
                }
            }
            // Asking only for some statistics answers the same rows with the same values of
            // those (here get-all's: the means of mem and cpu, one InfluxQL statement; and
            // everything but p95/min/max).
            let partial = UsageNeeds { spread: false, ..UsageNeeds::ALL };
            for needs in [UsageNeeds::GET_ALL, partial] {
                let got = influx.usage_of(&q, needs).await.expect("influx usage_of");
                assert_eq!(got.len(), want.len(), "{q:?} {needs:?}");
                for (g, w) in got.iter().zip(&want) {
                    let what = format!("{q:?} {needs:?} {:?}/{}", w.host, w.process);
                    assert_eq!((&g.host, &g.process), (&w.host, &w.process), "{what}");
                    assert!(close(g.mem.mean, w.mem.mean), "{what} mem.mean");
                    assert!(close(g.cpu.mean, w.cpu.mean), "{what} cpu.mean");
                    if needs.last {
                        assert_eq!((g.samples, g.last_ts), (w.samples, w.last_ts), "{what}");
                        assert!(close(g.rss.mean, w.rss.mean), "{what} rss.mean");
                        assert!(close(g.cores.last, w.cores.last), "{what} cores.last");
                    }
                }
            }
        }
    }
}

/// Two batches of one host written at once through one store (an agent that overlapped its
/// requests, or a retry overtaking its original) keep the seq bookkeeping exact: whichever
/// order they are applied in, the host's newest seq is the highest, and its gaps are the gaps
/// the writes reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_of_one_host_keep_the_bookkeeping() {
    let Some(d) = Influxd::start_or_skip("concurrent_batches_of_one_host") else {
        return;
    };
    let store = InfluxStore::connect(d.config("overlap")).await.expect("connect");
    let t0 = base_ts();
    store.write_batch(&batch("ov-1", 1, vec![sample(t0, "x", 1.0, 1.0)])).await.expect("seq 1");
    let mk =
        |seq: u64| batch("ov-1", seq, (1..50).map(|i| sample(t0 + i, "x", 1.0, 1.0)).collect());
    let mut gaps = 0;
    for round in 0..8u64 {
        let (lo, hi) = (mk(2 + 2 * round), mk(3 + 2 * round));
        let (r_lo, r_hi) = tokio::join!(store.write_batch(&lo), store.write_batch(&hi));
        gaps += r_lo.expect("lower seq").seq_gap + r_hi.expect("higher seq").seq_gap;
        let h = store.hosts().await.expect("hosts");
        assert_eq!((h[0].last_seq, h[0].seq_gaps), (hi.seq, gaps), "round {round}");
    }
}

/// Merged usage over hosts that sample at the same instants (every agent sweeps at the same
/// timestamps): every value counts, none is lost to a timestamp shared by two series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_usage_counts_samples_that_share_a_timestamp() {
    let Some(d) = Influxd::start_or_skip("merged_usage_counts_samples_that_share_a_timestamp")
    else {
        return;
    };
    let influx = InfluxStore::connect(d.config("ties")).await.expect("connect");
    let reference = procwatch_store::memory::MemoryStore::new();
    let t0 = base_ts();
    for (h, host) in ["tie-1", "tie-2", "tie-3"].iter().enumerate() {
        // Host 3 holds the largest values, at the same timestamps as the others.
        let samples: Vec<Sample> = (0..25)
            .map(|i| sample(t0 + i * 10_000, "same", (i as f64 + 1.0) * (h as f64 + 1.0), 1.0))
            .collect();
        let b = batch(host, 1, samples);
        influx.write_batch(&b).await.expect("write");
        reference.write_batch(&b).await.expect("write");
    }
    let q = UsageQuery { from: t0, to: t0 + 600_000, host: None, process: None, per_host: false };
    let got = influx.usage(&q).await.expect("usage");
    let want = reference.usage(&q).await.expect("usage");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples, 75);
    for (stat, a, b) in [
        ("mean", got[0].cpu.mean, want[0].cpu.mean),
        ("min", got[0].cpu.min, want[0].cpu.min),
        ("max", got[0].cpu.max, want[0].cpu.max),
        ("p95", got[0].cpu.p95, want[0].cpu.p95),
    ] {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "cpu.{stat}: influx {a}, reference {b}");
    }
}

/// What a 2.x-like server sees (a loopback listener reading the raw requests): the token as
/// `Authorization: Token <t>` on every request, a refused `CREATE DATABASE` making the store
/// "unmanaged" (writes go ahead without an RP), writes as gzip line protocol in ms precision,
/// one request per batch and no bookkeeping query once the store knows the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_gzip_and_the_unmanaged_fallback_on_the_wire() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let mut heads: Vec<String> = Vec::new();
        // /ping 204, CREATE DATABASE refused (501, as a 2.x would), other queries answered
        // empty, writes 204; until both batches' writes are in.
        while heads.iter().filter(|h| h.starts_with("POST /write")).count() < 2 {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            let head = loop {
                n += s.read(&mut buf[n..]).expect("read");
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let Some(end) = text.find("\r\n\r\n") else { continue };
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if n >= end + 4 + len {
                    break text[..end].to_string();
                }
            };
            let queries = heads.iter().filter(|h| h.starts_with("POST /query")).count();
            let (status, body) = if head.starts_with("GET /ping") {
                ("204 No Content", "")
            } else if head.starts_with("POST /query") && queries == 0 {
                ("501 Not Implemented", "{}")
            } else if head.starts_with("POST /query") {
                ("200 OK", r#"{"results":[{"statement_id":0}]}"#)
            } else {
                ("204 No Content", "")
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).expect("answer");
            heads.push(head);
        }
        heads
    });
    let mut cfg = InfluxConfig::new(url, "tokdb");
    cfg.token = Some("s3cret".into());
    cfg.timeout = Duration::from_secs(5);
    // Loopback turns gzip off by default; a remote InfluxDB gets gzip.
    assert!(!cfg.gzip);
    cfg.gzip = true;
    let store = InfluxStore::new(cfg).expect("store");
    let t0 = base_ts();
    // Unmanaged (CREATE DATABASE refused): the write goes ahead on the database's default RP.
    let out = store.write_batch(&batch("tok-1", 1, vec![sample(t0, "x", 1.0, 1.0)])).await;
    assert_eq!(out.expect("write").samples, 1);
    let out = store.write_batch(&batch("tok-1", 2, vec![sample(t0 + 1, "x", 1.0, 1.0)])).await;
    assert_eq!(out.expect("second write").samples, 1);
    let heads = seen.join().expect("listener");
    let kinds: Vec<&str> =
        heads.iter().map(|h| h.split(['?', ' ']).take(2).last().unwrap_or("")).collect();
    // ping, CREATE DATABASE (refused), the host's bookkeeping (first batch), one write per
    // batch, and no bookkeeping query for the second batch (this store wrote the first).
    assert_eq!(kinds, ["/ping", "/query", "/query", "/write", "/write"], "{heads:?}");
    let write = heads.iter().find(|h| h.starts_with("POST /write")).expect("a write");
    assert!(!write.contains("rp="), "no RP when the store cannot manage one: {write}");
    for h in &heads {
        assert!(h.to_ascii_lowercase().contains("authorization: token s3cret"), "{h}");
    }
    let lower = write.to_ascii_lowercase();
    assert!(lower.contains("content-encoding: gzip"), "{write}");
    assert!(write.contains("precision=ms") && write.contains("db=tokdb"), "{write}");
}
