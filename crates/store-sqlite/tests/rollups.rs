//! Roll-ups of the SQLite store on real files: exact against a recomputation from the raw
//! samples after kill -9 during folds, after compaction, packed into day blocks, and past
//! raw retention.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use procwatch_model::{Sample, TsMs};
use procwatch_store::rollup::{buckets_of, points_from_buckets, Bucket};
use procwatch_store::{HistoryPoint, HistoryQuery, Resolution, Storage, ROLLUP_MS};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

#[path = "helpers/setup.rs"]
mod setup;
#[path = "helpers/workload.rs"]
mod workload;
use setup::{all, now_ms, opts, three_hours_in_memory};
use workload::{batch, sample};

fn hq(host: &str, process: &str, from: TsMs, to: TsMs) -> HistoryQuery {
    HistoryQuery { host: host.into(), process: process.into(), from, to, step_ms: ROLLUP_MS }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
fn assert_points(what: &str, got: &[HistoryPoint], want: &[HistoryPoint]) {
    assert_eq!(got.len(), want.len(), "{what}: points");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g.ts, g.cpu_min, g.cpu_max, g.mem_min, g.mem_max),
            (w.ts, w.cpu_min, w.cpu_max, w.mem_min, w.mem_max),
            "{what}"
        );
        for (a, b) in
            [(g.cpu, w.cpu), (g.cores, w.cores), (g.mem, w.mem), (g.rss, w.rss), (g.count, w.count)]
        {
            assert!(close(a, b), "{what} at {}: {a} vs {b}", g.ts);
        }
    }
}

/// Every stored roll-up bucket (rows and packed blocks), by (process, bucket start).
fn table(store: &SqliteStore) -> Vec<(String, Bucket)> {
    store.stored_rollups().unwrap()
}

/// (roll-up rows, packed blocks) in the database file.
fn stored_counts(store: &SqliteStore) -> (i64, i64) {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let count = |t: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap()
    };
    (count("rollups"), count("rollup_blocks"))
}

#[track_caller]
fn assert_bucket(what: &str, got: &Bucket, want: &Bucket) {
    assert_eq!(
        (got.start, got.n, got.cpu_min, got.cpu_max, got.mem_min, got.mem_max),
        (want.start, want.n, want.cpu_min, want.cpu_max, want.mem_min, want.mem_max),
        "{what}"
    );
    for (a, b) in [
        (got.cpu_sum, want.cpu_sum),
        (got.mem_sum, want.mem_sum),
        (got.cores_sum, want.cores_sum),
        (got.rss_sum, want.rss_sum),
        (got.count_sum, want.count_sum),
    ] {
        assert!(close(a, b), "{what} at {}: {a} vs {b}", got.start);
    }
}

/// Runs the `late` writer (a spool replay from `t0`) on `dir` until it has acknowledged
/// enough batches that every slot was rewritten (progress, not time, decides), then kills
/// it with SIGKILL. Returns the batches acknowledged.
fn run_writer(dir: &std::path::Path, t0: TsMs) -> i64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_durability_writer"))
        .args(["late", dir.to_str().unwrap(), &t0.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut acks, mut line) = (0, String::new());
    while acks < 2 * workload::LATE_SLOTS {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        acks += i64::from(line.starts_with("ACK "));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    acks
}

/// A spool replay rewriting old timestamps while a 20 ms maintenance thread folds late rows
/// and recomputes their buckets, killed with SIGKILL mid-way, twice: the second time over
/// packed day blocks, with packing at every pass. After reopening, every stored bucket
/// (rows and blocks) equals a recomputation from the raw samples, and so does every history
/// answer.
#[test]
fn rollups_equal_raw_after_sigkill_during_folds() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 3 * 3_600_000;
    let t0 = t - t.rem_euclid(ROLLUP_MS);
    let acks = run_writer(dir.path(), t0);
    assert!(acks >= 2 * workload::LATE_SLOTS, "the writer acknowledged only {acks} batches");
    // Fold and pack what the first writer left: its buckets are all closed, so they go to
    // day blocks. The second writer then rewrites packed buckets (its folds rewrite blocks)
    // and packs at every maintenance pass, and is killed in the middle of that.
    {
        let store = SqliteStore::open(dir.path(), opts()).unwrap();
        store.compact_at(now_ms()).unwrap();
        let (rows, blocks) = stored_counts(&store);
        assert!(rows == 0 && blocks > 0, "not packed: {rows} rows, {blocks} blocks");
    }
    let acks = run_writer(dir.path(), t0);
    assert!(acks >= 2 * workload::LATE_SLOTS, "the writer acknowledged only {acks} batches");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    let end = t0 + workload::LATE_SLOTS * 10_000;
    let check = |what: &str| {
        let windows = rt.block_on(store.window(&all("kill9"))).unwrap();
        assert_eq!(windows.len(), workload::SERIES);
        for w in &windows {
            let want = points_from_buckets(&buckets_of(&w.samples), ROLLUP_MS);
            let got = rt.block_on(store.history_answer(&hq("kill9", &w.process, t0, end))).unwrap();
            assert_eq!(got.resolution, Resolution::Rollup5m);
            assert_points(&format!("{what}, {}", w.process), &got.points, &want);
        }
        windows
    };
    assert!(stored_counts(&store).1 > 0, "no roll-up block after the kill");
    check("after the kill");
    // Fold what the kill left in late rows; then the table itself is exact.
    store.compact_at(now_ms()).unwrap();
    let windows = check("after the fold");
    let rows = table(&store);
    for w in &windows {
        let want = buckets_of(&w.samples);
        let got: Vec<&Bucket> =
            rows.iter().filter(|(p, _)| *p == w.process).map(|(_, b)| b).collect();
        assert_eq!(got.len(), want.len(), "{}: buckets", w.process);
        for (g, w2) in got.iter().zip(&want) {
            assert_bucket(&w.process, g, w2);
        }
    }
}

/// Answers from the head and memory (before compaction) equal answers from the roll-up
/// table (after it), and a late rewrite of a compacted sample updates its bucket.
#[tokio::test]
async fn rollups_after_compaction_and_a_late_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let (store, now, t0) = three_hours_in_memory(dir.path(), "cr-1", 4).await;
    let q = hq("cr-1", "proc-1", t0, now);
    let before = store.history_answer(&q).await.unwrap();
    assert_eq!(before.resolution, Resolution::Rollup5m);
    assert!(table(&store).is_empty(), "nothing folded yet");
    store.compact_at(now + 10 * 3_600_000).unwrap();
    assert!(store.memory_floor() > now);
    assert!(!table(&store).is_empty());
    assert_points(
        "after compaction",
        &store.history_answer(&q).await.unwrap().points,
        &before.points,
    );

    let mut samples: Vec<Sample> = store.window(&all("cr-1")).await.unwrap()[1].named_samples();
    let mut fixed = samples[200].clone();
    fixed.cpu = 1234.5;
    store.write_batch(&batch("cr-1", 5000, vec![fixed.clone()])).await.unwrap();
    samples[200] = fixed;
    let want = points_from_buckets(&buckets_of(&samples), ROLLUP_MS);
    assert_points("late rewrite, pending", &store.history_answer(&q).await.unwrap().points, &want);
    store.compact_at(now + 10 * 3_600_000).unwrap();
    assert_points("late rewrite, folded", &store.history_answer(&q).await.unwrap().points, &want);
}

/// Raw samples go after the raw retention, roll-ups stay (30 days) and still answer; past
/// the roll-up retention they go too and the series is forgotten.
#[tokio::test]
async fn rollups_outlive_raw_retention() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let t0 = now - 4 * 86_400_000;
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    let samples: Vec<Sample> = (0..360).map(|i| sample(2, i, t0 + i * 10_000)).collect();
    store.write_batch(&batch("rt-1", 1, samples.clone())).await.unwrap();
    store.maintain_at(now).unwrap(); // raw retention: now - 48 h
    assert!(store.window(&all("rt-1")).await.unwrap().is_empty(), "raw samples are gone");
    let q = HistoryQuery { step_ms: 0, ..hq("rt-1", "proc-2", now - 30 * 86_400_000, now) };
    let a = store.history_answer(&q).await.unwrap();
    assert_eq!((a.resolution, a.step_ms), (Resolution::Rollup5m, ROLLUP_MS));
    assert_points(
        "past raw retention",
        &a.points,
        &points_from_buckets(&buckets_of(&samples), ROLLUP_MS),
    );
    // Survives a restart.
    drop(store);
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    assert_eq!(store.history_answer(&q).await.unwrap().points.len(), a.points.len());
    // Roll-up retention, 30 d: whole day blocks go once their day ended before the cutoff.
    store.maintain_at(now + 28 * 86_400_000).unwrap();
    assert!(matches!(
        store.history_answer(&q).await,
        Err(procwatch_store::StoreError::NotFound(_))
    ));
}

/// Packing closed buckets into day blocks changes no answer: the same store answers
/// bit-for-bit the same before (rows) and after (blocks) packing, both equal to a
/// recomputation from the raw samples, and a late rewrite of a packed bucket updates its
/// block exactly.
#[tokio::test]
async fn packed_rollups_answer_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let t0 = now - 30 * 3_600_000; // across at least one UTC day boundary
    let sweeps = 30 * 60;
    let later = now + 41 * 3_600_000;
    // A pack step of ~100 years: nothing is packed by this first store.
    let unpacked = SqliteOptions {
        memory_window_ms: 40 * 3_600_000,
        rollup_pack_ms: 100 * 365 * 86_400_000,
        ..opts()
    };
    let store = SqliteStore::open(dir.path(), unpacked.clone()).unwrap();
    for i in 0..sweeps {
        let ts = t0 + i * 60_000 + (i % 5) * 7;
        let samples = (0..3).map(|k| sample(k, i, ts)).collect();
        store.write_batch(&batch("pk-1", i as u64 + 1, samples)).await.unwrap();
    }
    store.compact_at(later).unwrap();
    let (rows, blocks) = stored_counts(&store);
    assert_eq!(blocks, 0, "packed too early");
    assert!(rows >= 3 * 360, "{rows} rows");
    let q = |p: &str| hq("pk-1", p, t0, now);
    let mut before = Vec::new();
    for p in ["proc-0", "proc-1", "proc-2"] {
        before.push(store.history_answer(&q(p)).await.unwrap());
    }
    let rows_before = table(&store);
    drop(store);

    let store =
        SqliteStore::open(dir.path(), SqliteOptions { memory_window_ms: 40 * 3_600_000, ..opts() })
            .unwrap();
    store.compact_at(later).unwrap();
    let (rows, blocks) = stored_counts(&store);
    assert_eq!(rows, 0, "closed buckets left as rows");
    assert!(blocks >= 6, "{blocks} blocks: one per series and day");
    assert_eq!(table(&store), rows_before, "packing changed a stored bucket");
    let windows = store.window(&all("pk-1")).await.unwrap();
    for (w, b) in windows.iter().zip(&before) {
        let a = store.history_answer(&q(&w.process)).await.unwrap();
        assert_eq!(a.resolution, Resolution::Rollup5m);
        assert_eq!(a.points, b.points, "{}: packed vs rows", w.process);
        let raw = points_from_buckets(&buckets_of(&w.samples), ROLLUP_MS);
        assert_points(&format!("{} packed vs raw", w.process), &a.points, &raw);
    }

    // A late rewrite into a packed bucket: recomputed into its block, no row appears.
    let mut samples = windows[1].named_samples();
    let mut fixed = samples[100].clone();
    fixed.cpu = 987.5;
    store.write_batch(&batch("pk-1", 9000, vec![fixed.clone()])).await.unwrap();
    samples[100] = fixed;
    store.compact_at(later).unwrap();
    assert_eq!(stored_counts(&store).0, 0, "a late sample made a row of a packed bucket");
    let want = points_from_buckets(&buckets_of(&samples), ROLLUP_MS);
    let got = store.history_answer(&q(&windows[1].process)).await.unwrap();
    assert_points("late rewrite of a packed bucket", &got.points, &want);
}

/// A store reopened with shorter blocks (`block_ms`) finds chunks reaching past its blocks.
/// Merging a block must not raise the `gen` of such a chunk's samples outside the block:
/// there they would win over newer rewrites (and the roll-ups, computed before the merge,
/// would no longer match the raw samples).
#[tokio::test]
async fn merging_shorter_blocks_keeps_newer_rewrites_beyond_them() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let t = now - 3 * 3_600_000;
    let t0 = t - t.rem_euclid(2 * 3_600_000) + 60 * 60_000; // mid-way in a 2 h block
    let slots: Vec<TsMs> = (0..150).map(|i| t0 + i * 10_000).collect();
    let at = |seq: u64, ts: Vec<TsMs>, i: i64| {
        batch("mb-1", seq, ts.into_iter().map(|ts| sample(1, i, ts)).collect())
    };
    {
        // 2 h blocks: 25 minutes become one level-1 chunk.
        let store =
            SqliteStore::open(dir.path(), SqliteOptions { block_ms: 7_200_000, ..opts() }).unwrap();
        store.write_batch(&at(1, slots.clone(), 1)).await.unwrap();
        store.compact_at(now).unwrap();
    }
    let store =
        SqliteStore::open(dir.path(), SqliteOptions { block_ms: 60_000, ..opts() }).unwrap();
    // A rewrite in minute 10, then a newer one in minute 0 (the big chunk's first block).
    store.write_batch(&at(2, vec![slots[60]], 2)).await.unwrap();
    store.compact_at(now).unwrap();
    store.write_batch(&at(3, vec![slots[0]], 3)).await.unwrap();
    store.compact_at(now).unwrap();
    let w = store.window(&all("mb-1")).await.unwrap();
    let got: Vec<(TsMs, f64)> = w[0].samples.iter().map(|s| (s.ts, s.cores)).collect();
    assert_eq!(got.len(), 150);
    assert_eq!(got[0], (slots[0], sample(1, 3, slots[0]).cores), "the newest rewrite");
    assert_eq!(got[60], (slots[60], sample(1, 2, slots[60]).cores), "the rewrite in minute 10");
    assert_eq!(got[61], (slots[61], sample(1, 1, slots[61]).cores), "untouched");
    let want = points_from_buckets(&buckets_of(&w[0].samples), ROLLUP_MS);
    let q = hq("mb-1", "proc-1", t0, t0 + 150 * 10_000);
    assert_points(
        "roll-ups after the merges",
        &store.history_answer(&q).await.unwrap().points,
        &want,
    );
}
