//! One series' samples in the in-memory recent window (`Ring`), and read access to sample
//! columns in memory or decoded from disk (`View`).
//!
//! Memory per sample, lossless either way: **16 bytes** when the sample has an agent's
//! precision and usual magnitudes, 40 bytes otherwise. An agent sends cpu and mem in
//! thousandths of a percent and cores in hundred-thousandths (`procwatch_model::precision`),
//! and rss in whole pages; such a value `v` is kept as the integer `n` with `n / scale == v`
//! **bit for bit** (checked when it is written, so it is exact by construction whatever the
//! client sent). A narrow sample is four u32 words (`Buf::Narrow`): cpu (17 bits, up to
//! 131.071 %), mem (17 bits), cores (22 bits, up to 41.94303) and the count (8 bits, up to
//! 255) packed in two, rss in 4 KiB pages, and the timestamp as an offset from the ring's
//! base. The first sample of a series that does not fit (a client of its own, an older agent,
//! a hostile batch, a process on more than 41 cores or a group of more than 255) turns its ring
//! wide: cpu, cores and mem as f64, rss as u64, offset and count packed in one word
//! (`Buf::Wide`), what every ring was before. Queries
//! answer exactly what was written (min, max, last and the raw window are compared bit for bit
//! with the reference store), so a narrow ring's values are decoded, not approximated. A series
//! is one allocation sized from its host's interval and the window (see `HostIndex::cap`).
//! The timestamp offset fits: memory holds only `[floor, now + 5 min]`, minutes, and the base
//! moves up at every eviction.

use procwatch_model::precision::{CORES_SCALE, PERCENT_SCALE};
use procwatch_model::TsMs;
use std::ops::Range;

use crate::codec::Columns;

/// The value columns, in [`View::values`]' numbering.
pub const CPU: usize = 0;
pub const CORES: usize = 1;
pub const MEM: usize = 2;

/// Read access to sample columns, in memory (`RingCols`) or decoded from disk (`Columns`).
pub trait View {
    fn ts_at(&self, i: usize) -> TsMs;
    /// Value `k` ([`CPU`], [`CORES`], [`MEM`]) of sample `i`.
    fn value_at(&self, k: usize, i: usize) -> f64;
    /// Values `k` of the samples `r`: the column itself where it is stored as f64, else
    /// decoded into `buf`.
    fn values<'a>(&'a self, k: usize, r: Range<usize>, buf: &'a mut Vec<f64>) -> &'a [f64];
    fn rss_at(&self, i: usize) -> u64;
    fn count_at(&self, i: usize) -> u32;
}

impl Columns {
    fn col(&self, k: usize) -> &[f64] {
        match k {
            CPU => &self.cpu,
            CORES => &self.cores,
            _ => &self.mem,
        }
    }
}

impl View for Columns {
    fn ts_at(&self, i: usize) -> TsMs {
        self.ts[i]
    }
    fn value_at(&self, k: usize, i: usize) -> f64 {
        self.col(k)[i]
    }
    fn values<'a>(&'a self, k: usize, r: Range<usize>, _: &'a mut Vec<f64>) -> &'a [f64] {
        &self.col(k)[r]
    }
    fn rss_at(&self, i: usize) -> u64 {
        self.rss[i]
    }
    fn count_at(&self, i: usize) -> u32 {
        self.count[i]
    }
}

/// The page size rss is counted in by a narrow ring.
const PAGE: u64 = 4096;
/// Scales of cpu, cores and mem in a narrow ring.
const SCALES: [f64; 3] = [PERCENT_SCALE, CORES_SCALE, PERCENT_SCALE];

/// `v` as the integer `n` (as u32 bits of an i32) with `n / scale == v` bit for bit, if any.
fn narrow(v: f64, scale: f64) -> Option<u32> {
    let n = (v * scale).round();
    // NaN and out-of-range values fail here; -0.0 fails the bit comparison.
    if n.is_nan() || n.abs() > f64::from(i32::MAX) {
        return None;
    }
    let n = n as i32;
    (widen(n as u32, scale).to_bits() == v.to_bits()).then_some(n as u32)
}

fn widen(n: u32, scale: f64) -> f64 {
    f64::from(n as i32) / scale
}

/// Bit offset and width of cpu, cores and mem, then of the count, in a narrow sample's
/// packed word (64 bits: the low 32 in segment `N_LO`, the high 32 in `N_HI`).
const FIELDS: [(u32, u32); 3] = [(0, 17), (34, 22), (17, 17)];
const COUNT_FIELD: (u32, u32) = (56, 8);

fn put(packed: &mut u64, (at, bits): (u32, u32), n: u32) -> Option<()> {
    (u64::from(n) >> bits == 0).then(|| *packed |= u64::from(n) << at)
}

fn get(packed: u64, (at, bits): (u32, u32)) -> u32 {
    ((packed >> at) & ((1 << bits) - 1)) as u32
}

/// One sample in a narrow ring's words, if it fits: the packed word's low and high halves
/// (cpu, cores, mem, count) and the rss pages.
fn narrow_sample(vals: [f64; 3], rss: u64, count: u32) -> Option<[u32; 3]> {
    if !rss.is_multiple_of(PAGE) {
        return None;
    }
    let pages = u32::try_from(rss / PAGE).ok()?;
    let mut packed = 0u64;
    for ((v, scale), field) in vals.into_iter().zip(SCALES).zip(FIELDS) {
        // A negative value's u32 bits are far above any field's width.
        put(&mut packed, field, narrow(v, scale)?)?;
    }
    put(&mut packed, COUNT_FIELD, count)?;
    Some([packed as u32, (packed >> 32) as u32, pages])
}

/// Narrow segments (u32 words, each `cap` long): the packed word's low and high halves, rss
/// pages, ts offset.
const N_LO: usize = 0;
const N_HI: usize = 1;
const N_RSS: usize = 2;
const N_TS: usize = 3;
const N_SEGMENTS: usize = 4;

/// The packed word of sample `i` of a narrow buffer of capacity `c`.
fn packed_at(b: &[u32], c: usize, i: usize) -> u64 {
    u64::from(b[N_LO * c + i]) | u64::from(b[N_HI * c + i]) << 32
}

/// Value `k` of sample `i` of a narrow buffer of capacity `c`.
fn narrow_value(b: &[u32], c: usize, k: usize, i: usize) -> f64 {
    widen(get(packed_at(b, c, i), FIELDS[k]), SCALES[k])
}
/// Wide segments (f64 words; rss and meta as bit patterns, which `to_bits`/`from_bits`
/// round-trip): cpu, cores, mem, rss, `(ts - base) << 32 | count`.
const W_RSS: usize = 3;
const W_META: usize = 4;
const W_SEGMENTS: usize = 5;

/// A ring's buffer: narrow or wide (see the module's documentation).
#[derive(Debug, Clone)]
enum Buf {
    Narrow(Box<[u32]>),
    Wide(Box<[f64]>),
}

impl Default for Buf {
    fn default() -> Self {
        Buf::Narrow(Box::default())
    }
}

/// The columns of one series in one buffer: segments of `cap` words, the first `len` of each
/// used.
#[derive(Debug, Default, Clone)]
pub struct RingCols {
    base: TsMs,
    len: u32,
    cap: u32,
    buf: Buf,
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

    /// Whether the ring keeps 16 bytes a sample (every sample it holds has an agent's
    /// precision).
    pub fn is_narrow(&self) -> bool {
        matches!(self.buf, Buf::Narrow(_))
    }

    /// Heap bytes a sample takes in this ring.
    fn sample_bytes(&self) -> usize {
        match self.buf {
            Buf::Narrow(_) => N_SEGMENTS * 4,
            Buf::Wide(_) => W_SEGMENTS * 8,
        }
    }

    /// The timestamp offset of sample `i` from `base`.
    fn offset(&self, i: usize) -> u32 {
        let c = self.capacity();
        match &self.buf {
            Buf::Narrow(b) => b[N_TS * c + i],
            Buf::Wide(b) => (b[W_META * c + i].to_bits() >> 32) as u32,
        }
    }

    /// Writes sample `i`; a value that does not fit a narrow ring turns it wide first.
    fn set(&mut self, i: usize, ts: TsMs, vals: [f64; 3], rss: u64, count: u32) {
        let dt = (ts - self.base) as u64;
        let narrow = match self.buf {
            Buf::Narrow(_) => narrow_sample(vals, rss, count),
            Buf::Wide(_) => None,
        };
        if narrow.is_none() && self.is_narrow() {
            self.resize(self.capacity(), true);
        }
        let c = self.capacity();
        match (&mut self.buf, narrow) {
            (Buf::Narrow(b), Some(w)) => {
                for (k, x) in w.into_iter().enumerate() {
                    b[k * c + i] = x;
                }
                b[N_TS * c + i] = dt as u32;
            }
            (Buf::Wide(b), _) => {
                for (k, v) in vals.into_iter().enumerate() {
                    b[k * c + i] = v;
                }
                b[W_RSS * c + i] = f64::from_bits(rss);
                b[W_META * c + i] = f64::from_bits(dt << 32 | u64::from(count));
            }
            (Buf::Narrow(_), None) => unreachable!("turned wide above"),
        }
    }

    /// Moves to a buffer of `cap` (≥ len) samples, wide if `wide` or already wide.
    fn resize(&mut self, cap: usize, wide: bool) {
        let (old, len) = (self.capacity(), self.len());
        debug_assert!(cap >= len);
        let buf = match &self.buf {
            Buf::Narrow(b) if !wide => {
                let mut nb = vec![0u32; N_SEGMENTS * cap].into_boxed_slice();
                for k in 0..N_SEGMENTS {
                    nb[k * cap..k * cap + len].copy_from_slice(&b[k * old..k * old + len]);
                }
                Buf::Narrow(nb)
            }
            Buf::Narrow(b) => {
                let mut nb = vec![0.0; W_SEGMENTS * cap].into_boxed_slice();
                for i in 0..len {
                    for k in 0..SCALES.len() {
                        nb[k * cap + i] = narrow_value(b, old, k, i);
                    }
                    nb[W_RSS * cap + i] = f64::from_bits(u64::from(b[N_RSS * old + i]) * PAGE);
                    let count = get(packed_at(b, old, i), COUNT_FIELD);
                    let meta = u64::from(b[N_TS * old + i]) << 32 | u64::from(count);
                    nb[W_META * cap + i] = f64::from_bits(meta);
                }
                Buf::Wide(nb)
            }
            Buf::Wide(b) => {
                let mut nb = vec![0.0; W_SEGMENTS * cap].into_boxed_slice();
                for k in 0..W_SEGMENTS {
                    nb[k * cap..k * cap + len].copy_from_slice(&b[k * old..k * old + len]);
                }
                Buf::Wide(nb)
            }
        };
        self.buf = buf;
        self.cap = cap as u32;
    }

    /// Adds `by` to every timestamp offset (`by > 0`: the base moved down), or subtracts
    /// `-by` (the base moved up).
    fn move_offsets(&mut self, by: i64) {
        let (c, len) = (self.capacity(), self.len());
        match &mut self.buf {
            Buf::Narrow(b) => {
                for w in &mut b[N_TS * c..N_TS * c + len] {
                    *w = (i64::from(*w) + by) as u32;
                }
            }
            Buf::Wide(b) => {
                for w in &mut b[W_META * c..W_META * c + len] {
                    *w = f64::from_bits((w.to_bits() as i64 + (by << 32)) as u64);
                }
            }
        }
    }

    /// Index of the first sample with `ts >= t`.
    fn lower_bound(&self, t: TsMs) -> usize {
        if t <= self.base {
            return 0;
        }
        let Ok(rel) = u32::try_from(t - self.base) else { return self.len() };
        let (c, len) = (self.capacity(), self.len());
        match &self.buf {
            Buf::Narrow(b) => b[N_TS * c..N_TS * c + len].partition_point(|&w| w < rel),
            Buf::Wide(b) => b[W_META * c..W_META * c + len]
                .partition_point(|w| ((w.to_bits() >> 32) as u32) < rel),
        }
    }

    /// Moves `src..len` of every segment to `dst`.
    fn shift(&mut self, src: usize, dst: usize) {
        let (c, len) = (self.capacity(), self.len());
        match &mut self.buf {
            Buf::Narrow(b) => {
                for k in 0..N_SEGMENTS {
                    b.copy_within(k * c + src..k * c + len, k * c + dst);
                }
            }
            Buf::Wide(b) => {
                for k in 0..W_SEGMENTS {
                    b.copy_within(k * c + src..k * c + len, k * c + dst);
                }
            }
        }
    }

    /// Inserts `at` (len < cap) by shifting the tail of every segment.
    fn insert_at(&mut self, i: usize, ts: TsMs, vals: [f64; 3], rss: u64, count: u32) {
        self.shift(i, i + 1);
        self.len += 1;
        self.set(i, ts, vals, rss, count);
    }

    /// Drops the first `n` samples and moves the base up to the new first timestamp.
    fn drop_front(&mut self, n: usize) {
        self.shift(n, 0);
        self.len -= n as u32;
        if !self.is_empty() {
            let by = i64::from(self.offset(0));
            self.move_offsets(-by);
            self.base += by;
        }
    }

    /// Appends the samples `r` to `dst`.
    pub fn append_to(&self, dst: &mut Columns, r: Range<usize>) {
        dst.ts.extend(r.clone().map(|i| self.ts_at(i)));
        dst.cpu.extend(r.clone().map(|i| self.value_at(CPU, i)));
        dst.cores.extend(r.clone().map(|i| self.value_at(CORES, i)));
        dst.mem.extend(r.clone().map(|i| self.value_at(MEM, i)));
        dst.rss.extend(r.clone().map(|i| self.rss_at(i)));
        dst.count.extend(r.map(|i| self.count_at(i)));
    }
}

impl View for RingCols {
    fn ts_at(&self, i: usize) -> TsMs {
        self.base + TsMs::from(self.offset(i))
    }
    fn value_at(&self, k: usize, i: usize) -> f64 {
        let c = self.capacity();
        match &self.buf {
            Buf::Narrow(b) => narrow_value(b, c, k, i),
            Buf::Wide(b) => b[k * c + i],
        }
    }
    fn values<'a>(&'a self, k: usize, r: Range<usize>, buf: &'a mut Vec<f64>) -> &'a [f64] {
        let c = self.capacity();
        match &self.buf {
            Buf::Narrow(b) => {
                buf.clear();
                buf.extend(r.map(|i| narrow_value(b, c, k, i)));
                buf
            }
            Buf::Wide(b) => &b[k * c + r.start..k * c + r.end],
        }
    }
    fn rss_at(&self, i: usize) -> u64 {
        let c = self.capacity();
        match &self.buf {
            Buf::Narrow(b) => u64::from(b[N_RSS * c + i]) * PAGE,
            Buf::Wide(b) => b[W_RSS * c + i].to_bits(),
        }
    }
    fn count_at(&self, i: usize) -> u32 {
        let c = self.capacity();
        match &self.buf {
            Buf::Narrow(b) => get(packed_at(b, c, i), COUNT_FIELD),
            Buf::Wide(b) => b[W_META * c + i].to_bits() as u32,
        }
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
    /// most, 0 if unknown; at 10 s, a 5 min window and the defaults: 50 samples) the buffer
    /// is allocated at `cap` at once, up to `FIRST_CAP_MAX` samples (a client declaring a tiny
    /// interval must not make one sample cost a 4,096-sample buffer), so at usual intervals a
    /// series' ring is one allocation for its whole life. Growing by doubling (16, 32, then
    /// the cap) left each series' outgrown buffers behind as holes too small for the next ring: at
    /// 300,000 series glibc held 370–480 MB free inside its heaps that no trim could return
    /// (BENCHMARKS.md, "Session 11"); above `FIRST_CAP_MAX` it still doubles up to `cap`. Past a known `cap` (the
    /// floor is late: a slow maintenance pass, a burst) it grows by an eighth, so a late floor
    /// costs a few samples of headroom, not half a window; with no `cap` it grows by half.
    fn reserve_one(&mut self, cap: usize) {
        /// The most samples a ring is first allocated for (see above): 1 KB narrow, 2.5 KB wide.
        const FIRST_CAP_MAX: usize = 64;
        let len = self.c.len();
        if len < self.c.capacity() {
            return;
        }
        let target = if cap > len {
            cap.min((2 * len).max(FIRST_CAP_MAX))
        } else if cap > 0 {
            len + len / 8 + 2
        } else {
            len + len / 2 + 4
        };
        self.c.resize(target, false);
    }

    /// Gives back capacity beyond twice what is needed (after a burst, or a longer interval).
    pub(crate) fn shrink(&mut self, cap: usize) {
        let keep = cap.max(self.c.len());
        if self.c.capacity() > 2 * keep.max(4) {
            self.c.resize(keep, false);
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
            c.move_offsets(c.base - ts);
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
        self.c.capacity() * self.c.sample_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::HostIndex;
    use proptest::prelude::*;

    proptest! {
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
                .map(|i| (c.ts_at(i), (c.value_at(CPU, i).to_bits(), c.rss_at(i), c.count_at(i))))
                .collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            let mut cols = Columns::default();
            c.append_to(&mut cols, 0..c.len());
            prop_assert_eq!(cols.ts.len(), c.len());
        }
    }

    proptest! {
        /// Agent-precision samples of usual magnitudes keep a ring narrow (16 bytes a
        /// sample); the first value of any other precision, or beyond a packed field's
        /// range (negative, cpu above 131.071 %, a count above 255), turns it wide. Either
        /// way every value reads back bit for bit, through both the per-sample and the
        /// per-range reads.
        #[test]
        fn narrow_and_wide_rings_read_back_exactly(
            ops in proptest::collection::vec(
                (0i64..500, -2_000i32..140_000, 0u32..5_000_000, any::<u64>(), 0u8..40, 0u32..270),
                1..200),
        ) {
            let mut ring = Ring::default();
            let mut want = std::collections::BTreeMap::new();
            let mut all_narrow = true;
            for (dt, milli, pages, bits, op, count) in ops {
                let ts = 1_700_000_000_000 + dt * 10_000;
                if op == 0 {
                    ring.evict(ts);
                    want.retain(|&t, _| t >= ts);
                    continue;
                }
                // op 1: a value no agent sends (any bit pattern, rss not in pages).
                let (vals, rss) = if op == 1 {
                    all_narrow = false;
                    ([f64::from_bits(bits), 0.1 + 0.2, -0.0], bits)
                } else {
                    use procwatch_model::precision::{round_cores, round_percent};
                    all_narrow &= (0..=131_071).contains(&milli) && count <= 255;
                    let v = f64::from(milli) / 1e3;
                    ([v, round_cores(v / 7.0), round_percent(v / 2.0)], u64::from(pages) * 4096)
                };
                ring.upsert_cap(32, ts, vals[0], vals[1], vals[2], rss, count);
                want.insert(ts, (vals.map(f64::to_bits), rss, count));
            }
            let c = &ring.c;
            prop_assert_eq!(c.is_narrow(), all_narrow);
            let mut buf = Vec::new();
            let cols: Vec<Vec<u64>> = (0..3)
                .map(|k| c.values(k, 0..c.len(), &mut buf).iter().map(|v| v.to_bits()).collect())
                .collect();
            type Read = (TsMs, ([u64; 3], u64, u32));
            let got: Vec<Read> = (0..c.len())
                .map(|i| {
                    let v = [0, 1, 2].map(|k| c.value_at(k, i).to_bits());
                    prop_assert_eq!(v, [cols[0][i], cols[1][i], cols[2][i]]);
                    Ok((c.ts_at(i), (v, c.rss_at(i), c.count_at(i))))
                })
                .collect::<Result<_, TestCaseError>>()?;
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_ring_turns_wide_at_its_first_value_of_another_precision() {
        let mut h = HostIndex::new(0);
        h.cap = 8;
        h.upsert("p", 10, 12.345, 0.12345, 1.5, 8192, 1);
        h.upsert("p", 20, 12.346, 0.12346, 1.5, 8192, 1);
        assert!(h.series["p"].c.is_narrow());
        assert_eq!(h.series["p"].reserved_bytes(), 8 * 16);
        // 1/3 has no thousandths; every sample before it must survive the change.
        h.upsert("p", 30, 1.0 / 3.0, 0.1, 1.5, 8192, 1);
        let c = &h.series["p"].c;
        assert!(!c.is_narrow());
        assert_eq!(h.series["p"].reserved_bytes(), 8 * 40);
        let mut buf = Vec::new();
        assert_eq!(c.values(CPU, 0..3, &mut buf), &[12.345, 12.346, 1.0 / 3.0]);
        assert_eq!(c.values(CORES, 0..2, &mut buf), &[0.12345, 0.12346]);
        assert_eq!((0..3).map(|i| c.rss_at(i)).collect::<Vec<_>>(), vec![8192; 3]);
        assert_eq!((0..3).map(|i| c.ts_at(i)).collect::<Vec<_>>(), vec![10, 20, 30]);
    }

    #[test]
    fn a_ring_stays_narrow_up_to_each_packed_fields_limit_and_turns_wide_past_it() {
        // The largest value of each packed field (cpu, mem 131.071 %, cores 41.94303, count
        // 255), then one step past each: every sample reads back exactly either way.
        let top = [131.071, 41.94303, 131.071];
        let past = [(0, 131.072), (1, 41.94304), (2, 131.072)];
        const RSS_TOP: u64 = u32::MAX as u64 * 4096;
        for step in past.into_iter().map(Some).chain([None]) {
            let mut h = HostIndex::new(0);
            h.cap = 8;
            h.upsert("p", 10, top[0], top[1], top[2], RSS_TOP, 255);
            h.upsert("p", 20, 0.0, 0.0, 0.0, 0, 0);
            assert!(h.series["p"].c.is_narrow());
            let mut third = top;
            let count = match step {
                Some((k, v)) => {
                    third[k] = v;
                    255
                }
                None => 256,
            };
            h.upsert("p", 30, third[0], third[1], third[2], 4096, count);
            let c = &h.series["p"].c;
            assert!(!c.is_narrow(), "{third:?} {count}");
            let got: Vec<_> = (0..3)
                .map(|i| ([0, 1, 2].map(|k| c.value_at(k, i)), c.rss_at(i), c.count_at(i)))
                .collect();
            assert_eq!(
                got,
                vec![(top, RSS_TOP, 255), ([0.0; 3], 0, 0), (third, 4096, count)],
                "{step:?}"
            );
        }
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
        assert!(r.c.is_narrow());
        assert_eq!(r.reserved_bytes(), 110 * 16);
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
        assert_eq!(r.c.values(CPU, 0..1, &mut Vec::new()), &[2.0]);
    }

    /// A series' ring is one allocation at the window's capacity (no outgrown buffers left
    /// behind as heap holes), and a client declaring a tiny interval gets no huge buffer for
    /// one sample.
    #[test]
    fn a_ring_is_allocated_once_at_the_window_capacity_and_never_huge_at_first() {
        let mut h = HostIndex::new(0);
        h.cap = 44;
        h.upsert("p", 0, 1.0, 0.5, 0.1, 4096, 1);
        assert_eq!(h.series["p"].c.capacity(), 44);
        let ptr = |h: &HostIndex| match &h.series["p"].c.buf {
            Buf::Narrow(b) => b.as_ptr() as usize,
            Buf::Wide(b) => b.as_ptr() as usize,
        };
        let first = ptr(&h);
        for ts in 1..44 {
            h.upsert("p", ts * 10, 1.0, 0.5, 0.1, 4096, 1);
        }
        assert_eq!(ptr(&h), first, "no reallocation up to the capacity");
        h.cap = 4096;
        h.upsert("q", 0, 1.0, 0.5, 0.1, 4096, 1);
        assert_eq!(h.series["q"].reserved_bytes(), 64 * 16);
    }

    fn ts_of(r: &Ring) -> Vec<TsMs> {
        (0..r.len()).map(|i| r.c.ts_at(i)).collect()
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
        assert_eq!(r.c.values(CPU, 0..2, &mut Vec::new()), &[30.0, 40.0]);
    }
}
