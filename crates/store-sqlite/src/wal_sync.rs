//! Group commit for `Durability::Power`: one WAL fsync shared by every commit before it.

use std::path::Path;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

/// Group commit of `Durability::Power`: commits are numbered under the writer lock; one
/// thread at a time fsyncs the WAL, covering every commit numbered before it started.
#[derive(Default)]
pub(crate) struct WalSync {
    pub(crate) state: Mutex<SyncState>,
    pub(crate) done: parking_lot::Condvar,
    pub(crate) syncs: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
pub(crate) struct SyncState {
    pub(crate) committed: u64,
    pub(crate) synced: u64,
    pub(crate) syncing: bool,
}

impl WalSync {
    /// Numbers a commit; call under the writer lock, right after the commit.
    pub(crate) fn ticket(&self) -> u64 {
        let mut st = self.state.lock();
        st.committed += 1;
        st.committed
    }

    /// Returns once an fsync of `wal` that started after commit `ticket` has finished.
    pub(crate) fn wait(&self, wal: &Path, ticket: u64) -> std::io::Result<()> {
        let mut st = self.state.lock();
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if st.syncing {
                self.done.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let target = st.committed;
            // Opened each time: always the WAL file SQLite writes now.
            let r = parking_lot::MutexGuard::unlocked(&mut st, || {
                std::fs::File::open(wal).and_then(|f| f.sync_data())
            });
            st.syncing = false;
            if r.is_ok() {
                st.synced = st.synced.max(target);
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            self.done.notify_all();
            r?;
        }
    }
}
