//! Durability, restart, compaction and retention of the SQLite store, on real files.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use procwatch_model::{Batch, Sample, TsMs};
use procwatch_store::{HistoryQuery, Storage, UsageQuery};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

#[path = "helpers/setup.rs"]
mod setup;
#[path = "helpers/workload.rs"]
mod workload;
use setup::{all, now_ms, opts, three_hours_in_memory};
use workload::{batch, sample};

/// Runs the writer helper (`tests/helpers/durability_writer.rs`) with `args`, waits until it
/// has acknowledged at least `n` batches, kills it with SIGKILL, and returns every
/// acknowledgement it printed, (seq, ts), including those printed just before the kill.
fn run_writer_and_kill(args: &[&str], n: usize) -> Vec<(u64, TsMs)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_durability_writer"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer");
    let parse = |line: &str| {
        let rest = line.trim().strip_prefix("ACK ")?;
        let mut it = rest.split(' ');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut acked: Vec<(u64, TsMs)> = Vec::new();
    let mut line = String::new();
    // Blocks on the child's output: progress, not time, decides when to kill.
    while acked.len() < n {
        line.clear();
        if out.read_line(&mut line).expect("read") == 0 {
            break; // the child died: the assertion below reports it
        }
        acked.extend(parse(&line));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    // Acknowledgements printed before the kill still count.
    for line in out.lines() {
        acked.extend(parse(&line.expect("read")));
    }
    assert!(acked.len() >= n, "the writer acknowledged only {} batches", acked.len());
    acked
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let acked = run_writer_and_kill(&["ack", dir.path().to_str().unwrap()], 400);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    let w = rt.block_on(store.window(&all("kill9"))).unwrap();
    assert_eq!(w.len(), workload::SERIES);
    for sw in &w {
        let k: usize = sw.process.trim_start_matches("proc-").parse().unwrap();
        let samples = sw.named_samples();
        for &(seq, ts) in &acked {
            let got = samples.iter().find(|s| s.ts == ts);
            let want = sample(k, seq as i64, ts);
            // A later batch may share the timestamp (same ms): then the later one is stored.
            // That includes batches committed after the last acknowledgement the parent
            // read (the kill came between the commit and the ACK line).
            let last_acked = acked.iter().map(|&(s2, _)| s2).max().unwrap_or(0);
            let later_same_ts = acked.iter().any(|&(s2, t2)| t2 == ts && s2 > seq);
            if !later_same_ts {
                let unacked_later = got.is_some_and(|g| {
                    (last_acked + 1..last_acked + 64).any(|s2| *g == sample(k, s2 as i64, ts))
                });
                if !unacked_later {
                    assert_eq!(got, Some(&want), "series {k}, batch {seq} lost after SIGKILL");
                }
            }
        }
    }
    let hosts = rt.block_on(store.hosts()).unwrap();
    assert!(hosts[0].last_seq >= acked.last().unwrap().0);
}

#[tokio::test]
async fn restart_rebuilds_the_recent_window() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let t0 = now - 3_600_000; // one hour: most in chunks, the last 15 minutes in memory
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    for i in 0..360 {
        let ts = t0 + i * 10_000;
        let b = batch("rs-1", i as u64 + 1, (0..20).map(|k| sample(k, i, ts)).collect());
        store.write_batch(&b).await.unwrap();
    }
    let recent = UsageQuery { from: now - 5 * 60_000, ..all("rs-1") };
    assert!(recent.from >= store.memory_floor(), "the recent query is served from memory");
    let before_usage = store.usage(&recent).await.unwrap();
    let before_merged =
        store.usage(&UsageQuery { per_host: false, ..recent.clone() }).await.unwrap();
    let before_all = store.window(&all("rs-1")).await.unwrap();
    assert_eq!(before_all[0].samples.len(), 360);
    store.close().await.unwrap();
    drop(store);

    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    assert_eq!(store.usage(&recent).await.unwrap(), before_usage);
    assert_eq!(
        store.usage(&UsageQuery { per_host: false, ..recent.clone() }).await.unwrap(),
        before_merged
    );
    assert_eq!(store.window(&all("rs-1")).await.unwrap(), before_all);
    let hosts = store.hosts().await.unwrap();
    assert_eq!(hosts[0].last_seq, 360);
}

fn sql_count(store: &SqliteStore, sql: &str, p: i64) -> i64 {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.query_row(sql, [p], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn compaction_round_trip_and_rewrite_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (store, now, t0) = three_hours_in_memory(dir.path(), "cp-1", 5).await;
    assert_eq!(sql_count(&store, "SELECT count(*) FROM chunks WHERE n > ?1", 0), 0);
    let hq = HistoryQuery {
        host: "cp-1".into(),
        process: "proc-1".into(),
        from: t0,
        to: now,
        step_ms: 600_000,
    };
    let before = store.window(&all("cp-1")).await.unwrap();
    let before_hist = store.history(&hq).await.unwrap();
    let before_usage = store.usage(&all("cp-1")).await.unwrap();

    // Fold everything and merge every complete block.
    let stats = store.compact_at(now + 10 * 3_600_000).unwrap();
    assert_eq!(stats.head_rows_folded, 1080);
    assert!(stats.chunks_merged > 0);
    assert_eq!(sql_count(&store, "SELECT count(*) FROM head WHERE n > ?1", 0), 0);
    assert_eq!(sql_count(&store, "SELECT count(*) FROM chunks WHERE level = ?1", 0), 0);
    assert!(sql_count(&store, "SELECT count(*) FROM chunks WHERE level = ?1", 1) > 0);
    assert!(store.memory_floor() > now);

    assert_eq!(store.window(&all("cp-1")).await.unwrap(), before);
    assert_eq!(store.history(&hq).await.unwrap(), before_hist);
    assert_eq!(store.usage(&all("cp-1")).await.unwrap(), before_usage);

    // Rewriting an already compacted sample replaces it, before and after the next merge.
    let old_ts = before[1].samples[100].ts;
    let mut fixed = sample(1, 100, old_ts);
    fixed.cpu = 99.5;
    store.write_batch(&batch("cp-1", 2000, vec![fixed.clone()])).await.unwrap();
    let check = |w: Vec<procwatch_store::SeriesWindow>| {
        let s = &w[1].named_samples();
        assert_eq!(s.len(), 1080);
        assert_eq!(s[100], fixed);
        assert_eq!(s[99], before[1].named_samples()[99]);
    };
    check(store.window(&all("cp-1")).await.unwrap());
    store.compact_at(now + 10 * 3_600_000).unwrap();
    check(store.window(&all("cp-1")).await.unwrap());
    drop(store);
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    check(store.window(&all("cp-1")).await.unwrap());
}

#[tokio::test]
async fn retention_drops_whole_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let t0 = now - 8 * 3_600_000;
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    for i in 0..(8 * 360) {
        let ts = t0 + i * 10_000;
        let b = batch("rt-1", i as u64 + 1, (0..3).map(|k| sample(k, i, ts)).collect());
        store.write_batch(&b).await.unwrap();
    }
    store.compact_at(now).unwrap();
    let chunks_before = sql_count(&store, "SELECT count(*) FROM chunks WHERE n > ?1", 0);
    let cutoff = now - 3 * 3_600_000 - 1234;
    let removed = store.apply_retention(cutoff).await.unwrap();
    // Whole chunks only: everything wholly older is gone, a straddling chunk may stay.
    assert_eq!(sql_count(&store, "SELECT count(*) FROM chunks WHERE end_ts < ?1", cutoff), 0);
    assert!(sql_count(&store, "SELECT count(*) FROM chunks WHERE n > ?1", 0) < chunks_before);
    let older = (0..(8 * 360)).filter(|i| t0 + i * 10_000 < cutoff).count() as u64 * 3;
    assert!(removed > 0 && removed <= older, "removed {removed} of {older}");
    // Queries never see anything older than the cutoff, even from a straddling chunk.
    let w = store.window(&all("rt-1")).await.unwrap();
    for sw in &w {
        assert!(sw.samples.iter().all(|s| s.ts >= cutoff));
        let want = (0..(8 * 360)).filter(|i| t0 + i * 10_000 >= cutoff).count();
        assert_eq!(sw.samples.len(), want);
    }
    // A series with nothing left is forgotten: NotFound, like a series never written.
    store.write_batch(&batch("rt-1", 10_000, vec![sample(9, 1, cutoff + 10)])).await.unwrap();
    let found = HistoryQuery {
        host: "rt-1".into(),
        process: "proc-9".into(),
        from: 0,
        to: i64::MAX,
        step_ms: 0,
    };
    assert_eq!(store.history(&found).await.unwrap().len(), 1);
    store.apply_retention(cutoff + 20).await.unwrap();
    let gone = HistoryQuery {
        host: "rt-1".into(),
        process: "proc-9".into(),
        from: 0,
        to: i64::MAX,
        step_ms: 0,
    };
    assert!(matches!(store.history(&gone).await, Err(procwatch_store::StoreError::NotFound(_))));
    assert!(store.history(&HistoryQuery { process: "proc-1".into(), ..gone }).await.is_ok());
    // The floor survives a restart.
    drop(store);
    let store = SqliteStore::open(dir.path(), opts()).unwrap();
    let w = store.window(&all("rt-1")).await.unwrap();
    assert!(w[0].samples.iter().all(|s| s.ts >= cutoff));
}

#[tokio::test]
async fn a_data_dir_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path(), opts()).unwrap();
    let second = SqliteStore::open(dir.path(), opts());
    assert!(matches!(second, Err(procwatch_store::StoreError::Unavailable(_))));
    drop(first);
    SqliteStore::open(dir.path(), opts()).expect("reopen after the first is gone");
}

/// Writes and reads while the maintenance thread folds, merges and moves the memory floor
/// every few milliseconds: every acknowledged sample is always visible, exactly once, and the
/// end state equals the reference store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_stay_exact_while_maintenance_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SqliteStore::open(
            dir.path(),
            SqliteOptions {
                memory_window_ms: 300,
                fold_step_ms: 50,
                block_ms: 1_000,
                maintenance_interval: Duration::from_millis(10),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let reference = procwatch_store::memory::MemoryStore::new();
    let start = now_ms();
    let mut seq = 0u64;
    let mut last_ts = 0;
    while now_ms() - start < 1_500 {
        seq += 1;
        // Unique, increasing timestamps; every 5th batch rewrites an older one.
        let ts = now_ms().max(last_ts + 1);
        last_ts = ts;
        let ts = if seq.is_multiple_of(5) { ts - 700 } else { ts };
        let b = batch("mx-1", seq, (0..8).map(|k| sample(k, seq as i64, ts)).collect());
        store.write_batch(&b).await.unwrap();
        reference.write_batch(&b).await.unwrap();
        if seq.is_multiple_of(10) {
            let got = store.window(&all("mx-1")).await.unwrap();
            let want = reference.window(&all("mx-1")).await.unwrap();
            assert_eq!(got, want, "after batch {seq}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(store.memory_floor() > start, "the floor moved during the test");
    assert_eq!(
        store.window(&all("mx-1")).await.unwrap(),
        reference.window(&all("mx-1")).await.unwrap()
    );
    let q = UsageQuery { from: now_ms() - 200, ..all("mx-1") };
    assert_eq!(
        store.usage(&q).await.unwrap().iter().map(|r| r.samples).collect::<Vec<_>>(),
        reference.usage(&q).await.unwrap().iter().map(|r| r.samples).collect::<Vec<_>>()
    );
}

/// A spool replay (every sample older than the memory floor) is stored as late head rows,
/// readable at once, and the maintenance thread is woken to fold them into chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_replay_is_readable_at_once_and_folded_soon() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path(),
        SqliteOptions { maintenance_interval: Duration::from_secs(3600), ..Default::default() },
    )
    .unwrap();
    let t0 = now_ms() - 3_600_000;
    let mut want = Vec::new();
    for i in 0..100 {
        let ts = t0 + i * 10_000;
        let s = sample(1, i, ts);
        want.push(s.clone());
        store.write_batch(&batch("replay", i as u64 + 1, vec![s])).await.unwrap();
    }
    // Readable at once, whether folded yet or not.
    let w = store.window(&all("replay")).await.unwrap();
    assert_eq!(w[0].named_samples(), want);
    // 64 late rows wake the thread (its period is an hour); wait for the fold.
    let late =
        |store: &SqliteStore| sql_count(store, "SELECT count(*) FROM head WHERE gen > ?1", 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while late(&store) >= 64 {
        assert!(std::time::Instant::now() < deadline, "late rows were not folded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sql_count(&store, "SELECT count(*) FROM chunks WHERE n > ?1", 0) > 0);
    assert_eq!(store.window(&all("replay")).await.unwrap()[0].named_samples(), want);
}

/// `Durability::Power`: every acknowledged batch was covered by a WAL fsync, and concurrent
/// writers share fsyncs (group commit) instead of paying one each.
#[test]
fn power_mode_fsyncs_the_wal_before_acknowledging_and_shares_fsyncs() {
    use procwatch_store_sqlite::Durability;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        durability: Durability::Power,
        maintenance_interval: Duration::ZERO,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open(dir.path(), opts).unwrap());
    assert_eq!(store.durability(), Durability::Power);
    let now = now_ms();
    let threads = 8;
    let per_thread = 25;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                for i in 0..per_thread {
                    let ts = now - 60_000 + i as i64 * 100;
                    let b = Batch {
                        host: format!("gc-{t}"),
                        agent: "test".into(),
                        seq: i as u64,
                        interval_ms: 10_000,
                        dropped_samples: 0,
                        host_totals: vec![],
                        samples: vec![Sample {
                            ts,
                            process: "p".into(),
                            cpu: 1.0,
                            cores: 0.01,
                            mem: 1.0,
                            rss: 1,
                            count: 1,
                            extras: None,
                        }],
                        report: None,
                    };
                    rt.block_on(store.write_batch(&b)).unwrap();
                    // Acknowledged: at least one fsync has completed since.
                    assert!(store.wal_syncs() >= 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let syncs = store.wal_syncs();
    let batches = (threads * per_thread) as u64;
    assert!(syncs >= 1 && syncs < batches, "{syncs} fsyncs for {batches} batches");
    eprintln!("group commit: {syncs} WAL fsyncs for {batches} concurrent batches");
    // The relaxed mode runs none.
    drop(store);
    let dir2 = tempfile::tempdir().unwrap();
    let relaxed = SqliteStore::open(
        dir2.path(),
        SqliteOptions {
            durability: Durability::Process,
            maintenance_interval: Duration::ZERO,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    assert_eq!(relaxed.synchronous_pragma().unwrap(), 1, "NORMAL");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(relaxed.write_batch(&Batch {
        host: "r".into(),
        agent: "test".into(),
        seq: 0,
        interval_ms: 10_000,
        dropped_samples: 0,
        host_totals: vec![],
        samples: vec![],
        report: None,
    }))
    .unwrap();
    assert_eq!(relaxed.wal_syncs(), 0);
}
