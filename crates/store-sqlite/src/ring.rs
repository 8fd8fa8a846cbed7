//! One series' samples in the in-memory recent window (`Ring`), and read access to sample
//! columns in memory or decoded from disk (`View`).
//!
//! Memory per sample, lossless either way: **a few bytes** when the sample has an agent's
//! precision, 40 bytes otherwise. An agent sends cpu and mem in thousandths of a percent and
//! cores in hundred-thousandths (`procwatch_model::precision`), and rss in whole pages; such
//! a value `v` is kept as the integer `n` with `n / scale == v` **bit for bit** (checked when
//! it is written, so it is exact by construction whatever the client sent). Such samples are
//! bit-packed (`Buf::Packed`, `packed`): each field is kept as its offset from the series'
//! smallest value in exactly the bits its range needs, the timestamp as its residual from
//! the median step, so a quiet series (cpu moving within a few %, rss within a few MB,
//! samples 10 s apart) takes about 8 bytes a sample, where a fixed layout took 16. Any
//! magnitude fits (a field is at most 64 bits); a write that does not fit the current layout
//! re-packs the ring, and one eviction in eight refits it to what is left (the others move
//! the records' bits: `RingCols::drop_front`). The first sample of a
//! series that has no agent's precision (a client of its own, an older agent, a hostile
//! batch) turns its ring wide: cpu, cores and mem as f64, rss as u64, offset and count
//! packed in one word (`Buf::Wide`), for as long as it lives. Queries answer exactly what was
//! written (min, max, last and the raw window are compared bit for bit with the reference
//! store), so a packed ring's values are decoded, not approximated. A series is one
//! allocation sized from its host's interval and the window (see `HostIndex::cap`). A wide
//! ring's timestamp offset fits its u32: memory holds only `[floor, now + 5 min]`, minutes,
//! and the base moves up at every eviction.

use procwatch_model::precision::{CORES_SCALE, PERCENT_SCALE};
use procwatch_model::TsMs;
use std::ops::Range;

use crate::codec::Columns;

mod packed;
use packed::Rec;

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

/// The page size rss is counted in by a packed ring.
const PAGE: u64 = 4096;
/// Scales of cpu, cores and mem in a packed ring.
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

/// Wide segments (f64 words; rss and meta as bit patterns, which `to_bits`/`from_bits`
/// round-trip): cpu, cores, mem, rss, `(ts - base) << 32 | count`.
const W_RSS: usize = 3;
const W_META: usize = 4;
const W_SEGMENTS: usize = 5;

/// A ring's buffer: packed or wide (see the module's documentation).
#[derive(Debug, Clone)]
enum Buf {
    Packed(Box<[u64]>),
    Wide(Box<[f64]>),
}

impl Default for Buf {
    fn default() -> Self {
        Buf::Packed(Box::default())
    }
}

/// The samples of one series in one buffer: `cap` records (packed) or segments of `cap`
/// words (wide), the first `len` used.
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

    /// Whether the ring is bit-packed (every sample it holds has an agent's precision).
    pub fn is_packed(&self) -> bool {
        matches!(self.buf, Buf::Packed(_))
    }

    /// Heap bytes of the buffer.
    fn buffer_bytes(&self) -> usize {
        match &self.buf {
            Buf::Packed(b) => b.len() * 8,
            Buf::Wide(b) => b.len() * 8,
        }
    }

    /// The timestamp offset of sample `i` from `base`.
    fn offset(&self, i: usize) -> i64 {
        let c = self.capacity();
        match &self.buf {
            Buf::Packed(b) => packed::off_at(b, i),
            Buf::Wide(b) => (b[W_META * c + i].to_bits() >> 32) as i64,
        }
    }

    /// The packed records, if packed.
    fn records(&self) -> Option<Vec<Rec>> {
        match &self.buf {
            Buf::Packed(b) => Some(packed::decode(b, self.len())),
            Buf::Wide(_) => None,
        }
    }

    /// Writes sample `i` (`insert`: before the current `i`, with `len < cap`; else over it).
    /// A packed ring writes in place when the sample fits its layout, re-packs otherwise; a
    /// value without an agent's precision turns it wide first.
    fn write(&mut self, i: usize, insert: bool, ts: TsMs, vals: [f64; 3], rss: u64, count: u32) {
        let off = ts - self.base;
        let rec = match self.buf {
            Buf::Packed(_) => Rec::new(vals, rss, count, off),
            Buf::Wide(_) => None,
        };
        if rec.is_none() && self.is_packed() {
            self.resize(self.capacity(), true);
        }
        let (c, len) = (self.capacity(), self.len());
        match (&mut self.buf, rec) {
            (Buf::Packed(b), Some(rec)) => {
                let fast = (!insert || i == len) && packed::try_write(b, i, &rec);
                if !fast {
                    let mut recs = packed::decode(b, len);
                    match insert {
                        true => recs.insert(i, rec),
                        false => recs[i] = rec,
                    }
                    packed::pack(b, &recs, c, false);
                }
                self.len += u32::from(insert);
            }
            (Buf::Wide(b), _) => {
                if insert {
                    for k in 0..W_SEGMENTS {
                        b.copy_within(k * c + i..k * c + len, k * c + i + 1);
                    }
                    self.len += 1;
                }
                for (k, v) in vals.into_iter().enumerate() {
                    b[k * c + i] = v;
                }
                b[W_RSS * c + i] = f64::from_bits(rss);
                b[W_META * c + i] = f64::from_bits((off as u64) << 32 | u64::from(count));
            }
            (Buf::Packed(_), None) => unreachable!("turned wide above"),
        }
    }

    /// Moves to a buffer of `cap` (≥ len) samples, wide if `wide` or already wide; a packed
    /// buffer is re-packed with its layout fitted to what it holds.
    fn resize(&mut self, cap: usize, wide: bool) {
        let (old, len) = (self.capacity(), self.len());
        debug_assert!(cap >= len);
        let buf = match (self.records(), &self.buf) {
            (Some(recs), _) if !wide => {
                let mut b = Box::default();
                packed::pack(&mut b, &recs, cap, true);
                Buf::Packed(b)
            }
            (Some(recs), _) => {
                let mut nb = vec![0.0; W_SEGMENTS * cap].into_boxed_slice();
                for (i, r) in recs.iter().enumerate() {
                    for k in 0..SCALES.len() {
                        nb[k * cap + i] = r.value(k);
                    }
                    nb[W_RSS * cap + i] = f64::from_bits(r.rss());
                    let meta = (r.off as u64) << 32 | u64::from(r.count());
                    nb[W_META * cap + i] = f64::from_bits(meta);
                }
                Buf::Wide(nb)
            }
            (None, Buf::Wide(b)) => {
                let mut nb = vec![0.0; W_SEGMENTS * cap].into_boxed_slice();
                for k in 0..W_SEGMENTS {
                    nb[k * cap..k * cap + len].copy_from_slice(&b[k * old..k * old + len]);
                }
                Buf::Wide(nb)
            }
            (None, Buf::Packed(_)) => unreachable!("a packed ring has records"),
        };
        self.buf = buf;
        self.cap = cap as u32;
    }

    /// Adds `by` to every timestamp offset (`by > 0`: the base moved down), or subtracts
    /// `-by` (the base moved up).
    fn move_offsets(&mut self, by: i64) {
        let (c, len) = (self.capacity(), self.len());
        match &mut self.buf {
            Buf::Packed(b) => packed::move_offsets(b, by),
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
        let rel = t - self.base;
        if let Buf::Packed(b) = &self.buf {
            return packed::lower_bound(b, self.len(), rel);
        }
        first_not_below(self.len(), |i| self.offset(i) < rel)
    }

    /// Drops the first `n` samples and moves the base up to the new first timestamp.
    fn drop_front(&mut self, n: usize) {
        let (c, len) = (self.capacity(), self.len());
        self.len -= n as u32;
        let by = match self.is_empty() {
            true => 0,
            false => self.offset(n),
        };
        match &mut self.buf {
            // About one eviction in eight (a hash of the new base decides, so that the
            // rings of a host spread over passes) refits the layout to what is left, giving
            // back the bits of values evicted; the others move the records' bits only.
            Buf::Packed(b) => {
                packed::drop_front(b, c, n, len, by, refit_after(self.base + by));
            }
            Buf::Wide(b) => {
                for k in 0..W_SEGMENTS {
                    b.copy_within(k * c + n..k * c + len, k * c);
                }
                self.move_offsets(-by);
            }
        }
        self.base += by;
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
        self.base + self.offset(i)
    }
    fn value_at(&self, k: usize, i: usize) -> f64 {
        let c = self.capacity();
        match &self.buf {
            Buf::Packed(b) => packed::value_at(b, k, i),
            Buf::Wide(b) => b[k * c + i],
        }
    }
    fn values<'a>(&'a self, k: usize, r: Range<usize>, buf: &'a mut Vec<f64>) -> &'a [f64] {
        let c = self.capacity();
        match &self.buf {
            Buf::Packed(b) => {
                buf.clear();
                if !r.is_empty() {
                    packed::values(b, k, r, buf);
                }
                buf
            }
            Buf::Wide(b) => &b[k * c + r.start..k * c + r.end],
        }
    }
    fn rss_at(&self, i: usize) -> u64 {
        let c = self.capacity();
        match &self.buf {
            Buf::Packed(b) => packed::rss_at(b, i),
            Buf::Wide(b) => b[W_RSS * c + i].to_bits(),
        }
    }
    fn count_at(&self, i: usize) -> u32 {
        let c = self.capacity();
        match &self.buf {
            Buf::Packed(b) => packed::count_at(b, i),
            Buf::Wide(b) => b[W_META * c + i].to_bits() as u32,
        }
    }
}

/// The first index in `0..len` for which `below` is false, `below` being true on a prefix
/// (a binary search: the wide and the packed rings' `lower_bound`).
fn first_not_below(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match below(mid) {
            true => lo = mid + 1,
            false => hi = mid,
        }
    }
    lo
}

/// Whether a packed ring whose base moves to `base` at an eviction refits its layout
/// (see `RingCols::drop_front`): one base in eight, by splitmix64's finalizer (a plain
/// multiplicative hash cycles on the arithmetic progressions regular samples make).
fn refit_after(base: TsMs) -> bool {
    let mut x = base as u64;
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) >> 61 == 0
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
        /// The most samples a ring is first allocated for (see above): ≈ 560 bytes packed, 2.5 KB wide.
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
        } else if matches!(&self.c.buf, Buf::Packed(b) if packed::over_stride(b)) {
            self.c.resize(self.c.capacity(), false);
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
            self.c.write(n, true, ts, vals, rss, count);
            return;
        }
        let i = c.lower_bound(ts);
        if i < n && c.ts_at(i) == ts {
            c.write(i, false, ts, vals, rss, count);
        } else {
            self.reserve_one(cap);
            self.c.write(i, true, ts, vals, rss, count);
        }
    }

    pub fn len(&self) -> usize {
        self.c.len()
    }

    /// Heap bytes reserved by the buffer.
    pub fn reserved_bytes(&self) -> usize {
        self.c.buffer_bytes()
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
        /// Agent-precision samples of any magnitude keep a ring packed; the first value of
        /// any other precision turns it wide. Either
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
            let mut all_packed = true;
            for (dt, milli, pages, bits, op, count) in ops {
                let ts = 1_700_000_000_000 + dt * 10_000;
                if op == 0 {
                    ring.evict(ts);
                    want.retain(|&t, _| t >= ts);
                    continue;
                }
                // op 1: a value no agent sends (any bit pattern, rss not in pages).
                let (vals, rss) = if op == 1 {
                    all_packed = false;
                    ([f64::from_bits(bits), 0.1 + 0.2, -0.0], bits)
                } else {
                    use procwatch_model::precision::{round_cores, round_percent};
                    let v = f64::from(milli) / 1e3;
                    ([v, round_cores(v / 7.0), round_percent(v / 2.0)], u64::from(pages) * 4096)
                };
                ring.upsert_cap(32, ts, vals[0], vals[1], vals[2], rss, count);
                want.insert(ts, (vals.map(f64::to_bits), rss, count));
            }
            let c = &ring.c;
            prop_assert_eq!(c.is_packed(), all_packed);
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

    proptest! {
        /// A packed ring through every path: appends that fit its layout and ones that
        /// re-pack it, replacements, out-of-order inserts, evictions that re-pack it smaller,
        /// jittered and irregular timestamps, capacities reached and outgrown. It stays
        /// packed and holds exactly what a sorted map would.
        #[test]
        fn a_packed_ring_matches_a_sorted_map(
            ops in proptest::collection::vec(
                (0i64..400, -50i64..50, -300_000i32..300_000, 0u64..1 << 40, 0u32..5, 0u8..12),
                1..300),
            cap in 0usize..80,
            base in 1_700_000_000_000i64..1_800_000_000_000,
        ) {
            use procwatch_model::precision::{round_cores, round_percent};
            let mut ring = Ring::default();
            let mut want = std::collections::BTreeMap::new();
            for (slot, jitter, milli, pages, count, op) in ops {
                let ts = base + slot * 10_000 + jitter;
                if op == 0 {
                    ring.evict(ts);
                    ring.shrink(cap);
                    want.retain(|&t, _| t >= ts);
                    continue;
                }
                let v = f64::from(milli) / 1e3;
                let vals = [v, round_cores(v / 3.0), round_percent(v / 7.0)];
                ring.upsert_cap(cap, ts, vals[0], vals[1], vals[2], pages * 4096, count);
                want.insert(ts, (vals.map(f64::to_bits), pages * 4096, count));
            }
            let c = &ring.c;
            prop_assert!(c.is_packed());
            type Read = (TsMs, ([u64; 3], u64, u32));
            let got: Vec<Read> = (0..c.len())
                .map(|i| (c.ts_at(i), ([0, 1, 2].map(|k| c.value_at(k, i).to_bits()), c.rss_at(i), c.count_at(i))))
                .collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_ring_turns_wide_at_its_first_value_of_another_precision() {
        let mut h = HostIndex::new(0);
        h.cap = 8;
        h.upsert("p", 10, 12.345, 0.12345, 1.5, 8192, 1);
        h.upsert("p", 20, 12.346, 0.12346, 1.5, 8192, 1);
        assert!(h.series["p"].c.is_packed());
        assert!(h.series["p"].reserved_bytes() < 8 * 16);
        // 1/3 has no thousandths; every sample before it must survive the change.
        h.upsert("p", 30, 1.0 / 3.0, 0.1, 1.5, 8192, 1);
        let c = &h.series["p"].c;
        assert!(!c.is_packed());
        assert_eq!(h.series["p"].reserved_bytes(), 8 * 40);
        let mut buf = Vec::new();
        assert_eq!(c.values(CPU, 0..3, &mut buf), &[12.345, 12.346, 1.0 / 3.0]);
        assert_eq!(c.values(CORES, 0..2, &mut buf), &[0.12345, 0.12346]);
        assert_eq!((0..3).map(|i| c.rss_at(i)).collect::<Vec<_>>(), vec![8192; 3]);
        assert_eq!((0..3).map(|i| c.ts_at(i)).collect::<Vec<_>>(), vec![10, 20, 30]);
    }

    /// A packed ring has no field limits: any value of an agent's precision (negative, a
    /// process on 2,000 cores, a count or an rss at the top of its type) stays packed, its
    /// field just wider, and reads back exactly.
    #[test]
    fn a_ring_stays_packed_at_any_magnitude_of_an_agents_precision() {
        const RSS_TOP: u64 = u64::MAX / 4096 * 4096;
        let top = [2_147_483.647, 21_474.836_47, -2_147_483.647];
        let mut h = HostIndex::new(0);
        h.cap = 8;
        h.upsert("p", 10, 1.5, 0.015, 2.0, 8192, 1);
        h.upsert("p", 20, 0.0, 0.0, 0.0, 0, 0);
        let small = h.series["p"].reserved_bytes();
        h.upsert("p", 1_000_000_000, top[0], top[1], top[2], RSS_TOP, u32::MAX);
        h.upsert("p", 15, -0.001, -0.00001, 131.072, 4096, 256);
        let c = &h.series["p"].c;
        assert!(c.is_packed());
        assert!(h.series["p"].reserved_bytes() > small, "the fields widened");
        let got: Vec<_> = (0..4)
            .map(|i| (c.ts_at(i), [0, 1, 2].map(|k| c.value_at(k, i)), c.rss_at(i), c.count_at(i)))
            .collect();
        assert_eq!(
            got,
            vec![
                (10, [1.5, 0.015, 2.0], 8192, 1),
                (15, [-0.001, -0.00001, 131.072], 4096, 256),
                (20, [0.0; 3], 0, 0),
                (1_000_000_000, top, RSS_TOP, u32::MAX),
            ]
        );
    }

    /// Values that wandered wide and went away are given back their bits: an eviction
    /// in eight (by the hash of the new base) re-packs the ring fitted to what it holds,
    /// and a stride far above the need is reallocated smaller.
    #[test]
    fn a_ring_is_repacked_smaller_once_its_wide_values_are_evicted() {
        let mut h = HostIndex::new(0);
        h.cap = 32;
        for ts in 0..32 {
            let (cpu, rss) = if ts == 3 { (1_000_000.0, 4096 << 50) } else { (0.5, 4096) };
            h.upsert("p", ts * 10_007, cpu, 0.01, 1.0, rss << (ts % 2), 1);
        }
        let wide = h.series["p"].reserved_bytes();
        assert!(wide > 48 + 32 * 10, "the spike needs more than 80 bits: {wide}");
        let mut evicted = 4;
        h.evict(evicted * 10_007);
        while h.series["p"].reserved_bytes() == wide {
            evicted += 1;
            assert!(evicted < 28, "never refitted");
            h.evict(evicted * 10_007);
        }
        let r = &h.series["p"];
        assert!(r.reserved_bytes() <= 48 + 32 * 2, "{}", r.reserved_bytes());
        assert_eq!(r.c.capacity(), 32);
        let left = 32 - evicted as usize;
        assert_eq!(ts_of(r), (evicted..32).map(|t| t * 10_007).collect::<Vec<_>>());
        assert_eq!(r.c.values(CPU, 0..left, &mut Vec::new()), vec![0.5; left]);
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
        assert!(r.c.is_packed());
        assert!(r.reserved_bytes() <= 48 + 110 * 8, "{}", r.reserved_bytes());
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
            Buf::Packed(b) => b.as_ptr() as usize,
            Buf::Wide(b) => b.as_ptr() as usize,
        };
        let first = ptr(&h);
        for ts in 1..44 {
            h.upsert("p", ts * 10, 1.0, 0.5, 0.1, 4096, 1);
        }
        assert_eq!(ptr(&h), first, "no reallocation up to the capacity");
        h.cap = 4096;
        h.upsert("q", 0, 1.0, 0.5, 0.1, 4096, 1);
        assert_eq!(h.series["q"].reserved_bytes(), 48 + 64 * 8);
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
