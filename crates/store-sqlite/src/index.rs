//! The in-memory recent window: per host, per process, the samples with `ts >= floor` in
//! columns (`Ring`), plus the fast statistics the usage queries need.

use std::collections::BTreeMap;

use procwatch_model::TsMs;
use std::ops::Range;

use procwatch_store::{Stats, UsageRow};

use crate::codec::Columns;

/// Samples of one series with `ts >= floor` of its host, sorted by `ts`, unique `ts`.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    pub c: Columns,
}

impl Ring {
    /// Inserts or replaces the sample at `s.ts`, growing the columns the default way.
    #[cfg(test)]
    pub fn upsert(&mut self, ts: TsMs, cpu: f64, cores: f64, mem: f64, rss: u64, count: u32) {
        self.upsert_cap(0, ts, cpu, cores, mem, rss, count);
    }

    /// Makes room for one more sample. Below `cap` (what the window is expected to hold at
    /// most, 0 if unknown) the columns double from 16 but stop exactly at `cap` instead of
    /// the next power of two (at 10 s: 110 samples, not 128; at 2 s: 632, not 1,024); past
    /// it they grow by half. Never more than plain doubling would reserve.
    fn reserve_one(&mut self, cap: usize) {
        let len = self.c.len();
        if len < self.c.ts.capacity() {
            return;
        }
        let target = if cap > len { cap.min((2 * len).max(16)) } else { len + len / 2 + 4 };
        let extra = target - len;
        let c = &mut self.c;
        c.ts.reserve_exact(extra);
        c.cpu.reserve_exact(extra);
        c.cores.reserve_exact(extra);
        c.mem.reserve_exact(extra);
        c.rss.reserve_exact(extra);
        c.count.reserve_exact(extra);
    }

    /// Gives back capacity beyond twice what is needed (after a burst, or a longer interval).
    fn shrink(&mut self, cap: usize) {
        let keep = cap.max(self.c.len());
        if self.c.ts.capacity() > 2 * keep.max(4) {
            let c = &mut self.c;
            c.ts.shrink_to(keep);
            c.cpu.shrink_to(keep);
            c.cores.shrink_to(keep);
            c.mem.shrink_to(keep);
            c.rss.shrink_to(keep);
            c.count.shrink_to(keep);
        }
    }

    /// Inserts or replaces the sample at `ts`; `cap` as in `reserve_one`.
    #[allow(clippy::too_many_arguments)]
    pub fn upsert_cap(
        &mut self,
        cap: usize,
        ts: TsMs,
        cpu: f64,
        cores: f64,
        mem: f64,
        rss: u64,
        count: u32,
    ) {
        if self.c.ts.last().is_none_or(|&l| ts > l) {
            self.reserve_one(cap);
            self.c.push(ts, cpu, cores, mem, rss, count);
            return;
        }
        match self.c.ts.binary_search(&ts) {
            Ok(i) => {
                let c = &mut self.c;
                c.cpu[i] = cpu;
                c.cores[i] = cores;
                c.mem[i] = mem;
                c.rss[i] = rss;
                c.count[i] = count;
            }
            Err(i) => {
                self.reserve_one(cap);
                let c = &mut self.c;
                c.ts.insert(i, ts);
                c.cpu.insert(i, cpu);
                c.cores.insert(i, cores);
                c.mem.insert(i, mem);
                c.rss.insert(i, rss);
                c.count.insert(i, count);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.c.len()
    }

    /// Heap bytes reserved by the columns.
    pub fn reserved_bytes(&self) -> usize {
        let c = &self.c;
        (c.ts.capacity()
            + c.cpu.capacity()
            + c.cores.capacity()
            + c.mem.capacity()
            + c.rss.capacity())
            * 8
            + c.count.capacity() * 4
    }

    /// Drops samples with `ts < floor`.
    pub fn evict(&mut self, floor: TsMs) {
        let k = self.c.ts.partition_point(|&t| t < floor);
        if k > 0 {
            let c = &mut self.c;
            c.ts.drain(..k);
            c.cpu.drain(..k);
            c.cores.drain(..k);
            c.mem.drain(..k);
            c.rss.drain(..k);
            c.count.drain(..k);
        }
    }

    /// Index range of `from <= ts < to`.
    pub fn range(&self, from: TsMs, to: TsMs) -> std::ops::Range<usize> {
        let a = self.c.ts.partition_point(|&t| t < from);
        let b = self.c.ts.partition_point(|&t| t < to).max(a);
        a..b
    }
}

/// The recent samples of one host.
#[derive(Debug, Default)]
pub struct HostIndex {
    /// Every sample of this host with `ts >= floor` is here (and only those).
    pub floor: TsMs,
    pub series: BTreeMap<String, Ring>,
    /// Samples a series of this host is expected to hold at most (from its interval; 0 if
    /// unknown): the capacity its columns are reserved at.
    pub cap: usize,
}

impl HostIndex {
    pub fn new(floor: TsMs) -> HostIndex {
        HostIndex { floor, series: BTreeMap::new(), cap: 0 }
    }

    /// Inserts or replaces the sample of `process` at `ts`.
    #[allow(clippy::too_many_arguments)]
    pub fn upsert(
        &mut self,
        process: &str,
        ts: TsMs,
        cpu: f64,
        cores: f64,
        mem: f64,
        rss: u64,
        count: u32,
    ) {
        let ring = match self.series.get_mut(process) {
            Some(r) => r,
            None => self.series.entry(process.to_owned()).or_default(),
        };
        ring.upsert_cap(self.cap, ts, cpu, cores, mem, rss, count);
    }

    pub fn evict(&mut self, floor: TsMs) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        let cap = self.cap;
        self.series.retain(|_, r| {
            r.evict(floor);
            r.shrink(cap);
            !r.c.is_empty()
        });
    }
}

/// Ranks of numpy's linear 95th percentile over `n ≥ 2` values: (lo, hi, frac).
fn p95_ranks(n: usize) -> (usize, usize, f64) {
    let rank = 0.95 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    (lo, rank.ceil() as usize, rank - lo as f64)
}

/// One pass over `vals` (n ≥ 2): sum, min, max, and — when the p95 rank is among the 16
/// largest — the two values around it, from a small descending top-k array.
fn one_pass(vals: &[f64], lo: usize, hi: usize) -> (f64, f64, f64, Option<(f64, f64)>) {
    let n = vals.len();
    let k = n - lo; // sorted[lo] is the k-th largest
    let mut sum = 0.0;
    let mut min = f64::INFINITY;
    if k <= 16 {
        let mut top = [f64::NEG_INFINITY; 16];
        for (j, &x) in vals.iter().enumerate() {
            sum += x;
            if x < min {
                min = x;
            }
            if j < k || top[k - 1] < x {
                let mut i = if j < k { j } else { k - 1 };
                while i > 0 && top[i - 1] < x {
                    top[i] = top[i - 1];
                    i -= 1;
                }
                top[i] = x;
            }
        }
        let a = top[k - 1];
        (sum, min, top[0], Some((a, if hi == lo { a } else { top[k - 2] })))
    } else {
        let mut max = f64::NEG_INFINITY;
        for &x in vals {
            sum += x;
            if x < min {
                min = x;
            }
            if x > max {
                max = x;
            }
        }
        (sum, min, max, None)
    }
}

/// sorted[lo] and sorted[hi] (hi ∈ {lo, lo + 1}) by selection; reorders `v`.
fn select_pair(v: &mut [f64], lo: usize, hi: usize) -> (f64, f64) {
    let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    let b = if hi == lo { a } else { rest.iter().copied().fold(f64::INFINITY, f64::min) };
    (a, b)
}

/// Statistics of `vals` (time order; `last` is the value at the newest timestamp). Values are
/// finite (the store refuses others). `scratch` is only used when the p95 rank is far from
/// the top.
pub fn stats_of(vals: &[f64], last: f64, scratch: &mut Vec<f64>) -> Stats {
    let n = vals.len();
    if n <= 1 {
        let v = vals.first().copied().unwrap_or(0.0);
        return if n == 0 {
            Stats::default()
        } else {
            Stats { mean: v, min: v, max: v, last, p95: v }
        };
    }
    let (lo, hi, frac) = p95_ranks(n);
    let (sum, min, max, pair) = one_pass(vals, lo, hi);
    let (a, b) = pair.unwrap_or_else(|| {
        scratch.clear();
        scratch.extend_from_slice(vals);
        select_pair(scratch, lo, hi)
    });
    Stats { mean: sum / n as f64, min, max, last, p95: a + (b - a) * frac }
}

/// `stats_of` for values the caller no longer needs in order: selects in place.
pub fn stats_of_mut(vals: &mut [f64], last: f64) -> Stats {
    let n = vals.len();
    if n <= 1 {
        return stats_of(vals, last, &mut Vec::new());
    }
    let (lo, hi, frac) = p95_ranks(n);
    let (sum, min, max, pair) = one_pass(vals, lo, hi);
    let (a, b) = pair.unwrap_or_else(|| select_pair(vals, lo, hi));
    Stats { mean: sum / n as f64, min, max, last, p95: a + (b - a) * frac }
}

/// Reusable buffers of one query.
#[derive(Debug, Default)]
pub struct Scratch {
    sel: Vec<f64>,
    rss: Vec<f64>,
}

/// The usage row of `c[r]` (non-empty), straight from the columns.
pub fn row_of(
    c: &Columns,
    r: Range<usize>,
    host: Option<String>,
    process: String,
    s: &mut Scratch,
) -> UsageRow {
    let l = r.end - 1;
    s.rss.clear();
    s.rss.extend(c.rss[r.clone()].iter().map(|&x| x as f64));
    let rss = stats_of(&s.rss, c.rss[l] as f64, &mut s.sel);
    UsageRow {
        host,
        process,
        cpu: stats_of(&c.cpu[r.clone()], c.cpu[l], &mut s.sel),
        cores: stats_of(&c.cores[r.clone()], c.cores[l], &mut s.sel),
        mem: stats_of(&c.mem[r.clone()], c.mem[l], &mut s.sel),
        rss,
        count: c.count[l],
        samples: r.len() as u64,
        last_ts: c.ts[l],
    }
}

/// Accumulates the samples of several series (hosts) into one merged usage row.
#[derive(Debug, Default)]
pub struct MergedAcc {
    cpu: Vec<f64>,
    cores: Vec<f64>,
    mem: Vec<f64>,
    rss: Vec<f64>,
    last: Option<(TsMs, [f64; 4], u32)>,
}

impl MergedAcc {
    pub fn clear(&mut self) {
        self.cpu.clear();
        self.cores.clear();
        self.mem.clear();
        self.rss.clear();
        self.last = None;
    }

    pub fn is_empty(&self) -> bool {
        self.cpu.is_empty()
    }

    /// Adds `c[r]`; on a tie of the newest timestamp the later call wins `last`.
    pub fn add(&mut self, c: &Columns, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        self.cpu.extend_from_slice(&c.cpu[r.clone()]);
        self.cores.extend_from_slice(&c.cores[r.clone()]);
        self.mem.extend_from_slice(&c.mem[r.clone()]);
        self.rss.extend(c.rss[r.clone()].iter().map(|&x| x as f64));
        let l = r.end - 1;
        if self.last.is_none_or(|(t, _, _)| c.ts[l] >= t) {
            self.last =
                Some((c.ts[l], [c.cpu[l], c.cores[l], c.mem[l], c.rss[l] as f64], c.count[l]));
        }
    }

    /// The merged row; leaves the buffers reordered (call `clear` before reuse).
    pub fn finish(&mut self, process: String) -> UsageRow {
        let (last_ts, last, count) = self.last.unwrap_or((0, [0.0; 4], 0));
        UsageRow {
            host: None,
            process,
            samples: self.cpu.len() as u64,
            cpu: stats_of_mut(&mut self.cpu, last[0]),
            cores: stats_of_mut(&mut self.cores, last[1]),
            mem: stats_of_mut(&mut self.mem, last[2]),
            rss: stats_of_mut(&mut self.rss, last[3]),
            count,
            last_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn p95_matches_the_reference(v in proptest::collection::vec(-1e6f64..1e6, 1..500)) {
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want = procwatch_store::agg::percentile_sorted(&sorted, 0.95);
            let st = stats_of(&v, v[v.len() - 1], &mut Vec::new());
            let mut w = v.clone();
            prop_assert_eq!(stats_of_mut(&mut w, v[v.len() - 1]), st);
            prop_assert_eq!(st.p95, want);
            prop_assert_eq!(st.min, sorted[0]);
            prop_assert_eq!(st.max, sorted[sorted.len() - 1]);
        }
    }

    #[test]
    fn columns_stop_growing_at_the_window_capacity() {
        let mut h = HostIndex::new(0);
        h.cap = 110;
        for ts in 0..110 {
            h.upsert("p", ts * 10, 1.0, 0.5, 0.1, 4096, 1);
        }
        let r = &h.series["p"];
        assert_eq!(r.c.ts.capacity(), 110);
        assert_eq!(r.reserved_bytes(), 110 * 44);
        // Past the expected size (a burst, an out-of-order insert) it still grows.
        h.upsert("p", 5, 2.0, 0.5, 0.1, 4096, 1);
        h.upsert("p", 2000, 2.0, 0.5, 0.1, 4096, 1);
        let r = &h.series["p"];
        assert_eq!(r.len(), 112);
        assert!(r.c.ts.windows(2).all(|w| w[0] < w[1]));
        assert!(r.c.cpu.capacity() >= 112 && r.c.count.capacity() >= 112);
        // Eviction gives back what is far beyond the need.
        h.cap = 10;
        h.evict(1900);
        let r = &h.series["p"];
        assert_eq!(r.c.ts, vec![2000]);
        assert!(r.c.ts.capacity() <= 20, "{}", r.c.ts.capacity());
        assert_eq!(r.c.cpu, vec![2.0]);
    }

    #[test]
    fn ring_upsert_keeps_order_and_replaces() {
        let mut r = Ring::default();
        for ts in [30, 10, 20, 40, 20] {
            r.upsert(ts, ts as f64, 0.0, 0.0, 0, 1);
        }
        assert_eq!(r.c.ts, vec![10, 20, 30, 40]);
        r.evict(25);
        assert_eq!(r.c.ts, vec![30, 40]);
        assert_eq!(r.range(31, 100), 1..2);
    }
}
