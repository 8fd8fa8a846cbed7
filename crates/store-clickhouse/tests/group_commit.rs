//! Group commit on the real cluster: batches written concurrently while the INSERT slots are
//! busy share INSERTs; each is acknowledged only once its rows are readable; a grouped batch
//! retried alone is counted once by every query; and a failing group INSERT (ZooKeeper down)
//! refuses every batch in it, none acknowledged.

use std::sync::Arc;

use procwatch_model::clock::Clock;
use procwatch_model::Batch;
use procwatch_store::conformance::{base_ts, batch, sample};
use procwatch_store::{Storage, StoreError, UsageQuery};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;

const PER_BATCH: usize = 50;

/// Batch `n` of host `h`: `PER_BATCH` processes at one timestamp unique to `n`.
fn nth(t0: i64, h: usize, n: u64) -> Batch {
    let ts = t0 + n as i64 * 10_000;
    let samples =
        (0..PER_BATCH).map(|i| sample(ts, &format!("p{i:02}"), (n + 1) as f64, 1.0)).collect();
    batch(&format!("gc-{h}"), n + 1, samples)
}

/// Every series' sample count over the first five rounds, as the queries read them.
async fn series_counts(store: &ClickHouseStore, t0: i64) -> Vec<u64> {
    let q = UsageQuery { from: t0, to: t0 + 50_000, host: None, process: None, per_host: true };
    store.usage(&q).await.expect("usage").iter().map(|r| r.samples).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_share_inserts_and_each_is_acknowledged_once_stored() {
    let test = "concurrent_batches_share_inserts_and_each_is_acknowledged_once_stored";
    let Some(mut cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "group_commit";
    let t0 = base_ts();
    // One INSERT in flight, so whatever arrives meanwhile must be grouped.
    let mut cfg = cluster.config(db);
    cfg.max_inserts_in_flight = 1;
    let store = Arc::new(ClickHouseStore::connect(cfg).await.expect("connect"));
    let (hosts, rounds) = (8usize, 5u64);
    // One writer per host (an agent sends its batches one after another), all at once.
    let mut tasks = Vec::new();
    for h in 0..hosts {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..rounds {
                let b = nth(t0, h, n);
                store.write_batch(&b).await.expect("write");
                // Acknowledged means readable now (reads and writes use the same replica).
                let ts = b.samples[0].ts;
                let q = UsageQuery {
                    from: ts,
                    to: ts + 1,
                    host: Some(b.host.clone()),
                    process: None,
                    per_host: true,
                };
                let got = store.usage(&q).await.expect("usage").len();
                assert_eq!(got, PER_BATCH, "batch ({h}, {n}) acknowledged before it was stored");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a writer");
    }
    let stats = store.write_stats();
    assert_eq!(stats.batches, hosts as u64 * rounds);
    assert!(
        stats.data_inserts < stats.batches,
        "8 concurrent writers with one INSERT in flight were not grouped: {stats:?}"
    );
    let total = (hosts * PER_BATCH) as u64 * rounds;
    // Counted without `FINAL` on the first replica of each shard (nodes 0 and 2), where the
    // store writes: every row once.
    let q = format!("SELECT count(), uniqExact(host, process, ts) FROM {db}.samples_local");
    let counts: Vec<String> =
        [0, 2].iter().map(|&i| cluster.sql(i, &q).expect("count").trim().to_string()).collect();
    let sum = |k: usize| -> u64 {
        counts
            .iter()
            .map(|c| c.split('\t').nth(k).and_then(|v| v.parse::<u64>().ok()).unwrap())
            .sum()
    };
    assert_eq!((sum(0), sum(1)), (total, total), "(rows, distinct keys)");
    let want = vec![rounds; hosts * PER_BATCH];
    assert_eq!(series_counts(&store, t0).await, want);

    // A grouped batch retried on its own is a different block (not deduplicated at insert),
    // but the same (host, process, ts, seq): every query counts it once.
    store.write_batch(&nth(t0, 3, 2)).await.expect("retry");
    assert_eq!(series_counts(&store, t0).await, want, "a retry counted twice");
    let hosts_info = store.hosts().await.expect("hosts");
    assert!(hosts_info.iter().all(|h| h.last_seq == rounds && h.seq_gaps == 0), "{hosts_info:?}");

    // ZooKeeper down: a group's failure refuses every batch in it; none is acknowledged.
    cluster.kill_zookeeper();
    let mut refused = 0;
    let clock = procwatch_model::clock::SystemClock;
    let deadline = clock.instant() + std::time::Duration::from_secs(30);
    for attempt in 0..u64::MAX {
        assert!(clock.instant() < deadline, "writes still accepted 30 s after ZooKeeper died");
        let mut tasks = Vec::new();
        for h in 0..hosts {
            let store = store.clone();
            let b = nth(t0, h, 10 + attempt % 100);
            tasks.push(tokio::spawn(async move { store.write_batch(&b).await }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("a writer"));
        }
        // While the replicas still have their session some writes may pass; once one is
        // refused, look at a round where all are.
        if outcomes.iter().all(|o| o.is_err()) {
            for o in outcomes {
                let e = o.expect_err("refused");
                assert!(matches!(e, StoreError::Unavailable(_)), "want Unavailable, got {e:?}");
                refused += 1;
            }
            break;
        }
    }
    assert_eq!(refused, hosts, "a whole round of concurrent batches refused");
    cluster.restart_zookeeper();
    // The agents' retries go through once the replicas are writable again.
    cluster.wait_writable(60);
    store.write_batch(&nth(t0, 0, 9)).await.expect("a retry once the replicas are writable");
    assert_eq!(series_counts(&store, t0).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_insert_groups_free_slots_and_acknowledges_only_once_stored() {
    let test = "a_lingering_insert_groups_free_slots_and_acknowledges_only_once_stored";
    let Some(cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "group_linger";
    let t0 = base_ts();
    // As many INSERT slots as writers: without a linger nothing would have to wait, so what
    // groups here is what the linger held back.
    let (hosts, rounds) = (8usize, 5u64);
    let mut cfg = cluster.config(db);
    cfg.max_inserts_in_flight = hosts;
    cfg.insert_linger = std::time::Duration::from_millis(100);
    let store = Arc::new(ClickHouseStore::connect(cfg).await.expect("connect"));
    let start = Arc::new(tokio::sync::Barrier::new(hosts));
    let mut tasks = Vec::new();
    for h in 0..hosts {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for n in 0..rounds {
                let b = nth(t0, h, n);
                store.write_batch(&b).await.expect("write");
                // Acknowledged means the INSERT holding it was: readable now.
                let ts = b.samples[0].ts;
                let q = UsageQuery {
                    from: ts,
                    to: ts + 1,
                    host: Some(b.host.clone()),
                    process: None,
                    per_host: true,
                };
                let got = store.usage(&q).await.expect("usage").len();
                assert_eq!(got, PER_BATCH, "batch ({h}, {n}) acknowledged before it was stored");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a writer");
    }
    let stats = store.write_stats();
    assert_eq!(stats.batches, hosts as u64 * rounds);
    assert!(
        stats.data_inserts * 2 <= stats.batches,
        "8 writers in step with 8 free slots and a 100 ms linger shared too few INSERTs: {stats:?}"
    );
    // Every row once, counted without `FINAL` where the store writes (nodes 0 and 2).
    let q = format!("SELECT count() FROM {db}.samples_local");
    let rows: u64 = [0, 2]
        .iter()
        .map(|&i| cluster.sql(i, &q).expect("count").trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(rows, (hosts * PER_BATCH) as u64 * rounds);
    assert_eq!(series_counts(&store, t0).await, vec![rounds; hosts * PER_BATCH]);
}
