//! The storage conformance suite (`procwatch_store::conformance`) against a real influxd.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use procwatch_store::Storage;
use procwatch_store_influx::testing::Influxd;
use procwatch_store_influx::InfluxStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_on_influxdb() {
    let Some(influxd) = Influxd::start_or_skip("conformance_suite_passes_on_influxdb") else {
        return;
    };
    let n = AtomicUsize::new(0);
    procwatch_store::conformance::run_all(|| {
        // A fresh, empty database per case.
        let cfg = influxd.config(&format!("conformance_{}", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            Arc::new(InfluxStore::connect(cfg).await.expect("connect")) as Arc<dyn Storage>
        }
    })
    .await;
}
