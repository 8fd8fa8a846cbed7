//! Queries: usage, window, history and host totals over memory and disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use procwatch_model::{HostTotal, Sample, TsMs};
use procwatch_store::{
    agg, HistoryPoint, HistoryQuery, SeriesWindow, StoreError, StoreResult, UsageNeeds, UsageQuery,
    UsageRow,
};
use rusqlite::params;

use crate::catalog::{HostEntry, Sel};
use crate::codec::Columns;
use crate::disk::{append_columns, col_sample, disk_series, late_rows};
use crate::head::HeadRec;
use crate::index;
use crate::index::{MergedAcc, Scratch};
use crate::inner::Inner;
use crate::memory::usage_from_memory;
use crate::schema::db_err;

impl Inner {
    /// Full columns of `sel` in `[from, to)`: chunks below the host's memory floor, memory above.
    pub(crate) fn series_columns(
        &self,
        sels: &[Sel],
        from: TsMs,
        to: TsMs,
    ) -> StoreResult<Vec<Columns>> {
        let mut mem_parts = Vec::with_capacity(sels.len());
        let mut need_disk = false;
        for s in sels {
            let idx = s.host.index.read();
            let floor = idx.floor;
            let mut c = Columns::default();
            if let Some(ring) = idx.series.get(&s.process) {
                let r = ring.range(from.max(floor), to);
                ring.c.append_to(&mut c, r);
            }
            need_disk |= from < floor;
            mem_parts.push((floor, c));
        }
        if !need_disk {
            return Ok(mem_parts.into_iter().map(|(_, c)| c).collect());
        }
        self.with_reader(|conn| {
            let mut out = Vec::with_capacity(sels.len());
            // Each host's late head rows, read once (usually none).
            let mut late: HashMap<u32, Vec<(i64, Vec<HeadRec>)>> = HashMap::new();
            for (s, (floor, mem)) in sels.iter().zip(mem_parts) {
                if from < floor {
                    let host_late = match late.entry(s.host.id) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(late_rows(conn, s.host.id, from, to)?)
                        }
                    };
                    let mut c = disk_series(conn, s.sid, host_late, from, to.min(floor))?;
                    append_columns(&mut c, &mem, 0..mem.len());
                    out.push(c);
                } else {
                    out.push(mem);
                }
            }
            Ok(out)
        })
    }

    /// Usage rows with the statistics `needs` names (the others 0).
    pub(crate) fn usage(&self, q: &UsageQuery, needs: UsageNeeds) -> StoreResult<Vec<UsageRow>> {
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
        let cols = self.series_columns(&sels, from, to)?;
        let mut scratch = Scratch::default();
        let mut rows = Vec::new();
        if q.per_host {
            for (s, c) in sels.iter().zip(&cols) {
                if !c.is_empty() {
                    let host = Some(s.host.name.clone());
                    rows.push(index::row_of(
                        c,
                        0..c.len(),
                        host,
                        s.process.clone(),
                        &mut scratch,
                        needs,
                    ));
                }
            }
        } else {
            // `sels` is sorted by (host, process): grouping keeps host order inside a process.
            let mut by_proc: BTreeMap<&str, Vec<&Columns>> = BTreeMap::new();
            for (s, c) in sels.iter().zip(&cols) {
                by_proc.entry(&s.process).or_default().push(c);
            }
            let mut acc = MergedAcc::new(needs);
            for (p, group) in by_proc {
                acc.clear();
                for c in group {
                    acc.add(c, 0..c.len());
                }
                if !acc.is_empty() {
                    rows.push(acc.finish(p.to_string()));
                }
            }
        }
        Ok(rows)
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
