//! Queries: usage, window, history and host totals over memory and disk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use procwatch_model::{HostTotal, Sample, TsMs};
use procwatch_store::{
    agg, HistoryPoint, HistoryQuery, SeriesWindow, StoreError, StoreResult, UsageNeeds, UsageQuery,
    UsageRow,
};
use rusqlite::params;

use crate::catalog::{HostEntry, Sel};
use crate::codec::Columns;
use crate::disk::{append_columns, col_sample, disk_series_into, late_rows, DiskScratch};
use crate::index;
use crate::index::{MergedAcc, Scratch};
use crate::inner::Inner;
use crate::memory::{par_split, usage_from_memory};
use crate::schema::db_err;

/// Reused buffers of `Inner::each_series`: one host's memory parts, one series' columns and
/// its decoded chunks.
#[derive(Debug, Default)]
pub(crate) struct SeriesBufs {
    mem: Vec<Columns>,
    cols: Columns,
    disk: DiskScratch,
}

impl Inner {
    /// Calls `f(i, &sels[i], columns)` with the samples of each of `sels` in `[from, to)`:
    /// chunks below the host's memory floor, memory above. It goes one host at a time (`sels`
    /// as `select` lists them: a host's series together) and one series at a time in
    /// `bufs`, so a fleet query holds one host's recent samples, never the fleet's.
    ///
    /// A host's memory is read first, then its disk in a read transaction begun after: what
    /// a fold moved out of memory in between is in that transaction's chunks.
    ///
    /// `stop` is looked at before each host: once set (nobody waits for the answer), the
    /// read ends with an error. A window is the client's to choose (up to the retention), so
    /// a read can be long; it must not outlive its request.
    pub(crate) fn each_series<'s>(
        &self,
        sels: &'s [Sel],
        from: TsMs,
        to: TsMs,
        bufs: &mut SeriesBufs,
        stop: &AtomicBool,
        mut f: impl FnMut(usize, &'s Sel, &Columns),
    ) -> StoreResult<()> {
        let mut i = 0;
        while i < sels.len() {
            if stop.load(Ordering::Relaxed) {
                return Err(abandoned());
            }
            let host = &sels[i].host;
            let n = sels[i..].iter().take_while(|s| s.host.id == host.id).count();
            let group = &sels[i..i + n];
            if bufs.mem.len() < n {
                bufs.mem.resize_with(n, Columns::default);
            }
            let floor = {
                let idx = host.index.read();
                for (s, m) in group.iter().zip(&mut bufs.mem) {
                    m.clear();
                    if let Some(ring) = idx.series.get(&s.process) {
                        ring.c.append_to(m, ring.range(from.max(idx.floor), to));
                    }
                }
                idx.floor
            };
            if from >= floor {
                for (k, s) in group.iter().enumerate() {
                    f(i + k, s, &bufs.mem[k]);
                }
            } else {
                let SeriesBufs { mem, cols, disk } = &mut *bufs;
                self.with_reader(|conn| {
                    // The host's late head rows, read once (usually none).
                    let late = late_rows(conn, host.id, from, to)?;
                    for (k, s) in group.iter().enumerate() {
                        cols.clear();
                        disk_series_into(conn, s.sid, &late, from, to.min(floor), cols, disk)?;
                        append_columns(cols, &mem[k], 0..mem[k].len());
                        f(i + k, s, cols);
                    }
                    Ok(())
                })?;
            }
            i += n;
        }
        Ok(())
    }

    /// Full columns of each of `sels` in `[from, to)` (`each_series`, kept).
    pub(crate) fn series_columns(
        &self,
        sels: &[Sel],
        from: TsMs,
        to: TsMs,
    ) -> StoreResult<Vec<Columns>> {
        let mut out = Vec::with_capacity(sels.len());
        let never = AtomicBool::new(false);
        self.each_series(sels, from, to, &mut SeriesBufs::default(), &never, |_, _, c| {
            out.push(c.clone())
        })?;
        Ok(out)
    }

    /// Usage rows with the statistics `needs` names (the others 0); `stop`: see `each_series`.
    pub(crate) fn usage(
        &self,
        q: &UsageQuery,
        needs: UsageNeeds,
        stop: &AtomicBool,
    ) -> StoreResult<Vec<UsageRow>> {
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        let to = q.to;
        if from >= to {
            return Ok(Vec::new());
        }
        let hosts: Vec<Arc<HostEntry>> = {
            let cat = self.catalog.read();
            match &q.host {
                Some(h) => cat.hosts.get(h).cloned().into_iter().collect(),
                None => cat.hosts.values().cloned().collect(),
            }
        };
        if hosts.iter().all(|h| h.index.read().floor <= from) {
            if let Some(rows) = usage_from_memory(&hosts, q, from, to, needs) {
                return Ok(rows);
            }
        }
        let sels = self.select(q.host.as_deref(), q.process.as_deref());
        if q.per_host {
            // Two threads for a fleet, each over whole hosts of its half.
            let big = hosts.len() >= 8;
            let parts = par_split(&sels, big, |ss| {
                let mut scratch = Scratch::default();
                let mut rows = Vec::new();
                let done =
                    self.each_series(ss, from, to, &mut SeriesBufs::default(), stop, |_, s, c| {
                        if !c.is_empty() {
                            let host = Some(s.host.name.clone());
                            let p = s.process.clone();
                            rows.push(index::row_of(c, 0..c.len(), host, p, &mut scratch, needs));
                        }
                    });
                Some(vec![done.map(|()| rows)])
            })
            .expect("every part answers");
            let mut rows = Vec::new();
            for part in parts {
                rows.append(&mut part?);
            }
            return Ok(rows);
        }
        // `sels` is sorted by (host, process): each process' accumulator takes its hosts in
        // host order, as the memory path does, so the sums are the same bit for bit.
        let mut by_proc: BTreeMap<&str, MergedAcc> = BTreeMap::new();
        self.each_series(&sels, from, to, &mut SeriesBufs::default(), stop, |_, s, c| {
            if !c.is_empty() {
                by_proc
                    .entry(&s.process)
                    .or_insert_with(|| MergedAcc::new(needs))
                    .add(c, 0..c.len());
            }
        })?;
        Ok(by_proc.into_iter().map(|(p, mut acc)| acc.finish(p.to_string())).collect())
    }

    pub(crate) fn window(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        if from >= q.to {
            return Ok(Vec::new());
        }
        let sels = self.select(q.host.as_deref(), q.process.as_deref());
        let cols = self.series_columns(&sels, from, q.to)?;
        // Each series' columns are dropped as soon as its samples are built: the alarm
        // evaluator's first pass reads every series' whole window, and holding both copies of
        // all of them at once doubled that peak.
        Ok(sels
            .iter()
            .zip(cols)
            .filter(|(_, c)| !c.is_empty())
            .map(|(s, c)| SeriesWindow {
                host: s.host.name.clone(),
                process: s.process.clone(),
                samples: (0..c.len()).map(|i| col_sample(&c, i, "")).collect(),
            })
            .collect())
    }

    pub(crate) fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let sels = self.select(Some(&q.host), Some(&q.process));
        if sels.is_empty() {
            return Err(StoreError::NotFound(format!("{}/{}", q.host, q.process)));
        }
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        if from >= q.to {
            return Ok(Vec::new());
        }
        let cols = self.series_columns(&sels, from, q.to)?;
        let c = &cols[0];
        let samples: Vec<Sample> = (0..c.len()).map(|i| col_sample(c, i, "")).collect();
        Ok(agg::history_points(&samples, q.step_ms))
    }

    pub(crate) fn host_totals(
        &self,
        host: &str,
        from: TsMs,
        to: TsMs,
    ) -> StoreResult<Vec<HostTotal>> {
        let Some(h) = self.catalog.read().hosts.get(host).cloned() else { return Ok(Vec::new()) };
        let from = from.max(self.retention_floor.load(Ordering::SeqCst));
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT ts, cpu, mem, unattributed FROM host_totals WHERE host_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![h.id, from, to], |r| {
                    Ok(HostTotal { ts: r.get(0)?, cpu: r.get(1)?, mem: r.get(2)?, unattributed_cpu: r.get(3)? })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
    }
}

/// The error of a read stopped because nobody waits for it any more.
pub(crate) fn abandoned() -> StoreError {
    StoreError::Unavailable("the read was stopped: its request ended (timed out or closed)".into())
}
