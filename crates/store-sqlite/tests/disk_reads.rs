//! Samples below the memory floor read back exactly through every shape the disk can hold
//! them in: late head rows, chunks of successive folds (concatenated), and chunks that
//! overlap because a sample was rewritten after its fold (merged, the later write winning).
//! The usage listing, the ranked read and the raw history must all see the same samples.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procwatch_model::Sample;
use procwatch_store::conformance::batch;
use procwatch_store::{HistoryQuery, RowOrder, Storage, UsageNeeds, UsageQuery, UsageRow};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

fn sample(ts: i64, process: &str, cpu: f64) -> Sample {
    Sample {
        ts,
        process: process.into(),
        cpu,
        cores: cpu / 100.0,
        mem: 1.5,
        rss: 1 << 20,
        count: 1,
        extras: None,
    }
}

/// The raw cpu values of `process` on `host` over the last 3 h, oldest first.
async fn raw_cpu(store: &SqliteStore, host: &str, process: &str, now: i64) -> Vec<(i64, f64)> {
    let q = HistoryQuery {
        host: host.into(),
        process: process.into(),
        from: now - 3 * 3_600_000,
        to: now + 60_000,
        step_ms: 0,
    };
    store.history(&q).await.unwrap().iter().map(|p| (p.ts, p.cpu)).collect()
}

/// Per-host usage over the last 3 h: the listing and the ranked read by cpu mean must agree.
async fn listing(store: &SqliteStore, now: i64) -> Vec<UsageRow> {
    let q = UsageQuery {
        from: now - 3 * 3_600_000,
        to: now + 60_000,
        host: None,
        process: None,
        per_host: true,
    };
    let needs = UsageNeeds::ALL;
    let rows = store.usage_of(&q, needs).await.unwrap();
    let order: RowOrder = Arc::new(|a: &UsageRow, b: &UsageRow| b.cpu.mean.total_cmp(&a.cpu.mean));
    let mut want = rows.clone();
    want.sort_by(|a, b| order(a, b));
    let (top, n) = store.usage_top(&q, needs, order, 3).await.unwrap().expect("ranked");
    assert_eq!(n, rows.len());
    assert_eq!(top, want[..3.min(want.len())]);
    rows
}

/// Write `w` (0–2) of the hour-old data: 6 samples of "a" and "b", 10 s apart.
fn old_write(t0: i64, w: i64) -> Vec<Sample> {
    let mut s = Vec::new();
    for i in 0..6i64 {
        let ts = t0 + (w * 6 + i) * 10_000;
        let cpu = (w * 6 + i) as f64;
        s.push(sample(ts, "a", cpu));
        s.push(sample(ts, "b", 50.0 - cpu));
    }
    s
}

/// A store, its directory, with the three hour-old writes (each folded at once with `fold`,
/// else left as late head rows) and one recent sample of "a" in memory.
async fn store_with(now: i64, t0: i64, fold: bool) -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { maintenance_interval: Duration::ZERO, ..SqliteOptions::default() };
    let store = SqliteStore::open(dir.path(), opts).unwrap();
    for w in 0..3i64 {
        store.write_batch(&batch("h1", w as u64 + 1, old_write(t0, w))).await.unwrap();
        if fold {
            store.compact_at(now).unwrap();
        }
    }
    store.write_batch(&batch("h1", 4, vec![sample(now - 20_000, "a", 7.0)])).await.unwrap();
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_samples_read_back_from_late_rows_folded_chunks_and_rewrites() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now - 3_600_000;
    // Three writes an hour old: late head rows, or (one fold after each) three level-0
    // chunks per series in time order.
    let (store, _dir) = store_with(now, t0, false).await;
    let mut want_a: Vec<(i64, f64)> = (0..18).map(|k| (t0 + k * 10_000, k as f64)).collect();
    want_a.push((now - 20_000, 7.0));
    let check = |rows: &[UsageRow], want_a: &[(i64, f64)]| {
        let a = rows.iter().find(|r| r.process == "a").expect("row a");
        assert_eq!(a.samples, want_a.len() as u64);
        let sum = want_a.iter().fold(0.0, |s, (_, v)| s + v);
        assert_eq!(a.cpu.mean, sum / want_a.len() as f64);
        assert_eq!(a.cpu.max, want_a.iter().map(|p| p.1).fold(f64::MIN, f64::max));
    };
    // Late head rows.
    assert_eq!(raw_cpu(&store, "h1", "a", now).await, want_a);
    check(&listing(&store, now).await, &want_a);
    // Folded write by write: chunks in sequence.
    let (store, _dir2) = store_with(now, t0, true).await;
    assert_eq!(raw_cpu(&store, "h1", "a", now).await, want_a);
    check(&listing(&store, now).await, &want_a);
    // Rewrites of two folded samples (one in the first chunk, one in the last) and a sample
    // between two chunks: a late row over the chunks, then chunks that overlap.
    let rewrite = vec![
        sample(t0 + 10_000, "a", 90.0),
        sample(t0 + 170_000, "a", 91.0),
        sample(t0 + 55_000, "a", 92.0),
    ];
    store.write_batch(&batch("h1", 5, rewrite)).await.unwrap();
    want_a[1].1 = 90.0;
    want_a[17].1 = 91.0;
    want_a.insert(6, (t0 + 55_000, 92.0));
    assert_eq!(raw_cpu(&store, "h1", "a", now).await, want_a);
    check(&listing(&store, now).await, &want_a);
    store.compact_at(now).unwrap();
    assert_eq!(raw_cpu(&store, "h1", "a", now).await, want_a);
    let rows = listing(&store, now).await;
    check(&rows, &want_a);
    // "b" was not rewritten: 18 old samples, untouched.
    let b = rows.iter().find(|r| r.process == "b").expect("row b");
    assert_eq!(b.samples, 18);
    assert_eq!(b.cpu.min, 50.0 - 17.0);
}

/// A rewrite folded into a chunk that ends before the chunks it overlaps: the index on
/// (series, end) yields it first, and the later write must still win. On a manual clock in
/// the middle of a 2 h block, so that no block merge joins the chunks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_wins_over_older_chunks_that_end_after_it() {
    let block = 7_200_000;
    let now = 1_780_000_000_000 - 1_780_000_000_000 % block + 90 * 60_000;
    let t0 = now - 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(procwatch_model::clock::ManualClock::new(now));
    let opts =
        SqliteOptions { maintenance_interval: Duration::ZERO, clock, ..SqliteOptions::default() };
    let store = SqliteStore::open(dir.path(), opts).unwrap();
    // Two folds of an hour-old minute each: chunks [t0, t0 + 50 s] and [t0 + 60 s, t0 + 110 s].
    for w in 0..2i64 {
        store.write_batch(&batch("h1", w as u64 + 1, old_write(t0, w))).await.unwrap();
        store.compact_at(now).unwrap();
    }
    let mut want: Vec<(i64, f64)> = (0..12).map(|k| (t0 + k * 10_000, k as f64)).collect();
    assert_eq!(raw_cpu(&store, "h1", "a", now).await, want);
    // Then one sample of the first rewritten: a chunk of its own, ending at t0 + 20 s.
    store.write_batch(&batch("h1", 3, vec![sample(t0 + 20_000, "a", 93.0)])).await.unwrap();
    store.compact_at(now).unwrap();
    want[2].1 = 93.0;
    assert_eq!(raw_cpu(&store, "h1", "a", now).await, want);
    let rows = listing(&store, now).await;
    let a = rows.iter().find(|r| r.process == "a").expect("row a");
    assert_eq!(a.samples, 12);
    assert_eq!(a.cpu.max, 93.0);
    assert_eq!(a.cpu.mean, want.iter().map(|p| p.1).sum::<f64>() / 12.0);
}
