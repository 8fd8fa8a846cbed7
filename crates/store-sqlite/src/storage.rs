//! `Storage` for `SqliteStore`: each call on the blocking pool (writes in place when it can).

use async_trait::async_trait;
use procwatch_model::{AlarmEvent, Batch, HostTotal, TsMs};
use procwatch_store::{
    AlarmQuery, HistoryAnswer, HistoryPoint, HistoryQuery, HostInfo, RowOrder, SeriesWindow,
    Storage, StoreResult, UsageNeeds, UsageQuery, UsageRow, WriteOutcome,
};

use crate::schema::db_err;
use crate::SqliteStore;

#[async_trait]
impl Storage for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn series_usage_is_local(&self) -> bool {
        true
    }

    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        // On a multi-thread runtime, write in place (no copy of the batch, no thread hop);
        // elsewhere, on the blocking pool.
        if tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        {
            return tokio::task::block_in_place(|| self.inner.write_batch(batch));
        }
        let batch = batch.clone();
        self.blocking(move |i| i.write_batch(&batch)).await
    }

    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        Ok(self.inner.hosts())
    }

    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.usage_of(q, UsageNeeds::ALL).await
    }

    async fn usage_of(&self, q: &UsageQuery, needs: UsageNeeds) -> StoreResult<Vec<UsageRow>> {
        let owned = q.clone();
        self.blocking_read(q, move |i, stop| i.usage(&owned, needs, stop)).await
    }

    async fn usage_top(
        &self,
        q: &UsageQuery,
        needs: UsageNeeds,
        order: RowOrder,
        keep: usize,
    ) -> StoreResult<Option<(Vec<UsageRow>, usize)>> {
        let owned = q.clone();
        self.blocking_read(q, move |i, stop| i.usage_top(&owned, needs, &order, keep, stop)).await
    }

    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        let q = q.clone();
        self.blocking(move |i| i.window(&q)).await
    }

    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let q = q.clone();
        self.blocking(move |i| i.history(&q)).await
    }

    async fn history_answer(&self, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
        let q = q.clone();
        self.blocking(move |i| i.history_answer(&q)).await
    }

    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        let host = host.to_string();
        self.blocking(move |i| i.host_totals(&host, from, to)).await
    }

    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        self.blocking(move |i| i.apply_retention(cutoff)).await
    }

    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let host = host.to_owned();
        self.blocking(move |i| i.retire_host(&host, at)).await
    }

    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()> {
        let e = event.clone();
        self.blocking(move |i| i.put_alarm_event(&e)).await
    }

    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let q = q.clone();
        self.blocking(move |i| i.alarm_events(&q)).await
    }

    async fn put_directive(
        &self,
        record: &procwatch_model::directive::DirectiveRecord,
    ) -> StoreResult<()> {
        let r = record.clone();
        self.blocking(move |i| i.put_directive(&r)).await
    }

    async fn directives(&self) -> StoreResult<Vec<procwatch_model::directive::DirectiveRecord>> {
        self.blocking(|i| i.directives()).await
    }

    async fn health(&self) -> StoreResult<()> {
        self.blocking(|i| {
            i.with_reader(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err))
        })
        .await
    }

    async fn extras_window(
        &self,
        q: &UsageQuery,
    ) -> StoreResult<Vec<procwatch_store::extras::ExtrasRecord>> {
        let q = q.clone();
        self.blocking(move |i| i.extras_window(&q)).await
    }

    fn last_maintenance(&self) -> Option<std::time::Duration> {
        let us = self.inner.last_maintenance_us.load(std::sync::atomic::Ordering::Relaxed);
        us.checked_sub(1).map(std::time::Duration::from_micros)
    }

    fn long_reads(&self) -> Option<procwatch_store::LongReads> {
        let free = self.disk_reads.available_permits();
        Some(procwatch_store::LongReads {
            running: crate::DISK_READS_AT_ONCE.saturating_sub(free) as u64,
            waiting: self.reads_waiting.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn window_bytes(&self) -> Option<u64> {
        let hosts: Vec<std::sync::Arc<crate::catalog::HostEntry>> =
            self.inner.catalog.read().hosts.values().cloned().collect();
        Some(hosts.iter().map(|h| h.index.read().estimated_bytes() as u64).sum())
    }

    async fn close(&self) -> StoreResult<()> {
        self.stop_thread();
        self.blocking(|i| {
            let w = i.writer.lock();
            w.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(db_err)
        })
        .await
    }
}
