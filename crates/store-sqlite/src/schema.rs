//! The database file: schema, connections, the data directory lock, error mapping.

use std::path::Path;
use std::time::Duration;

use procwatch_store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};

use crate::options::Durability;

pub(crate) const DB_FILE: &str = "procwatch.db";

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // Busy, disk full, I/O trouble: the caller may retry later (503).
        Some(
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::CannotOpen,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(Box::new(e)),
    }
}

pub(crate) fn other(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(Box::new(e))
}

/// Column `i` of `row` as the blob it must be (a head batch, a block of columns, a day of
/// roll-ups); any other type is an error.
pub(crate) fn blob_at<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> StoreResult<&'r [u8]> {
    row.get_ref(i).map_err(db_err)?.as_blob().map_err(|e| other(rusqlite::Error::from(e)))
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosts(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  last_seen INTEGER NOT NULL, interval_ms INTEGER NOT NULL, last_seq INTEGER,
  seq_gaps INTEGER NOT NULL, dropped INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series(id INTEGER PRIMARY KEY, host_id INTEGER NOT NULL,
  process TEXT NOT NULL, UNIQUE(host_id, process));
CREATE TABLE IF NOT EXISTS head(id INTEGER PRIMARY KEY, host_id INTEGER NOT NULL,
  min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL, n INTEGER NOT NULL,
  gen INTEGER NOT NULL DEFAULT 0, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS head_min_ts ON head(min_ts);
CREATE INDEX IF NOT EXISTS head_late ON head(host_id, gen) WHERE gen > 0;
CREATE INDEX IF NOT EXISTS head_host ON head(host_id);
CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL,
  start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, n INTEGER NOT NULL, gen INTEGER NOT NULL,
  level INTEGER NOT NULL, data BLOB NOT NULL);
DROP INDEX IF EXISTS chunks_series;
CREATE INDEX IF NOT EXISTS chunks_series_end ON chunks(series_id, end_ts);
CREATE INDEX IF NOT EXISTS chunks_end ON chunks(end_ts);
CREATE INDEX IF NOT EXISTS chunks_l0 ON chunks(start_ts) WHERE level = 0;
CREATE TABLE IF NOT EXISTS host_totals(host_id INTEGER NOT NULL, ts INTEGER NOT NULL,
  cpu REAL NOT NULL, mem REAL NOT NULL, unattributed REAL, PRIMARY KEY(host_id, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms(id TEXT PRIMARY KEY, start INTEGER NOT NULL, end_ts INTEGER,
  host TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alarms_start ON alarms(start);
CREATE TABLE IF NOT EXISTS retired_hosts(name TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS directives(version INTEGER PRIMARY KEY, at INTEGER NOT NULL,
  body TEXT NOT NULL);
";

/// SQLite's page cache of the writer, KiB: the B-tree pages that every batch's inserts touch.
pub(crate) const WRITER_CACHE_KIB: u32 = 32 * 1024;
/// SQLite's page cache of each pooled reader, KiB. Readers mostly answer from the in-memory
/// window; what they read from disk (history, roll-ups, rereads) is in the kernel's page cache
/// anyway, so a large private cache per reader (up to 8 pooled) only duplicated it in the heap.
pub(crate) const READER_CACHE_KIB: u32 = 2 * 1024;

pub(crate) fn open_conn(
    path: &Path,
    durability: Durability,
    cache_kib: u32,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // `Power` fsyncs the WAL itself after the commit (group commit, `WalSync`).
    let sync = match durability {
        Durability::Process | Durability::Power => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{cache_kib};"
    ))?;
    Ok(conn)
}

/// Takes the data directory's lock: an exclusive transaction held open on a small SQLite
/// file (POSIX advisory locks underneath, released by the kernel when the process dies).
pub(crate) fn take_dir_lock(dir: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(dir.join("procwatch.lock")).map_err(db_err)?;
    conn.busy_timeout(Duration::ZERO).map_err(db_err)?;
    match conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;") {
        Ok(()) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            Err(StoreError::Unavailable(format!(
                "data directory {} is in use by another procwatch store",
                dir.display()
            )))
        }
        Err(e) => Err(db_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{SqliteOptions, SqliteStore};

    fn chunk_indexes(store: &SqliteStore) -> Vec<String> {
        let w = store.inner.writer.lock();
        let mut st = w
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'chunks' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// A data directory written before `chunks_series_end` existed gets it at its next open,
    /// and loses the index it replaces (kept, it would cost every fold and merge for nothing).
    #[test]
    fn an_older_store_gets_the_chunk_index_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            || SqliteOptions { maintenance_interval: Duration::ZERO, ..SqliteOptions::default() };
        let store = SqliteStore::open(dir.path(), opts()).unwrap();
        store
            .inner
            .writer
            .lock()
            .conn
            .execute_batch(
                "DROP INDEX chunks_series_end; CREATE INDEX chunks_series ON chunks(series_id, start_ts);",
            )
            .unwrap();
        assert!(chunk_indexes(&store).contains(&"chunks_series".to_string()));
        drop(store);
        let store = SqliteStore::open(dir.path(), opts()).unwrap();
        assert_eq!(chunk_indexes(&store), ["chunks_end", "chunks_l0", "chunks_series_end"]);
    }
}
