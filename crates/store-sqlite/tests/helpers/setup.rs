//! Set-up shared by this crate's store tests (`durability.rs`, `rollups.rs`; with
//! `helpers/workload.rs` as `workload`).
// Each includer uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use procwatch_model::clock::{Clock, SystemClock};
use procwatch_model::TsMs;
use procwatch_store::{Storage, UsageQuery};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

pub fn now_ms() -> TsMs {
    SystemClock.now_ms()
}

/// Options without the maintenance thread: the tests run maintenance themselves.
pub fn opts() -> SqliteOptions {
    SqliteOptions { maintenance_interval: Duration::ZERO, ..Default::default() }
}

/// Every series of `host`, over all time, per host.
pub fn all(host: &str) -> UsageQuery {
    UsageQuery { from: 0, to: i64::MAX, host: Some(host.into()), process: None, per_host: true }
}

/// A store in `dir` holding the last 3 h of `host` (`workload::three_hours`, `series` series)
/// in its head and in memory (a 4 h memory window). Returns it, now, and the first sweep's
/// time.
pub async fn three_hours_in_memory(
    dir: &Path,
    host: &str,
    series: usize,
) -> (SqliteStore, TsMs, TsMs) {
    let now = now_ms();
    let t0 = now - 3 * 3_600_000;
    let options = SqliteOptions { memory_window_ms: 4 * 3_600_000, ..opts() };
    let store = SqliteStore::open(dir, options).unwrap();
    for b in crate::workload::three_hours(host, series, t0) {
        store.write_batch(&b).await.unwrap();
    }
    (store, now, t0)
}
