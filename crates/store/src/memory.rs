//! `MemoryStore`: a simple, obviously correct in-memory backend. It is the reference semantics
//! of the `Storage` contract (every backend must answer the conformance suite as it does), and
//! a store for tests. Nothing survives the process, so "durable" here means "visible to every
//! later query".

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::RwLock;
use procwatch_model::{AlarmEvent, Batch, HostTotal, Sample, TsMs};

use crate::agg::{self, UsageAcc};
use crate::host_book::HostBook;
use crate::rollup;
use crate::{
    AlarmQuery, HistoryAnswer, HistoryPoint, HistoryQuery, HostInfo, Resolution, SeriesWindow,
    StoreError, StoreResult, UsageQuery, UsageRow, WriteOutcome, DEFAULT_RAW_RETENTION_MS,
};

#[derive(Debug, Default)]
struct HostState {
    book: HostBook,
    totals: BTreeMap<TsMs, HostTotal>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (host, process) → ts → sample.
    series: BTreeMap<(String, String), BTreeMap<TsMs, Sample>>,
    hosts: BTreeMap<String, HostState>,
    alarms: BTreeMap<String, AlarmEvent>,
    /// Retired hosts: hidden from `hosts()` while their `last_seen` is at or before this.
    retired: BTreeMap<String, TsMs>,
    /// Directive changes by version.
    directives: BTreeMap<u64, procwatch_model::directive::DirectiveRecord>,
}

/// In-memory `Storage`. Cheap to create; share it as `Arc<dyn Storage>`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Checks the invariants every backend enforces itself (the server validates the rest).
pub fn check_batch(batch: &Batch) -> StoreResult<()> {
    if batch.host.is_empty() {
        return Err(StoreError::InvalidInput("empty host".into()));
    }
    for (i, s) in batch.samples.iter().enumerate() {
        if s.process.is_empty() {
            return Err(StoreError::InvalidInput(format!("sample {i}: empty process")));
        }
        if !(s.cpu.is_finite() && s.cores.is_finite() && s.mem.is_finite()) {
            return Err(StoreError::InvalidInput(format!("sample {i}: non-finite value")));
        }
    }
    for (i, t) in batch.host_totals.iter().enumerate() {
        if !(t.cpu.is_finite() && t.mem.is_finite()) {
            return Err(StoreError::InvalidInput(format!("host total {i}: non-finite value")));
        }
    }
    Ok(())
}

fn matches(q: &UsageQuery, host: &str, process: &str) -> bool {
    q.host.as_deref().is_none_or(|h| h == host) && q.process.as_deref().is_none_or(|p| p == process)
}

#[async_trait]
impl crate::Storage for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn series_usage_is_local(&self) -> bool {
        true
    }

    async fn write_batch(&self, batch: &Batch) -> StoreResult<WriteOutcome> {
        check_batch(batch)?;
        let mut g = self.inner.write();
        let inner = &mut *g;
        for s in &batch.samples {
            inner
                .series
                .entry((batch.host.clone(), s.process.clone()))
                .or_default()
                .insert(s.ts, s.clone());
        }
        let h = inner.hosts.entry(batch.host.clone()).or_default();
        for t in &batch.host_totals {
            h.totals.insert(t.ts, t.clone());
        }
        let gap = h.book.record_all(batch);
        Ok(WriteOutcome {
            samples: batch.samples.len(),
            host_totals: batch.host_totals.len(),
            seq_gap: gap,
        })
    }

    async fn hosts(&self) -> StoreResult<Vec<HostInfo>> {
        let g = self.inner.read();
        Ok(g.hosts
            .iter()
            .filter(|(name, h)| g.retired.get(*name).is_none_or(|at| h.book.last_seen > *at))
            // The newest total still held (retention drops older ones from `totals`).
            .map(|(name, h)| HostInfo {
                latest: h.totals.values().next_back().cloned(),
                ..h.book.info(name)
            })
            .collect())
    }

    async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let g = self.inner.read();
        let mut rows = Vec::new();
        if q.per_host {
            for ((host, process), ss) in &g.series {
                if !matches(q, host, process) {
                    continue;
                }
                let mut acc = UsageAcc::default();
                for s in ss.range(q.from..q.to.max(q.from)).map(|(_, s)| s) {
                    acc.push(s);
                }
                if !acc.is_empty() {
                    rows.push(acc.finish(Some(host.clone()), process.clone()));
                }
            }
        } else {
            // process → per-host lists, hosts in name order.
            let mut by_proc: BTreeMap<&str, Vec<Vec<Sample>>> = BTreeMap::new();
            for ((host, process), ss) in &g.series {
                if !matches(q, host, process) {
                    continue;
                }
                let v: Vec<Sample> =
                    ss.range(q.from..q.to.max(q.from)).map(|(_, s)| s.clone()).collect();
                if !v.is_empty() {
                    by_proc.entry(process).or_default().push(v);
                }
            }
            for (process, lists) in by_proc {
                let refs: Vec<&[Sample]> = lists.iter().map(Vec::as_slice).collect();
                let mut acc = UsageAcc::default();
                for s in agg::merge_by_ts(&refs) {
                    acc.push(s);
                }
                rows.push(acc.finish(None, process.to_string()));
            }
        }
        Ok(rows)
    }

    async fn extras_window(&self, q: &UsageQuery) -> StoreResult<Vec<crate::extras::ExtrasRecord>> {
        let g = self.inner.read();
        let mut out = Vec::new();
        for ((host, process), ss) in g.series.iter().filter(|((h, p), _)| matches(q, h, p)) {
            for s in ss.range(q.from..q.to.max(q.from)).map(|(_, s)| s) {
                if let Some(x) = s.extras.as_deref().filter(|x| !x.is_empty()) {
                    out.push(crate::extras::ExtrasRecord {
                        host: host.clone(),
                        process: process.clone(),
                        ts: s.ts,
                        extras: x.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        let g = self.inner.read();
        Ok(g.series
            .iter()
            .filter(|((h, p), _)| matches(q, h, p))
            .filter_map(|((host, process), ss)| {
                let samples: Vec<Sample> =
                    ss.range(q.from..q.to.max(q.from)).map(|(_, s)| unnamed(s)).collect();
                (!samples.is_empty()).then(|| SeriesWindow {
                    host: host.clone(),
                    process: process.clone(),
                    samples,
                })
            })
            .collect())
    }

    async fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let g = self.inner.read();
        let ss = g
            .series
            .get(&(q.host.clone(), q.process.clone()))
            .ok_or_else(|| StoreError::NotFound(format!("{}/{}", q.host, q.process)))?;
        Ok(agg::history_points(ss.range(q.from..q.to.max(q.from)).map(|(_, s)| s), q.step_ms))
    }

    /// Keeps every raw sample, so roll-ups are computed from them at query time; the
    /// resolution is picked as if raw samples were kept `DEFAULT_RAW_RETENTION_MS`.
    async fn history_answer(&self, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
        use procwatch_model::clock::Clock;
        let horizon = procwatch_model::clock::SystemClock.now_ms() - DEFAULT_RAW_RETENTION_MS;
        let (resolution, step_ms) = rollup::pick_resolution(q, horizon);
        if resolution == Resolution::Raw {
            return Ok(HistoryAnswer { resolution, step_ms, points: self.history(q).await? });
        }
        let g = self.inner.read();
        let ss = g
            .series
            .get(&(q.host.clone(), q.process.clone()))
            .ok_or_else(|| StoreError::NotFound(format!("{}/{}", q.host, q.process)))?;
        let (from, to) = rollup::rollup_range(q.from, q.to, step_ms);
        let buckets = rollup::buckets_of(ss.range(from..to.max(from)).map(|(_, s)| s));
        Ok(HistoryAnswer {
            resolution,
            step_ms,
            points: rollup::points_from_buckets(&buckets, step_ms),
        })
    }

    async fn host_totals(&self, host: &str, from: TsMs, to: TsMs) -> StoreResult<Vec<HostTotal>> {
        let g = self.inner.read();
        Ok(g.hosts
            .get(host)
            .map(|h| h.totals.range(from..to.max(from)).map(|(_, t)| t.clone()).collect())
            .unwrap_or_default())
    }

    async fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        let mut g = self.inner.write();
        let mut removed = 0u64;
        g.series.retain(|_, ss| {
            let keep = ss.split_off(&cutoff);
            removed += ss.len() as u64;
            *ss = keep;
            !ss.is_empty()
        });
        g.hosts.retain(|_, h| {
            h.totals = h.totals.split_off(&cutoff);
            h.book.last_seen >= cutoff
        });
        g.alarms.retain(|_, e| e.end.is_none_or(|end| end >= cutoff));
        let inner = &mut *g;
        inner.retired.retain(|name, _| inner.hosts.contains_key(name));
        Ok(removed)
    }

    async fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let mut g = self.inner.write();
        let inner = &mut *g;
        let listed = inner
            .hosts
            .get(host)
            .filter(|h| inner.retired.get(host).is_none_or(|r| h.book.last_seen > *r));
        let Some(h) = listed else {
            return Err(StoreError::NotFound(format!("host {host:?}")));
        };
        let last_seen = h.book.last_seen;
        inner.retired.insert(host.to_owned(), at.max(last_seen));
        Ok(last_seen)
    }

    async fn put_alarm_event(&self, event: &AlarmEvent) -> StoreResult<()> {
        self.inner.write().alarms.insert(event.id.clone(), event.clone());
        Ok(())
    }

    async fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let g = self.inner.read();
        let mut v: Vec<AlarmEvent> =
            g.alarms.values().filter(|e| alarm_matches(q, e)).cloned().collect();
        sort_newest_first(&mut v);
        if q.limit > 0 {
            v.truncate(q.limit);
        }
        Ok(v)
    }

    async fn put_directive(
        &self,
        record: &procwatch_model::directive::DirectiveRecord,
    ) -> StoreResult<()> {
        self.inner.write().directives.insert(record.version, record.clone());
        Ok(())
    }

    async fn directives(&self) -> StoreResult<Vec<procwatch_model::directive::DirectiveRecord>> {
        Ok(self.inner.read().directives.values().cloned().collect())
    }

    async fn health(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Whether an event passes the filters of `q` (shared by the backends).
pub fn alarm_matches(q: &AlarmQuery, e: &AlarmEvent) -> bool {
    (!q.active_only || e.end.is_none())
        && q.host.as_deref().is_none_or(|h| h == e.host)
        && q.process.as_deref().is_none_or(|p| p == e.process)
        && q.metric.is_none_or(|m| m == e.metric)
        && q.level.is_none_or(|l| l == e.level)
        && q.from.is_none_or(|f| e.start >= f)
        && q.to.is_none_or(|t| e.start < t)
}

/// Newest first: by `start` descending, ties by `id` descending.
pub fn sort_newest_first(v: &mut [AlarmEvent]) {
    v.sort_by(|a, b| b.start.cmp(&a.start).then_with(|| b.id.cmp(&a.id)));
}

/// A copy of `s` without its name (see [`SeriesWindow::samples`]).
fn unnamed(s: &Sample) -> Sample {
    Sample {
        ts: s.ts,
        process: String::new(),
        cpu: s.cpu,
        cores: s.cores,
        mem: s.mem,
        rss: s.rss,
        count: s.count,
        extras: s.extras.clone(),
    }
}
