//! Roll-up block codec: the closed 5-minute buckets of one series, column-wise, with the
//! chunk codec's primitives (`codec.rs`: one bit stream, Gorilla timestamps and floats).
//!
//! Layout: one version byte (`1`), the bucket count as a LEB128 varint, then one bit stream:
//! - `start`: `codec::write_times` (first raw, then delta-of-delta: a run of consecutive
//!   buckets costs one bit each);
//! - `n`: the first as an "int", then each delta from the previous as an "int" (`0` when the
//!   interval did not change);
//! - `cpu_min`, `cpu_sum`, `cpu_max`, `mem_min`, `mem_sum`, `mem_max`, `cores_sum`,
//!   `rss_sum`, `count_sum`: `codec::write_floats` each (XOR with the previous).
//!
//! Lossless: every f64 bit pattern round-trips, so a packed bucket answers exactly as its row.

use procwatch_store::rollup::Bucket;

use crate::codec::{
    blob_reader, blob_writer, read_floats, read_int, read_times, write_floats, write_int,
    write_times, CorruptChunk,
};

const VERSION: u8 = 1;

/// The float columns of a bucket, in blob order.
fn floats(b: &Bucket) -> [f64; 9] {
    [
        b.cpu_min,
        b.cpu_sum,
        b.cpu_max,
        b.mem_min,
        b.mem_sum,
        b.mem_max,
        b.cores_sum,
        b.rss_sum,
        b.count_sum,
    ]
}

/// Encodes buckets (sorted by start, distinct starts).
pub(crate) fn encode(buckets: &[Bucket]) -> Vec<u8> {
    let n = buckets.len();
    let mut w = blob_writer(VERSION, n, 8 + n * 4);
    if n > 0 {
        let starts: Vec<i64> = buckets.iter().map(|b| b.start).collect();
        write_times(&mut w, &starts);
        let mut prev = 0u64;
        for b in buckets {
            write_int(&mut w, b.n.wrapping_sub(prev) as i64);
            prev = b.n;
        }
        for k in 0..9 {
            let col: Vec<f64> = buckets.iter().map(|b| floats(b)[k]).collect();
            write_floats(&mut w, &col);
        }
    }
    w.finish()
}

/// Decodes a block written by `encode`.
pub(crate) fn decode(blob: &[u8]) -> Result<Vec<Bucket>, CorruptChunk> {
    let (n, mut r) = blob_reader(blob, VERSION, "unknown roll-up block version")?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut starts = Vec::with_capacity(n);
    read_times(&mut r, n, &mut starts)?;
    let mut out: Vec<Bucket> = starts.into_iter().map(Bucket::new).collect();
    let mut prev = 0u64;
    for b in out.iter_mut() {
        prev = prev.wrapping_add(read_int(&mut r)? as u64);
        b.n = prev;
    }
    let mut col = Vec::with_capacity(n);
    for k in 0..9 {
        col.clear();
        read_floats(&mut r, n, &mut col)?;
        for (b, v) in out.iter_mut().zip(&col) {
            let f = match k {
                0 => &mut b.cpu_min,
                1 => &mut b.cpu_sum,
                2 => &mut b.cpu_max,
                3 => &mut b.mem_min,
                4 => &mut b.mem_sum,
                5 => &mut b.mem_max,
                6 => &mut b.cores_sum,
                7 => &mut b.rss_sum,
                _ => &mut b.count_sum,
            };
            *f = *v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(a: &[Bucket], b: &[Bucket]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.start == y.start
                    && x.n == y.n
                    && floats(x).iter().zip(floats(y)).all(|(p, q)| p.to_bits() == q.to_bits())
            })
    }

    #[test]
    fn a_day_of_idle_buckets_is_small() {
        let day = 1_764_028_800_000i64;
        let buckets: Vec<Bucket> = (0..288)
            .map(|i| {
                let mut b = Bucket::new(day + i * 300_000);
                for _ in 0..30 {
                    b.push(0.0, 0.0, 1.25, 1 << 24, 2);
                }
                b
            })
            .collect();
        let blob = encode(&buckets);
        assert!(same(&decode(&blob).unwrap(), &buckets));
        // 288 buckets × 10 columns at ~1 bit each after the first.
        assert!(blob.len() < 500, "{} bytes", blob.len());
    }

    #[test]
    fn empty_and_truncated() {
        assert!(decode(&encode(&[])).unwrap().is_empty());
        let mut b = Bucket::new(300_000);
        b.push(1.5, 0.03, 2.0, 4096, 3);
        let blob = encode(&[b, Bucket { start: 900_000, ..b }]);
        for cut in [0, 1, 2, blob.len() / 2, blob.len() - 1] {
            assert!(decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_any_buckets(
            rows in proptest::collection::vec(
                (1i64..40, 0u64..100, any::<f64>(), any::<f64>(), any::<f64>(), any::<f64>(), any::<f64>()),
                0..300,
            )
        ) {
            let mut start = 1_764_028_800_000i64;
            let buckets: Vec<Bucket> = rows
                .into_iter()
                .map(|(gap, n, a, b, c, d, e)| {
                    start += gap * 300_000;
                    Bucket {
                        start,
                        n,
                        cpu_min: a,
                        cpu_sum: b,
                        cpu_max: c,
                        mem_min: d,
                        mem_sum: e,
                        mem_max: a + e,
                        cores_sum: b * 0.5,
                        rss_sum: (n * 4096) as f64,
                        count_sum: n as f64,
                    }
                })
                .collect();
            prop_assert!(same(&decode(&encode(&buckets)).unwrap(), &buckets));
        }

        #[test]
        fn decoding_garbage_never_panics(mut blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = blob.first_mut() {
                *b = VERSION;
            }
            let _ = decode(&blob);
        }
    }
}
