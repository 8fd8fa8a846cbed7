//! The alarm evaluator against a store that is down at start, a store that lists a host only
//! after its samples, and two replicas (two evaluators) on one store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procwatch_alarm::event_id;
use procwatch_model::{AlarmEvent, AlarmKind, Batch, Level, Metric, TsMs};
use procwatch_server::{AppState, ServerConfig};
use procwatch_store::conformance::red_event;
use procwatch_store::{AlarmQuery, Storage, StoreError, StoreResult};

use crate::gated_store::{Call, Gate, GatedMemory};
use crate::util::{now_ms, sample, spawn_app_with};

/// What makes the memory store of [`FlakyStore`] flaky: it can be down (every call
/// `Unavailable`) and can hide its hosts.
#[derive(Default)]
struct Flaky {
    down: AtomicBool,
    hide_hosts: AtomicBool,
    /// Calls answered `Unavailable` so far.
    refused: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Gate for Flaky {
    const NAME: &'static str = "flaky";
    async fn before(&self, _call: Call) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
    fn hide_hosts(&self) -> bool {
        self.hide_hosts.load(Ordering::SeqCst)
    }
}

/// A memory store that can be down and can hide its hosts.
type FlakyStore = GatedMemory<Flaky>;

/// A batch of `host` (interval 1 s) with one sample per (process, ts, cpu).
fn batch_of(host: &str, seq: u64, points: &[(&str, TsMs, f64)]) -> Batch {
    Batch {
        host: host.into(),
        agent: "test".into(),
        seq,
        interval_ms: 1_000,
        host_totals: vec![],
        samples: points.iter().map(|&(p, ts, cpu)| sample(ts, p, cpu, 1.0)).collect(),
        dropped_samples: 0,
        report: None,
    }
}

/// Alarm evaluation passes so far, from `/metrics`.
async fn evaluations(app: &crate::util::TestApp) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("procwatch_alarm_evaluation_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the evaluation count in /metrics")
}

async fn open_events(store: &dyn Storage) -> Vec<AlarmEvent> {
    store.alarm_events(&AlarmQuery { active_only: true, ..Default::default() }).await.unwrap()
}

/// Asserts no (kind, host, process, metric) has two open events in the store.
async fn assert_one_open_per_series(store: &dyn Storage) {
    let open = open_events(store).await;
    let mut per: BTreeMap<String, Vec<&AlarmEvent>> = BTreeMap::new();
    for e in &open {
        per.entry(format!("{:?} {} {} {}", e.kind, e.host, e.process, e.metric))
            .or_default()
            .push(e);
    }
    for (k, evs) in per {
        assert_eq!(evs.len(), 1, "two open events for {k}: {evs:?}");
    }
}

/// The store is down when the server starts: the evaluator keeps trying to restore the open
/// alarms (with backoff) and evaluates only once it has, so an alarm that has been RED for an
/// hour (longer than the evaluator's first read-back) is continued, not raised again under a
/// new id.
#[tokio::test]
async fn open_alarms_are_restored_once_the_store_comes_back() {
    let store = Arc::new(FlakyStore::default());
    let now = now_ms();
    let start = now - 3_600_000;
    let hot: Vec<(&str, TsMs, f64)> =
        (0..=360).map(|i| ("java", start + i * 10_000, 95.0)).collect();
    let mut b = batch_of("web-1", 1, &hot);
    b.interval_ms = 10_000;
    store.inner.write_batch(&b).await.unwrap();
    let id = event_id(AlarmKind::Series, "web-1", "java", Metric::Cpu, start);
    let red = red_event(&id, "web-1", "java", start);
    store.inner.put_alarm_event(&red).await.unwrap();
    store.down.store(true, Ordering::SeqCst);

    let config = ServerConfig { interval: Duration::from_millis(50), ..ServerConfig::default() };
    let app = spawn_app_with(store.clone(), config).await;
    // The server serves while the store is down (it is not blocked on the restore).
    assert_eq!(app.get_json("/healthz").await.0, 200);
    // Down until the restore has been refused and retried (the retention pass at start is the
    // first refused call): an event, not a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.refused.load(Ordering::SeqCst) < 3 {
        assert!(std::time::Instant::now() < deadline, "the restore never tried the store");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.down.store(false, Ordering::SeqCst);

    // The restored alarm shows, and the evaluator runs passes over the hour of RED samples.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, alarms) = app.get_json("/ressources-usage/query-alarm/").await;
        if alarms["java"] == "RED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never restored: {alarms}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more evaluation passes (counted in /metrics), each a chance to raise it again.
    let passes_then = evaluations(&app).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while evaluations(&app).await < passes_then + 3 {
        assert!(std::time::Instant::now() < deadline, "the evaluator stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = open_events(&*store).await;
    assert_eq!(open.len(), 1, "raised again: {open:?}");
    assert_eq!(open[0].id, red.id);
    let all = store.inner.alarm_events(&AlarmQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    app.stop().await;
}

/// The store lists a host only after its samples (InfluxDB writes the batch bookkeeping
/// last): a pass that sees the samples but not the host leaves the series for the next pass,
/// instead of judging it with the server's interval (and calling a 1 s old sample STALE).
#[tokio::test]
async fn a_series_whose_host_is_not_listed_yet_waits_for_the_next_pass() {
    let store = Arc::new(FlakyStore::default());
    let config = ServerConfig { interval: Duration::from_millis(100), ..ServerConfig::default() };
    let st = AppState::new(store.clone(), config);
    let now = now_ms();
    let mut b = batch_of("two-1", 1, &[("java", now - 1_000, 95.0)]);
    b.interval_ms = 10_000;
    store.inner.write_batch(&b).await.unwrap();
    store.hide_hosts.store(true, Ordering::SeqCst);
    let first = st.alarms.evaluate(&st, now).await.unwrap();
    assert!(first.is_empty(), "{first:?}");
    store.hide_hosts.store(false, Ordering::SeqCst);
    let second = st.alarms.evaluate(&st, now + 100).await.unwrap();
    let levels: Vec<(Level, TsMs, Option<TsMs>)> =
        second.iter().map(|e| (e.level, e.start, e.end)).collect();
    assert_eq!(levels, [(Level::Red, now - 1_000, None)]);
    assert_one_open_per_series(&*store).await;
}

/// Two replicas on one store, evaluating at their own moments: A every second, B paused
/// through a gap of the series. They store the same events under the same ids (RED, STALE
/// from 3 intervals after the last sample, RED again from STALE), a batch that arrives late
/// withdraws a STALE without a second open RED, and no series ever has two open events.
#[tokio::test]
async fn two_replicas_store_the_same_events_for_a_series_with_a_gap() {
    let store = Arc::new(FlakyStore::default());
    let config = || ServerConfig { interval: Duration::from_secs(1), ..ServerConfig::default() };
    let a = AppState::new(store.clone(), config());
    let b = AppState::new(store.clone(), config());
    let t0 = now_ms() / 1000 * 1000;
    let mut seq = 0;
    let mut write = |points: Vec<(&'static str, TsMs, f64)>| {
        seq += 1;
        let batch = batch_of("web-1", seq, &points);
        let store = store.clone();
        async move { store.inner.write_batch(&batch).await.unwrap() }
    };
    let mut from_a: Vec<AlarmEvent> = Vec::new();
    let mut from_b: Vec<AlarmEvent> = Vec::new();
    // java RED for 3 s, then silent 6 s while "alive" keeps the host fresh, then RED again.
    for s in 0..=14 {
        let ts = t0 + s * 1_000;
        let mut points = vec![("alive", ts, 1.0)];
        if !(3..9).contains(&s) {
            points.push(("java", ts, 95.0));
        }
        write(points).await;
        from_a.extend(a.alarms.evaluate(&a, ts + 100).await.unwrap());
        if !(3..10).contains(&s) {
            from_b.extend(b.alarms.evaluate(&b, ts + 600).await.unwrap());
        }
        assert_one_open_per_series(&*store).await;
    }
    let last = |evs: &[AlarmEvent]| -> BTreeMap<String, (Level, Level, TsMs, Option<TsMs>)> {
        evs.iter().map(|e| (e.id.clone(), (e.level, e.previous, e.start, e.end))).collect()
    };
    assert_eq!(last(&from_a), last(&from_b));
    let java: BTreeSet<(Level, TsMs, Option<TsMs>)> =
        last(&from_a).values().filter(|v| v.0 != Level::Ok).map(|v| (v.0, v.2, v.3)).collect();
    let (red1, stale, red2) = (t0, t0 + 2_000 + 3_000, t0 + 9_000);
    assert_eq!(
        java,
        BTreeSet::from([
            (Level::Red, red1, Some(stale)),
            (Level::Stale, stale, Some(red2)),
            (Level::Red, red2, None),
        ])
    );

    // java goes silent again; A judges it STALE, then the samples it missed land late (an
    // agent's spool): A withdraws the STALE, B (which saw them in time) never had one.
    let t1 = t0 + 15_000;
    write(vec![("alive", t1, 1.0), ("java", t1, 95.0)]).await;
    a.alarms.evaluate(&a, t1 + 100).await.unwrap();
    b.alarms.evaluate(&b, t1 + 600).await.unwrap();
    for s in 1..=4 {
        write(vec![("alive", t1 + s * 1_000, 1.0)]).await;
        a.alarms.evaluate(&a, t1 + s * 1_000 + 100).await.unwrap();
    }
    assert!(a.alarms.active().iter().any(|e| e.level == Level::Stale), "{:?}", a.alarms.active());
    let late: Vec<(&str, TsMs, f64)> = (1..=4).map(|s| ("java", t1 + s * 1_000, 95.0)).collect();
    write(late).await;
    a.alarms.evaluate(&a, t1 + 4_700).await.unwrap();
    b.alarms.evaluate(&b, t1 + 4_800).await.unwrap();
    let ids = |v: Vec<AlarmEvent>| -> Vec<(String, Level)> {
        v.into_iter().map(|e| (e.id, e.level)).collect()
    };
    assert_eq!(ids(a.alarms.active()), ids(b.alarms.active()));
    assert_eq!(a.alarms.active()[0].start, red2, "the RED from before is open again");
    assert_one_open_per_series(&*store).await;
}

/// Records the `window` queries of a memory store; refuses one read when told to.
#[derive(Default)]
struct Recorder {
    windows: std::sync::Mutex<Vec<(Option<String>, TsMs, usize)>>,
    /// Reads still answered before one is refused (0: none refused).
    refuse_after: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Gate for Recorder {
    const NAME: &'static str = "recorder";
    async fn before(&self, call: Call) -> StoreResult<()> {
        if call == Call::Read {
            let left = self.refuse_after.load(Ordering::SeqCst);
            if left == 1 {
                self.refuse_after.store(0, Ordering::SeqCst);
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            if left > 1 {
                self.refuse_after.store(left - 1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
    fn saw_window(&self, q: &procwatch_store::UsageQuery, series: usize) {
        self.windows.lock().unwrap().push((q.host.clone(), q.from, series));
    }
}

/// A server's first pass reads the rules' whole lookback one host at a time (a restart at a
/// large fleet held every series' 20 minutes at once: 3.5 GB at 300,000 series), and judges
/// that history as a server that evaluated all along did.
#[tokio::test]
async fn the_first_pass_reads_history_one_host_at_a_time_and_judges_it_as_the_steady_passes() {
    let store = Arc::new(GatedMemory::<Recorder>::default());
    let config = || ServerConfig { interval: Duration::from_secs(1), ..ServerConfig::default() };
    let steady = AppState::new(store.clone(), config());
    let t0 = now_ms() / 1000 * 1000 - 400_000;
    let hosts = ["h-1", "h-2", "h-3"];
    let mut from_steady = Vec::new();
    // 400 s at 1 s: java RED from 20 s to 120 s on every host, again from 300 s on h-2.
    for s in 0..400 {
        let ts = t0 + s * 1_000;
        for (k, host) in hosts.iter().enumerate() {
            let hot = (20..120).contains(&s) || (k == 1 && s >= 300);
            let points = [("java", ts, if hot { 95.0 } else { 5.0 }), ("idle", ts, 1.0)];
            store.inner.write_batch(&batch_of(host, s as u64 + 1, &points)).await.unwrap();
        }
        if s % 10 == 9 {
            from_steady.extend(steady.alarms.evaluate(&steady, ts + 100).await.unwrap());
        }
    }
    let now = t0 + 399_000 + 100;
    store.windows.lock().unwrap().clear();
    let restarted = AppState::new(store.clone(), config());
    // The first attempt fails at its third read (host h-3's history, after h-1 and h-2 were
    // fed): the retry loses none of the transitions the first two hosts' history held.
    store.refuse_after.store(3, Ordering::SeqCst);
    restarted.alarms.evaluate(&restarted, now - 50).await.expect_err("the third read is refused");
    let from_first = restarted.alarms.evaluate(&restarted, now).await.unwrap();

    // Reads: the history per host, the recent part (2 × 30 s) for every host at once.
    let reads = store.windows.lock().unwrap().clone();
    let per_host: BTreeSet<&str> = reads.iter().filter_map(|(h, _, _)| h.as_deref()).collect();
    assert_eq!(per_host, BTreeSet::from(hosts), "{reads:?}");
    for (host, from, series) in &reads {
        match host {
            Some(_) => assert!(*series <= 2, "{reads:?}"),
            None => assert!(
                *from >= now - 60_000,
                "an unfiltered read reaches back to {from}: {reads:?}"
            ),
        }
    }
    assert!(reads.iter().any(|(h, from, _)| h.is_some() && *from <= t0), "{reads:?}");

    // Judged alike: the same transitions (ids, levels, starts, ends), the same alarms open.
    let key = |evs: &[AlarmEvent]| -> BTreeSet<(String, Level, TsMs, Option<TsMs>)> {
        evs.iter()
            .filter(|e| e.level != Level::Ok)
            .map(|e| (e.id.clone(), e.level, e.start, e.end))
            .collect()
    };
    let closed = |evs: &[AlarmEvent]| -> BTreeSet<(String, Level, TsMs, Option<TsMs>)> {
        key(evs).into_iter().filter(|e| e.3.is_some()).collect()
    };
    assert_eq!(closed(&from_first), closed(&from_steady));
    let open = |app: &AppState| -> BTreeSet<(String, Level, TsMs)> {
        app.alarms.active().into_iter().map(|e| (e.id, e.level, e.start)).collect()
    };
    assert_eq!(open(&restarted), open(&steady));
    assert!(open(&restarted).iter().any(|(_, l, s)| *l == Level::Red && *s == t0 + 300_000));
    assert_eq!(closed(&from_first).len(), 3, "one RED per host from 20 s to 120 s");
}
