//! [`MeteredStore`]: the store every handler holds, wrapped so that ingestion is counted in
//! [`Metrics`] where it becomes durable (what `write_batch` wrote, and how long it took),
//! without touching the handlers. Every other call passes through unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use procwatch_model::{AlarmEvent, Batch, HostTotal, TsMs};
use procwatch_store::{
    AlarmQuery, HistoryPoint, HistoryQuery, HostInfo, RowOrder, SeriesWindow, Storage, StoreResult,
    UsageNeeds, UsageQuery, UsageRow, WriteOutcome,
};

use crate::metrics::Metrics;

/// A [`Storage`] that counts what it durably wrote; everything else passes through.
pub struct MeteredStore {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner` so that every successful `write_batch` is counted in `metrics`.
    pub fn wrap(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Arc<dyn Storage> {
        Arc::new(MeteredStore { inner, metrics })
    }
}

#[async_trait]
impl Storage for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn window_bytes(&self) -> Option<u64> {
        self.inner.window_bytes()
    }
    fn long_reads(&self) -> Option<procwatch_store::LongReads> {
        self.inner.long_reads()
    }
    fn last_maintenance(&self) -> Option<std::time::Duration> {
        self.inner.last_maintenance()
    }
    fn series_usage_is_local(&self) -> bool {
        self.inner.series_usage_is_local()
    }
    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        let started = self.metrics.clock.instant();
        let out = self.inner.write_batch(batch).await?;
        let took = self.metrics.clock.instant().saturating_duration_since(started);
        self.metrics.ingested(batch, &out, took);
        Ok(out)
    }
    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        self.inner.hosts().await
    }
    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.inner.usage(q).await
    }
    async fn usage_of(&self, q: &UsageQuery, needs: UsageNeeds) -> StoreResult<Vec<UsageRow>> {
        self.inner.usage_of(q, needs).await
    }
    async fn usage_top(
        &self,
        q: &UsageQuery,
        needs: UsageNeeds,
        order: RowOrder,
        keep: usize,
    ) -> StoreResult<Option<(Vec<UsageRow>, usize)>> {
        self.inner.usage_top(q, needs, order, keep).await
    }
    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        self.inner.window(q).await
    }
    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        self.inner.history(q).await
    }
    async fn history_answer(
        &self,
        q: &HistoryQuery,
    ) -> StoreResult<procwatch_store::HistoryAnswer> {
        self.inner.history_answer(q).await
    }
    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        self.inner.host_totals(host, from, to).await
    }
    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        self.inner.apply_retention(cutoff).await
    }
    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        self.inner.retire_host(host, at).await
    }
    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()> {
        self.inner.put_alarm_event(event).await
    }
    async fn put_alarm_events(&self, events: &[AlarmEvent]) -> StoreResult<()> {
        self.inner.put_alarm_events(events).await
    }
    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        self.inner.alarm_events(q).await
    }
    async fn put_directive(
        &self,
        record: &procwatch_model::directive::DirectiveRecord,
    ) -> StoreResult<()> {
        self.inner.put_directive(record).await
    }
    async fn directives(&self) -> StoreResult<Vec<procwatch_model::directive::DirectiveRecord>> {
        self.inner.directives().await
    }
    async fn health(&self) -> StoreResult<()> {
        self.inner.health().await
    }
    async fn close(&self) -> StoreResult<()> {
        self.inner.close().await
    }
    async fn extras_window(
        &self,
        q: &UsageQuery,
    ) -> StoreResult<Vec<procwatch_store::extras::ExtrasRecord>> {
        self.inner.extras_window(q).await
    }
}
