//! The in-memory recent window: per host, per process, the samples with `ts >= floor` in
//! one compact buffer per series (`Ring`), plus the fast statistics the usage queries need.
//!
//! Memory per sample: 40 bytes, lossless (cpu, cores, mem as f64; rss as u64; the timestamp
//! as a u32 offset from the ring's base and the count as u32, packed in one word). A series is
//! one allocation sized from its host's interval and the window (see `HostIndex::cap`), not
//! six growing vectors: 32 bytes of ring header plus `5 × cap` words. Values stay f64 because
//! queries answer exactly what was written (min, max, last, and the raw window are compared
//! bit for bit with the reference store). The timestamp offset fits: memory holds only
//! `[floor, now + 5 min]`, minutes, and the base moves up at every eviction.

use std::collections::BTreeMap;

use procwatch_model::TsMs;
use std::ops::Range;

use procwatch_store::{Stats, UsageNeeds, UsageRow};

use crate::codec::Columns;

/// Read access to sample columns, in memory (`RingCols`) or decoded from disk (`Columns`).
pub trait View {
    fn ts_at(&self, i: usize) -> TsMs;
    fn cpu(&self) -> &[f64];
    fn cores(&self) -> &[f64];
    fn mem(&self) -> &[f64];
    fn rss_at(&self, i: usize) -> u64;
    fn count_at(&self, i: usize) -> u32;
}

impl View for Columns {
    fn ts_at(&self, i: usize) -> TsMs {
        self.ts[i]
    }
    fn cpu(&self) -> &[f64] {
        &self.cpu
    }
    fn cores(&self) -> &[f64] {
        &self.cores
    }
    fn mem(&self) -> &[f64] {
        &self.mem
    }
    fn rss_at(&self, i: usize) -> u64 {
        self.rss[i]
    }
    fn count_at(&self, i: usize) -> u32 {
        self.count[i]
    }
}

/// Column segments of the buffer, each `cap` words long.
const CPU: usize = 0;
const CORES: usize = 1;
const MEM: usize = 2;
const RSS: usize = 3;
/// `(ts - base) << 32 | count`, as f64 bits.
const META: usize = 4;
const SEGMENTS: usize = 5;

/// The columns of one series in one buffer: `SEGMENTS` segments of `cap` words, the first
/// `len` of each used. rss and the packed (ts offset, count) are stored as f64 bit patterns
/// (`to_bits`/`from_bits` round-trip every pattern).
#[derive(Debug, Default, Clone)]
pub struct RingCols {
    base: TsMs,
    len: u32,
    cap: u32,
    buf: Box<[f64]>,
}

impl RingCols {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    fn seg(&self, k: usize) -> &[f64] {
        let c = self.capacity();
        &self.buf[k * c..k * c + self.len()]
    }

    fn meta(&self, i: usize) -> u64 {
        self.buf[META * self.capacity() + i].to_bits()
    }

    fn set(&mut self, i: usize, ts: TsMs, vals: [f64; 3], rss: u64, count: u32) {
        let c = self.capacity();
        let dt = (ts - self.base) as u64;
        self.buf[CPU * c + i] = vals[0];
        self.buf[CORES * c + i] = vals[1];
        self.buf[MEM * c + i] = vals[2];
        self.buf[RSS * c + i] = f64::from_bits(rss);
        self.buf[META * c + i] = f64::from_bits(dt << 32 | u64::from(count));
    }

    /// Moves to a buffer of `cap` (≥ len) samples.
    fn resize(&mut self, cap: usize) {
        let (old, len) = (self.capacity(), self.len());
        debug_assert!(cap >= len);
        let mut buf = vec![0.0; SEGMENTS * cap].into_boxed_slice();
        for k in 0..SEGMENTS {
            buf[k * cap..k * cap + len].copy_from_slice(&self.buf[k * old..k * old + len]);
        }
        self.buf = buf;
        self.cap = cap as u32;
    }

    /// Adds `by` to every timestamp offset (the base moved down by `by`).
    fn shift_offsets(&mut self, by: u64) {
        let c = self.capacity();
        let len = self.len();
        for w in &mut self.buf[META * c..META * c + len] {
            *w = f64::from_bits(w.to_bits() + (by << 32));
        }
    }

    /// Index of the first sample with `ts >= t`.
    fn lower_bound(&self, t: TsMs) -> usize {
        if t <= self.base {
            return 0;
        }
        let Ok(rel) = u32::try_from(t - self.base) else { return self.len() };
        let c = self.capacity();
        self.buf[META * c..META * c + self.len()]
            .partition_point(|w| ((w.to_bits() >> 32) as u32) < rel)
    }

    /// Inserts `at` (len < cap) by shifting the tail of every segment.
    fn insert_at(&mut self, i: usize, ts: TsMs, vals: [f64; 3], rss: u64, count: u32) {
        let (c, len) = (self.capacity(), self.len());
        for k in 0..SEGMENTS {
            self.buf.copy_within(k * c + i..k * c + len, k * c + i + 1);
        }
        self.len += 1;
        self.set(i, ts, vals, rss, count);
    }

    /// Drops the first `n` samples and moves the base up to the new first timestamp.
    fn drop_front(&mut self, n: usize) {
        let (c, len) = (self.capacity(), self.len());
        for k in 0..SEGMENTS {
            self.buf.copy_within(k * c + n..k * c + len, k * c);
        }
        self.len -= n as u32;
        if let Some(first) = (!self.is_empty()).then(|| self.ts_at(0)) {
            let by = (first - self.base) as u64;
            let len = self.len();
            for w in &mut self.buf[META * c..META * c + len] {
                *w = f64::from_bits(w.to_bits() - (by << 32));
            }
            self.base = first;
        }
    }

    /// Appends the samples `r` to `dst`.
    pub fn append_to(&self, dst: &mut Columns, r: Range<usize>) {
        dst.ts.extend(r.clone().map(|i| self.ts_at(i)));
        dst.cpu.extend_from_slice(&self.seg(CPU)[r.clone()]);
        dst.cores.extend_from_slice(&self.seg(CORES)[r.clone()]);
        dst.mem.extend_from_slice(&self.seg(MEM)[r.clone()]);
        dst.rss.extend(r.clone().map(|i| self.rss_at(i)));
        dst.count.extend(r.map(|i| self.count_at(i)));
    }
}

impl View for RingCols {
    fn ts_at(&self, i: usize) -> TsMs {
        self.base + (self.meta(i) >> 32) as TsMs
    }
    fn cpu(&self) -> &[f64] {
        self.seg(CPU)
    }
    fn cores(&self) -> &[f64] {
        self.seg(CORES)
    }
    fn mem(&self) -> &[f64] {
        self.seg(MEM)
    }
    fn rss_at(&self, i: usize) -> u64 {
        self.buf[RSS * self.capacity() + i].to_bits()
    }
    fn count_at(&self, i: usize) -> u32 {
        self.meta(i) as u32
    }
}

/// Samples of one series with `ts >= floor` of its host, sorted by `ts`, unique `ts`.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    pub c: RingCols,
}

impl Ring {
    /// Inserts or replaces the sample at `s.ts`, growing the buffer the default way.
    #[cfg(test)]
    pub fn upsert(&mut self, ts: TsMs, cpu: f64, cores: f64, mem: f64, rss: u64, count: u32) {
        self.upsert_cap(0, ts, cpu, cores, mem, rss, count);
    }

    /// Makes room for one more sample. Below `cap` (what the window is expected to hold at
    /// most, 0 if unknown) the buffer doubles from 16 but stops exactly at `cap` instead of
    /// the next power of two (at 10 s and a 5 min window: 68 samples). Past a known `cap` (the
    /// floor is late: a slow maintenance pass, a burst) it grows by an eighth, so a late floor
    /// costs a few samples of headroom, not half a window; with no `cap` it grows by half.
    /// Never more than plain doubling would reserve.
    fn reserve_one(&mut self, cap: usize) {
        let len = self.c.len();
        if len < self.c.capacity() {
            return;
        }
        let target = if cap > len {
            cap.min((2 * len).max(16))
        } else if cap > 0 {
            len + len / 8 + 2
        } else {
            len + len / 2 + 4
        };
        self.c.resize(target);
    }

    /// Gives back capacity beyond twice what is needed (after a burst, or a longer interval).
    fn shrink(&mut self, cap: usize) {
        let keep = cap.max(self.c.len());
        if self.c.capacity() > 2 * keep.max(4) {
            self.c.resize(keep);
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
        let vals = [cpu, cores, mem];
        let c = &mut self.c;
        if c.is_empty() {
            c.base = ts;
        } else if ts < c.base {
            c.shift_offsets((c.base - ts) as u64);
            c.base = ts;
        }
        debug_assert!(ts - c.base <= i64::from(u32::MAX), "a ring spans less than 49 days");
        let n = c.len();
        if n == 0 || ts > c.ts_at(n - 1) {
            self.reserve_one(cap);
            self.c.insert_at(n, ts, vals, rss, count);
            return;
        }
        let i = c.lower_bound(ts);
        if i < n && c.ts_at(i) == ts {
            c.set(i, ts, vals, rss, count);
        } else {
            self.reserve_one(cap);
            self.c.insert_at(i, ts, vals, rss, count);
        }
    }

    pub fn len(&self) -> usize {
        self.c.len()
    }

    /// Heap bytes reserved by the buffer.
    pub fn reserved_bytes(&self) -> usize {
        self.c.capacity() * SEGMENTS * 8
    }

    /// Drops samples with `ts < floor`.
    pub fn evict(&mut self, floor: TsMs) {
        let k = self.c.lower_bound(floor);
        if k > 0 {
            self.c.drop_front(k);
        }
    }

    /// Index range of `from <= ts < to`.
    pub fn range(&self, from: TsMs, to: TsMs) -> std::ops::Range<usize> {
        let a = self.c.lower_bound(from);
        let b = self.c.lower_bound(to).max(a);
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
    let (cpu, cores, mem) = (c.cpu(), c.cores(), c.mem());
    let mut one = |want: bool, v: &[f64]| {
        if want {
            stats_needed(&v[r.clone()], v[l], needs, &mut s.sel)
        } else {
            Stats::default()
        }
    };
    UsageRow {
        host,
        process,
        cpu: one(want_cpu, cpu),
        cores: one(want_cores, cores),
        mem: one(want_mem, mem),
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
}

impl Default for MergedAcc {
    fn default() -> Self {
        MergedAcc::new(UsageNeeds::ALL)
    }
}

impl MergedAcc {
    pub fn new(needs: UsageNeeds) -> MergedAcc {
        MergedAcc { needs, vals: Default::default(), sums: [0.0; 4], n: 0, last: None }
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
        let (cpu, cores, mem) = (c.cpu(), c.cores(), c.mem());
        for (k, v) in [cpu, cores, mem].into_iter().enumerate() {
            if !self.needs.metrics[k] {
                continue;
            }
            if self.needs.spread {
                self.vals[k].extend_from_slice(&v[r.clone()]);
            } else {
                self.sums[k] = v[r.clone()].iter().fold(self.sums[k], |a, &x| a + x);
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
            self.last = Some((ts, [cpu[l], cores[l], mem[l], c.rss_at(l) as f64], c.count_at(l)));
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

        /// Whatever the order of upserts and evictions, the ring holds exactly what a sorted
        /// map would, every value bit for bit (NaN payloads, huge rss and counts included).
        #[test]
        fn ring_matches_a_sorted_map(
            ops in proptest::collection::vec(
                (0i64..5_000, any::<u64>(), any::<u64>(), any::<u32>(), 0u8..10), 1..300),
            base in 1_700_000_000_000i64..1_800_000_000_000,
        ) {
            let mut ring = Ring::default();
            let mut want = std::collections::BTreeMap::new();
            for (dt, bits, rss, count, op) in ops {
                let ts = base + dt * 10;
                if op == 0 {
                    ring.evict(ts);
                    want.retain(|&t, _| t >= ts);
                    continue;
                }
                let v = f64::from_bits(bits);
                ring.upsert_cap(64, ts, v, -v, 1.5, rss, count);
                want.insert(ts, (bits, rss, count));
            }
            let c = &ring.c;
            let got: Vec<(TsMs, (u64, u64, u32))> = (0..c.len())
                .map(|i| (c.ts_at(i), (c.cpu()[i].to_bits(), c.rss_at(i), c.count_at(i))))
                .collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            let mut cols = Columns::default();
            c.append_to(&mut cols, 0..c.len());
            prop_assert_eq!(cols.ts.len(), c.len());
        }
    }

    fn ts_of(r: &Ring) -> Vec<TsMs> {
        (0..r.len()).map(|i| r.c.ts_at(i)).collect()
    }

    #[test]
    fn buffers_stop_growing_at_the_window_capacity() {
        let mut h = HostIndex::new(0);
        h.cap = 110;
        for ts in 0..110 {
            h.upsert("p", ts * 10, 1.0, 0.5, 0.1, 4096, 1);
        }
        let r = &h.series["p"];
        assert_eq!(r.c.capacity(), 110);
        assert_eq!(r.reserved_bytes(), 110 * 40);
        // Past the expected size (a burst, an out-of-order insert) it still grows.
        h.upsert("p", 5, 2.0, 0.5, 0.1, 4096, 1);
        h.upsert("p", 2000, 2.0, 0.5, 0.1, 4096, 1);
        let r = &h.series["p"];
        assert_eq!(r.len(), 112);
        assert!(ts_of(r).windows(2).all(|w| w[0] < w[1]));
        assert!(r.c.capacity() >= 112);
        // Eviction gives back what is far beyond the need.
        h.cap = 10;
        h.evict(1900);
        let r = &h.series["p"];
        assert_eq!(ts_of(r), vec![2000]);
        assert!(r.c.capacity() <= 20, "{}", r.c.capacity());
        assert_eq!(r.c.cpu(), &[2.0]);
    }

    #[test]
    fn ring_upsert_keeps_order_and_replaces() {
        let mut r = Ring::default();
        for ts in [30, 10, 20, 40, 20] {
            r.upsert(ts, ts as f64, 0.0, 0.0, 0, 1);
        }
        assert_eq!(ts_of(&r), vec![10, 20, 30, 40]);
        r.evict(25);
        assert_eq!(ts_of(&r), vec![30, 40]);
        assert_eq!(r.range(31, 100), 1..2);
        assert_eq!(r.range(0, 30), 0..0);
        assert_eq!(r.c.cpu(), &[30.0, 40.0]);
    }
}
