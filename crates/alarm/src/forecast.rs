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
//! - [`Analog`] — procwatch's default (see its docs and BENCHMARKS.md, section Forecaster).

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
}

/// Time from `t_last` until a line `y(t) = y_last + slope_per_ms·(t − t_last)` reaches
/// `threshold`, if it is rising towards it.
fn eta_from_slope(y_last: f64, slope_per_ms: f64, threshold: f64) -> Option<i64> {
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
    /// A window of `n` samples (`W/Δ + 1`; at least 2).
    pub fn new(n: usize) -> Self {
        let n = n.max(2);
        Self { n, buf: std::collections::VecDeque::with_capacity(n) }
    }

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
}

/// procwatch's default forecaster: an empirical crossing probability plus a trend.
///
/// It works on a fixed time grid of `step = H/2` buckets (5 min at H = 10 min), whatever the
/// sampling interval, so what was tuned on the 5-minute traces holds at live 10 s sampling;
/// each bucket keeps the median (its level: robust to a lone spike at live sampling) and
/// the max of its samples. The forecast for `t + H` is judged
/// above the threshold T when either
///
/// 1. **analog:** among the buckets of the last `history` (24 h) whose median is within `eps`
///    (1 point) of the current value, at least `min_matches` (3) exist and a share of at
///    least `p` (0.8) had some bucket above T within the next `H/step` buckets — i.e. the
///    empirical chance of crossing within H, given this level, is high; or
/// 2. **trend:** the latest value is at least `T − gate` (72 at T = 80) and the latest value
///    plus Holt's trend over the bucket medians (α = 1, β = 0.6, undamped) times
///    `(t + H − t_last)/step` is above T. The gate keeps a steep rise far from T (a batch job
///    starting at 20 %) from raising AMBER; most false AMBERs of a pure trend rule are those.
///
/// The first catches recurring load (periodic jobs, a series hovering near T), which is most
/// of what precedes the CPU crossings on the shared traces; the second catches gradual rises.
/// Chosen and tuned on the shared traces by the backtest (BENCHMARKS.md, Forecaster).
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
    pub eps: f64,
    pub p: f64,
    pub min_matches: usize,
    pub alpha: f64,
    pub beta: f64,
    /// The trend term only counts when the latest value is at least `T − gate`.
    pub gate: f64,
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
        }
    }
}

impl Analog {
    pub fn new(params: AnalogParams) -> Self {
        Self { params, history: Default::default(), current: None, holt: None, last: None }
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

    fn close_current(&mut self) {
        if let Some((_, values)) = self.current.take() {
            let (median, max) = Self::summary(&values);
            self.holt = Some(self.holt_step(self.holt, median));
            if self.history.len() == self.params.history + self.params.horizon_buckets + 1 {
                self.history.pop_front();
            }
            self.history.push_back((median, max));
        }
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
        let id = ts.div_euclid(self.params.step_ms);
        match &mut self.current {
            Some((cid, values)) if *cid == id => values.push(y),
            _ => {
                self.close_current();
                self.current = Some((id, vec![y]));
            }
        }
        self.last = Some((ts, y));
    }

    fn forecast(&mut self, at: TsMs, threshold: f64) -> Option<Forecast> {
        let (t_last, y_last) = self.last?;
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
        let eta_ms = if y_last > threshold {
            Some(0)
        } else if analog_above {
            Some((wait * self.params.step_ms as f64).round() as i64)
        } else {
            eta_from_slope(y_last, b / self.params.step_ms as f64, threshold)
        };
        Some(Forecast { value, above: trend_above || analog_above, eta_ms })
    }

    fn reset(&mut self) {
        *self = Self::new(self.params);
    }
}
