//! A packed ring buffer: samples at an agent's precision as bit-packed records, each field
//! kept as its offset from the series' smallest value (frame of reference) in exactly the
//! bits its range needs, and the timestamp as its residual from a regular step.
//!
//! The buffer is `HEADER` words then `cap` records of `stride` bits each (the record's
//! fields, then unused bits so that values wandering a little do not reallocate):
//! - word 0: the six field widths (one byte each) and the stride (bits 48..64);
//! - word 1: the timestamp step (i64), the median of the gaps between samples;
//! - words 2–5: the fields' references (the smallest value): cpu | cores << 32,
//!   mem | count << 32, rss pages, timestamp residual.
//!
//! Fields, in record order: cpu, cores, mem (the integers `narrow` keeps, as order-preserving
//! u32s), the group's count, rss in pages, and the timestamp's offset from the ring's base
//! minus `index × step` (as an order-preserving u64). A value is its reference plus the
//! field's bits, so whatever the client sent reads back bit for bit; a write that does not
//! fit the current widths re-packs the ring (every record decoded, the layout fitted to
//! them exactly, in place when the stride allows).

use super::{narrow, widen, PAGE, SCALES};

/// Header words before the records.
pub(super) const HEADER: usize = 6;
/// Record fields: cpu, cores, mem, count, rss pages, timestamp residual.
const FIELDS: usize = 6;
const COUNT: usize = 3;
const RSS: usize = 4;
const TS: usize = 5;
/// The stride a ring's first buffer gets, before its values are known: what a quiet agent
/// series' record needs (BENCHMARKS.md "Session 15"), so most rings are never re-allocated
/// for their values.
const FIRST_STRIDE: u32 = 64;
/// Bits a re-allocated record is given beyond what its fields need, so a range that widens
/// a little re-packs in place; a stride more than twice this above the need is given back
/// at the next eviction (`over_stride`).
pub(super) const SLACK: u32 = 8;
/// Maps an i64 (as u64 bits) onto a u64 in the same order.
const SIGN: u64 = 1 << 63;

/// One sample in field domains (see the module's documentation); `off` is the timestamp's
/// offset from the ring's base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rec {
    f: [u64; FIELDS - 1],
    pub(super) off: i64,
}

impl Rec {
    /// The sample as a packed record, if its values have an agent's precision and rss is in
    /// whole pages.
    pub(super) fn new(vals: [f64; 3], rss: u64, count: u32, off: i64) -> Option<Rec> {
        if !rss.is_multiple_of(PAGE) {
            return None;
        }
        let mut f = [0; FIELDS - 1];
        for (k, (v, scale)) in vals.into_iter().zip(SCALES).enumerate() {
            f[k] = u64::from(narrow(v, scale)? ^ 0x8000_0000);
        }
        f[COUNT] = u64::from(count);
        f[RSS] = rss / PAGE;
        Some(Rec { f, off })
    }

    pub(super) fn value(&self, k: usize) -> f64 {
        value_of(self.f[k], k)
    }

    pub(super) fn rss(&self) -> u64 {
        self.f[RSS] * PAGE
    }

    pub(super) fn count(&self) -> u32 {
        self.f[COUNT] as u32
    }

    /// Field `k`'s value at index `i` for a ring stepping by `step`.
    fn field(&self, k: usize, i: usize, step: i64) -> u64 {
        match k {
            TS => (self.off.wrapping_sub((i as i64).wrapping_mul(step)) as u64) ^ SIGN,
            _ => self.f[k],
        }
    }
}

/// A packed buffer's header, decoded.
#[derive(Debug, Clone, Copy)]
struct Layout {
    widths: [u32; FIELDS],
    /// Each field's bit offset in a record.
    at: [u32; FIELDS],
    stride: u32,
    step: i64,
    refs: [u64; FIELDS],
}

impl Layout {
    fn read(b: &[u64]) -> Layout {
        let widths: [u32; FIELDS] = std::array::from_fn(|k| ((b[0] >> (8 * k)) & 0xff) as u32);
        let mut at = [0; FIELDS];
        for k in 1..FIELDS {
            at[k] = at[k - 1] + widths[k - 1];
        }
        let lo = |w: u64| w & 0xffff_ffff;
        Layout {
            widths,
            at,
            stride: (b[0] >> 48) as u32,
            step: b[1] as i64,
            refs: [lo(b[2]), b[2] >> 32, lo(b[3]), b[3] >> 32, b[4], b[5]],
        }
    }

    fn write(&self, b: &mut [u64]) {
        b[0] = self.widths.iter().enumerate().map(|(k, &w)| u64::from(w) << (8 * k)).sum::<u64>()
            | u64::from(self.stride) << 48;
        b[1] = self.step as u64;
        b[2] = self.refs[0] | self.refs[1] << 32;
        b[3] = self.refs[2] | self.refs[3] << 32;
        b[4] = self.refs[RSS];
        b[5] = self.refs[TS];
    }

    /// Bits a record needs.
    fn need(&self) -> u32 {
        self.widths.iter().sum()
    }

    fn bit(&self, i: usize, k: usize) -> usize {
        HEADER * 64 + i * self.stride as usize + self.at[k] as usize
    }

    fn get(&self, b: &[u64], i: usize, k: usize) -> u64 {
        self.refs[k].wrapping_add(get_bits(b, self.bit(i, k), self.widths[k]))
    }

    /// Record `i`'s timestamp offset from the ring's base.
    fn off(&self, b: &[u64], i: usize) -> i64 {
        ((self.get(b, i, TS) ^ SIGN) as i64).wrapping_add((i as i64).wrapping_mul(self.step))
    }

    /// Whether `v` fits field `k`.
    fn fits(&self, k: usize, v: u64) -> bool {
        v >= self.refs[k] && (self.widths[k] == 64 || (v - self.refs[k]) >> self.widths[k] == 0)
    }

    /// The smallest layout holding `recs` (their step, references and widths), at `stride`
    /// (0: what they need).
    fn fit(recs: &[Rec], stride: u32) -> Layout {
        let step = best_step(recs);
        let mut lo = [u64::MAX; FIELDS];
        let mut hi = [0; FIELDS];
        for (i, r) in recs.iter().enumerate() {
            for k in 0..FIELDS {
                let v = r.field(k, i, step);
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
        }
        let refs = match recs.is_empty() {
            true => [0; FIELDS],
            false => lo,
        };
        let widths = std::array::from_fn(|k| match recs.is_empty() {
            true => 0,
            false => 64 - (hi[k] - lo[k]).leading_zeros(),
        });
        let mut l = Layout { widths, at: [0; FIELDS], stride, step, refs };
        for k in 1..FIELDS {
            l.at[k] = l.at[k - 1] + l.widths[k - 1];
        }
        if l.stride == 0 {
            l.stride = l.need();
        }
        l
    }
}

/// The step that leaves the narrower timestamp residuals of two: the median gap between
/// consecutive samples (exact for a regular series with a missed sample or two) and the
/// mean gap (exact for one whose gaps jitter by a few ms); 0 with fewer than two samples.
fn best_step(recs: &[Rec]) -> i64 {
    let n = recs.len();
    if n < 2 {
        return 0;
    }
    let mut gaps: Vec<i64> = recs.windows(2).map(|w| w[1].off.wrapping_sub(w[0].off)).collect();
    let mid = gaps.len() / 2;
    let median = *gaps.select_nth_unstable(mid).1;
    let span = recs[n - 1].off.wrapping_sub(recs[0].off);
    let mean = span.wrapping_add((n as i64 - 1) / 2) / (n as i64 - 1);
    let range = |step: i64| {
        let (mut lo, mut hi) = (u64::MAX, 0);
        for (i, r) in recs.iter().enumerate() {
            let v = r.field(TS, i, step);
            (lo, hi) = (lo.min(v), hi.max(v));
        }
        hi - lo
    };
    match median == mean || range(median) <= range(mean) {
        true => median,
        false => mean,
    }
}

/// Value `k` (cpu, cores, mem) from its field domain (an order-preserving u32).
fn value_of(v: u64, k: usize) -> f64 {
    widen((v as u32) ^ 0x8000_0000, SCALES[k])
}

/// The `w` bits at bit `at` (`w ≤ 64`).
fn get_bits(b: &[u64], at: usize, w: u32) -> u64 {
    if w == 0 {
        return 0;
    }
    let (k, s) = (at / 64, (at % 64) as u32);
    let mut v = b[k] >> s;
    if s + w > 64 {
        v |= b[k + 1] << (64 - s);
    }
    match w {
        64 => v,
        _ => v & ((1 << w) - 1),
    }
}

/// Writes `v` (`< 2^w`) to the `w` bits at bit `at`.
fn put_bits(b: &mut [u64], at: usize, w: u32, v: u64) {
    if w == 0 {
        return;
    }
    let (k, s) = (at / 64, (at % 64) as u32);
    let mask = match w {
        64 => u64::MAX,
        _ => (1 << w) - 1,
    };
    b[k] = (b[k] & !(mask << s)) | (v << s);
    if s + w > 64 {
        let r = 64 - s;
        b[k + 1] = (b[k + 1] & !(mask >> r)) | (v >> r);
    }
}

/// Words of a buffer of `cap` records of `stride` bits.
fn words(cap: usize, stride: u32) -> usize {
    HEADER + (cap * stride as usize).div_ceil(64)
}

/// Record `i`'s timestamp offset from the ring's base.
pub(super) fn off_at(b: &[u64], i: usize) -> i64 {
    Layout::read(b).off(b, i)
}

/// The index of the first of the `len` records whose offset is `>= rel` (one header read for
/// the whole search).
pub(super) fn lower_bound(b: &[u64], len: usize, rel: i64) -> usize {
    if len == 0 {
        return 0;
    }
    let l = Layout::read(b);
    super::first_not_below(len, |i| l.off(b, i) < rel)
}

/// Value `k` (cpu, cores, mem) of record `i`.
pub(super) fn value_at(b: &[u64], k: usize, i: usize) -> f64 {
    value_of(Layout::read(b).get(b, i, k), k)
}

/// Values `k` of records `r`, appended to `out`.
pub(super) fn values(b: &[u64], k: usize, r: std::ops::Range<usize>, out: &mut Vec<f64>) {
    let l = Layout::read(b);
    let (w, base, stride) = (l.widths[k], l.refs[k], l.stride as usize);
    let mut at = l.bit(r.start, k);
    out.extend(r.map(|_| {
        let v = base.wrapping_add(get_bits(b, at, w));
        at += stride;
        value_of(v, k)
    }));
}

pub(super) fn rss_at(b: &[u64], i: usize) -> u64 {
    Layout::read(b).get(b, i, RSS) * PAGE
}

pub(super) fn count_at(b: &[u64], i: usize) -> u32 {
    Layout::read(b).get(b, i, COUNT) as u32
}

/// The first `len` records.
pub(super) fn decode(b: &[u64], len: usize) -> Vec<Rec> {
    if len == 0 {
        return Vec::new();
    }
    let l = Layout::read(b);
    (0..len)
        .map(|i| {
            let f = std::array::from_fn(|k| l.get(b, i, k));
            Rec { f, off: l.off(b, i) }
        })
        .collect()
}

/// Writes `r` as record `i` if it fits the current layout (and the buffer is allocated);
/// false leaves the buffer unchanged.
pub(super) fn try_write(b: &mut [u64], i: usize, r: &Rec) -> bool {
    if b.len() < HEADER {
        return false;
    }
    let l = Layout::read(b);
    let v: [u64; FIELDS] = std::array::from_fn(|k| r.field(k, i, l.step));
    if !(0..FIELDS).all(|k| l.fits(k, v[k])) {
        return false;
    }
    for (k, v) in v.into_iter().enumerate() {
        put_bits(b, l.bit(i, k), l.widths[k], v - l.refs[k]);
    }
    true
}

/// Packs `recs` into `buf`, for `cap ≥ recs.len()` records, with the layout fitted to them.
/// `fresh`: always a new buffer, its stride what they need plus `SLACK` (`FIRST_STRIDE` when
/// there are none yet); else `buf` is reused when its stride holds them at `cap`.
pub(super) fn pack(buf: &mut Box<[u64]>, recs: &[Rec], cap: usize, fresh: bool) {
    debug_assert!(cap >= recs.len());
    let mut l = Layout::fit(recs, 0);
    let old = (buf.len() >= HEADER).then(|| Layout::read(buf).stride);
    match old {
        Some(s) if !fresh && s >= l.need() && words(cap, s) == buf.len() => l.stride = s,
        _ => {
            l.stride = match recs.is_empty() {
                true => FIRST_STRIDE,
                false => l.need() + SLACK,
            };
            *buf = vec![0; words(cap, l.stride)].into_boxed_slice();
        }
    }
    l.write(buf);
    for (i, r) in recs.iter().enumerate() {
        for k in 0..FIELDS {
            put_bits(buf, l.bit(i, k), l.widths[k], r.field(k, i, l.step) - l.refs[k]);
        }
    }
}

/// Drops the first `n` of `len` records (of a buffer for `cap`) and subtracts `by` from every
/// timestamp offset.
///
/// Without `refit` the records' bits move down `n` strides, word by word, and only the
/// timestamp's reference changes (a record's residual is its offset minus its index times
/// the step, so it moves by `n × step − by` for every record alike); the layout is kept as
/// it is. With `refit` what is left is decoded and packed again with the layout fitted to
/// it, in the same buffer when its stride still holds it, giving back the bits of the values
/// evicted. A maintenance pass evicts from every series and a refit decodes and encodes
/// every record, so the caller asks for one rarely (`RingCols::drop_front`: one eviction in
/// eight).
pub(super) fn drop_front(
    b: &mut Box<[u64]>,
    cap: usize,
    n: usize,
    len: usize,
    by: i64,
    refit: bool,
) {
    if b.len() < HEADER || n == 0 {
        return;
    }
    if refit {
        let mut recs = decode(b, len);
        recs.drain(..n);
        for r in &mut recs {
            r.off -= by;
        }
        pack(b, &recs, cap, false);
        return;
    }
    let l = Layout::read(b);
    let stride = l.stride as usize;
    let (dst, src, bits) = (HEADER * 64, HEADER * 64 + n * stride, (len - n) * stride);
    for j in (0..bits).step_by(64) {
        let w = (bits - j).min(64) as u32;
        let v = get_bits(b, src + j, w);
        put_bits(b, dst + j, w, v);
    }
    let shift = (n as i64).wrapping_mul(l.step).wrapping_sub(by);
    b[5] = b[5].wrapping_add(shift as u64);
}

/// Adds `by` to every timestamp offset.
pub(super) fn move_offsets(b: &mut [u64], by: i64) {
    if b.len() >= HEADER {
        b[5] = b[5].wrapping_add(by as u64);
    }
}

/// Whether the stride is more than `2 × SLACK` bits above what the records need (a range
/// that widened, then narrowed): worth a smaller buffer.
pub(super) fn over_stride(b: &[u64]) -> bool {
    b.len() >= HEADER && {
        let l = Layout::read(b);
        l.stride > l.need() + 2 * SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_across_word_boundaries() {
        let mut b = vec![0u64; 4];
        let cases = [(0, 64, u64::MAX), (70, 63, 0x5555_5555_5555_5555), (133, 1, 1), (190, 2, 2)];
        for (at, w, v) in cases {
            put_bits(&mut b, at, w, v);
        }
        for (at, w, v) in cases {
            assert_eq!(get_bits(&b, at, w), v, "{at} {w}");
        }
        put_bits(&mut b, 70, 63, 0);
        assert_eq!(get_bits(&b, 0, 64), u64::MAX, "neighbours untouched");
        assert_eq!(get_bits(&b, 133, 1), 1);
    }

    /// A quiet agent series (cpu under 10 %, mem under 2 %, rss within a few MB, samples
    /// 10 s apart with a few ms of jitter) packs in well under the 16 bytes a sample a fixed
    /// layout took.
    #[test]
    fn a_quiet_agent_series_packs_in_a_few_bytes_a_sample() {
        let recs: Vec<Rec> = (0..50)
            .map(|i: i64| {
                let v = [(i * 37 % 9_000) as f64 / 1e3, (i * 11 % 90) as f64 / 1e5, 1.234];
                Rec::new(v, 4096 * (20_000 + (i * 7 % 300)) as u64, 1, i * 10_000 + i % 5).unwrap()
            })
            .collect();
        let mut buf = Box::default();
        pack(&mut buf, &recs, 50, true);
        let l = Layout::read(&buf);
        assert_eq!(l.step, 10_000, "the mean gap: residuals 0–4 ms");
        assert!(l.need() <= 14 + 7 + 9 + 3, "{:?}", l.widths);
        assert_eq!(decode(&buf, 50), recs);
        assert!(buf.len() * 8 < 50 * 8, "{} bytes", buf.len() * 8);
        // Dropping records moves their bits, keeps the layout, reads back the rest exactly.
        let before = Layout::read(&buf).widths;
        let by = recs[7].off;
        let mut moved = buf.clone();
        drop_front(&mut moved, 50, 7, 50, by, false);
        let rest: Vec<Rec> = recs[7..].iter().map(|r| Rec { off: r.off - by, ..*r }).collect();
        assert_eq!(decode(&moved, 43), rest);
        assert_eq!(Layout::read(&moved).widths, before);
        // A refit reads back the same records, in a layout fitted to them, in no more words.
        let mut refitted = buf.clone();
        drop_front(&mut refitted, 50, 7, 50, by, true);
        assert_eq!(decode(&refitted, 43), rest);
        assert_eq!(Layout::read(&refitted).widths, Layout::fit(&rest, 0).widths);
        assert!(refitted.len() <= buf.len());
    }
}
