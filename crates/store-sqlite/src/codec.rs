//! Chunk codec: the columns of one series' samples, Gorilla-style.
//!
//! Layout of a chunk blob: one version byte (`1`), the sample count as a LEB128 varint, then
//! one bit stream (MSB first) holding the columns one after the other:
//! - `ts`: the first as 64 raw bits, the first delta as a zig-zag "int" (below), then every
//!   delta-of-delta in Gorilla's buckets: `0` (same delta), `10`+7 bits, `110`+9 bits,
//!   `1110`+12 bits, `1111`+64 bits (two's complement).
//! - `cpu`, `cores`, `mem` (f64): the first as 64 raw bits, then each XOR with the previous:
//!   `0` when equal; `10` + the meaningful bits when they fit in the previous
//!   leading/trailing-zero window; else `11` + 5 bits of leading zeros + 6 bits of length
//!   (64 stored as 0) + the meaningful bits (Gorilla, Pelkonen et al. 2015).
//! - `rss` (u64) and `count` (u32): the first raw (64 / 32 bits), then each delta from the
//!   previous as a zig-zag "int": `0` for no change, else `1` + 6 bits (bit length − 1) + the bits.
//!
//! Lossless: every f64 bit pattern (NaN payloads included) and every integer round-trips.

use procwatch_model::TsMs;

/// The columns of one series, oldest first, all of the same length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// Sample timestamps, Unix ms (need not be regular).
    pub ts: Vec<TsMs>,
    /// CPU, percent of the host's total capacity (0–100).
    pub cpu: Vec<f64>,
    /// CPU in cores (1.0 = one core fully busy).
    pub cores: Vec<f64>,
    /// Resident memory, percent of the host's `MemTotal` (0–100).
    pub mem: Vec<f64>,
    /// Resident set size, bytes.
    pub rss: Vec<u64>,
    /// Processes in the group.
    pub count: Vec<u32>,
}

impl Columns {
    /// Number of samples (the length of every column).
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Empty columns, each with room for `n` values.
    pub fn with_capacity(n: usize) -> Self {
        Columns {
            ts: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
            cores: Vec::with_capacity(n),
            mem: Vec::with_capacity(n),
            rss: Vec::with_capacity(n),
            count: Vec::with_capacity(n),
        }
    }

    /// Empties every column, keeping its capacity.
    pub fn clear(&mut self) {
        self.ts.clear();
        self.cpu.clear();
        self.cores.clear();
        self.mem.clear();
        self.rss.clear();
        self.count.clear();
    }

    /// Appends one sample's values to every column.
    pub fn push(&mut self, ts: TsMs, cpu: f64, cores: f64, mem: f64, rss: u64, count: u32) {
        self.ts.push(ts);
        self.cpu.push(cpu);
        self.cores.push(cores);
        self.mem.push(mem);
        self.rss.push(rss);
        self.count.push(count);
    }
}

/// Error decoding a chunk: the blob is truncated or of an unknown version.
#[derive(Debug, thiserror::Error)]
#[error("corrupt chunk: {0}")]
pub struct CorruptChunk(pub &'static str);

const VERSION: u8 = 1;

/// MSB-first bit stream writer (shared with the roll-up block codec, `rollup_block.rs`).
pub(crate) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    pub(crate) fn new(out: Vec<u8>) -> Self {
        BitWriter { out, acc: 0, nbits: 0 }
    }

    /// Writes the low `n` bits of `v` (n ≤ 64), most significant first.
    #[inline]
    pub(crate) fn write(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        if n > 32 {
            self.write(v >> 32, n - 32);
            self.write(v & 0xffff_ffff, 32);
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        self.acc = (self.acc << n) | v;
        self.nbits += n;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
        self.acc &= (1u64 << self.nbits) - 1;
    }

    #[inline]
    pub(crate) fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            let pad = 8 - self.nbits;
            self.write(0, pad);
        }
        self.out
    }
}

/// Reader of a `BitWriter` stream.
pub(crate) struct BitReader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize, // bit position
}

impl<'a> BitReader<'a> {
    #[inline]
    pub(crate) fn read(&mut self, n: u32) -> Result<u64, CorruptChunk> {
        if n == 0 {
            return Ok(0);
        }
        if n > 57 {
            // One 8-byte load holds at most 57 bits from any bit offset.
            let hi = self.read(n - 32)?;
            let lo = self.read(32)?;
            return Ok((hi << 32) | lo);
        }
        let end = self.pos + n as usize;
        if end > self.buf.len() * 8 {
            return Err(CorruptChunk("truncated"));
        }
        // The 8 bytes from the one holding `pos` (zeros past the end), big-endian.
        let first = self.pos / 8;
        let word = match self.buf.get(first..first + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut b = [0u8; 8];
                let rest = &self.buf[first..];
                b[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(b)
            }
        };
        let shift = 64 - (self.pos % 8) as u32 - n;
        self.pos = end;
        Ok((word >> shift) & ((1u64 << n) - 1))
    }

    #[inline]
    pub(crate) fn bit(&mut self) -> Result<bool, CorruptChunk> {
        Ok(self.read(1)? == 1)
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

pub(crate) fn write_int(w: &mut BitWriter, delta: i64) {
    let z = zigzag(delta);
    if z == 0 {
        w.bit(false);
    } else {
        let len = 64 - z.leading_zeros();
        w.bit(true);
        w.write(u64::from(len - 1), 6);
        w.write(z, len);
    }
}

pub(crate) fn read_int(r: &mut BitReader) -> Result<i64, CorruptChunk> {
    if !r.bit()? {
        return Ok(0);
    }
    let len = r.read(6)? as u32 + 1;
    Ok(unzigzag(r.read(len)?))
}

pub(crate) fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.bit(false);
    } else if (-64..64).contains(&dod) {
        w.write(0b10, 2);
        w.write(dod as u64, 7);
    } else if (-256..256).contains(&dod) {
        w.write(0b110, 3);
        w.write(dod as u64, 9);
    } else if (-2048..2048).contains(&dod) {
        w.write(0b1110, 4);
        w.write(dod as u64, 12);
    } else {
        w.write(0b1111, 4);
        w.write(dod as u64, 64);
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

pub(crate) fn read_dod(r: &mut BitReader) -> Result<i64, CorruptChunk> {
    if !r.bit()? {
        return Ok(0);
    }
    if !r.bit()? {
        return Ok(sign_extend(r.read(7)?, 7));
    }
    if !r.bit()? {
        return Ok(sign_extend(r.read(9)?, 9));
    }
    if !r.bit()? {
        return Ok(sign_extend(r.read(12)?, 12));
    }
    Ok(r.read(64)? as i64)
}

pub(crate) fn write_floats(w: &mut BitWriter, vals: &[f64]) {
    let Some(first) = vals.first() else { return };
    let mut prev = first.to_bits();
    w.write(prev, 64);
    let (mut plz, mut ptz) = (u32::MAX, 0u32);
    for v in &vals[1..] {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let lz = x.leading_zeros().min(31);
        let tz = x.trailing_zeros();
        if plz != u32::MAX && lz >= plz && tz >= ptz {
            w.bit(false);
            w.write(x >> ptz, 64 - plz - ptz);
        } else {
            let sig = 64 - lz - tz;
            w.bit(true);
            w.write(u64::from(lz), 5);
            w.write(u64::from(sig & 63), 6);
            w.write(x >> tz, sig);
            plz = lz;
            ptz = tz;
        }
    }
}

pub(crate) fn read_floats(
    r: &mut BitReader,
    n: usize,
    out: &mut Vec<f64>,
) -> Result<(), CorruptChunk> {
    if n == 0 {
        return Ok(());
    }
    let mut prev = r.read(64)?;
    out.push(f64::from_bits(prev));
    let (mut plz, mut ptz) = (0u32, 0u32);
    for _ in 1..n {
        if r.bit()? {
            if r.bit()? {
                plz = r.read(5)? as u32;
                let mut sig = r.read(6)? as u32;
                if sig == 0 {
                    sig = 64;
                }
                if plz + sig > 64 {
                    return Err(CorruptChunk("bad xor window"));
                }
                ptz = 64 - plz - sig;
            }
            let sig = 64 - plz - ptz;
            prev ^= r.read(sig)? << ptz;
        }
        out.push(f64::from_bits(prev));
    }
    Ok(())
}

pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, CorruptChunk> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(CorruptChunk("truncated header"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CorruptChunk("bad varint"))
}

/// A non-empty timestamp column: the first as 64 raw bits, the first delta as an "int",
/// then delta-of-deltas.
pub(crate) fn write_times(w: &mut BitWriter, ts: &[TsMs]) {
    let Some(first) = ts.first() else { return };
    w.write(*first as u64, 64);
    let mut prev_delta = 0i64;
    for i in 1..ts.len() {
        let delta = ts[i].wrapping_sub(ts[i - 1]);
        if i == 1 {
            write_int(w, delta);
        } else {
            write_dod(w, delta.wrapping_sub(prev_delta));
        }
        prev_delta = delta;
    }
}

/// Reads `n` (> 0) timestamps written by `write_times`.
pub(crate) fn read_times(
    r: &mut BitReader,
    n: usize,
    out: &mut Vec<TsMs>,
) -> Result<(), CorruptChunk> {
    let mut ts = r.read(64)? as i64;
    out.push(ts);
    let mut delta = 0i64;
    for i in 1..n {
        if i == 1 {
            delta = read_int(r)?;
        } else {
            delta = delta.wrapping_add(read_dod(r)?);
        }
        ts = ts.wrapping_add(delta);
        out.push(ts);
    }
    Ok(())
}

/// The bit stream of a blob of `n` items, after its header: the `version` byte and `n` as a
/// varint; room for `capacity` bytes.
pub(crate) fn blob_writer(version: u8, n: usize, capacity: usize) -> BitWriter {
    let mut head = Vec::with_capacity(capacity);
    head.push(version);
    write_varint(&mut head, n as u64);
    BitWriter::new(head)
}

/// The item count of a blob written with [`blob_writer`] and a reader of its bit stream;
/// `unknown_version` is the error for another version byte.
pub(crate) fn blob_reader<'a>(
    blob: &'a [u8],
    version: u8,
    unknown_version: &'static str,
) -> Result<(usize, BitReader<'a>), CorruptChunk> {
    if blob.first() != Some(&version) {
        return Err(CorruptChunk(unknown_version));
    }
    let mut pos = 1;
    let n = read_varint(blob, &mut pos)? as usize;
    if n > blob.len() * 8 {
        return Err(CorruptChunk("count exceeds blob"));
    }
    Ok((n, BitReader { buf: &blob[pos..], pos: 0 }))
}

/// Encodes columns (oldest first; timestamps need not be regular).
pub fn encode(c: &Columns) -> Vec<u8> {
    let n = c.len();
    let mut w = blob_writer(VERSION, n, 16 + n * 4);
    if n > 0 {
        write_times(&mut w, &c.ts);
        write_floats(&mut w, &c.cpu);
        write_floats(&mut w, &c.cores);
        write_floats(&mut w, &c.mem);
        w.write(c.rss[0], 64);
        for i in 1..n {
            write_int(&mut w, c.rss[i].wrapping_sub(c.rss[i - 1]) as i64);
        }
        w.write(u64::from(c.count[0]), 32);
        for i in 1..n {
            write_int(&mut w, i64::from(c.count[i]) - i64::from(c.count[i - 1]));
        }
    }
    w.finish()
}

/// Decodes a chunk blob, appending to `out`.
pub fn decode_into(blob: &[u8], out: &mut Columns) -> Result<(), CorruptChunk> {
    let (n, mut r) = blob_reader(blob, VERSION, "unknown version")?;
    if n == 0 {
        return Ok(());
    }
    read_times(&mut r, n, &mut out.ts)?;
    read_floats(&mut r, n, &mut out.cpu)?;
    read_floats(&mut r, n, &mut out.cores)?;
    read_floats(&mut r, n, &mut out.mem)?;
    let mut rss = r.read(64)?;
    out.rss.push(rss);
    for _ in 1..n {
        rss = rss.wrapping_add(read_int(&mut r)? as u64);
        out.rss.push(rss);
    }
    let mut count = r.read(32)? as u32;
    out.count.push(count);
    for _ in 1..n {
        count = i64::from(count).wrapping_add(read_int(&mut r)?) as u32;
        out.count.push(count);
    }
    Ok(())
}

/// Decodes a chunk blob.
pub fn decode(blob: &[u8]) -> Result<Columns, CorruptChunk> {
    let mut c = Columns::default();
    decode_into(blob, &mut c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cols(rows: &[(i64, f64, f64, f64, u64, u32)]) -> Columns {
        let mut c = Columns::default();
        for &(t, a, b, m, r, n) in rows {
            c.push(t, a, b, m, r, n);
        }
        c
    }

    fn same(a: &Columns, b: &Columns) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        a.ts == b.ts
            && bits(&a.cpu) == bits(&b.cpu)
            && bits(&a.cores) == bits(&b.cores)
            && bits(&a.mem) == bits(&b.mem)
            && a.rss == b.rss
            && a.count == b.count
    }

    #[test]
    fn empty_and_single() {
        for c in [cols(&[]), cols(&[(5, 1.5, 0.03, 2.0, 4096, 3)])] {
            assert!(same(&decode(&encode(&c)).unwrap(), &c));
        }
    }

    #[test]
    fn regular_idle_series_is_tiny() {
        let rows: Vec<_> = (0..720)
            .map(|i| (1_764_070_000_000 + i * 10_000, 0.0, 0.0, 1.25, 1 << 24, 2))
            .collect();
        let c = cols(&rows);
        let blob = encode(&c);
        assert!(same(&decode(&blob).unwrap(), &c));
        // 720 samples, 6 columns at ~1 bit each after the first.
        assert!(blob.len() < 600, "{} bytes", blob.len());
    }

    #[test]
    fn truncated_blob_is_an_error() {
        let rows: Vec<_> = (0..50).map(|i| (i * 10_000, i as f64, 0.5, 1.0, 77, 1)).collect();
        let blob = encode(&cols(&rows));
        for cut in [0, 1, 2, blob.len() / 2, blob.len() - 1] {
            assert!(decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_any_values(
            start in any::<i64>(),
            rows in proptest::collection::vec(
                (-5_000i64..50_000, any::<f64>(), any::<f64>(), any::<f64>(), any::<u64>(), any::<u32>()),
                0..300,
            )
        ) {
            let mut t = start;
            let mut c = Columns::default();
            for (d, a, b, m, r, n) in rows {
                t = t.wrapping_add(d);
                c.push(t, a, b, m, r, n);
            }
            prop_assert!(same(&decode(&encode(&c)).unwrap(), &c));
        }

        #[test]
        fn bits_read_back_at_any_width_and_offset(
            fields in proptest::collection::vec((1u32..=64, any::<u64>()), 0..200)
        ) {
            // Widths 1–64 in any sequence: every bit offset, one-load reads (≤ 57 bits) and
            // split ones, and the stream's last bytes, where fewer than 8 remain.
            let mut w = BitWriter::new(Vec::new());
            let masked: Vec<(u32, u64)> = fields
                .iter()
                .map(|&(n, v)| (n, if n == 64 { v } else { v & ((1u64 << n) - 1) }))
                .collect();
            for &(n, v) in &masked {
                w.write(v, n);
            }
            let buf = w.finish();
            let mut r = BitReader { buf: &buf, pos: 0 };
            for &(n, v) in &masked {
                prop_assert_eq!(r.read(n).unwrap(), v, "width {}", n);
            }
            // Past the padding: an error, never a panic or a made-up value.
            let left = buf.len() * 8 - r.pos;
            prop_assert!(r.read(left as u32 + 1).is_err());
        }

        #[test]
        fn decoding_garbage_never_panics(mut blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = blob.first_mut() {
                *b = VERSION;
            }
            // Garbage is an error or some columns of equal length, never a panic.
            if let Ok(c) = decode(&blob) {
                let n = c.ts.len();
                prop_assert!([c.cpu.len(), c.cores.len(), c.mem.len(), c.rss.len(), c.count.len()] == [n; 5]);
            }
        }

        #[test]
        fn round_trips_realistic_series(
            jitter in proptest::collection::vec(-40i64..40, 1..400),
            busy in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..400], 1..400),
        ) {
            let n = jitter.len().min(busy.len());
            let mut c = Columns::default();
            let mut rss = 300u64 << 20;
            for i in 0..n {
                let dt = 10_000.0 + jitter[i] as f64;
                let cpu = 100.0 * busy[i] as f64 / (dt / 1000.0 * 100.0 * 4.0);
                rss = rss.wrapping_add(busy[i] * 4096);
                c.push(
                    1_764_070_000_000 + i as i64 * 10_000 + jitter[i],
                    cpu,
                    cpu * 4.0 / 100.0,
                    100.0 * rss as f64 / 16e9,
                    rss,
                    (busy[i] % 3) as u32,
                );
            }
            prop_assert!(same(&decode(&encode(&c)).unwrap(), &c));
        }
    }
}
