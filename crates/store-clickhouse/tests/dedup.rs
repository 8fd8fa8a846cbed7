//! Idempotent delivery on the real cluster: a retried batch — through the same store or through
//! another procwatch server's store — is stored once, by the replicated tables' block
//! deduplication (counted without `FINAL`, so no read-time merge hides a duplicate).

use procwatch_store::conformance::{base_ts, batch, sample};
use procwatch_store::Storage;
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;

/// Rows physically stored in `db.table` over the whole cluster (one replica per shard),
/// polled until at least `want` (a replica read may lag behind the one written), then the
/// count: more than `want` would be a duplicate.
fn stored_rows(cluster: &Cluster, db: &str, table: &str, want: u64) -> u64 {
    use procwatch_model::clock::Clock;
    let clock = procwatch_model::clock::SystemClock;
    let deadline = clock.instant() + std::time::Duration::from_secs(30);
    loop {
        let body = cluster.sql(0, &format!("SELECT count() FROM {db}.{table}")).expect("count");
        let n: u64 = body.trim().parse().expect("a number");
        if n >= want || clock.instant() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_through_either_server() {
    let Some(cluster) =
        Cluster::start_or_skip("a_retried_batch_is_stored_once_through_either_server")
    else {
        return;
    };
    let db = "dedup";
    // Two stores = two procwatch servers, talking to different nodes of the cluster.
    let a = ClickHouseStore::connect(cluster.config(db)).await.expect("connect a");
    let mut cfg_b = cluster.config(db);
    cfg_b.url = cluster.url(3);
    let b = ClickHouseStore::connect(cfg_b).await.expect("connect b");

    let t0 = base_ts();
    // Several hosts, so the batch spreads over both shards.
    let mut batches = Vec::new();
    for h in 0..6 {
        let samples = (0..50)
            .flat_map(|i| {
                [
                    sample(t0 + i * 1_000, "postgres", i as f64, 1.0),
                    sample(t0 + i * 1_000, "nginx", 2.0 * i as f64, 2.0),
                ]
            })
            .collect();
        let mut bt = batch(&format!("dd-{h}"), 7, samples);
        bt.host_totals = (0..50)
            .map(|i| procwatch_model::HostTotal {
                ts: t0 + i * 1_000,
                cpu: 1.0,
                mem: 2.0,
                unattributed_cpu: None,
            })
            .collect();
        batches.push(bt);
    }
    for bt in &batches {
        a.write_batch(bt).await.expect("first delivery");
    }
    // The agent did not see the answer and retries, once to the same server and once to the
    // other one (after a failover).
    for bt in &batches {
        a.write_batch(bt).await.expect("retry, same server");
        b.write_batch(bt).await.expect("retry, other server");
    }
    // Host totals ride in `samples` as process '' (one row per host and ts).
    assert_eq!(
        stored_rows(&cluster, db, "samples", 900),
        6 * (100 + 50),
        "samples and host totals stored once"
    );
    for (i, bt) in batches.iter().enumerate() {
        let got = a.host_totals(&bt.host, t0, t0 + 60_000).await.expect("host totals");
        assert_eq!(got.len(), 50, "host totals of host {i}");
    }
    // Both shards hold some of the hosts.
    for node in [0, 2] {
        let local = cluster
            .sql(node, &format!("SELECT count() FROM {db}.samples_local"))
            .expect("count")
            .trim()
            .parse::<u64>()
            .expect("a number");
        assert!(local > 0 && local < 900, "node {node} holds {local} rows");
    }
    // And every query answers each sample once.
    let q = procwatch_store::UsageQuery {
        from: t0,
        to: t0 + 60_000,
        host: None,
        process: None,
        per_host: true,
    };
    for store in [&a, &b] {
        let rows = store.usage(&q).await.expect("usage");
        assert_eq!(rows.len(), 12);
        assert!(rows.iter().all(|r| r.samples == 50), "{rows:?}");
    }
    // The retries were retries: no seq gap, the host counted once.
    let hosts = b.hosts().await.expect("hosts");
    assert_eq!(hosts.len(), 6);
    assert!(hosts.iter().all(|h| h.last_seq == 7 && h.seq_gaps == 0), "{hosts:?}");
}
