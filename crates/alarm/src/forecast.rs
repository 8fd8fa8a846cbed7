//! Forecasters: the code that says what a series will be at `now + H`.
//!
//! Every forecaster is fed one sample at a time, oldest first, with its real timestamp
//! ([`Forecaster::push`]) and is then asked about a future instant
//! ([`Forecaster::forecast`]). The live engine and the backtest drive the very same
//! implementations; only the feeding differs (the engine pushes what the store returns, the
//! backtest pushes a trace row by row).
//!
//! Methods:
//! - [`Linear`] — Prometheus' `predict_linear`: ordinary least squares over the last
//!   `W/Δ + 1` samples (Δ = the series' nominal interval) on their real timestamps, the line
//!   read at the asked instant. No forecast before the window is full.
//! - [`Holt`] — Holt's linear exponential smoothing, per sample, `f = l + h·b` with
//!   `h = (at − t_last)/Δ`.
//! - [`Persistence`] — `f = y`. Never raises AMBER (the value is already the forecast).
//! - [`Robust`] — procwatch's default: a Theil–Sen trend with a noise-aware margin whose width
//!   is the one knob, `sensitivity` (see its docs and BENCHMARKS.md, section Forecaster).
//! - [`Analog`] — the previous default (tuned in-sample; it does not hold on unseen traces),
//!   kept for the research harness `examples/sweep.rs`.

use procwatch_model::TsMs;

/// What a forecaster says about the value at an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The point forecast at the asked instant.
    pub value: f64,
    /// Whether the forecaster judges the threshold will be exceeded at the asked instant.
    /// Point forecasters answer `value > threshold`; interval forecasters answer with their
    /// own rule (for [`Analog`]: the empirical crossing share or the gated trend).
    pub above: bool,
    /// Estimated milliseconds from the last sample until the threshold is crossed, when the
    /// forecaster has a trend that reaches it (`None` when it does not or has no trend).
    pub eta_ms: Option<i64>,
}

/// A one-series forecaster. Implementations keep bounded state (a window of samples, smoothed
/// values, or a day of 5-minute buckets), never the whole series.
pub trait Forecaster: Send {
    /// Feeds the next sample. Timestamps must increase.
    fn push(&mut self, ts: TsMs, y: f64);
    /// The forecast for the instant `at` (after the last pushed sample), judged against
    /// `threshold`; `None` when the forecaster has too few samples. Called once per pushed
    /// sample (`&mut` so a forecaster may keep decision state).
    fn forecast(&mut self, at: TsMs, threshold: f64) -> Option<Forecast>;
    /// Forgets every sample (after a gap that made the series stale).
    fn reset(&mut self);
    /// Heap bytes held (the struct itself and its buffers' capacities), for the engine's
    /// memory gauge; an estimate.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self)
    }
    /// Whether the forecaster may be dropped now and rebuilt later by replaying stored
    /// samples (issue 16: a quiet series costs no forecaster). `Some(q)` promises two things:
    /// from the state it holds now, no forecast for `horizon_ms` ahead is above `threshold`
    /// as long as every sample pushed stays within `0..=q.ceiling`; and the state it would
    /// hold just before a sample at `t` is rebuilt exactly by a fresh forecaster fed (push,
    /// then forecast, as the engine does) the samples of `[t − q.memory_ms, t)` pushed since
    /// its last reset. `max_gap_ms`: the longest gap between two pushed samples (the engine
    /// restarts a series after a longer one). `None` (the default): keep it.
    fn quiescence(&self, threshold: f64, horizon_ms: i64, max_gap_ms: i64) -> Option<Quiet> {
        let _ = (threshold, horizon_ms, max_gap_ms);
        None
    }
}

/// A forecaster's promise that it can be dropped while its series stays low
/// ([`Forecaster::quiescence`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quiet {
    /// Samples in `0..=ceiling` cannot raise a forecast above the threshold.
    pub ceiling: f64,
    /// How far back a replay must start to rebuild the forecaster's state exactly, ms.
    pub memory_ms: i64,
}

/// Time from `t_last` until a line `y(t) = y_last + slope_per_ms·(t − t_last)` reaches
/// `threshold`, if it is rising towards it.
pub(crate) fn eta_from_slope(y_last: f64, slope_per_ms: f64, threshold: f64) -> Option<i64> {
    if y_last > threshold {
        return Some(0);
    }
    if slope_per_ms > 0.0 {
        let ms = (threshold - y_last) / slope_per_ms;
        if ms.is_finite() && ms < i64::MAX as f64 {
            return Some(ms.round() as i64);
        }
    }
    None
}

/// `predict_linear`: least squares over the last `n` samples, read at the asked instant.
#[derive(Debug, Clone)]
pub struct Linear {
    n: usize,
    buf: std::collections::VecDeque<(TsMs, f64)>,
}

impl Linear {
    /// A window of `n` samples (`W/Δ + 1`; at least 2). The buffer grows with the samples
    /// pushed, from at most [`Linear::PREALLOC`]: `n` comes from a configured window over a
    /// host's claimed interval, and a claim is not a sample.
    pub fn new(n: usize) -> Self {
        let n = n.max(2);
        Self { n, buf: std::collections::VecDeque::with_capacity(n.min(Self::PREALLOC)) }
    }

    /// The most samples a window reserves before any is pushed.
    pub const PREALLOC: usize = 64;

    /// The window in samples for a window `window_ms` at interval `interval_ms`.
    pub fn samples_for(window_ms: i64, interval_ms: i64) -> usize {
        (window_ms / interval_ms.max(1)) as usize + 1
    }

    /// Slope per second, the fitted value at the last sample's time, and that time.
    fn fit(&self) -> Option<(f64, f64, TsMs)> {
        if self.buf.len() < self.n {
            return None;
        }
        let t_last = self.buf.back()?.0;
        let k = self.buf.len() as f64;
        // x in seconds relative to the last sample, as Prometheus does (relative to the
        // evaluation time), which keeps the sums small.
        let (mut sx, mut sy) = (0.0, 0.0);
        for &(t, y) in &self.buf {
            sx += (t - t_last) as f64 / 1000.0;
            sy += y;
        }
        let (mx, my) = (sx / k, sy / k);
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for &(t, y) in &self.buf {
            let dx = (t - t_last) as f64 / 1000.0 - mx;
            sxy += dx * (y - my);
            sxx += dx * dx;
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        // Value of the line at x = 0 (the last sample's time).
        let at_last = my - slope * mx;
        Some((slope, at_last, t_last))
    }
}

impl Forecaster for Linear {
    fn push(&mut self, ts: TsMs, y: f64) {
        if self.buf.len() == self.n {
            self.buf.pop_front();
        }
        self.buf.push_back((ts, y));
    }

    fn forecast(&mut self, at: TsMs, threshold: f64) -> Option<Forecast> {
        let (slope_s, at_last, t_last) = self.fit()?;
        let value = at_last + slope_s * ((at - t_last) as f64 / 1000.0);
        let y_last = self.buf.back()?.1;
        Some(Forecast {
            value,
            above: value > threshold,
            eta_ms: eta_from_slope(y_last, slope_s / 1000.0, threshold),
        })
    }

    fn reset(&mut self) {
        self.buf.clear();
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.buf.capacity() * std::mem::size_of::<(TsMs, f64)>()
    }
}

/// Holt's linear exponential smoothing (l₀ = y₀, b₀ = 0), `f = l + h·b`, `h` in samples.
#[derive(Debug, Clone)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    interval_ms: i64,
    state: Option<(f64, f64, TsMs)>,
}

impl Holt {
    /// Holt's smoothing with level weight `alpha` and trend weight `beta`, for samples `interval_ms` apart.
    pub fn new(alpha: f64, beta: f64, interval_ms: i64) -> Self {
        Self { alpha, beta, interval_ms: interval_ms.max(1), state: None }
    }
}

impl Forecaster for Holt {
    fn push(&mut self, ts: TsMs, y: f64) {
        self.state = Some(match self.state {
            None => (y, 0.0, ts),
            Some((l0, b0, _)) => {
                let l = self.alpha * y + (1.0 - self.alpha) * (l0 + b0);
                let b = self.beta * (l - l0) + (1.0 - self.beta) * b0;
                (l, b, ts)
            }
        });
    }

    fn forecast(&mut self, at: TsMs, threshold: f64) -> Option<Forecast> {
        let (l, b, t) = self.state?;
        let h = (at - t) as f64 / self.interval_ms as f64;
        let value = l + h * b;
        Some(Forecast {
            value,
            above: value > threshold,
            eta_ms: eta_from_slope(l, b / self.interval_ms as f64, threshold),
        })
    }

    fn reset(&mut self) {
        self.state = None;
    }
}

/// `f = y`: the last value is the forecast.
#[derive(Debug, Clone, Default)]
pub struct Persistence {
    last: Option<f64>,
}

impl Forecaster for Persistence {
    fn push(&mut self, _ts: TsMs, y: f64) {
        self.last = Some(y);
    }

    fn forecast(&mut self, _at: TsMs, threshold: f64) -> Option<Forecast> {
        let value = self.last?;
        Some(Forecast { value, above: value > threshold, eta_ms: (value > threshold).then_some(0) })
    }

    fn reset(&mut self) {
        self.last = None;
    }

    /// Quiet at any value up to the threshold; it holds only the last sample, so a woken
    /// series needs no history.
    fn quiescence(&self, threshold: f64, _horizon_ms: i64, _max_gap_ms: i64) -> Option<Quiet> {
        let quiet = threshold >= 0.0 && self.last.is_some_and(|y| (0.0..=threshold).contains(&y));
        quiet.then_some(Quiet { ceiling: threshold, memory_ms: 0 })
    }
}

/// The previous default (see [`Robust`] for today's): an empirical crossing probability, a gated trend and a
/// latched proximity term, all silenced for a while after a crossing.
///
/// It works on a fixed time grid of `step = H/2` buckets (5 min at H = 10 min), whatever the
/// sampling interval, so what was tuned on the 5-minute traces holds at live 10 s sampling;
/// each bucket keeps the median (its level: robust to a lone spike at live sampling) and
/// the max of its samples. The forecast for `t + H` is judged above the threshold T when
/// none of the series' samples was above T in the last `holdoff` (25 min) and either
///
/// 1. **analog:** among the buckets of the last `history` (24 h) whose median is within `eps`
///    (1 point) of the current value, at least `min_matches` (3) exist and a share of at
///    least `p` (0.8) had some bucket above T within the next `H/step` buckets — i.e. the
///    empirical chance of crossing within H, given this level, is high; or
/// 2. **trend:** the latest value is at least `T − gate` (72 at T = 80) and the latest value
///    plus Holt's trend over the bucket medians (α = 1, β = 0.6, undamped) times
///    `(t + H − t_last)/step` is above T. The gate keeps a steep rise far from T (a batch job
///    starting at 20 %) from raising AMBER; most false AMBERs of a pure trend rule are those;
///    or
/// 3. **near (latched):** the latest value is at least `T − near` (79 at T = 80), or this
///    term was on at the previous sample and the value is still at least `T − near_exit`
///    (77.5). The latch keeps one warning on across the wobble of a series creeping along
///    just under T instead of raising a new one at every wobble.
///
/// The **hold-off** is what makes the rule about *new* crossings: right after the series was
/// above T, a re-crossing is the same incident (docs/contract.md: re-crossings within 30 min are a
/// continuation), already reported as RED, and a series hovering just under T after a
/// crossing would otherwise be in AMBER most of the time. Note the scorer's side of this:
/// AMBER in the 25 min after a crossing can never count as catching an event (an event needs
/// 30 quiet minutes before it), so the hold-off costs no catches by construction and mostly
/// lowers AMBER % and false alarms. BENCHMARKS.md, Forecaster, says how much of the gain is
/// that.
///
/// The analog term catches recurring load (periodic jobs), which is most of what precedes the
/// CPU crossings on the shared traces; the trend term catches gradual rises; the near term
/// catches memory creeping up to T. Chosen and tuned on the shared traces by the backtest
/// (BENCHMARKS.md, Forecaster).
#[derive(Debug, Clone)]
pub struct Analog {
    params: AnalogParams,
    /// Closed buckets, oldest first: (median, max).
    history: std::collections::VecDeque<(f64, f64)>,
    /// The open bucket: id and its samples.
    current: Option<(i64, Vec<f64>)>,
    /// Holt state after the last closed bucket: (level, trend).
    holt: Option<(f64, f64)>,
    last: Option<(TsMs, f64)>,
    /// Time of the latest sample seen above the threshold (updated in `forecast`).
    last_above: Option<TsMs>,
    /// Whether the proximity latch is on.
    latched: bool,
}

/// Parameters of [`Analog`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalogParams {
    /// Bucket width, ms (H/2).
    pub step_ms: i64,
    /// Buckets between "now" and the horizon (H/step = 2).
    pub horizon_buckets: usize,
    /// Buckets of history kept (24 h / step).
    pub history: usize,
    /// Analog matching width: a past bucket matches within this of the current value.
    pub eps: f64,
    /// The share of matching buckets that must have crossed within H.
    pub p: f64,
    /// Matching buckets needed at least.
    pub min_matches: usize,
    /// Holt's level weight over the bucket medians.
    pub alpha: f64,
    /// Holt's trend weight over the bucket medians.
    pub beta: f64,
    /// The trend term only counts when the latest value is at least `T − gate`.
    pub gate: f64,
    /// Hold-off, ms: never above while a sample above T was seen within this long (0 = none).
    pub holdoff_ms: i64,
    /// Proximity term: on when the latest value is at least `T − near`. `None` = off.
    pub near: Option<f64>,
    /// Latch of the proximity term: once on, it stays on while the value is at least
    /// `T − near_exit` (and no sample is above T). `None` = no latch.
    pub near_exit: Option<f64>,
}

impl AnalogParams {
    /// The defaults for a horizon `horizon_ms`.
    pub fn for_horizon(horizon_ms: i64) -> Self {
        let step_ms = (horizon_ms / 2).max(1);
        Self {
            step_ms,
            horizon_buckets: 2,
            history: (86_400_000 / step_ms).max(1) as usize,
            eps: 1.0,
            p: 0.8,
            min_matches: 3,
            alpha: 1.0,
            beta: 0.6,
            gate: 8.0,
            holdoff_ms: 25 * 60_000,
            near: Some(1.0),
            near_exit: Some(2.5),
        }
    }
}

impl Analog {
    /// A forecaster with `params`.
    pub fn new(params: AnalogParams) -> Self {
        Self {
            params,
            history: Default::default(),
            current: None,
            holt: None,
            last: None,
            last_above: None,
            latched: false,
        }
    }

    fn holt_step(&self, state: Option<(f64, f64)>, y: f64) -> (f64, f64) {
        match state {
            None => (y, 0.0),
            Some((l0, b0)) => {
                let l = self.params.alpha * y + (1.0 - self.params.alpha) * (l0 + b0);
                (l, self.params.beta * (l - l0) + (1.0 - self.params.beta) * b0)
            }
        }
    }

    /// (median, max) of a bucket's samples.
    fn summary(values: &[f64]) -> (f64, f64) {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        (median, v[n - 1])
    }

    fn close(&mut self, values: Vec<f64>) {
        let (median, max) = Self::summary(&values);
        self.holt = Some(self.holt_step(self.holt, median));
        if self.history.len() == self.params.history + self.params.horizon_buckets + 1 {
            self.history.pop_front();
        }
        self.history.push_back((median, max));
    }

    /// Empirical share of similar-level buckets followed by a crossing within H, the number
    /// of matches, and the mean buckets until the crossing among the hits.
    fn analog(&self, now_value: f64, threshold: f64) -> (f64, usize, f64) {
        let cur = self.current.as_ref().map(|(_, v)| Self::summary(v));
        let seq: Vec<(f64, f64)> = self.history.iter().copied().chain(cur).collect();
        let h = self.params.horizon_buckets;
        let (mut matches, mut hits, mut wait) = (0usize, 0usize, 0usize);
        if seq.len() > h + 1 {
            let first = (seq.len() - 1 - h).saturating_sub(self.params.history);
            for j in first..seq.len() - 1 - h {
                if (seq[j].0 - now_value).abs() <= self.params.eps {
                    matches += 1;
                    if let Some(k) = (1..=h).find(|&k| seq[j + k].1 > threshold) {
                        hits += 1;
                        wait += k;
                    }
                }
            }
        }
        let share = if matches > 0 { hits as f64 / matches as f64 } else { 0.0 };
        let mean_wait = if hits > 0 { wait as f64 / hits as f64 } else { 0.0 };
        (share, matches, mean_wait)
    }
}

impl Forecaster for Analog {
    fn push(&mut self, ts: TsMs, y: f64) {
        let step_ms = self.params.step_ms;
        if let Some(closed) = into_bucket(&mut self.current, &mut self.last, step_ms, ts, y) {
            self.close(closed);
        }
    }

    fn forecast(&mut self, at: TsMs, threshold: f64) -> Option<Forecast> {
        let (t_last, y_last) = self.last?;
        if y_last > threshold {
            self.last_above = Some(t_last);
        }
        let (level, _) = Self::summary(&self.current.as_ref()?.1);
        // Need a few buckets before saying anything.
        if self.history.len() < self.params.horizon_buckets + 4 {
            return None;
        }
        let (_, b) = self.holt_step(self.holt, level);
        let h = (at - t_last) as f64 / self.params.step_ms as f64;
        // The trend line starts from the latest value (the bucket level at 5-min sampling),
        // so a sharp drop inside the current bucket is not projected upwards.
        let value = y_last + h * b;
        let trend_above = value > threshold && y_last >= threshold - self.params.gate;
        let (share, matches, wait) = self.analog(y_last, threshold);
        let analog_above = matches >= self.params.min_matches && share >= self.params.p;
        let held = self.last_above.is_some_and(|t| t_last - t < self.params.holdoff_ms);
        let near_on = self.params.near.is_some_and(|m| y_last >= threshold - m);
        let near_keep =
            self.latched && self.params.near_exit.is_some_and(|m| y_last >= threshold - m);
        self.latched = !held && (near_on || near_keep);
        let above = !held && (trend_above || analog_above || self.latched);
        let eta_ms = if y_last > threshold {
            Some(0)
        } else if analog_above {
            Some((wait * self.params.step_ms as f64).round() as i64)
        } else {
            eta_from_slope(y_last, b / self.params.step_ms as f64, threshold)
        };
        Some(Forecast { value, above, eta_ms })
    }

    fn reset(&mut self) {
        *self = Self::new(self.params);
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.history.capacity() * 16
            + self.current.as_ref().map_or(0, |c| c.1.capacity() * 8)
    }
}

mod robust;

/// Records `(ts, y)` as the latest sample and adds `y` to the open bucket (id, samples) of a
/// grid of `step_ms` buckets; when `ts` opens a new bucket, returns the samples of the one it
/// closes.
pub(crate) fn into_bucket(
    current: &mut Option<(i64, Vec<f64>)>,
    last: &mut Option<(TsMs, f64)>,
    step_ms: i64,
    ts: TsMs,
    y: f64,
) -> Option<Vec<f64>> {
    *last = Some((ts, y));
    let id = ts.div_euclid(step_ms);
    match current {
        Some((cid, values)) if *cid == id => {
            values.push(y);
            None
        }
        _ => current.replace((id, vec![y])).map(|(_, values)| values),
    }
}
pub use robust::{Assessment, Robust, RobustParams, Shape, SENSITIVITY_RANGE};

#[cfg(test)]
mod tests {
    use super::*;

    /// A window sized by a hostile interval claim (1 ms over an hour: 3.6 M samples) holds
    /// only what is pushed, not the claim; the window itself still counts samples by it.
    #[test]
    fn a_huge_linear_window_reserves_nothing_up_front() {
        let n = Linear::samples_for(3_600_000, 1);
        assert_eq!(n, 3_600_001);
        let mut f = Linear::new(n);
        let bytes = f.heap_bytes();
        assert!(bytes < 2_048, "{bytes}");
        for i in 0..10 {
            f.push(i * 1_000, i as f64);
        }
        assert!(f.heap_bytes() < 2_048, "{}", f.heap_bytes());
        assert_eq!(f.forecast(20_000, 80.0), None, "not full: no forecast");
    }

    /// Feeds `(minutes, value)` stretches at 10 s sampling and returns, per sample, its
    /// time in ms and whether the default forecaster said "above 80 at t + 10 min".
    fn run_at_ten_seconds(stretches: &[(i64, f64)]) -> Vec<(i64, f64, bool)> {
        let mut f = Analog::new(AnalogParams::for_horizon(600_000));
        let mut t = 0;
        let mut out = Vec::new();
        for &(minutes, y) in stretches {
            for _ in 0..minutes * 6 {
                f.push(t, y);
                let above = f.forecast(t + 600_000, 80.0).is_some_and(|fc| fc.above);
                out.push((t, y, above));
                t += 10_000;
            }
        }
        out
    }

    #[test]
    fn near_term_latches_until_the_value_falls_away() {
        let out = run_at_ten_seconds(&[(60, 70.0), (30, 79.2), (30, 78.0), (30, 77.0), (30, 78.0)]);
        let min = |m: i64| m * 60_000;
        let stretch = |from: i64, to: i64| {
            out.iter().filter(move |s| s.0 >= min(from) && s.0 < min(to)).map(|s| s.2)
        };
        // Flat at 79.2: within 1 point of T.
        assert!(stretch(80, 90).all(|a| a), "79.2 is near T");
        // Down to 78: the latch holds (78 ≥ 77.5) though 78 alone would not turn it on.
        assert!(stretch(90, 120).all(|a| a), "latched at 78");
        // 77 releases it, and 78 afterwards does not turn it on again.
        assert!(stretch(120, 180).all(|a| !a), "released below 77.5");
    }

    #[test]
    fn nothing_is_above_for_25_minutes_after_a_crossing() {
        // After an hour of history, one 10 s sample at 81, then a plateau at 79.5 (near T).
        let mut f = Analog::new(AnalogParams::for_horizon(600_000));
        for &(t, y, _) in &run_at_ten_seconds(&[(60, 70.0), (30, 78.0)]) {
            f.push(t, y);
            f.forecast(t + 600_000, 80.0);
        }
        let t0 = 90 * 60_000;
        f.push(t0, 81.0);
        f.forecast(t0 + 600_000, 80.0);
        let mut first_above = None;
        for k in 1..=180 {
            let t = t0 + k * 10_000;
            f.push(t, 79.5);
            if f.forecast(t + 600_000, 80.0).is_some_and(|fc| fc.above) && first_above.is_none() {
                first_above = Some(t - t0);
            }
        }
        assert_eq!(first_above, Some(25 * 60_000), "above again exactly when the hold-off ends");
    }
}
