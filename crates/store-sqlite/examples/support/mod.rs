//! Timing and data shared by this crate's benchmark examples (`store_bench`,
//! `long_history_bench`, `steady_reads_bench`).

use std::time::Instant;

use procwatch_model::{Batch, Sample, TsMs};
use procwatch_store::conformance::batch;

/// One sweep of `host`'s `procs` processes at `ts`: deterministic, irregular, mostly idle
/// values (every tenth process busy).
#[allow(dead_code)] // store_bench has data of its own
pub fn sweep(host: &str, procs: usize, ts: TsMs, seq: u64) -> Batch {
    let samples = (0..procs)
        .map(|k| {
            let x = (k as u64).wrapping_mul(0x9E37_79B9).wrapping_add(seq.wrapping_mul(7919));
            let busy = k % 10 == 9;
            Sample {
                ts,
                process: format!("process-{k:03}"),
                cpu: if busy {
                    50.0 + (x % 1500) as f64 / 10.0
                } else {
                    f64::from(u8::from(x.is_multiple_of(7)))
                },
                cores: if busy { 0.5 + (x % 15) as f64 / 10.0 } else { 0.0 },
                mem: 0.1 + (k as f64) / 100.0 + (x % 3) as f64 / 1000.0,
                rss: 4096 * (1_000 + (k as u64) * 37 + x % 5),
                count: 1 + (k % 10 == 0) as u32 * (x % 4) as u32,
                extras: None,
            }
        })
        .collect();
    batch(host, seq, samples)
}

/// The `q` quantile (0..=1) of `v`, nearest rank; sorts `v`.
pub fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Runs `f` once to warm up, then `runs` times: (p50, p99) of its wall time in milliseconds.
pub fn time_ms<F: FnMut()>(runs: usize, mut f: F) -> (f64, f64) {
    f(); // warm
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (pct(&mut t, 0.5), pct(&mut t, 0.99))
}
