//! A ranked usage read: the first rows of a listing in one figure's order, built whole (with
//! names) only for the rows kept. A page of 50 of a 300,000-series fleet sorted by cpu mean
//! costs one figure per series and 50 named rows, instead of 300,000 rows with two names
//! each to be sorted and mostly dropped by the caller.

use std::cmp::Ordering as Cmp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use procwatch_store::{RowOrder, StoreResult, UsageNeeds, UsageQuery, UsageRow};

use crate::catalog::HostEntry;
use crate::index::{self, Scratch};
use crate::inner::Inner;
use crate::memory::par_split;
use crate::read::SeriesBufs;

/// Ranked reads keep at most this many rows (deeper pages sort the whole listing instead).
pub(crate) const TOP_MAX: usize = 10_000;

/// The best `keep` rows offered so far, ties by listing position. Rows are offered without
/// names; a row is named (its strings allocated) only when it is kept.
struct TopK<'a> {
    keep: usize,
    order: &'a RowOrder,
    buf: Vec<(UsageRow, u64)>,
    /// The worst kept row once `buf` was cut to `keep`: a row not better is not kept.
    cut: Option<(UsageRow, u64)>,
}

impl<'a> TopK<'a> {
    fn new(keep: usize, order: &'a RowOrder) -> TopK<'a> {
        TopK { keep, order, buf: Vec::new(), cut: None }
    }

    fn cmp(order: &RowOrder, a: &(UsageRow, u64), b: &(UsageRow, u64)) -> Cmp {
        order(&a.0, &b.0).then(a.1.cmp(&b.1))
    }

    /// Offers `row` at listing position `pos`; `name` gives its (host, process) if kept.
    fn offer(&mut self, row: UsageRow, pos: u64, name: impl FnOnce() -> (Option<String>, String)) {
        let cand = (row, pos);
        if self.cut.as_ref().is_some_and(|w| Self::cmp(self.order, &cand, w) != Cmp::Less) {
            return;
        }
        let (mut row, pos) = cand;
        (row.host, row.process) = name();
        self.buf.push((row, pos));
        if self.buf.len() >= 2 * self.keep.max(64) {
            self.cut_to_keep();
        }
    }

    fn cut_to_keep(&mut self) {
        if self.buf.len() <= self.keep {
            return;
        }
        let order = self.order;
        self.buf.select_nth_unstable_by(self.keep - 1, |a, b| Self::cmp(order, a, b));
        self.buf.truncate(self.keep);
        self.cut = self.buf.iter().max_by(|a, b| Self::cmp(order, a, b)).cloned();
    }

    fn merge(&mut self, other: TopK<'_>) {
        self.buf.extend(other.buf);
        self.cut_to_keep();
    }

    fn into_sorted(mut self) -> Vec<UsageRow> {
        self.cut_to_keep();
        let order = self.order;
        self.buf.sort_unstable_by(|a, b| Self::cmp(order, a, b));
        self.buf.into_iter().map(|(r, _)| r).collect()
    }
}

impl Inner {
    /// `Storage::usage_top`: per-host rows, positions as `usage` lists them (hosts by name, then
    /// processes). A host whose memory covers the range is ranked from its rings; one whose
    /// range reaches below its memory floor, from its chunks and memory a series at a time
    /// (`each_series`). `None` (the caller sorts the listing) for merged rows, one process,
    /// or a page deeper than `TOP_MAX`.
    pub(crate) fn usage_top(
        &self,
        q: &UsageQuery,
        needs: UsageNeeds,
        order: &RowOrder,
        keep: usize,
        stop: &AtomicBool,
    ) -> StoreResult<Option<(Vec<UsageRow>, usize)>> {
        if !q.per_host || q.process.is_some() || keep == 0 || keep > TOP_MAX {
            return Ok(None);
        }
        let from = q.from.max(self.retention_floor.load(Ordering::SeqCst));
        let to = q.to;
        if from >= to {
            return Ok(Some((Vec::new(), 0)));
        }
        let hosts: Vec<(usize, Arc<HostEntry>)> = {
            let cat = self.catalog.read();
            match &q.host {
                Some(h) => cat.hosts.get(h).cloned().into_iter().enumerate().collect(),
                None => cat.hosts.values().cloned().enumerate().collect(),
            }
        };
        let parts = par_split(&hosts, hosts.len() >= 8, |hs| {
            let mut top = TopK::new(keep, order);
            let mut scratch = Scratch::default();
            let mut bufs = SeriesBufs::default();
            let mut total = 0usize;
            for (hi, h) in hs {
                {
                    let idx = h.index.read();
                    if idx.floor <= from {
                        for (si, (p, ring)) in idx.series.iter().enumerate() {
                            let r = ring.range(from, to);
                            if r.is_empty() {
                                continue;
                            }
                            total += 1;
                            let row =
                                index::row_of(&ring.c, r, None, String::new(), &mut scratch, needs);
                            let pos = (*hi as u64) << 32 | si as u64;
                            top.offer(row, pos, || (Some(h.name.clone()), p.clone()));
                        }
                        continue;
                    }
                }
                // The range reaches below the host's memory: its chunks too, a series at a
                // time. Positions are the catalog's order, which is the listing's (by name).
                let sels = self.select(Some(&h.name), None);
                let done = self.each_series(&sels, from, to, &mut bufs, stop, |si, s, c| {
                    if c.is_empty() {
                        return;
                    }
                    total += 1;
                    let row =
                        index::row_of(c, 0..c.len(), None, String::new(), &mut scratch, needs);
                    let pos = (*hi as u64) << 32 | si as u64;
                    top.offer(row, pos, || (Some(h.name.clone()), s.process.clone()));
                });
                if let Err(e) = done {
                    return Some(vec![Err(e)]);
                }
            }
            Some(vec![Ok((top.buf, total))])
        })
        .expect("every part answers");
        let mut top = TopK::new(keep, order);
        let mut total = 0;
        for part in parts {
            let (buf, n) = part?;
            top.merge(TopK { keep, order, buf, cut: None });
            total += n;
        }
        Ok(Some((top.into_sorted(), total)))
    }
}
