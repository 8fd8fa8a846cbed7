//! Fault test on the real cluster: the first replica of shard 2 (where that shard's writes and
//! reads go) is SIGKILLed while a loop keeps writing. Writes fail over to the other replica,
//! queries keep answering, and after the restart the killed replica catches up; every
//! acknowledged sample is stored exactly once (and every refused one once its retry is).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use procwatch_store::{Storage, UsageQuery};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;
use support::{counts, eventually, ingest, local_rows, nth_batch, HOSTS, PER_BATCH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_ingestion_loses_no_acknowledged_sample() {
    let test = "a_replica_killed_under_ingestion_loses_no_acknowledged_sample";
    let Some(mut cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "replica_kill";
    let store = Arc::new(ClickHouseStore::connect(cluster.config(db)).await.expect("connect"));
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(ingest(store.clone(), stop.clone(), 0));
    let rows = |c: &Cluster| counts(c, 0, db).map_or(0, |(n, _)| n);
    let per_round = (HOSTS * PER_BATCH) as u64;
    assert!(eventually(60, || rows(&cluster) >= 5 * per_round), "ingestion did not start");

    cluster.kill_node(2);
    let before = rows(&cluster);
    // Ingestion goes on through shard 2's other replica, and the Distributed reads too.
    assert!(
        eventually(60, || rows(&cluster) >= before + 5 * per_round),
        "no ingestion while a replica is down: {} rows, {before} at the kill",
        rows(&cluster)
    );
    let q = UsageQuery { from: 0, to: i64::MAX, host: None, process: None, per_host: true };
    let usage = store.usage(&q).await.expect("usage while a replica is down");
    assert_eq!(usage.len(), HOSTS, "every host answers while a replica is down");

    cluster.restart_node(2);
    let after = rows(&cluster);
    assert!(eventually(60, || rows(&cluster) >= after + 5 * per_round), "no ingestion after");
    stop.store(true, Ordering::SeqCst);
    let out = task.await.expect("ingestion task");
    // An agent retries what was refused (a 503); nothing acknowledged is re-sent.
    for (h, n, e) in &out.refused {
        eprintln!("refused batch ({h}, {n}): {e}");
        store.write_batch(&nth_batch(*h, *n)).await.expect("retry of a refused batch");
    }
    let total = ((out.acked.len() + out.refused.len()) * PER_BATCH) as u64;
    assert!(
        eventually(60, || counts(&cluster, 0, db) == Some((total, total))),
        "want {total} rows, each once; the cluster holds (rows, distinct) = {:?}",
        counts(&cluster, 0, db)
    );
    // The killed replica caught up with its peer.
    assert!(
        eventually(60, || local_rows(&cluster, 2, db).is_some()
            && local_rows(&cluster, 2, db) == local_rows(&cluster, 3, db)),
        "shard 2 replicas differ: {:?} vs {:?}",
        local_rows(&cluster, 2, db),
        local_rows(&cluster, 3, db)
    );
    let shard2 = local_rows(&cluster, 2, db).unwrap_or(0);
    assert!(shard2 > 0 && shard2 < total, "shard 2 holds {shard2} of {total}");
    eprintln!(
        "replica kill: {} batches acknowledged, {} refused and retried, {total} rows once each",
        out.acked.len(),
        out.refused.len()
    );
}
