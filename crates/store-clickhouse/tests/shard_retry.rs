//! Retries of shard-aware groups on the real cluster: a group of one shard's batches whose
//! INSERT failed (both replicas of the shard down), or whose answer was lost after it was
//! stored, is retried as the agents retry — each batch again, in whatever group it lands in —
//! and every sample is stored exactly once: read once by every query (`FINAL`), the same group
//! resent is not stored again at all (the shard's block deduplication), and once the replacing
//! merge ran (`OPTIMIZE … FINAL`) each row is there once physically.

mod support;

use procwatch_model::{Batch, HostTotal};
use procwatch_store::conformance::{base_ts, batch, sample};
use procwatch_store::{Storage, StoreError, UsageQuery};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;
use support::eventually;

const PROCS: usize = 30;

/// Batch `seq` of `host`: `PROCS` processes at one timestamp per `seq`, and a host total.
fn nth(t0: i64, host: &str, seq: u64) -> Batch {
    let ts = t0 + seq as i64 * 10_000;
    let samples = (0..PROCS).map(|i| sample(ts, &format!("p{i:02}"), seq as f64, 1.0)).collect();
    let mut b = batch(host, seq, samples);
    b.host_totals = vec![HostTotal { ts, cpu: 5.0, mem: 6.0, unattributed_cpu: None }];
    b
}

/// `SELECT <what> FROM db.table` on node `i`, as a number.
fn number(cluster: &Cluster, i: usize, sql: &str) -> u64 {
    cluster.sql(i, sql).expect(sql).trim().parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_retried_after_a_failure_stores_every_sample_exactly_once() {
    let test = "a_group_retried_after_a_failure_stores_every_sample_exactly_once";
    let Some(mut cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "shard_retry";
    let store = ClickHouseStore::connect(cluster.config(db)).await.expect("connect");
    let t0 = base_ts();
    // Three hosts of shard 2 (nodes 2 and 3): the store reads through node 0, on shard 1, so
    // shard 2 can go down while the store stays connected.
    let hosts: Vec<String> =
        (0..).map(|i| format!("sr-{i}")).filter(|h| store.shard_of(h) == Some(1)).take(3).collect();
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    // Samples only: host totals share the table as process ''.
    let local = |c: &Cluster, i: usize| {
        number(c, i, &format!("SELECT count() FROM {db}.samples_local WHERE process != ''"))
    };

    // 1. Stored, then retried as if the answer had been lost: first the same group (the same
    //    block: the shard's deduplication stores nothing), then in other groups.
    let first = [nth(t0, a, 1), nth(t0, b, 1), nth(t0, c, 1)];
    store.write_together(&first).await.expect("the group");
    assert_eq!(local(&cluster, 2), 3 * PROCS as u64);
    store.write_together(&first).await.expect("the same group again");
    assert_eq!(
        local(&cluster, 2),
        3 * PROCS as u64,
        "the same group resent is deduplicated at insert"
    );
    store.write_together(&[nth(t0, c, 1), nth(t0, a, 1)]).await.expect("another group");
    store.write_batch(&nth(t0, b, 1)).await.expect("alone");

    // 2. The group's INSERT fails: both replicas of the shard are down.
    cluster.kill_node(2);
    cluster.kill_node(3);
    let second = [nth(t0, a, 2), nth(t0, b, 2), nth(t0, c, 2)];
    let err = store.write_together(&second).await.expect_err("the shard is down");
    assert!(matches!(err, StoreError::Unavailable(_)), "want Unavailable, got {err:?}");
    // Alone, too: no batch of the shard is acknowledged while it is down.
    let err = store.write_batch(&nth(t0, a, 2)).await.expect_err("the shard is down");
    assert!(matches!(err, StoreError::Unavailable(_)), "want Unavailable, got {err:?}");
    cluster.restart_node(2);
    cluster.restart_node(3);
    cluster.wait_writable(60);
    // The agents retry, each its own batch, grouped differently this time.
    store.write_together(&[nth(t0, b, 2), nth(t0, c, 2)]).await.expect("retry, b and c");
    store.write_batch(&nth(t0, a, 2)).await.expect("retry, a");
    // A late retry of the failed group as it was.
    store.write_together(&second).await.expect("retry, the whole group");

    // Every query reads each sample once.
    let q = UsageQuery { from: t0, to: t0 + 30_000, host: None, process: None, per_host: true };
    let rows = store.usage(&q).await.expect("usage");
    assert_eq!(rows.len(), 3 * PROCS);
    assert!(rows.iter().all(|r| r.samples == 2), "a sample read twice: {rows:?}");
    for h in &hosts {
        let totals = store.host_totals(h, t0, t0 + 30_000).await.expect("host totals");
        assert_eq!(totals.len(), 2, "host totals of {h}");
    }
    let distinct = 3 * PROCS as u64 * 2;
    // Read once on the replica written to (the one reads go to), without the store's code.
    let final_rows = format!("SELECT count() FROM {db}.samples_local FINAL WHERE process != ''");
    assert_eq!(number(&cluster, 2, &final_rows), distinct);
    // Rows written twice (a retry in another group is another block) until the merge: then
    // each once, on both replicas of the shard.
    let before = local(&cluster, 2);
    assert!(before >= distinct, "{before} rows stored, {distinct} samples acknowledged");
    // On the shard's leader replica (after the restarts the election may still be going on).
    {
        let table = "samples_local";
        let leader = format!(
            "SELECT is_leader FROM system.replicas WHERE database = '{db}' AND table = '{table}'"
        );
        let optimized = eventually(60, || {
            [2, 3].into_iter().any(|i| {
                cluster.sql(i, &leader).is_ok_and(|b| b.trim() == "1")
                    && cluster.sql(i, &format!("OPTIMIZE TABLE {db}.{table} FINAL")).is_ok()
            })
        });
        assert!(optimized, "OPTIMIZE {table} did not run on shard 2's leader");
    }
    let merged = |i: usize| {
        let count = |cond: &str| {
            number(&cluster, i, &format!("SELECT count() FROM {db}.samples_local WHERE {cond}"))
        };
        let (n, t) = (count("process != ''"), count("process = ''"));
        (n, t)
    };
    assert!(
        eventually(120, || merged(2) == (distinct, 6) && merged(3) == (distinct, 6)),
        "after the merge: {:?} and {:?}, want ({distinct}, 6) on each replica",
        merged(2),
        merged(3)
    );
    eprintln!("{before} rows physically before the merge, {distinct} after");
    // The retries were retries: no seq gap.
    let listed = store.hosts().await.expect("hosts");
    assert!(listed.iter().all(|h| h.last_seq == 2 && h.seq_gaps == 0), "{listed:?}");
    assert_eq!(local(&cluster, 0), 0, "shard 1 holds none of shard 2's hosts");
}
