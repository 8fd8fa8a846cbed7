//! Group commit: writes to one table that arrive while an INSERT into it is in flight wait and
//! then go together as the next INSERT, and each caller gets that INSERT's outcome. ClickHouse
//! pays per INSERT (a part, ZooKeeper round trips for the block number, deduplication and the
//! replication log), not per row, so under concurrent ingestion this turns many small inserts
//! into a few larger ones.
//!
//! A write that finds no INSERT in flight goes alone, as exactly its own rows: that is the
//! deterministic block a retry of it reproduces, which the replicated table then ignores. A
//! retry grouped with other writes makes a different block; it is still stored once as a key,
//! since the tables are `ReplacingMergeTree` read with `FINAL` (and merges drop the copy).
//!
//! No caller is acknowledged unless the INSERT holding its rows succeeded: if the leader's
//! future is dropped mid-way (its client went away), the writes it took are answered with an
//! error, never with success.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::{ClickHouseError, ClickHouseStore};

type Outcome = Result<(), Arc<ClickHouseError>>;

/// The group-commit queue of one table.
pub struct Combiner<T> {
    table: &'static str,
    pending: parking_lot::Mutex<Vec<(Vec<T>, oneshot::Sender<Outcome>)>>,
    flush: tokio::sync::Mutex<()>,
}

impl<T> Combiner<T>
where
    T: clickhouse::RowWrite + clickhouse::RowOwned + Send,
{
    pub fn new(table: &'static str) -> Self {
        Combiner {
            table,
            pending: parking_lot::Mutex::new(Vec::new()),
            flush: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes `rows` (with whatever else is waiting) and returns once they are stored or the
    /// INSERT holding them failed.
    pub async fn write(
        &self,
        store: &ClickHouseStore,
        rows: Vec<T>,
    ) -> Result<(), ClickHouseError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (tx, mut rx) = oneshot::channel();
        self.pending.lock().push((rows, tx));
        let guard = self.flush.lock().await;
        // The previous leader may have taken (and written) ours.
        match rx.try_recv() {
            Ok(outcome) => return outcome.map_err(ClickHouseError::Shared),
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let group = std::mem::take(&mut *self.pending.lock());
        let (rows, waiters): (Vec<Vec<T>>, Vec<oneshot::Sender<Outcome>>) =
            group.into_iter().unzip();
        let all: Vec<T> = if rows.len() == 1 {
            rows.into_iter().next().unwrap_or_default()
        } else {
            rows.into_iter().flatten().collect()
        };
        let outcome = store.insert(self.table, &all).await.map_err(Arc::new);
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
        drop(guard);
        match rx.await {
            Ok(outcome) => outcome.map_err(ClickHouseError::Shared),
            Err(_) => Err(abandoned()),
        }
    }
}

fn abandoned() -> ClickHouseError {
    ClickHouseError::Abandoned
}
