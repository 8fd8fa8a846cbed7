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
//! - [`Guarded`] — procwatch's default (see its docs and BENCHMARKS.md, section Forecaster).

use procwatch_model::TsMs;

/// What a forecaster says about the value at an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The point forecast at the asked instant.
    pub value: f64,
    /// Whether the forecaster judges the threshold will be exceeded at the asked instant.
    /// Point forecasters answer `value > threshold`; interval forecasters answer with their
    /// own rule (for [`Guarded`]: the trend and the lower prediction bound).
    pub above: bool,
    /// Estimated milliseconds from the last sample until the threshold is crossed, when the
    /// forecaster has a trend that reaches it (`None` when it does not or has no trend).
    pub eta_ms: Option<i64>,
}

/// A one-series forecaster. Implementations keep only what they need (a window, or
/// smoothed state), so feeding a long series costs O(1) per sample.
pub trait Forecaster: Send {
    /// Feeds the next sample. Timestamps must increase.
    fn push(&mut self, ts: TsMs, y: f64);
    /// The forecast for the instant `at` (after the last pushed sample), judged against
    /// `threshold`; `None` when the forecaster has too few samples.
    fn forecast(&self, at: TsMs, threshold: f64) -> Option<Forecast>;
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

    fn forecast(&self, at: TsMs, threshold: f64) -> Option<Forecast> {
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

    fn forecast(&self, at: TsMs, threshold: f64) -> Option<Forecast> {
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

    fn forecast(&self, _at: TsMs, threshold: f64) -> Option<Forecast> {
        let value = self.last?;
        Some(Forecast { value, above: value > threshold, eta_ms: (value > threshold).then_some(0) })
    }

    fn reset(&mut self) {
        self.last = None;
    }
}
