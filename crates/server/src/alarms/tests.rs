//! Tests of the server's alarms: evaluation, restore, routes, the stream.

use super::*;
use crate::AppState;
use crate::{ServerConfig, ServerError};
use futures::{Stream, StreamExt};
use procwatch_alarm::RuleSet;
use procwatch_model::{AlarmKind, Batch, Sample};
use procwatch_model::{Level, Metric};
use procwatch_store::conformance::red_event;
use procwatch_store::memory::MemoryStore;
use procwatch_store::AlarmQuery;
use procwatch_store::Storage;
use std::collections::BTreeMap;
use std::sync::Arc;

const NOW: TsMs = 1_764_072_000_000;

fn state(rules: RuleSet) -> AppState {
    let config = ServerConfig {
        interval: Duration::from_secs(1),
        alarm_rules: rules,
        ..ServerConfig::default()
    };
    AppState::new(Arc::new(MemoryStore::new()), config)
}

fn batch(host: &str, process: &str, points: &[(TsMs, f64)]) -> Batch {
    Batch {
        host: host.into(),
        agent: "test".into(),
        seq: 0,
        interval_ms: 1000,
        host_totals: vec![],
        samples: points
            .iter()
            .map(|&(ts, cpu)| Sample {
                ts,
                process: process.into(),
                cpu,
                // These tests are about cpu: no process here saturates a core, so the
                // built-in cores rule stays quiet.
                cores: 0.0,
                mem: 1.0,
                rss: 1,
                count: 1,
                extras: None,
            })
            .collect(),
        dropped_samples: 0,
        report: None,
    }
}

fn red(host: &str, process: &str, level: Level) -> AlarmEvent {
    let id = format!("{host}/{process}/{level}");
    AlarmEvent { level, value: 90.0, peak: 90.0, ..red_event(&id, host, process, NOW) }
}

#[tokio::test]
async fn a_vanished_series_goes_stale_then_expires() {
    let st = state(RuleSet::default());
    let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
    st.store.write_batch(&batch("web-1", "gone", &[(now, 95.0)])).await.unwrap();
    // Keep the host itself alive, so only the series is silent.
    let alive = |t: TsMs| batch("web-1", "alive", &[(t, 1.0)]);
    let mut levels = Vec::new();
    for t in [now, now + 3_000, now + 3_600_000, now + 3_603_000] {
        st.store.write_batch(&alive(t)).await.unwrap();
        for e in st.alarms.evaluate(&st, t).await.unwrap() {
            levels.push((e.process, e.level, e.end.is_some()));
        }
    }
    let gone: Vec<_> = levels.into_iter().filter(|l| l.0 == "gone").map(|l| (l.1, l.2)).collect();
    assert_eq!(
        gone,
        [(Level::Red, false), (Level::Red, true), (Level::Stale, false), (Level::Stale, true)]
    );
    assert!(st.alarms.active().is_empty());
    let open = st
        .store
        .alarm_events(&AlarmQuery { active_only: true, ..Default::default() })
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
}

#[test]
fn query_alarm_is_the_worst_level_per_process() {
    let active = [
        red("a", "java", Level::Amber),
        red("b", "java", Level::Red),
        red("a", "pg", Level::Stale),
        AlarmEvent {
            kind: AlarmKind::HostSilent,
            process: String::new(),
            ..red("c", "", Level::Red)
        },
    ];
    let all = worst_by_process(&active, None);
    assert_eq!(all, BTreeMap::from([("java".into(), Level::Red), ("pg".into(), Level::Stale)]));
    let a = worst_by_process(&active, Some("a"));
    assert_eq!(a, BTreeMap::from([("java".into(), Level::Amber), ("pg".into(), Level::Stale)]));
    assert!(worst_by_process(&active, Some("zz")).is_empty());
    assert_eq!(serde_json::to_string(&all).unwrap(), r#"{"java":"RED","pg":"STALE"}"#);
}

#[test]
fn alarm_filters_parse_and_bad_ones_are_400() {
    let p = |pairs: &[(&str, &str)]| {
        let qs: String =
            pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let uri: axum::http::Uri = format!("/api/v1/alarms?{qs}").parse().unwrap();
        let axum::extract::Query(params) = axum::extract::Query::try_from_uri(&uri).unwrap();
        alarm_query(params, NOW)
    };
    let q = p(&[
        ("active", "true"),
        ("host", "h"),
        ("metric", "mem"),
        ("level", "red"),
        ("from", "-1h"),
        ("limit", "5"),
    ])
    .unwrap();
    assert!(q.active_only);
    assert_eq!(
        (q.host.as_deref(), q.metric, q.level),
        (Some("h"), Some(Metric::Mem), Some(Level::Red))
    );
    assert_eq!((q.from, q.to, q.limit), (Some(NOW - 3_600_000), None, 5));
    let d = p(&[]).unwrap();
    assert!(!d.active_only && d.limit == 100 && d.host.is_none());
    for bad in [
        ("active", "yes"),
        ("metric", "disk"),
        ("level", "PURPLE"),
        ("from", "soon"),
        ("limit", "-1"),
    ] {
        let e = p(&[bad]).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert!(p(&[("from", "now"), ("to", "-1h")]).is_err());
}

#[test]
fn replay_sends_the_missed_events_or_else_the_active_ones() {
    let hub = Alarms::new(RuleSet::default(), 1);
    hub.set_active(vec![red("h", "now-active", Level::Red)]);
    for i in 0..5 {
        hub.hub.publish(red("h", &format!("p{i}"), Level::Red));
    }
    let id = |n: u64| format!("{}-{n}", hub.hub.boot());
    let procs =
        |v: Vec<(u64, AlarmEvent)>| v.into_iter().map(|(_, e)| e.process).collect::<Vec<_>>();
    let (missed, after, snapshot) = hub.hub.replay(Some(&id(3)), || hub.active());
    assert_eq!(
        (procs(missed), after, snapshot),
        (vec!["p3".to_owned(), "p4".to_owned()], 5, false)
    );
    assert!(hub.hub.replay(Some(&id(5)), || hub.active()).0.is_empty());
    // No id, another run's id, or an id ahead of the log: the active alarms.
    for last in [None, Some("0-3".to_owned()), Some(id(99))] {
        let (first, after, snapshot) = hub.hub.replay(last.as_deref(), || hub.active());
        assert_eq!(
            (procs(first), after, snapshot),
            (vec!["now-active".to_owned()], 5, true),
            "{last:?}"
        );
    }
    // An id older than the log's start: the active alarms too.
    for i in 0..hub::LOG_CAP {
        hub.hub.publish(red("h", &format!("q{i}"), Level::Red));
    }
    assert_eq!(
        procs(hub.hub.replay(Some(&id(2)), || hub.active()).0),
        vec!["now-active".to_owned()]
    );
}

#[tokio::test]
async fn evaluation_stores_events_restores_them_and_raises_silent_hosts() {
    let rules = RuleSet::from_specs(
        &Default::default(),
        &[procwatch_alarm::RuleSpec {
            process: Some(procwatch_alarm::Glob::new("hot*")),
            threshold: Some(10.0),
            ..Default::default()
        }],
    )
    .unwrap();
    let st = state(rules.clone());
    let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
    let pts: Vec<(TsMs, f64)> = (0..3).map(|i| (now - 2000 + i * 1000, 40.0)).collect();
    st.store.write_batch(&batch("web-1", "hot1", &pts)).await.unwrap();
    st.store.write_batch(&batch("web-1", "cool", &pts)).await.unwrap();
    // An old host, silent for a minute.
    st.store.write_batch(&batch("old-1", "x", &[(now - 60_000, 1.0)])).await.unwrap();
    let mut events = st.alarms.evaluate(&st, now).await.unwrap();
    // Host silence is judged from 3 intervals after the first pass on.
    assert!(events.iter().all(|e| e.kind == AlarmKind::Series), "{events:?}");
    st.store.write_batch(&batch("web-1", "hot1", &[(now + 2500, 41.0)])).await.unwrap();
    events.extend(st.alarms.evaluate(&st, now + 3000).await.unwrap());
    let red: Vec<_> = events.iter().filter(|e| e.level == Level::Red).collect();
    assert_eq!(red.len(), 2, "{events:?}");
    assert!(red.iter().any(|e| e.process == "hot1" && e.metric == Metric::Cpu));
    assert!(red.iter().any(|e| e.host == "old-1" && e.kind == AlarmKind::HostSilent));
    assert_eq!(worst_by_process(&st.alarms.active(), None).get("hot1"), Some(&Level::Red));
    let stored = st
        .store
        .alarm_events(&AlarmQuery { active_only: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(st.alarms.last_evaluation() > Duration::ZERO);
    // A second pass over the same samples changes nothing.
    assert!(st.alarms.evaluate(&st, now + 3010).await.unwrap().is_empty());

    // A new server on the same store restores the open alarms and does not raise them again.
    let again = AppState::new(
        st.store.clone(),
        ServerConfig {
            interval: Duration::from_secs(1),
            alarm_rules: rules,
            ..ServerConfig::default()
        },
    );
    assert_eq!(again.alarms.restore(&*again.store).await.unwrap(), 2);
    assert_eq!(again.alarms.active().len(), 2);
    let more: Vec<(TsMs, f64)> = vec![(now + 4000, 45.0)];
    again.store.write_batch(&batch("web-1", "hot1", &more)).await.unwrap();
    let evs = again.alarms.evaluate(&again, now + 4000).await.unwrap();
    assert!(evs.iter().all(|e| e.level != Level::Red || e.end.is_some()), "raised twice: {evs:?}");
    // The peak of the open event grew, and was written back.
    let open = again
        .store
        .alarm_events(&AlarmQuery {
            active_only: true,
            process: Some("hot1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open[0].peak, 45.0);
}

type Body = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// The next `event: alarm` block (comments skipped, `synced` counted).
async fn next_event(body: &mut Body, text: &mut String, synced: &mut usize) -> String {
    loop {
        if let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.lines().any(|l| l == "event:synced" || l == "event: synced") {
                *synced += 1;
            } else if block.lines().any(|l| l.starts_with("data:")) {
                return block;
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// Over real HTTP: the stream starts with the active alarms, then carries new events with
/// ids; a reconnect with `Last-Event-ID` gets exactly the missed ones; a request timeout
/// shorter than the stream's life does not cut it; shutdown ends open streams.
#[tokio::test]
async fn stream_replays_and_ends_at_shutdown() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
    let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
    store.write_batch(&batch("web-1", "java", &[(now - 1000, 95.0)])).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ServerConfig {
        interval: Duration::from_millis(100),
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server: tokio::task::JoinHandle<Result<(), ServerError>> =
        tokio::spawn(crate::run(listener, config, store.clone(), async move {
            let _ = stop_rx.await;
        }));
    let client = reqwest::Client::new();
    let open = |last: Option<String>| {
        let mut r = client.get(format!("{url}/api/v1/alarms/stream"));
        if let Some(id) = last {
            r = r.header("last-event-id", id);
        }
        r.send()
    };
    let resp = open(None).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body: Body = Box::pin(resp.bytes_stream());
    let mut text = String::new();
    let mut synced = 0;
    let field = |block: &str, name: &str| {
        block.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(|v| v.trim().to_owned())
    };
    // The RED of java (the evaluator runs every 100 ms).
    let first = next_event(&mut body, &mut text, &mut synced).await;
    assert_eq!(field(&first, "event").as_deref(), Some("alarm"));
    let ev: AlarmEvent = serde_json::from_str(&field(&first, "data").unwrap()).unwrap();
    assert_eq!((ev.process.as_str(), ev.level), ("java", Level::Red));
    let first_id = field(&first, "id").unwrap();
    // More events while "disconnected": a second process goes RED.
    store.write_batch(&batch("web-1", "pg", &[(now - 500, 97.0)])).await.unwrap();
    let second = next_event(&mut body, &mut text, &mut synced).await;
    assert_eq!(synced, 1, "a fresh stream says when its snapshot is complete");
    assert!(second.contains("\"process\":\"pg\""), "{second}");
    // Past the 300 ms request timeout, the stream is still open.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Reconnecting after the first event replays exactly the second.
    let replay = open(Some(first_id)).await.unwrap();
    let mut rb = replay.bytes_stream();
    let chunk =
        tokio::time::timeout(Duration::from_secs(5), rb.next()).await.unwrap().unwrap().unwrap();
    let got = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(got.contains("\"process\":\"pg\"") && !got.contains("\"process\":\"java\""), "{got}");
    assert!(!got.contains("synced"), "a replay is not a snapshot: {got}");
    // The list and query-alarm routes agree.
    let get_json = |path: &'static str| {
        let req = client.get(format!("{url}{path}")).send();
        async move { req.await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let list = get_json("/api/v1/alarms?active=true").await;
    assert_eq!(list["alarms"].as_array().unwrap().len(), 2);
    let q = get_json("/ressources-usage/query-alarm/?host=web-1").await;
    assert_eq!(q, serde_json::json!({"java": "RED", "pg": "RED"}));
    // Shutdown with two streams open still completes.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown not held")
        .unwrap()
        .unwrap();
}

/// Issue 16, dormancy through the real evaluator and the embedded store: a series idle for
/// three hours (its forecaster dropped) then ramping to a crossing wakes with its stored
/// history and raises exactly what a server that kept the forecaster raises: the same AMBER,
/// at the same sample, with the same forecast and ETA.
#[tokio::test]
async fn a_dormant_series_wakes_from_its_stored_history_and_judges_as_a_kept_one() {
    let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
    let start = now - 6 * 3_600_000;
    let cpu = |i: i64| match i {
        0..1080 => 1.5 + (i % 5) as f64 * 0.4,
        _ => (1.5 + (i - 1080) as f64 * 0.4).min(95.0),
    };
    let mut runs = Vec::new();
    for dormancy in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = procwatch_store_sqlite::SqliteStore::open(dir.path(), Default::default());
        let config = ServerConfig { interval: Duration::from_secs(10), ..ServerConfig::default() };
        let st = AppState::new(Arc::new(store.unwrap()), config);
        st.alarms.engine.lock().unwrap().set_dormancy(dormancy);
        let (mut events, mut most_dormant) = (Vec::new(), 0);
        for i in 0..1400 {
            let ts = start + i * 10_000;
            let mut b = batch("web-1", "app", &[(ts, cpu(i))]);
            (b.seq, b.interval_ms) = (i as u64, 10_000);
            st.store.write_batch(&b).await.unwrap();
            let got = st.alarms.evaluate(&st, ts).await.unwrap();
            events.extend(got.into_iter().filter(|e| e.kind == AlarmKind::Series));
            most_dormant = most_dormant.max(st.alarms.engine_figures().1);
        }
        runs.push((events, most_dormant, st.alarms.engine_figures().1));
    }
    let (kept, dormant) = (&runs[0], &runs[1]);
    assert_eq!((kept.1, kept.2), (0, 0));
    // cpu, mem and cores (persistence, RED only) slept; cpu woke for the ramp, mem (1 %)
    // and cores (0) sleep on.
    assert_eq!((dormant.1, dormant.2), (3, 2));
    let amber = kept.0.iter().find(|e| e.level == Level::Amber).expect("an AMBER before RED");
    assert!(amber.forecast.is_some() && amber.eta_seconds.is_some());
    assert!(kept.0.iter().any(|e| e.level == Level::Red));
    assert_eq!(kept.0, dormant.0);
}
