//! The precision an agent sends its figures with: cpu and mem in thousandths of a percent,
//! cores in hundred-thousandths of a core. That is finer than what is measured (a 10 s sweep
//! counts CPU time in 10 ms ticks: 0.1 % of one core), and it lets the server keep a sample
//! of the recent window in 24 bytes instead of 40, exactly (the embedded store's `index.rs`:
//! a value `v` with an integer `n` such that `n / scale == v` bit for bit is kept as `n`).
//! The server stores whatever a client sends, exactly; values of other precision only cost
//! the wider layout.

/// cpu and mem: thousandths of a percent.
pub const PERCENT_SCALE: f64 = 1e3;
/// cores: hundred-thousandths of a core.
pub const CORES_SCALE: f64 = 1e5;

/// `v` to the nearest thousandth (of a percent). Non-finite values pass through; never -0.0.
pub fn round_percent(v: f64) -> f64 {
    round_to(v, PERCENT_SCALE)
}

/// `v` to the nearest hundred-thousandth (of a core). Non-finite values pass through.
pub fn round_cores(v: f64) -> f64 {
    round_to(v, CORES_SCALE)
}

fn round_to(v: f64, scale: f64) -> f64 {
    if !v.is_finite() {
        return v;
    }
    // `+ 0.0` turns -0.0 (a tiny negative rounded) into 0.0.
    (v * scale).round() / scale + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_the_scale_and_never_to_minus_zero() {
        assert_eq!(round_percent(12.345_678), 12.346);
        assert_eq!(round_percent(100.0 / 3.0), 33.333);
        assert_eq!(round_cores(1.0 / 3.0), 0.333_33);
        assert_eq!(round_percent(-0.000_1).to_bits(), 0.0f64.to_bits());
        assert!(round_percent(f64::NAN).is_nan());
    }
}
