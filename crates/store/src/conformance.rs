//! The backend-agnostic conformance suite: every `Storage` backend must pass it.
//!
//! Enabled by the `conformance` feature; backends use it from their tests:
//!
//! ```ignore
//! procwatch_store::conformance::run_all(|| async { Arc::new(MyStore::new()) as Arc<dyn Storage> }).await;
//! ```
//!
//! Each case is also a `pub async fn(&dyn Storage)` so a backend can run them one by one. Every
//! case asks `make` for a fresh, empty store and uses its own host names; timestamps are
//! recent (derived from the wall clock, aligned to whole minutes) so a backend with a
//! retention policy (InfluxDB) accepts them. No case sleeps or assumes an in-process
//! backend. Floating-point results are compared with a relative tolerance of 1e-9, so a
//! backend may compute means in another order.

use std::future::Future;
use std::sync::Arc;

use procwatch_model::{AlarmEvent, AlarmKind, Batch, HostTotal, Level, Metric, Sample, TsMs};

mod directives;
mod extras;
mod rollups;
pub use directives::directives;
pub use extras::extras_round_trip;
pub use rollups::{resolution_by_range, rollup_exact, rollup_late_sample};

use crate::{AlarmQuery, HistoryQuery, Stats, Storage, StoreError, UsageNeeds, UsageQuery};

/// One named case.
pub type Case = for<'a> fn(&'a dyn Storage) -> futures_lite::BoxFut<'a>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("write_read_back", |s| Box::pin(write_read_back(s))),
    ("idempotent_rewrite", |s| Box::pin(idempotent_rewrite(s))),
    ("all_or_nothing", |s| Box::pin(all_or_nothing(s))),
    ("usage_stats", |s| Box::pin(usage_stats(s))),
    ("per_host_vs_merged", |s| Box::pin(per_host_vs_merged(s))),
    ("usage_of_needs", |s| Box::pin(usage_of_needs(s))),
    ("window_oldest_first", |s| Box::pin(window_oldest_first(s))),
    ("history_steps", |s| Box::pin(history_steps(s))),
    ("history_not_found", |s| Box::pin(history_not_found(s))),
    ("retention", |s| Box::pin(retention(s))),
    ("alarm_events", |s| Box::pin(alarm_events(s))),
    ("hosts_and_seq", |s| Box::pin(hosts_and_seq(s))),
    ("host_totals", |s| Box::pin(host_totals(s))),
    ("retire_host", |s| Box::pin(retire_host(s))),
    ("rollup_exact", |s| Box::pin(rollup_exact(s))),
    ("rollup_late_sample", |s| Box::pin(rollup_late_sample(s))),
    ("resolution_by_range", |s| Box::pin(resolution_by_range(s))),
    ("directives", |s| Box::pin(directives(s))),
    ("extras_round_trip", |s| Box::pin(extras_round_trip(s))),
];

/// Minimal boxed-future alias, so the suite needs no extra dependency.
pub mod futures_lite {
    /// A boxed, sendable future borrowing the store.
    pub type BoxFut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// Runs every case, each on a fresh store from `make`. Panics (with the case name) on the
/// first failure.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Storage>>,
{
    for (name, case) in CASES {
        let store = make().await;
        eprintln!("conformance: {name} on {}", store.backend());
        case(store.as_ref()).await;
        store.close().await.expect("close");
    }
}

/// Start of the test data: 30 minutes ago, aligned to a whole minute.
pub fn base_ts() -> TsMs {
    use procwatch_model::clock::Clock;
    let now = procwatch_model::clock::SystemClock.now_ms();
    let t = now - 30 * 60_000;
    t - t.rem_euclid(60_000)
}

/// A sample with every field derived from `cpu` and `mem`.
pub fn sample(ts: TsMs, process: &str, cpu: f64, mem: f64) -> Sample {
    Sample {
        ts,
        process: process.to_string(),
        cpu,
        cores: cpu / 50.0,
        mem,
        rss: (mem * 1_000_000.0) as u64,
        count: 1 + (ts / 10_000 % 5) as u32,
        extras: None,
    }
}

/// An open RED cpu alarm of `process` on `host` since `start`: 95 % against a threshold of 80,
/// no forecast. The alarm event tests of the stores and the server start from it.
pub fn red_event(id: &str, host: &str, process: &str, start: TsMs) -> AlarmEvent {
    AlarmEvent {
        id: id.to_string(),
        kind: AlarmKind::Series,
        host: host.to_string(),
        process: process.to_string(),
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

/// A batch of samples.
pub fn batch(host: &str, seq: u64, samples: Vec<Sample>) -> Batch {
    Batch {
        host: host.to_string(),
        agent: "conformance".into(),
        seq,
        interval_ms: 10_000,
        host_totals: Vec::new(),
        samples,
        dropped_samples: 0,
        report: None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
fn assert_close(what: &str, got: f64, want: f64) {
    assert!(close(got, want), "{what}: got {got}, want {want}");
}

#[track_caller]
fn assert_stats(what: &str, got: &Stats, values_in_time_order: &[f64]) {
    let n = values_in_time_order.len();
    assert!(n > 0);
    let mut sorted = values_in_time_order.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / n as f64;
    // numpy's linear percentile, written out independently of `agg`.
    let rank = 0.95 * (n - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let p95 = sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64);
    assert_close(&format!("{what}.mean"), got.mean, mean);
    assert_close(&format!("{what}.min"), got.min, sorted[0]);
    assert_close(&format!("{what}.max"), got.max, sorted[n - 1]);
    assert_close(&format!("{what}.last"), got.last, values_in_time_order[n - 1]);
    assert_close(&format!("{what}.p95"), got.p95, p95);
}

fn q(
    from: TsMs,
    to: TsMs,
    host: Option<&str>,
    process: Option<&str>,
    per_host: bool,
) -> UsageQuery {
    UsageQuery {
        from,
        to,
        host: host.map(str::to_string),
        process: process.map(str::to_string),
        per_host,
    }
}

/// A written batch reads back exactly (every field), and only inside its window.
pub async fn write_read_back(store: &dyn Storage) {
    let t0 = base_ts();
    let samples = vec![
        sample(t0, "postgres", 12.5, 3.25),
        sample(t0, "java", 99.75, 41.0),
        sample(t0 + 10_000, "postgres", 0.0, 3.5),
    ];
    let mut b = batch("rb-1", 1, samples.clone());
    b.host_totals = vec![HostTotal { ts: t0, cpu: 41.5, mem: 55.0, unattributed_cpu: Some(2.5) }];
    let out = store.write_batch(&b).await.expect("write");
    assert_eq!(out.samples, 3);
    assert_eq!(out.host_totals, 1);
    assert_eq!(out.seq_gap, 0);

    let w = store.window(&q(t0, t0 + 60_000, Some("rb-1"), None, true)).await.expect("window");
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[0].host.as_str(), w[0].process.as_str()), ("rb-1", "java"));
    assert_eq!(w[0].named_samples(), vec![samples[1].clone()]);
    assert_eq!(w[1].process, "postgres");
    assert_eq!(w[1].named_samples(), vec![samples[0].clone(), samples[2].clone()]);

    // Half-open window: `to` excludes, `from` includes.
    let w = store.window(&q(t0 + 1, t0 + 10_000, Some("rb-1"), None, true)).await.expect("window");
    assert!(w.is_empty(), "{w:?}");
    let w =
        store.window(&q(t0 + 10_000, t0 + 10_001, Some("rb-1"), None, true)).await.expect("window");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].named_samples(), vec![samples[2].clone()]);

    // Unknown host: empty, not an error.
    let u = store.usage(&q(t0, t0 + 60_000, Some("nope"), None, true)).await.expect("usage");
    assert!(u.is_empty());
    // A host total is not a process: per host and merged, only the two processes.
    for per_host in [true, false] {
        let u =
            store.usage(&q(t0, t0 + 60_000, Some("rb-1"), None, per_host)).await.expect("usage");
        let mut names: Vec<&str> = u.iter().map(|r| r.process.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["java", "postgres"], "usage, per host: {per_host}");
    }
    let totals = store.host_totals("rb-1", t0, t0 + 1).await.expect("totals");
    assert_eq!(totals, b.host_totals);
}

/// A sample with the same (host, process, ts) replaces the stored one; a retried batch is
/// stored once.
pub async fn idempotent_rewrite(store: &dyn Storage) {
    let t0 = base_ts();
    let first: Vec<Sample> = (0..5).map(|i| sample(t0 + i * 10_000, "nginx", 10.0, 1.0)).collect();
    let b = batch("idem-1", 1, first.clone());
    store.write_batch(&b).await.expect("write");
    store.write_batch(&b).await.expect("retry");
    let mut replaced = sample(t0 + 20_000, "nginx", 77.0, 9.0);
    replaced.count = 3;
    store.write_batch(&batch("idem-1", 2, vec![replaced.clone()])).await.expect("rewrite");

    let w = store.window(&q(t0, t0 + 60_000, Some("idem-1"), None, true)).await.expect("window");
    assert_eq!(w.len(), 1);
    let mut want = first;
    want[2] = replaced;
    assert_eq!(w[0].named_samples(), want);
    let u = store.usage(&q(t0, t0 + 60_000, Some("idem-1"), None, true)).await.expect("usage");
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].samples, 5);
    assert_close("max cpu", u[0].cpu.max, 77.0);
    let hosts = store.hosts().await.expect("hosts");
    let h = hosts.iter().find(|h| h.host == "idem-1").expect("host");
    assert_eq!((h.last_seq, h.seq_gaps), (2, 0));
}

/// A batch with one invalid sample is refused whole: nothing of it is visible.
pub async fn all_or_nothing(store: &dyn Storage) {
    let t0 = base_ts();
    let mut samples: Vec<Sample> =
        (0..10).map(|i| sample(t0 + i * 10_000, "good", 5.0, 1.0)).collect();
    samples[7].cpu = f64::NAN;
    let res = store.write_batch(&batch("aon-1", 1, samples)).await;
    assert!(res.is_err(), "a batch with a NaN must be refused, got {res:?}");
    let w = store.window(&q(t0 - 60_000, t0 + 600_000, Some("aon-1"), None, true)).await;
    assert!(w.expect("window").is_empty());
    let hq = HistoryQuery {
        host: "aon-1".into(),
        process: "good".into(),
        from: t0,
        to: t0 + 600_000,
        step_ms: 0,
    };
    match store.history(&hq).await {
        Err(StoreError::NotFound(_)) => {}
        Ok(points) => assert!(points.is_empty(), "{points:?}"),
        Err(e) => panic!("history after a refused batch: {e}"),
    }
}

/// Mean, min, max, last (value at the newest ts) and p95 (numpy linear) of every metric.
pub async fn usage_stats(store: &dyn Storage) {
    let t0 = base_ts();
    // 20 samples whose values are a permutation, so `last` is not the max.
    let samples: Vec<Sample> = (0..20)
        .map(|i| {
            let v = ((i * 7) % 20 + 1) as f64 * 4.0;
            let mut s = sample(t0 + i * 10_000, "worker", v, v / 2.0 + 0.125);
            s.count = (i % 3 + 1) as u32;
            s
        })
        .collect();
    // Written in two batches, the second first.
    store.write_batch(&batch("st-1", 2, samples[10..].to_vec())).await.expect("write");
    store.write_batch(&batch("st-1", 1, samples[..10].to_vec())).await.expect("write");

    let u = store.usage(&q(t0, t0 + 200_000, Some("st-1"), Some("worker"), true)).await;
    let u = u.expect("usage");
    assert_eq!(u.len(), 1);
    let r = &u[0];
    assert_eq!(r.host.as_deref(), Some("st-1"));
    assert_eq!(r.process, "worker");
    assert_eq!(r.samples, 20);
    assert_eq!(r.last_ts, t0 + 190_000);
    assert_eq!(r.count, samples[19].count);
    let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    assert_stats("cpu", &r.cpu, &col(|s| s.cpu));
    assert_stats("cores", &r.cores, &col(|s| s.cores));
    assert_stats("mem", &r.mem, &col(|s| s.mem));
    assert_stats("rss", &r.rss, &col(|s| s.rss as f64));

    // A sub-window [t0+20s, t0+100s): samples 2..10.
    let u = store.usage(&q(t0 + 20_000, t0 + 100_000, Some("st-1"), None, true)).await;
    let u = u.expect("usage");
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].samples, 8);
    assert_eq!(u[0].last_ts, t0 + 90_000);
    assert_stats("cpu[2..10]", &u[0].cpu, &col(|s| s.cpu)[2..10]);
}

/// `per_host = true`: one row per (host, process), sorted. `false`: one row per process, the
/// statistics over every host's samples together.
pub async fn per_host_vs_merged(store: &dyn Storage) {
    let t0 = base_ts();
    let a: Vec<Sample> =
        (0..6).map(|i| sample(t0 + i * 10_000, "app", 10.0 + i as f64, 5.0)).collect();
    // Host b samples 5 s later, so the newest sample overall is b's.
    let b: Vec<Sample> =
        (0..6).map(|i| sample(t0 + 5_000 + i * 10_000, "app", 60.0 - i as f64, 7.0)).collect();
    let other = vec![sample(t0, "db", 1.0, 1.0)];
    store.write_batch(&batch("ph-b", 1, b.clone())).await.expect("write");
    store.write_batch(&batch("ph-a", 1, [a.clone(), other].concat())).await.expect("write");

    let per = store.usage(&q(t0, t0 + 60_000, None, Some("app"), true)).await.expect("usage");
    assert_eq!(per.len(), 2, "{per:?}");
    assert_eq!(per[0].host.as_deref(), Some("ph-a"));
    assert_eq!(per[1].host.as_deref(), Some("ph-b"));
    assert_stats("a.cpu", &per[0].cpu, &a.iter().map(|s| s.cpu).collect::<Vec<_>>());
    assert_stats("b.cpu", &per[1].cpu, &b.iter().map(|s| s.cpu).collect::<Vec<_>>());

    let merged = store.usage(&q(t0, t0 + 60_000, None, None, false)).await.expect("usage");
    assert_eq!(merged.len(), 2, "{merged:?}");
    assert_eq!(merged[0].process, "app");
    assert_eq!(merged[0].host, None);
    assert_eq!(merged[0].samples, 12);
    let mut all: Vec<&Sample> = a.iter().chain(b.iter()).collect();
    all.sort_by_key(|s| s.ts);
    assert_stats("merged.cpu", &merged[0].cpu, &all.iter().map(|s| s.cpu).collect::<Vec<_>>());
    assert_stats("merged.mem", &merged[0].mem, &all.iter().map(|s| s.mem).collect::<Vec<_>>());
    assert_eq!(merged[0].last_ts, t0 + 55_000);
    assert_eq!(merged[1].process, "db");
    assert_eq!(merged[1].samples, 1);

    // Host filter with per_host=false: only that host's samples.
    let one = store.usage(&q(t0, t0 + 60_000, Some("ph-b"), None, false)).await.expect("usage");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].samples, 6);
    assert_stats("b-only.cpu", &one[0].cpu, &b.iter().map(|s| s.cpu).collect::<Vec<_>>());
}

/// `usage_of` with partial needs answers the rows of `usage`, in the same order, with the
/// same `samples`, `last_ts` and the same value of every statistic it was asked for (the
/// others may be 0): per host and merged, one metric at a time, with and without the spread
/// and `last`. The server sorts a fleet page by a figure read this way, then reads the page's
/// rows whole.
pub async fn usage_of_needs(store: &dyn Storage) {
    let t0 = base_ts();
    let mk = |off: i64, scale: f64, name: &str| -> Vec<Sample> {
        (0..9)
            .map(|i| {
                let v = ((i * 5) % 9 + 1) as f64 * scale;
                let mut s = sample(t0 + off + i * 10_000, name, v, v / 3.0 + 0.25);
                s.cores = v / 100.0;
                s.rss = 4096 * (i as u64 % 4 + 1);
                s.count = (i % 2 + 1) as u32;
                s
            })
            .collect()
    };
    let a = [mk(0, 3.0, "web"), mk(0, 1.5, "db")].concat();
    let b = [mk(5_000, 2.0, "web")].concat();
    store.write_batch(&batch("nd-a", 1, a)).await.expect("write");
    store.write_batch(&batch("nd-b", 1, b)).await.expect("write");
    let pick = |s: &crate::UsageRow, k: usize| [s.cpu, s.cores, s.mem, s.rss][k];
    for per_host in [true, false] {
        let uq = q(t0, t0 + 100_000, None, None, per_host);
        let full = store.usage(&uq).await.expect("usage");
        assert_eq!(full.len(), if per_host { 3 } else { 2 }, "{full:?}");
        for k in 0..4 {
            for (spread, last) in [(false, false), (false, true), (true, false), (true, true)] {
                let mut metrics = [false; 4];
                metrics[k] = true;
                let needs = UsageNeeds { metrics, spread, last, samples: true };
                let got = store.usage_of(&uq, needs).await.expect("usage_of");
                assert_eq!(got.len(), full.len(), "{needs:?}");
                for (g, w) in got.iter().zip(&full) {
                    let what = format!("per_host={per_host} {needs:?} {:?}/{}", w.host, w.process);
                    assert_eq!((&g.host, &g.process), (&w.host, &w.process), "{what}");
                    assert_eq!(g.samples, w.samples, "{what}");
                    let (gs, ws) = (pick(g, k), pick(w, k));
                    assert_close(&format!("{what} mean"), gs.mean, ws.mean);
                    if spread {
                        assert_close(&format!("{what} min"), gs.min, ws.min);
                        assert_close(&format!("{what} max"), gs.max, ws.max);
                        assert_close(&format!("{what} p95"), gs.p95, ws.p95);
                    }
                    if last {
                        assert_close(&format!("{what} last"), gs.last, ws.last);
                        assert_eq!(g.last_ts, w.last_ts, "{what}");
                    }
                }
            }
        }
    }
}

/// `window()` returns raw samples oldest first whatever the write order.
pub async fn window_oldest_first(store: &dyn Storage) {
    let t0 = base_ts();
    let samples: Vec<Sample> =
        (0..30).map(|i| sample(t0 + i * 10_000, "svc", (i * 3 % 100) as f64, 2.0)).collect();
    let mut shuffled = samples.clone();
    shuffled.reverse();
    shuffled.swap(3, 17);
    store.write_batch(&batch("win-1", 1, shuffled[..15].to_vec())).await.expect("write");
    store.write_batch(&batch("win-1", 2, shuffled[15..].to_vec())).await.expect("write");
    store.write_batch(&batch("win-2", 1, samples[..3].to_vec())).await.expect("write");
    let w = store.window(&q(t0, t0 + 300_000, None, Some("svc"), false)).await.expect("window");
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].host, "win-1");
    // The name is the window's, not repeated in every sample (`SeriesWindow::samples`).
    assert!(w.iter().flat_map(|w| &w.samples).all(|s| s.process.is_empty()));
    assert_eq!(w[0].named_samples(), samples);
    assert_eq!(w[1].host, "win-2");
    assert_eq!(w[1].named_samples(), samples[..3].to_vec());
}

/// History with a step: mean and max per bucket aligned to multiples of the step; raw with
/// step 0.
pub async fn history_steps(store: &dyn Storage) {
    let t0 = base_ts(); // a whole minute
                        // Every 10 s from t0+25s for 5 minutes: the first bucket is partial.
    let samples: Vec<Sample> = (0..30)
        .map(|i| sample(t0 + 25_000 + i * 10_000, "hist", ((i * 13) % 90) as f64, 1.0 + i as f64))
        .collect();
    store.write_batch(&batch("hi-1", 1, samples.clone())).await.expect("write");
    let hq = |from, to, step_ms| HistoryQuery {
        host: "hi-1".into(),
        process: "hist".into(),
        from,
        to,
        step_ms,
    };
    let raw = store.history(&hq(t0, t0 + 3_600_000, 0)).await.expect("history");
    assert_eq!(raw.len(), 30);
    for (p, s) in raw.iter().zip(&samples) {
        assert_eq!(p.ts, s.ts);
        assert_close("raw cpu", p.cpu, s.cpu);
        assert_close("raw cpu_max", p.cpu_max, s.cpu);
        assert_close("raw mem", p.mem, s.mem);
        assert_close("raw rss", p.rss, s.rss as f64);
        assert_close("raw count", p.count, f64::from(s.count));
    }

    let pts = store.history(&hq(t0, t0 + 3_600_000, 60_000)).await.expect("history");
    // Samples run from t0+25s to t0+315s: buckets t0, t0+60s, ..., t0+300s.
    let buckets: Vec<TsMs> = (0..6).map(|k| t0 + k * 60_000).collect();
    assert_eq!(pts.iter().map(|p| p.ts).collect::<Vec<_>>(), buckets);
    for p in &pts {
        let inb: Vec<&Sample> =
            samples.iter().filter(|s| s.ts >= p.ts && s.ts < p.ts + 60_000).collect();
        let n = inb.len() as f64;
        let mean = |f: fn(&Sample) -> f64| inb.iter().map(|s| f(s)).sum::<f64>() / n;
        let max = |f: fn(&Sample) -> f64| inb.iter().map(|s| f(s)).fold(f64::MIN, f64::max);
        assert_close("cpu", p.cpu, mean(|s| s.cpu));
        assert_close("cpu_max", p.cpu_max, max(|s| s.cpu));
        assert_close("cores", p.cores, mean(|s| s.cores));
        assert_close("mem", p.mem, mean(|s| s.mem));
        assert_close("mem_max", p.mem_max, max(|s| s.mem));
        assert_close("rss", p.rss, mean(|s| s.rss as f64));
        assert_close("count", p.count, mean(|s| f64::from(s.count)));
    }

    // A range inside the data, half-open.
    let pts = store.history(&hq(t0 + 60_000, t0 + 120_000, 60_000)).await.expect("history");
    assert_eq!(pts.len(), 1);
    assert_eq!(pts[0].ts, t0 + 60_000);
    // A range with no data in a known series: empty, not NotFound.
    let pts = store.history(&hq(t0 - 600_000, t0, 60_000)).await.expect("history");
    assert!(pts.is_empty());
}

/// History of a series the store never saw is `NotFound`.
pub async fn history_not_found(store: &dyn Storage) {
    let t0 = base_ts();
    store.write_batch(&batch("nf-1", 1, vec![sample(t0, "known", 1.0, 1.0)])).await.expect("write");
    for (host, process) in [("nf-1", "unknown"), ("nf-unknown", "known")] {
        let r = store
            .history(&HistoryQuery {
                host: host.into(),
                process: process.into(),
                from: t0 - 60_000,
                to: t0 + 60_000,
                step_ms: 0,
            })
            .await;
        assert!(matches!(r, Err(StoreError::NotFound(_))), "{host}/{process}: {r:?}");
    }
}

/// `apply_retention(cutoff)` removes every sample and host total older than `cutoff` and keeps
/// the rest.
pub async fn retention(store: &dyn Storage) {
    let t0 = base_ts() - 20 * 60_000;
    let samples: Vec<Sample> =
        (0..120).map(|i| sample(t0 + i * 10_000, "ret", (i % 100) as f64, 1.0)).collect();
    let mut b = batch("ret-1", 1, samples.clone());
    b.host_totals = (0..120)
        .map(|i| HostTotal { ts: t0 + i * 10_000, cpu: 1.0, mem: 2.0, unattributed_cpu: None })
        .collect();
    store.write_batch(&b).await.expect("write");
    let cutoff = t0 + 600_000 + 5_000;
    store.apply_retention(cutoff).await.expect("retention");
    let w = store.window(&q(t0 - 60_000, t0 + 3_600_000, Some("ret-1"), None, true)).await;
    let w = w.expect("window");
    assert_eq!(w.len(), 1);
    let kept: Vec<Sample> = samples.iter().filter(|s| s.ts >= cutoff).cloned().collect();
    assert_eq!(w[0].named_samples(), kept);
    let u = store.usage(&q(t0 - 60_000, t0 + 3_600_000, Some("ret-1"), None, true)).await;
    assert_eq!(u.expect("usage")[0].samples, kept.len() as u64);
    let h = store
        .history(&HistoryQuery {
            host: "ret-1".into(),
            process: "ret".into(),
            from: t0,
            to: t0 + 3_600_000,
            step_ms: 0,
        })
        .await
        .expect("history");
    assert_eq!(h.len(), kept.len());
    let totals = store.host_totals("ret-1", t0 - 60_000, t0 + 3_600_000).await.expect("totals");
    assert_eq!(totals.len(), kept.len());
    assert!(totals.iter().all(|t| t.ts >= cutoff));
}

fn event(id: &str, host: &str, level: Level, start: TsMs, end: Option<TsMs>) -> AlarmEvent {
    AlarmEvent {
        id: id.to_string(),
        kind: AlarmKind::Series,
        host: host.to_string(),
        process: "java".to_string(),
        metric: Metric::Cpu,
        level,
        previous: Level::Ok,
        start,
        end,
        value: 91.5,
        peak: 93.25,
        threshold: 80.0,
        forecast: (level == Level::Amber).then_some(84.0),
        eta_seconds: (level == Level::Amber).then_some(120.0),
        reason: None,
    }
}

/// Alarm events: insert, replace by id, and query with filters, newest first, limited.
pub async fn alarm_events(store: &dyn Storage) {
    let t0 = base_ts();
    let e1 = event("e1", "al-1", Level::Red, t0, None);
    let e2 = event("e2", "al-1", Level::Amber, t0 + 10_000, None);
    let e3 = event("e3", "al-2", Level::Red, t0 + 20_000, None);
    let mut e4 = event("e4", "al-2", Level::Red, t0 + 30_000, None);
    e4.kind = AlarmKind::HostSilent;
    e4.process = String::new();
    for e in [&e1, &e2, &e3, &e4] {
        store.put_alarm_event(e).await.expect("put");
    }
    // Close e1: a replace by id.
    let mut e1c = e1.clone();
    e1c.end = Some(t0 + 40_000);
    e1c.peak = 97.5;
    store.put_alarm_event(&e1c).await.expect("replace");

    let all = store.alarm_events(&AlarmQuery::default()).await.expect("query");
    assert_eq!(all, vec![e4.clone(), e3.clone(), e2.clone(), e1c.clone()]);
    let active = store.alarm_events(&AlarmQuery { active_only: true, ..Default::default() }).await;
    assert_eq!(active.expect("query"), vec![e4.clone(), e3.clone(), e2.clone()]);
    let host = store
        .alarm_events(&AlarmQuery { host: Some("al-1".into()), ..Default::default() })
        .await
        .expect("query");
    assert_eq!(host, vec![e2.clone(), e1c.clone()]);
    let red = store
        .alarm_events(&AlarmQuery { level: Some(Level::Red), limit: 2, ..Default::default() })
        .await
        .expect("query");
    assert_eq!(red, vec![e4.clone(), e3.clone()]);
    let amber = store
        .alarm_events(&AlarmQuery {
            level: Some(Level::Amber),
            metric: Some(Metric::Cpu),
            process: Some("java".into()),
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(amber, vec![e2.clone()]);
    let range = store
        .alarm_events(&AlarmQuery {
            from: Some(t0 + 10_000),
            to: Some(t0 + 30_000),
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(range, vec![e3, e2]);
    let limited = store.alarm_events(&AlarmQuery { limit: 1, ..Default::default() }).await;
    assert_eq!(limited.expect("query"), vec![e4]);
}

/// Hosts: sorted by name, last_seen, interval, highest seq, gaps counted, dropped samples
/// summed (not re-added by a retry), latest host totals.
pub async fn hosts_and_seq(store: &dyn Storage) {
    let t0 = base_ts();
    let mk = |seq: u64, ts: TsMs, dropped: u64| {
        let mut b = batch("hs-b", seq, vec![sample(ts, "x", 1.0, 1.0)]);
        b.dropped_samples = dropped;
        b.interval_ms = 5_000;
        b.host_totals =
            vec![HostTotal { ts, cpu: 10.0 + seq as f64, mem: 20.0, unattributed_cpu: Some(1.0) }];
        b
    };
    assert_eq!(store.write_batch(&mk(1, t0, 0)).await.expect("w").seq_gap, 0);
    assert_eq!(store.write_batch(&mk(2, t0 + 5_000, 3)).await.expect("w").seq_gap, 0);
    assert_eq!(store.write_batch(&mk(5, t0 + 20_000, 4)).await.expect("w").seq_gap, 2);
    // A retry of seq 5: no new gap, dropped not counted twice.
    assert_eq!(store.write_batch(&mk(5, t0 + 20_000, 4)).await.expect("w").seq_gap, 0);
    assert_eq!(store.write_batch(&mk(9, t0 + 40_000, 0)).await.expect("w").seq_gap, 3);
    store.write_batch(&batch("hs-a", 7, vec![sample(t0 + 1_000, "y", 1.0, 1.0)])).await.expect("w");
    // A heartbeat that declares no interval (an older paused agent's): the known one stays.
    let mut beat = batch("hs-b", 10, Vec::new());
    beat.interval_ms = 0;
    assert_eq!(store.write_batch(&beat).await.expect("heartbeat").seq_gap, 0);

    let hosts = store.hosts().await.expect("hosts");
    assert_eq!(hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), ["hs-a", "hs-b"]);
    let a = &hosts[0];
    assert_eq!((a.last_seen, a.last_seq, a.seq_gaps, a.dropped_samples), (t0 + 1_000, 7, 0, 0));
    assert_eq!(a.latest, None);
    let b = &hosts[1];
    assert_eq!(b.last_seen, t0 + 40_000);
    assert_eq!(b.interval_ms, 5_000, "a batch declaring interval 0 keeps the known interval");
    assert_eq!(b.last_seq, 10);
    assert_eq!(b.seq_gaps, 5);
    assert_eq!(b.dropped_samples, 7);
    let latest = b.latest.as_ref().expect("latest");
    assert_eq!(latest.ts, t0 + 40_000);
    assert_close("latest cpu", latest.cpu, 19.0);
}

/// Host totals: the window, oldest first, a rewrite replaces.
pub async fn host_totals(store: &dyn Storage) {
    let t0 = base_ts();
    let totals: Vec<HostTotal> = (0..10)
        .map(|i| HostTotal {
            ts: t0 + i * 10_000,
            cpu: i as f64 * 3.5,
            mem: 50.0,
            unattributed_cpu: (i % 2 == 0).then_some(0.5),
        })
        .collect();
    let mut b = batch("ht-1", 1, Vec::new());
    b.host_totals = totals.iter().rev().cloned().collect();
    store.write_batch(&b).await.expect("write");
    let mut again = batch("ht-1", 2, Vec::new());
    let mut fixed = totals[4].clone();
    fixed.cpu = 99.0;
    again.host_totals = vec![fixed.clone()];
    store.write_batch(&again).await.expect("write");
    let got = store.host_totals("ht-1", t0 + 20_000, t0 + 70_000).await.expect("totals");
    let mut want = totals[2..7].to_vec();
    want[2] = fixed;
    assert_eq!(got, want);
    assert!(store.host_totals("ht-unknown", t0, t0 + 70_000).await.expect("totals").is_empty());
}

/// Retiring a host: it leaves `hosts()` (others stay), its samples stay queryable, retiring
/// it again or an unknown host is `NotFound`, and a batch with newer data lists it again.
pub async fn retire_host(store: &dyn Storage) {
    let t0 = base_ts();
    store.write_batch(&batch("rt-gone", 1, vec![sample(t0, "x", 1.0, 1.0)])).await.expect("w");
    store.write_batch(&batch("rt-stays", 1, vec![sample(t0, "y", 1.0, 1.0)])).await.expect("w");
    let names = |hosts: Vec<crate::HostInfo>| hosts.into_iter().map(|h| h.host).collect::<Vec<_>>();
    assert_eq!(store.retire_host("rt-gone", t0 + 1_000).await.expect("retire"), t0);
    assert_eq!(names(store.hosts().await.expect("hosts")), ["rt-stays"]);
    assert!(matches!(store.retire_host("rt-gone", t0 + 1_000).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.retire_host("rt-never", t0).await, Err(StoreError::NotFound(_))));
    let rows = store.usage(&q(t0, t0 + 60_000, Some("rt-gone"), None, true)).await.expect("usage");
    assert_eq!(rows.len(), 1, "samples stay until retention");
    // Data older than the retirement does not bring it back; newer data does.
    store
        .write_batch(&batch("rt-gone", 2, vec![sample(t0 + 500, "x", 1.0, 1.0)]))
        .await
        .expect("w");
    assert_eq!(names(store.hosts().await.expect("hosts")), ["rt-stays"]);
    store
        .write_batch(&batch("rt-gone", 3, vec![sample(t0 + 2_000, "x", 1.0, 1.0)]))
        .await
        .expect("w");
    assert_eq!(names(store.hosts().await.expect("hosts")), ["rt-gone", "rt-stays"]);
}
