//! Timing shared by this crate's benchmark examples (`store_bench`, `long_history_bench`).

use std::time::Instant;

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
