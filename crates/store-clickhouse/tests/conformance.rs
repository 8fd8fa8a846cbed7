//! The storage conformance suite (`procwatch_store::conformance`) against a real 2-shard ×
//! 2-replica ClickHouse cluster with ZooKeeper, a fresh database per case.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use procwatch_store::Storage;
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_on_the_clickhouse_cluster() {
    let Some(cluster) =
        Cluster::start_or_skip("conformance_suite_passes_on_the_clickhouse_cluster")
    else {
        return;
    };
    let n = AtomicUsize::new(0);
    procwatch_store::conformance::run_all(|| {
        let cluster = &cluster;
        let cfg = cluster.config(&format!("conformance_{}", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            match ClickHouseStore::connect(cfg).await {
                Ok(s) => Arc::new(s) as Arc<dyn Storage>,
                Err(e) => panic!("connect: {e}\n{}", cluster.node_log(0)),
            }
        }
    })
    .await;
}
