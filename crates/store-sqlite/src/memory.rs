//! The in-memory recent window: its size, its rebuild at open, usage answered from it alone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use procwatch_model::TsMs;
use procwatch_store::{StoreResult, UsageNeeds, UsageQuery, UsageRow};

use crate::catalog::HostEntry;
use crate::codec::Columns;
use crate::disk::merge_columns;
use crate::head::decode_head;
use crate::index::{MergedAcc, Scratch};
use crate::inner::Inner;
use crate::schema::{blob_at, db_err, other};
use crate::{codec, index};

/// Runs `f` over `items`, split in two halves on two threads when `big`; results in order,
/// `None` when either half gives `None`.
pub(crate) fn par_split<T: Sync, R: Send>(
    items: &[T],
    big: bool,
    f: impl Fn(&[T]) -> Option<Vec<R>> + Sync,
) -> Option<Vec<R>> {
    if !big || items.len() < 2 {
        return f(items);
    }
    let (a, b) = items.split_at(items.len() / 2);
    std::thread::scope(|scope| {
        let hb = scope.spawn(|| f(b));
        let ra = f(a);
        match hb.join() {
            Ok(rb) => {
                let (mut ra, mut rb) = (ra?, rb?);
                ra.append(&mut rb);
                Some(ra)
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Usage rows straight from the rings, when every selected host's memory covers
/// `[from, to)`; `None` as soon as one does not (the floor moved since the caller looked),
/// and the caller takes the general path. Big queries (the fleet) use two threads.
pub(crate) fn usage_from_memory(
    hosts: &[Arc<HostEntry>],
    q: &UsageQuery,
    from: TsMs,
    to: TsMs,
    needs: UsageNeeds,
) -> Option<Vec<UsageRow>> {
    if q.per_host {
        let big = hosts.len() >= 8;
        return par_split(hosts, big, |hs| {
            let mut scratch = Scratch::default();
            let cap = match q.process {
                Some(_) => hs.len(),
                None => hs.iter().map(|h| h.index.read().series.len()).sum(),
            };
            let mut rows = Vec::with_capacity(cap);
            for h in hs {
                let idx = h.index.read();
                if idx.floor > from {
                    return None;
                }
                let mut one = |p: &String, ring: &index::Ring| {
                    let r = ring.range(from, to);
                    if !r.is_empty() {
                        let host = Some(h.name.clone());
                        rows.push(index::row_of(&ring.c, r, host, p.clone(), &mut scratch, needs));
                    }
                };
                match &q.process {
                    Some(p) => {
                        if let Some(ring) = idx.series.get(p) {
                            one(p, ring);
                        }
                    }
                    None => idx.series.iter().for_each(|(p, ring)| one(p, ring)),
                }
            }
            Some(rows)
        });
    }
    let procs: Vec<String> = match &q.process {
        Some(p) => vec![p.clone()],
        None => {
            let mut set = std::collections::BTreeSet::new();
            for h in hosts {
                set.extend(h.index.read().series.keys().cloned());
            }
            set.into_iter().collect()
        }
    };
    let big = hosts.len() * procs.len() >= 2_000;
    par_split(&procs, big, |ps| {
        let mut acc = MergedAcc::new(needs);
        let mut rows = Vec::with_capacity(ps.len());
        for p in ps {
            acc.clear();
            for h in hosts {
                let idx = h.index.read();
                if idx.floor > from {
                    return None;
                }
                if let Some(ring) = idx.series.get(p) {
                    acc.add(&ring.c, ring.range(from, to));
                }
            }
            if !acc.is_empty() {
                rows.push(acc.finish(p.clone()));
            }
        }
        Some(rows)
    })
}

impl Inner {
    /// The samples one series of a host sending every `interval_ms` holds at most in memory:
    /// the window, a fold step, two maintenance periods (the floor moves only at a pass, and
    /// a pass that comes a hair early finds less than a fold step to fold and leaves the floor
    /// for the next), and two for jitter: 50 at 10 s and the defaults. A ring is allocated at
    /// this size once (`ring.rs`, `reserve_one`); with one maintenance period (44), at 300,000
    /// series every ring outgrew it by a few samples, and the outgrown buffers stayed behind
    /// as ≈ 0.3 GB of holes in the heap. 0 (grow as needed) when the interval is unknown; at
    /// most 4,096.
    pub(crate) fn window_cap(&self, interval_ms: u64) -> usize {
        if interval_ms == 0 {
            return 0;
        }
        let o = &self.opts;
        let span = (o.memory_window_ms + o.fold_step_ms).max(0) as u128
            + 2 * o.maintenance_interval.as_millis();
        ((span / u128::from(interval_ms)) as usize + 2).min(4096)
    }

    /// Rebuilds the in-memory index from chunks reaching the floor and the whole head.
    pub(crate) fn rebuild_index(&self) -> StoreResult<()> {
        let floor = self.floor.load(Ordering::SeqCst);
        let cat = self.catalog.read();
        let w = self.writer.lock();
        let mut per_series: HashMap<u32, Vec<Columns>> = HashMap::new();
        {
            let mut stmt = w
                .conn
                .prepare("SELECT series_id, data FROM chunks WHERE end_ts >= ?1 ORDER BY gen, id")
                .map_err(db_err)?;
            let mut rows = stmt.query([floor]).map_err(db_err)?;
            while let Some(row) = rows.next().map_err(db_err)? {
                let sid: u32 = row.get(0).map_err(db_err)?;
                let blob: Vec<u8> = row.get(1).map_err(db_err)?;
                per_series.entry(sid).or_default().push(codec::decode(&blob).map_err(other)?);
            }
        }
        for (sid, parts) in per_series {
            let Some((hid, process)) = cat.series.get(&sid) else { continue };
            let Some(h) = cat.by_id.get(hid) else { continue };
            let merged = merge_columns(parts, floor, TsMs::MAX);
            let mut idx = h.index.write();
            idx.cap = self.window_cap(h.state.lock().interval_ms);
            for i in 0..merged.len() {
                idx.upsert(
                    process,
                    merged.ts[i],
                    merged.cpu[i],
                    merged.cores[i],
                    merged.mem[i],
                    merged.rss[i],
                    merged.count[i],
                );
            }
        }
        let mut stmt = w.conn.prepare("SELECT data FROM head ORDER BY id").map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        let mut recs = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            recs.clear();
            let blob = blob_at(row, 0)?;
            decode_head(blob, &mut recs).map_err(other)?;
            // One batch is one host: lock its index once per row.
            let Some(h) = recs
                .first()
                .and_then(|r| cat.series.get(&r.sid))
                .and_then(|(hid, _)| cat.by_id.get(hid))
            else {
                continue;
            };
            let mut idx = h.index.write();
            idx.cap = self.window_cap(h.state.lock().interval_ms);
            for r in &recs {
                if r.ts < floor {
                    continue;
                }
                let Some((hid, process)) = cat.series.get(&r.sid) else { continue };
                if *hid != h.id {
                    continue; // never written so; a head row holds one host's samples
                }
                idx.upsert(process, r.ts, r.cpu, r.cores, r.mem, r.rss, r.count);
            }
        }
        Ok(())
    }
}
