//! The in-memory recent window: per host, per process, the samples with `ts >= floor` in
//! one compact buffer per series (`Ring`, `crate::ring`: bit-packed at an agent's
//! precision, 40 bytes a sample otherwise, lossless either way), plus the fast statistics the usage queries
//! need.

use std::collections::BTreeMap;

use procwatch_model::TsMs;
use std::ops::Range;

use procwatch_store::{Stats, UsageNeeds, UsageRow};

pub use crate::ring::{Ring, View, CORES, CPU, MEM};

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

    /// Estimated heap bytes: every series' columns (capacities), its name, and its map entry
    /// (a B-tree entry costs about its key and value plus ≈ 1/8 of node overhead).
    pub fn estimated_bytes(&self) -> usize {
        let entry = (std::mem::size_of::<String>() + std::mem::size_of::<Ring>()) * 9 / 8;
        self.series.iter().map(|(p, r)| entry + p.capacity() + r.reserved_bytes()).sum()
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
    /// A packed ring's values, decoded.
    vals: Vec<f64>,
}

/// The sum of `vals` from 0.0, left to right: the very sum (bit for bit) that `stats_of`
/// takes its mean from, so a mean does not depend on which statistics were asked.
fn sum_in_order(vals: &[f64]) -> f64 {
    vals.iter().fold(0.0, |a, &x| a + x)
}

/// Statistics of `vals` (non-empty) as far as `needs` asks: everything with `spread`, else
/// the mean (and `last` when asked), the others left 0.
fn stats_needed(vals: &[f64], last: f64, needs: UsageNeeds, sel: &mut Vec<f64>) -> Stats {
    if needs.spread {
        return stats_of(vals, last, sel);
    }
    // As `stats_of`: one value is its own mean.
    let mean = if vals.len() == 1 { vals[0] } else { sum_in_order(vals) / vals.len() as f64 };
    Stats { mean, last: if needs.last { last } else { 0.0 }, ..Stats::default() }
}

/// The usage row of `c[r]` (non-empty), straight from the columns: the statistics of the
/// metrics `needs` names (the others 0; `count`, `samples` and `last_ts` always, they cost
/// nothing). A page of a fleet sorted by one figure reads only that figure of every series.
pub fn row_of<C: View>(
    c: &C,
    r: Range<usize>,
    host: Option<String>,
    process: String,
    s: &mut Scratch,
    needs: UsageNeeds,
) -> UsageRow {
    let l = r.end - 1;
    let [want_cpu, want_cores, want_mem, want_rss] = needs.metrics;
    let rss = if want_rss {
        s.rss.clear();
        s.rss.extend(r.clone().map(|i| c.rss_at(i) as f64));
        stats_needed(&s.rss, c.rss_at(l) as f64, needs, &mut s.sel)
    } else {
        Stats::default()
    };
    let mut one = |want: bool, k: usize| {
        if want {
            let v = c.values(k, r.clone(), &mut s.vals);
            stats_needed(v, v[v.len() - 1], needs, &mut s.sel)
        } else {
            Stats::default()
        }
    };
    UsageRow {
        host,
        process,
        cpu: one(want_cpu, CPU),
        cores: one(want_cores, CORES),
        mem: one(want_mem, MEM),
        rss,
        count: c.count_at(l),
        samples: r.len() as u64,
        last_ts: c.ts_at(l),
    }
}

/// Accumulates the samples of several series (hosts) into one merged usage row. Only the
/// metrics of its `needs` are gathered; without `spread` only their sums.
#[derive(Debug)]
pub struct MergedAcc {
    needs: UsageNeeds,
    /// Per metric (cpu, cores, mem, rss): the values (with `spread`), else their sum.
    vals: [Vec<f64>; 4],
    sums: [f64; 4],
    n: u64,
    last: Option<(TsMs, [f64; 4], u32)>,
    /// A packed ring's values, decoded.
    decoded: Vec<f64>,
}

impl Default for MergedAcc {
    fn default() -> Self {
        MergedAcc::new(UsageNeeds::ALL)
    }
}

impl MergedAcc {
    pub fn new(needs: UsageNeeds) -> MergedAcc {
        MergedAcc {
            needs,
            vals: Default::default(),
            sums: [0.0; 4],
            n: 0,
            last: None,
            decoded: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.vals.iter_mut().for_each(Vec::clear);
        self.sums = [0.0; 4];
        self.n = 0;
        self.last = None;
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Adds `c[r]`; on a tie of the newest timestamp the later call wins `last`.
    pub fn add<C: View>(&mut self, c: &C, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        for k in [CPU, CORES, MEM] {
            if !self.needs.metrics[k] {
                continue;
            }
            let v = c.values(k, r.clone(), &mut self.decoded);
            if self.needs.spread {
                self.vals[k].extend_from_slice(v);
            } else {
                self.sums[k] = v.iter().fold(self.sums[k], |a, &x| a + x);
            }
        }
        if self.needs.metrics[3] {
            if self.needs.spread {
                self.vals[3].extend(r.clone().map(|i| c.rss_at(i) as f64));
            } else {
                self.sums[3] = r.clone().fold(self.sums[3], |a, i| a + c.rss_at(i) as f64);
            }
        }
        self.n += r.len() as u64;
        let l = r.end - 1;
        let ts = c.ts_at(l);
        if self.last.is_none_or(|(t, _, _)| ts >= t) {
            let v = |k| c.value_at(k, l);
            self.last = Some((ts, [v(CPU), v(CORES), v(MEM), c.rss_at(l) as f64], c.count_at(l)));
        }
    }

    /// The merged row; leaves the buffers reordered (call `clear` before reuse).
    pub fn finish(&mut self, process: String) -> UsageRow {
        let (last_ts, last, count) = self.last.unwrap_or((0, [0.0; 4], 0));
        let needs = self.needs;
        let n = self.n as f64;
        let mut stats = [Stats::default(); 4];
        for (k, st) in stats.iter_mut().enumerate() {
            if !needs.metrics[k] {
                continue;
            }
            *st = if needs.spread {
                stats_of_mut(&mut self.vals[k], last[k])
            } else {
                let l = if needs.last { last[k] } else { 0.0 };
                // One value is its own mean, as in `stats_of` (0.0 + -0.0 is 0.0).
                let mean = if self.n == 1 { last[k] } else { self.sums[k] / n };
                Stats { mean, last: l, ..Stats::default() }
            };
        }
        let [cpu, cores, mem, rss] = stats;
        UsageRow { host: None, process, samples: self.n, cpu, cores, mem, rss, count, last_ts }
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
}
