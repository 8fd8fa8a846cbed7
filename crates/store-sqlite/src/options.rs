//! The store's options: what a write survives, windows, retention, maintenance.

use std::sync::Arc;
use std::time::Duration;

use procwatch_model::clock::Clock;

/// What a successful write survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives a kill of the process (WAL, `synchronous=NORMAL`). The library default (the
    /// server's is `Power`).
    #[default]
    Process,
    /// Also survives power loss: `write_batch` returns after an fsync of the WAL covering its
    /// commit, shared by concurrent writers (group commit; see the crate doc).
    Power,
}

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Samples older than this are dropped by the maintenance thread. Default 48 h.
    pub retention_ms: i64,
    /// 5-minute roll-ups older than this are dropped by the maintenance thread. Default 30 d.
    /// Keep it at least `retention_ms`: a bucket whose row retention dropped while its raw
    /// samples remain would be rebuilt from the samples folded after that alone.
    pub rollup_retention_ms: i64,
    /// Closed roll-up buckets (older than the memory floor) are packed into one compressed
    /// block per series and UTC day when the memory floor, rounded down to this, moves
    /// (0: at every maintenance pass, for tests). Default 1 h.
    pub rollup_pack_ms: i64,
    /// See `Durability`. Default `Process`.
    pub durability: Durability,
    /// How far back the in-memory index reaches. Default 15 min.
    pub memory_window_ms: i64,
    /// The memory floor moves in steps of this; the head holds up to window + step. Default 5 min.
    pub fold_step_ms: i64,
    /// Aligned span of a merged chunk. Default 2 h.
    pub block_ms: i64,
    /// Period of the background maintenance thread; `Duration::ZERO` starts none. Default 60 s.
    pub maintenance_interval: Duration,
    /// Where "now" comes from for the memory window and retention. Default the system clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            retention_ms: 48 * 3_600_000,
            rollup_retention_ms: 30 * 86_400_000,
            rollup_pack_ms: 3_600_000,
            durability: Durability::Process,
            memory_window_ms: 15 * 60_000,
            fold_step_ms: 5 * 60_000,
            block_ms: 2 * 3_600_000,
            maintenance_interval: Duration::from_secs(60),
            clock: procwatch_model::clock::system(),
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Head rows folded into chunks.
    pub head_rows_folded: u64,
    /// Level-0 chunks merged into level-1 chunks.
    pub chunks_merged: u64,
}
