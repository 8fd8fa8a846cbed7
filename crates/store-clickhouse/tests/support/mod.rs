//! Shared by the fault tests: a sustained ingestion loop that remembers which batches were
//! acknowledged, and exact counts of what the cluster holds.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procwatch_model::clock::{Clock, SystemClock};
use procwatch_model::Batch;
use procwatch_store::conformance::{base_ts, batch, sample};
use procwatch_store::{Storage, StoreError};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;

/// Hosts the loop writes for: enough that both shards get some.
pub const HOSTS: usize = 6;
/// Samples per batch.
pub const PER_BATCH: usize = 20;

/// Batch `n` of host `h`: `PER_BATCH` samples at timestamps unique to (h, n).
/// The same batch every time it is asked for within a test process: the retry of a refused
/// batch must carry the timestamps of the attempt (an agent re-sends what it spooled), and
/// `base_ts` moves at each minute boundary.
pub fn nth_batch(h: usize, n: u64) -> Batch {
    static BASE: std::sync::OnceLock<procwatch_model::TsMs> = std::sync::OnceLock::new();
    let t0 = *BASE.get_or_init(base_ts);
    let samples = (0..PER_BATCH)
        .map(|i| sample(t0 + (n as i64) * 1_000 + i as i64, "svc", (n % 100) as f64, 1.0))
        .collect();
    batch(&format!("ft-{h}"), n + 1, samples)
}

/// What the loop did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Batches acknowledged (Ok), by (host, n).
    pub acked: Vec<(usize, u64)>,
    /// Batches refused, with the error.
    pub refused: Vec<(usize, u64, StoreError)>,
}

/// Writes batches round-robin over the hosts until `stop` is set (at least `min` rounds).
pub async fn ingest(store: Arc<ClickHouseStore>, stop: Arc<AtomicBool>, min: u64) -> Outcome {
    let mut out = Outcome::default();
    let mut n = 0u64;
    while n < min || !stop.load(Ordering::SeqCst) {
        for h in 0..HOSTS {
            match store.write_batch(&nth_batch(h, n)).await {
                Ok(_) => out.acked.push((h, n)),
                Err(e) => out.refused.push((h, n, e)),
            }
        }
        n += 1;
        tokio::task::yield_now().await;
    }
    out
}

/// Rows of `db.samples` counted without `FINAL` (a duplicate would count twice), through node
/// `node`, and the distinct (host, ts) keys among them.
pub fn counts(cluster: &Cluster, node: usize, db: &str) -> Option<(u64, u64)> {
    let body = cluster
        .sql(node, &format!("SELECT count(), uniqExact(host, ts) FROM {db}.samples"))
        .ok()?;
    let mut it = body.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// Rows of `db.samples_local` on node `i`.
pub fn local_rows(cluster: &Cluster, node: usize, db: &str) -> Option<u64> {
    cluster.sql(node, &format!("SELECT count() FROM {db}.samples_local")).ok()?.trim().parse().ok()
}

/// Polls `f` every 100 ms until it is true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let clock = SystemClock;
    let deadline = clock.instant() + Duration::from_secs(secs);
    while clock.instant() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
