//! procwatch's forecaster ([`Robust`]): a robust trend with a noise-aware margin. Its
//! structure ([`Shape`]) and its one knob (`sensitivity`) are both chosen by
//! leave-one-trace-out cross-validation (`crate::cv`).

use super::{eta_from_slope, Forecast, Forecaster, Quiet};
use procwatch_model::TsMs;

/// procwatch's forecaster: a robust trend with a noise-aware margin, silenced for a while
/// after a crossing. One knob, `sensitivity`, moves it along its precision/recall curve.
///
/// It works on a fixed time grid of `step = H/2` buckets (5 min at H = 10 min), whatever the
/// sampling interval, so what was scored on the 5-minute traces holds at live 10 s sampling;
/// each bucket keeps the median of its samples (robust to a lone spike at live sampling).
/// With `y` the latest value, `h = (t + H − t_last)/step` and T the threshold:
///
/// - **trend** `b`: the Theil–Sen slope (median of pairwise slopes) over the bucket medians of
///   the last `trend` closed buckets and the open one; one outlier cannot tilt it;
/// - **noise** `σ`: 1.4826 × the median absolute deviation of the bucket-to-bucket changes
///   over the last `noise` buckets, at least `min_sigma`: how much the series moves in one
///   step when nothing special happens;
/// - **forecast** `f = y + φ·h·b` with the trend damped by `φ` (`damping`), judged above T
///   when `f + z·σ·√h > T`, where `z` is the sensitivity: AMBER when T is within `z` noise
///   widths of the forecast (higher `z`, more warnings; `z < 0` asks the forecast to clear T
///   by `−z` noise widths);
/// - **hold-off**: never above while a sample above T was seen in the last `holdoff`: a
///   re-crossing then is the same incident (docs/contract.md: re-crossings within 30 min are
///   a continuation), already RED;
/// - **ETA**: when above, the time at which the undamped trend line `y + b·t` reaches T, at
///   most H (the forecaster only claims "within H"; H itself when the trend does not rise).
///   The damping is for deciding, not for timing: on a steady ramp the undamped line times
///   the crossing right.
///
/// The window lengths, damping, σ floor and hold-off are its [`Shape`]. The default shape
/// and knob are per metric ([`Shape::MEMORY`], [`Shape::CPU`]; `crate::rules::default_shape`
/// and `default_sensitivity`): the nested leave-one-trace-out cross-validation's picks on
/// all traces of each family (BENCHMARKS.md, Forecaster). Warm-up: no forecast before
/// `trend` closed buckets.
#[derive(Debug, Clone)]
pub struct Robust {
    params: RobustParams,
    /// Closed bucket medians, oldest first. Kept as `f32`, like the open bucket: ≈ 7
    /// significant digits, far finer than any measured percentage moves, for half the memory
    /// of a series' state (issue 16); the arithmetic is in `f64`.
    history: std::collections::VecDeque<f32>,
    /// The open bucket: id and its samples (its buffer is reused by the next bucket).
    current: Option<(i64, Vec<f32>)>,
    last: Option<(TsMs, f64)>,
    last_above: Option<TsMs>,
}

/// Parameters of [`Robust`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustParams {
    /// Bucket width, ms (H/2).
    pub step_ms: i64,
    /// Closed buckets in the trend fit (plus the open one).
    pub trend: u32,
    /// Closed buckets over which the noise is measured.
    pub noise: u32,
    /// Floor of σ, in the series' units.
    pub min_sigma: f64,
    /// Hold-off, ms (0 = none).
    pub holdoff_ms: i64,
    /// The share of the trend carried into the forecast (1 = the straight line).
    pub damping: f64,
    /// The sensitivity `z`: noise widths of margin.
    pub sensitivity: f64,
}

/// The accepted range of the sensitivity.
pub const SENSITIVITY_RANGE: std::ops::RangeInclusive<f64> = -3.0..=6.0;

/// The structure of [`Robust`]: everything but the knob, in time units so it holds at any
/// horizon and sampling interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// The trend's history, ms.
    pub trend_ms: i64,
    /// The history the noise is measured over, ms.
    pub noise_ms: i64,
    /// Floor of σ, in the series' units.
    pub min_sigma: f64,
    /// Hold-off after a sample above T, ms (0 = none).
    pub holdoff_ms: i64,
    /// The share of the trend carried into the forecast (1 = undamped).
    pub damping: f64,
}

impl Shape {
    /// The memory default: the structure the nested cross-validation's criterion picks on
    /// all memory traces (1 h trend, 2 h noise, σ floor 0.1, damping ½, 30-min hold-off).
    pub const MEMORY: Shape = Shape {
        trend_ms: 60 * 60_000,
        noise_ms: 120 * 60_000,
        min_sigma: 0.1,
        holdoff_ms: 30 * 60_000,
        damping: 0.5,
    };

    /// The CPU default: the structure the criterion picks on all CPU traces without the
    /// auto-scaling-group one (30-min trend, 2 h noise, σ floor 0.1, undamped, 30-min
    /// hold-off).
    pub const CPU: Shape = Shape {
        trend_ms: 30 * 60_000,
        noise_ms: 120 * 60_000,
        min_sigma: 0.1,
        holdoff_ms: 30 * 60_000,
        damping: 1.0,
    };

    /// The parameters of this shape for a horizon `horizon_ms` at `sensitivity`.
    pub fn params(&self, horizon_ms: i64, sensitivity: f64) -> RobustParams {
        let step_ms = (horizon_ms / 2).max(1);
        RobustParams {
            step_ms,
            trend: (self.trend_ms / step_ms).clamp(2, u32::MAX.into()) as u32,
            noise: (self.noise_ms / step_ms).clamp(4, u32::MAX.into()) as u32,
            min_sigma: self.min_sigma,
            holdoff_ms: self.holdoff_ms,
            damping: self.damping,
            sensitivity,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trend {}m noise {}m floor {} damping {} holdoff {}m",
            self.trend_ms / 60_000,
            self.noise_ms / 60_000,
            self.min_sigma,
            self.damping,
            self.holdoff_ms / 60_000
        )
    }
}

/// What [`Robust`]'s series says about the asked instant: the expensive part (the trend
/// and the noise, which depend on the windows only). The rest of the shape (damping, σ floor,
/// hold-off) and the knob enter through [`Assessment::decide`], the function the live
/// forecaster decides with; so scoring many shapes and knob values needs one pass of the
/// forecaster per pair of windows (the cross-validation's cache).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// The latest value.
    pub y: f64,
    /// The Theil–Sen trend, per bucket.
    pub slope: f64,
    /// The noise σ per bucket, before the floor.
    pub sigma: f64,
    /// Buckets from the last sample to the asked instant.
    pub h: f64,
    /// From the last sample to the asked instant, ms.
    pub horizon_ms: i64,
    /// Since the latest sample above the threshold, ms (`None`: none seen).
    pub since_above_ms: Option<i64>,
    /// The bucket width, ms.
    pub step_ms: i64,
}

impl Assessment {
    /// The forecast with `params`' damping, σ floor, hold-off and sensitivity against
    /// `threshold`.
    pub fn decide(&self, params: &RobustParams, threshold: f64) -> Forecast {
        let value = self.y + self.h * params.damping * self.slope;
        let sigma = self.sigma.max(params.min_sigma);
        let held = self.since_above_ms.is_some_and(|d| d < params.holdoff_ms);
        let above = !held && value + params.sensitivity * sigma * self.h.sqrt() > threshold;
        let slope_ms = self.slope / self.step_ms as f64;
        let eta_ms = match eta_from_slope(self.y, slope_ms, threshold) {
            Some(ms) if above => Some(ms.min(self.horizon_ms)),
            None if above => Some(self.horizon_ms),
            eta => eta,
        };
        Forecast { value, above, eta_ms }
    }
}

/// The median of `v` (the mean of the middle two for an even count), reordering `v`; 0 when
/// empty. The buckets hold `f32`, the Theil–Sen slopes and changes `f64`.
fn median_in_place<T: Copy + Into<f64>>(v: &mut [T]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let key = |x: &T| -> f64 { (*x).into() };
    let (lo, mid, _) = v.select_nth_unstable_by(n / 2, |a, b| key(a).total_cmp(&key(b)));
    let mid = key(mid);
    if n % 2 == 1 {
        mid
    } else {
        let below = lo.iter().map(key).max_by(f64::total_cmp).unwrap_or(mid);
        (below + mid) / 2.0
    }
}

impl Robust {
    /// A forecaster with `params`.
    pub fn new(params: RobustParams) -> Self {
        Self { params, history: Default::default(), current: None, last: None, last_above: None }
    }

    /// Closes the open bucket into `history` and opens bucket `id` with `y`, in the same buffer.
    fn close_and_open(&mut self, id: i64, y: f32) {
        let Some((_, mut values)) = self.current.take() else {
            self.current = Some((id, vec![y]));
            return;
        };
        let m = median_in_place(&mut values) as f32;
        let cap = self.params.trend.max(self.params.noise) as usize + 1;
        if self.history.len() == cap {
            self.history.pop_front();
        }
        if self.history.capacity() == 0 {
            // Exactly what it will hold, not the next power of two.
            self.history.reserve_exact(cap);
        }
        self.history.push_back(m);
        values.clear();
        values.push(y);
        self.current = Some((id, values));
    }

    /// (Theil–Sen slope per bucket, σ per bucket before the floor) over the closed buckets and the open one.
    fn trend_and_noise(&self) -> Option<(f64, f64)> {
        let mut open = self.current.as_ref()?.1.clone();
        let level = median_in_place(&mut open);
        let n = self.history.len();
        let trend = self.params.trend as usize;
        if n < trend {
            return None;
        }
        let pts: Vec<f64> =
            self.history.iter().skip(n - trend).map(|&m| f64::from(m)).chain([level]).collect();
        let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
        for i in 0..pts.len() {
            for j in i + 1..pts.len() {
                slopes.push((pts[j] - pts[i]) / (j - i) as f64);
            }
        }
        let slope = median_in_place(&mut slopes);
        let k = (self.params.noise as usize).min(n);
        let seq: Vec<f64> =
            self.history.iter().skip(n - k).map(|&m| f64::from(m)).chain([level]).collect();
        let mut d: Vec<f64> = seq.windows(2).map(|w| w[1] - w[0]).collect();
        let md = median_in_place(&mut d.clone());
        for x in &mut d {
            *x = (*x - md).abs();
        }
        Some((slope, 1.4826 * median_in_place(&mut d)))
    }

    /// The series' side of the forecast for the instant `at` ([`Forecaster::forecast`] is
    /// this followed by [`Assessment::decide`] with the forecaster's parameters). Called once
    /// per pushed sample: it records the latest sample above `threshold` (the hold-off).
    pub fn assess(&mut self, at: TsMs, threshold: f64) -> Option<Assessment> {
        let (t_last, y_last) = self.last?;
        if y_last > threshold {
            self.last_above = Some(t_last);
        }
        let (slope, sigma) = self.trend_and_noise()?;
        Some(Assessment {
            y: y_last,
            slope,
            sigma,
            h: ((at - t_last) as f64 / self.params.step_ms as f64).max(0.0),
            horizon_ms: (at - t_last).max(0),
            since_above_ms: self.last_above.map(|t| t_last - t),
            step_ms: self.params.step_ms,
        })
    }
}

impl Forecaster for Robust {
    fn forecast(&mut self, at: TsMs, threshold: f64) -> Option<Forecast> {
        let params = self.params;
        self.assess(at, threshold).map(|a| a.decide(&params, threshold))
    }

    fn push(&mut self, ts: TsMs, y: f64) {
        self.last = Some((ts, y));
        let id = ts.div_euclid(self.params.step_ms);
        match &mut self.current {
            Some((cid, values)) if *cid == id => values.push(y as f32),
            _ => self.close_and_open(id, y as f32),
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.params);
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.history.capacity() * 4
            + self.current.as_ref().map_or(0, |c| c.1.capacity() * 4)
    }

    /// Quiet when every value it holds (bucket medians, the open bucket's samples, the last
    /// sample) lies in `0..=c`, with `c` low enough that no forecast built from values in that
    /// range can cross: with every point in `[0, c]`, the latest value is at most `c`, every
    /// Theil–Sen pairwise slope (and so their median) at most `c` per bucket in size, and every
    /// change at most `c` from the median change, so σ ≤ max(1.4826·2c, floor). The forecast
    /// test `y + h·φ·b + z·σ·√h` is then at most `c·(1 + h·|φ|) + z⁺·√h·max(2.9652·c, floor)`,
    /// which `c` keeps below the threshold (with a margin of 1e-6 for rounding; the hold-off
    /// only ever silences). Rebuilt by replay when no bucket can be skipped (`max_gap_ms` at
    /// most a bucket): its buckets are then the last ones in time, and a replay from
    /// `(cap + 2)` buckets back (and at least the hold-off back, for the latest sample above
    /// the threshold) closes the same medians; an older partial bucket falls out of the history.
    fn quiescence(&self, threshold: f64, horizon_ms: i64, max_gap_ms: i64) -> Option<Quiet> {
        let p = &self.params;
        if max_gap_ms > p.step_ms || horizon_ms <= 0 {
            return None;
        }
        let h = horizon_ms as f64 / p.step_ms as f64;
        let grow = 1.0 + h * p.damping.abs();
        let spread = p.sensitivity.max(0.0) * h.sqrt();
        let ceiling = (threshold / (grow + spread * 2.0 * 1.4826))
            .min((threshold - spread * p.min_sigma) / grow)
            * (1.0 - 1e-6);
        if !(ceiling > 0.0 && ceiling.is_finite()) {
            return None;
        }
        let within = |v: f64| (0.0..=ceiling).contains(&v);
        let open = self.current.iter().flat_map(|c| c.1.iter());
        let held = self.history.iter().chain(open).all(|&v| within(f64::from(v)));
        if !held || !self.last.is_some_and(|(_, y)| within(y)) {
            return None;
        }
        let cap = i64::from(p.trend.max(p.noise)) + 1;
        let memory_ms = ((cap + 2) * p.step_ms).max(p.holdoff_ms + p.step_ms);
        Some(Quiet { ceiling, memory_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16, dormancy: what `quiescence` promises. While every value held is under the
    /// ceiling no forecast crosses, and at any later sample `t` a fresh forecaster fed the
    /// samples of `[t − memory, t)` holds exactly the state of the one that saw everything
    /// (bucket medians, open bucket, last sample, latest sample above the threshold).
    #[test]
    fn a_quiet_forecaster_is_rebuilt_exactly_from_its_memory() {
        for shape in [Shape::MEMORY, Shape::CPU] {
            let params = shape.params(600_000, 1.0);
            let (horizon, threshold) = (600_000, 80.0);
            // 10 s samples: an hour near the threshold (some above it), then low and noisy.
            let y = |i: i64| match i {
                0..360 => 70.0 + (i % 23) as f64,
                _ => 1.0 + ((i * 7919) % 101) as f64 / 10.0,
            };
            let feed = |f: &mut Robust, i: i64| {
                f.push(i * 10_000, y(i));
                f.forecast(i * 10_000 + horizon, threshold)
            };
            let mut f = Robust::new(params);
            let (mut quiet_at, mut checked) = (None, 0);
            for i in 0..8 * 360 {
                if let Some(q) = quiet_at {
                    let q: Quiet = q;
                    assert!(y(i) <= q.ceiling, "{shape}: the stream stays under {}", q.ceiling);
                    if i % 17 == 0 {
                        let mut g = Robust::new(params);
                        let from = i * 10_000 - q.memory_ms;
                        for j in (0..i).filter(|&j| j * 10_000 >= from) {
                            feed(&mut g, j);
                        }
                        // The latest sample above the threshold matters within the
                        // hold-off only (it silences); older, the replay need not see it.
                        let recent = |r: &Robust| {
                            let t = r.last.map(|l| l.0).unwrap_or(0);
                            r.last_above.filter(|&a| t - a < params.holdoff_ms)
                        };
                        let state = |r: &Robust| format!("{:?}", (&r.history, &r.current, r.last));
                        assert_eq!(state(&g), state(&f), "{shape}, sample {i}");
                        assert_eq!(recent(&g), recent(&f), "{shape}, sample {i}");
                        checked += 1;
                    }
                }
                let fc = feed(&mut f, i);
                if quiet_at.is_some() {
                    assert!(!fc.unwrap().above, "{shape}: quiet, yet a crossing at {i}");
                }
                quiet_at = quiet_at.or(f.quiescence(threshold, horizon, 30_000));
            }
            assert!(checked > 50, "{shape}: went quiet and was checked ({checked})");
            // Not while it holds the hour near the threshold, nor when a gap could skip a bucket.
            let mut g = Robust::new(params);
            for i in 0..400 {
                let _ = feed(&mut g, i);
            }
            assert_eq!(g.quiescence(threshold, horizon, 30_000), None);
            assert_eq!(f.quiescence(threshold, horizon, 600_000), None);
        }
    }

    /// Issue 16: a series' forecaster state, once its windows are full, at a 10 s interval:
    /// 380 bytes at every sample (`f32` buckets, history sized exactly, the open bucket's
    /// buffer reused, the window counts `u32`; 388 with `usize` counts). Before: `f64`,
    /// power-of-two growth and a new buffer per bucket, 581 bytes on average over the third
    /// hour, 672 at a bucket's end.
    #[test]
    fn a_full_forecaster_at_ten_seconds_holds_a_few_hundred_bytes() {
        for shape in [Shape::MEMORY, Shape::CPU] {
            let mut f = Robust::new(shape.params(600_000, 1.0));
            for i in 0..3 * 360 {
                f.push(i * 10_000, 50.0 + (i % 7) as f64);
                let _ = f.forecast(i * 10_000 + 600_000, 80.0);
            }
            let bytes = f.heap_bytes();
            eprintln!("{shape}: {bytes}");
            assert!(bytes <= 400, "{shape}: {bytes} bytes");
        }
    }
}
