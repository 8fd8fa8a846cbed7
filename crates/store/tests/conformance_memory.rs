//! The conformance suite against the reference backend.

use std::sync::Arc;

use procwatch_store::memory::MemoryStore;
use procwatch_store::Storage;

#[tokio::test]
async fn memory_store_passes_conformance() {
    procwatch_store::conformance::run_all(|| async {
        Arc::new(MemoryStore::new()) as Arc<dyn Storage>
    })
    .await;
}
