//! The shared state behind `SqliteStore`: the writer, the reader pool, the floors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64};

use parking_lot::{Mutex, RwLock};
use procwatch_store::StoreResult;
use rusqlite::Connection;

use crate::catalog::Catalog;
use crate::options::SqliteOptions;
use crate::schema::{db_err, open_conn, READER_CACHE_KIB};
use crate::wal_sync::WalSync;

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) next_host: u32,
    pub(crate) next_series: u32,
    pub(crate) gen: i64,
}

pub(crate) struct Inner {
    /// Holds `<dir>/procwatch.lock` exclusively: one process per data directory.
    pub(crate) _lock: Mutex<Connection>,
    pub(crate) path: PathBuf,
    pub(crate) opts: SqliteOptions,
    pub(crate) writer: Mutex<Writer>,
    /// Group commit of `Durability::Power`.
    pub(crate) wal_sync: WalSync,
    pub(crate) readers: Mutex<Vec<Connection>>,
    pub(crate) catalog: RwLock<Catalog>,
    /// The memory floor F (see the crate doc). Changed only under the writer lock.
    pub(crate) floor: AtomicI64,
    /// Nothing older is ever returned.
    pub(crate) retention_floor: AtomicI64,
    /// Roll-ups of buckets before this were deleted (in memory only: after a restart the
    /// first pass deletes again).
    pub(crate) rollup_floor: AtomicI64,
    /// The memory floor, rounded down to `rollup_pack_ms`, of the last packing pass: rows of
    /// buckets before it were packed into blocks (in memory only: after a restart the first
    /// pass packs again).
    pub(crate) packed_to: AtomicI64,
    pub(crate) stop: AtomicBool,
    /// Late head rows written since the last fold of them.
    pub(crate) late_rows: std::sync::atomic::AtomicU64,
    /// The maintenance thread, woken early when late rows pile up.
    pub(crate) maint_thread: Mutex<Option<std::thread::Thread>>,
    /// How long the last maintenance pass took, µs + 1 (0: none finished yet).
    pub(crate) last_maintenance_us: std::sync::atomic::AtomicU64,
}

/// Late head rows that wake the maintenance thread to fold them.
pub(crate) const LATE_ROWS_WAKE: u64 = 64;

impl Inner {
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let conn = self.readers.lock().pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                open_conn(&self.path, self.opts.durability, READER_CACHE_KIB).map_err(db_err)?
            }
        };
        let out = {
            let tx = conn.unchecked_transaction().map_err(db_err)?;
            let out = f(&tx);
            tx.finish().map_err(db_err)?;
            out
        };
        let mut pool = self.readers.lock();
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}
