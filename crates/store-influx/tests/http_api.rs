//! Every HTTP API test of the server crate (`crates/server/tests/it`, its files included
//! verbatim) run again with the InfluxDB backend: `spawn_app()` — the server over "the
//! default store" in those tests — here starts the real server over an `InfluxStore` on a
//! fresh database of one influxd shared by this test binary. Tests that build their own store
//! (`spawn_app_with(MemoryStore ...)`, `spawn_memory_app`) run as they do there. Included:
//! `ingest.rs`, `query.rs` and `server.rs` (with the `gated_store.rs` they use).
//!
//! Without influxd (and without `CI`), `spawn_app()` says SKIPPED and falls back to the
//! SQLite store, so the tests still pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use procwatch_store_influx::testing::Influxd;
use procwatch_store_influx::InfluxStore;

#[allow(dead_code, unused_imports)]
#[path = "../../server/tests/it/util.rs"]
mod base_util;

#[path = "../../server/tests/it/gated_store.rs"]
mod gated_store;
#[path = "../../server/tests/it/ingest.rs"]
mod ingest;
#[path = "../../server/tests/it/query.rs"]
mod query;
#[path = "../../server/tests/it/server.rs"]
mod server;

static INFLUXD: OnceLock<Option<Influxd>> = OnceLock::new();
static DB: AtomicUsize = AtomicUsize::new(0);

mod util {
    #[allow(unused_imports)]
    pub use crate::base_util::*;

    /// The server over an `InfluxStore` on a fresh database.
    pub async fn spawn_app() -> TestApp {
        let influxd = super::INFLUXD.get_or_init(|| Influxd::start_or_skip("http_api"));
        let Some(influxd) = influxd else {
            procwatch_store_influx::testing::skipped(
                "influxd not installed (this test ran on SQLite)",
            );
            return crate::base_util::spawn_app().await;
        };
        let db = format!("http_{}", super::DB.fetch_add(1, super::Ordering::SeqCst));
        let store = super::InfluxStore::connect(influxd.config(&db)).await.expect("influx store");
        spawn_app_with(super::Arc::new(store), procwatch_server::ServerConfig::default()).await
    }

    use super::Influxd;
}
