//! Fault test on the real cluster: ZooKeeper SIGKILLed. Writes are refused with an error that
//! says so (`Unavailable`: the server answers 503, never a 2xx), reads still answer, health
//! reports it; once ZooKeeper is back, writes succeed again and every acknowledged sample is
//! stored exactly once.

mod support;

use procwatch_store::{Storage, StoreError, UsageQuery};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;
use support::{counts, eventually, nth_batch, HOSTS, PER_BATCH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_down_refuses_writes_keeps_reads_and_recovers() {
    let test = "zookeeper_down_refuses_writes_keeps_reads_and_recovers";
    let Some(mut cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "zk_down";
    let store = ClickHouseStore::connect(cluster.config(db)).await.expect("connect");
    let mut acked = 0usize;
    for n in 0..3 {
        for h in 0..HOSTS {
            store.write_batch(&nth_batch(h, n)).await.expect("write before the fault");
            acked += 1;
        }
    }

    cluster.kill_zookeeper();
    // The next writes are refused (the replicated tables turn read-only once the session is
    // lost); none is acknowledged.
    let mut n = 3;
    let mut refused = None;
    for _ in 0..200 {
        match store.write_batch(&nth_batch(0, n)).await {
            Ok(_) => {
                acked += 1;
                n += 1;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a write is refused while ZooKeeper is down");
    assert!(matches!(e, StoreError::Unavailable(_)), "want Unavailable (503), got {e:?}");
    assert!(e.to_string().contains("ZooKeeper"), "the error says why: {e}");
    eprintln!("write with ZooKeeper down: {e}");
    // Reads still answer, with what was acknowledged.
    let q = UsageQuery { from: 0, to: i64::MAX, host: None, process: None, per_host: true };
    let usage = store.usage(&q).await.expect("reads while ZooKeeper is down");
    assert_eq!(usage.len(), HOSTS);
    let h = store.health().await;
    assert!(matches!(h, Err(StoreError::Unavailable(_))), "health while ZooKeeper is down: {h:?}");

    cluster.restart_zookeeper();
    // The agent's retry of the refused batch succeeds once the replicas are writable again.
    let retry = nth_batch(0, n);
    let mut ok = false;
    for _ in 0..600 {
        if store.write_batch(&retry).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "writes did not resume within 60 s of ZooKeeper's return");
    acked += 1;
    // Each replica reconnects to ZooKeeper on its own: the write above needed one writable
    // replica per shard, health wants every replica writable, a few seconds later at most.
    let mut health = store.health().await;
    for _ in 0..600 {
        if health.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        health = store.health().await;
    }
    health.expect("healthy again within 60 s of the first write after ZooKeeper's return");
    let total = (acked * PER_BATCH) as u64;
    assert!(
        eventually(30, || counts(&cluster, 0, db) == Some((total, total))),
        "want {total} rows, each once; the cluster holds (rows, distinct) = {:?}",
        counts(&cluster, 0, db)
    );
}
