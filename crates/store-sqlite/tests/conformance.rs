//! The shared conformance suite against the SQLite store, in two layouts: the default one
//! (the suite's timestamps are older than the memory floor, so they are written straight
//! into chunks and read back from disk) and one with a 24 h memory window (everything in the
//! head and the in-memory index), plus the same after a forced compaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use procwatch_store::conformance;
use procwatch_store::Storage;
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

async fn run(opts: SqliteOptions) {
    let dirs: Arc<Mutex<Vec<TempDir>>> = Arc::default();
    conformance::run_all(|| {
        let dirs = dirs.clone();
        let opts = opts.clone();
        async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(dir.path(), opts).expect("open");
            dirs.lock().expect("lock").push(dir);
            Arc::new(store) as Arc<dyn Storage>
        }
    })
    .await;
}

fn no_thread() -> SqliteOptions {
    SqliteOptions { maintenance_interval: Duration::ZERO, ..Default::default() }
}

#[tokio::test]
async fn conformance_chunk_path() {
    run(no_thread()).await;
}

#[tokio::test]
async fn conformance_memory_path() {
    run(SqliteOptions { memory_window_ms: 24 * 3_600_000, ..no_thread() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_multi_thread_runtime() {
    run(SqliteOptions { memory_window_ms: 3_600_000, ..no_thread() }).await;
}
