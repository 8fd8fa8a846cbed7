//! A memory store behind a [`Gate`]: the tests' stores that go down, hide their hosts or hold
//! a write in flight forward every call to one [`MemoryStore`] here, and say only what they
//! do before a call.

use std::ops::Deref;

use procwatch_model::{AlarmEvent, Batch, HostTotal, TsMs};
use procwatch_store::memory::MemoryStore;
use procwatch_store::{
    AlarmQuery, HistoryPoint, HistoryQuery, HostInfo, SeriesWindow, Storage, StoreResult,
    UsageQuery, UsageRow, WriteOutcome,
};

/// Which kind of `Storage` call a [`Gate`] is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Write,
    Hosts,
    /// `usage`, `window`, `history`, `host_totals`.
    Read,
    /// `apply_retention`, `retire_host`.
    Maintenance,
    /// `put_alarm_event`, `alarm_events`.
    Alarms,
    Health,
}

/// What a test store does before each call of its memory store.
#[async_trait::async_trait]
pub trait Gate: Send + Sync + 'static {
    /// The store's `backend()` name.
    const NAME: &'static str;
    /// Runs before `call`; an error is the call's answer.
    async fn before(&self, call: Call) -> StoreResult<()>;
    /// Whether `hosts()` answers an empty list (a store that does not list its hosts yet).
    fn hide_hosts(&self) -> bool {
        false
    }
    /// Told each `window` query and how many series it answered.
    fn saw_window(&self, _q: &UsageQuery, _series: usize) {}
}

/// A [`MemoryStore`] behind a [`Gate`] (whose fields it derefs to).
#[derive(Default)]
pub struct GatedMemory<G> {
    pub inner: MemoryStore,
    pub gate: G,
}

impl<G> Deref for GatedMemory<G> {
    type Target = G;
    fn deref(&self) -> &G {
        &self.gate
    }
}

#[async_trait::async_trait]
impl<G: Gate> Storage for GatedMemory<G> {
    fn backend(&self) -> &'static str {
        G::NAME
    }
    async fn write_batch(&self, b: &Batch) -> StoreResult<WriteOutcome> {
        self.gate.before(Call::Write).await?;
        self.inner.write_batch(b).await
    }
    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        self.gate.before(Call::Hosts).await?;
        if self.gate.hide_hosts() {
            return Ok(Vec::new());
        }
        self.inner.hosts().await
    }
    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.gate.before(Call::Read).await?;
        self.inner.usage(q).await
    }
    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        self.gate.before(Call::Read).await?;
        let w = self.inner.window(q).await?;
        self.gate.saw_window(q, w.len());
        Ok(w)
    }
    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        self.gate.before(Call::Read).await?;
        self.inner.history(q).await
    }
    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        self.gate.before(Call::Read).await?;
        self.inner.host_totals(host, from, to).await
    }
    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        self.gate.before(Call::Maintenance).await?;
        self.inner.apply_retention(cutoff).await
    }
    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        self.gate.before(Call::Maintenance).await?;
        self.inner.retire_host(host, at).await
    }
    async fn put_alarm_event(&self, e: &AlarmEvent) -> StoreResult<()> {
        self.gate.before(Call::Alarms).await?;
        self.inner.put_alarm_event(e).await
    }
    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        self.gate.before(Call::Alarms).await?;
        self.inner.alarm_events(q).await
    }
    async fn health(&self) -> StoreResult<()> {
        self.gate.before(Call::Health).await
    }
    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
}
