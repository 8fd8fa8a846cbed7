//! The forecaster scorer: docs/contract.md §4, "Scoring a forecaster", as pure functions.
//!
//! A trace is CSV `timestamp,value` with `YYYY-MM-DD HH:MM:SS` UTC timestamps
//! ([`parse_trace`]). The protocol, as implemented here:
//!
//! - Δ is the trace's nominal step (the median step between rows: 5 min on the shared traces),
//!   used even across gaps; `h = H/Δ` samples. Times and lead times come from the real
//!   timestamps, and the forecasters see the real timestamps.
//! - Scaling ([`Scale::Auto`]): a trace with at least one event at θ is used as is; otherwise
//!   `y = x × (θ + 5) / P97(x)` (numpy's linear 97th percentile; `85/P97` at θ = 80), not
//!   clipped.
//! - Warm-up: the first 12 samples never raise AMBER. Event: a sample `c ≥ 15` with
//!   `y[c] > θ` and the 6 samples before it all `≤ θ`.
//! - AMBER at `i` = `i ≥ 12 and y[i] ≤ θ and the forecast made at i (from samples 0..=i) for
//!   t_i + H is above θ`, on `debounce` samples in a row.
//! - An event is caught when AMBER is on at any sample in `[c−h, c−1]`; its lead time is
//!   `t_c − t_k` for the earliest such `k`.
//! - Episodes: maximal AMBER runs `[s, e]`; true if some `y > θ` in `(e, e+h]`, false
//!   otherwise, unscored when `e + h` is past the last sample. False alarms per day = false
//!   episodes / days from sample 12 to the last sample.
//! - Guards: AMBER % = AMBER samples / samples `≤ θ` after warm-up; false-AMBER minutes per
//!   day = AMBER samples with no `y > θ` in the next `h` samples (unscored, like episodes, when
//!   those run past the end), times Δ, per day.
//! - Traces pool by adding counts ([`Score::add`]); groups are `cpu_native`, `cpu_scaled`,
//!   `mem_scaled` (file name contains `mem`; `mem_native` if such a trace needed no scaling).

use crate::forecast::{Forecast, Forecaster};
use procwatch_model::clock::Utc;
use procwatch_model::TsMs;

/// Samples that never raise AMBER at the start of a trace.
pub const WARMUP: usize = 12;
/// An event needs this many samples at or below θ before it.
pub const EVENT_QUIET: usize = 6;
/// The first sample that may be an event.
pub const EVENT_MIN_INDEX: usize = 15;

/// A trace file's parse error.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    /// A row that is not `timestamp,value`.
    #[error("line {line}: {reason}")]
    Line {
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    #[error("the trace has fewer than 2 rows")]
    /// The file has fewer than 2 rows.
    TooShort,
    /// A timestamp not after the one before it.
    #[error("line {line}: timestamp does not increase")]
    NotIncreasing {
        /// The line, from 1.
        line: usize,
    },
}

/// One utilisation trace: real timestamps and values, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The trace's name (its file name).
    pub name: String,
    /// Timestamps, Unix ms, increasing.
    pub ts: Vec<TsMs>,
    /// The values, one per timestamp.
    pub y: Vec<f64>,
}

/// Parses `YYYY-MM-DD HH:MM:SS` (UTC) into Unix milliseconds.
pub fn parse_timestamp(s: &str) -> Option<TsMs> {
    let b = s.trim().as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b' ' && b[10] != b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let t = Utc { year: y, month: mo, day: d, hour: h, minute: mi, second: se, millis: 0 };
    Some(t.to_ms())
}

/// Parses a trace CSV (`timestamp,value`, a header line is skipped).
pub fn parse_trace(name: &str, text: &str) -> Result<Trace, TraceError> {
    let mut ts = Vec::new();
    let mut y = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &str| TraceError::Line { line: i + 1, reason: reason.to_owned() };
        let (t, v) = line.split_once(',').ok_or_else(|| err("expected `timestamp,value`"))?;
        let Some(t) = parse_timestamp(t) else {
            if i == 0 {
                continue; // the header
            }
            return Err(err("bad timestamp, expected YYYY-MM-DD HH:MM:SS"));
        };
        let v: f64 = v.trim().parse().map_err(|_| err("bad value"))?;
        if !v.is_finite() {
            return Err(err("value is not finite"));
        }
        if ts.last().is_some_and(|&last| t <= last) {
            return Err(TraceError::NotIncreasing { line: i + 1 });
        }
        ts.push(t);
        y.push(v);
    }
    if ts.len() < 2 {
        return Err(TraceError::TooShort);
    }
    Ok(Trace { name: name.to_owned(), ts, y })
}

/// numpy's default (`linear`) percentile, `q` in 0..=1, of unsorted values.
pub fn percentile_linear(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = pos - lo as f64;
    let (a, b) = (v[lo], v[hi]);
    // numpy's _lerp: exact at both ends.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Indexes of the events of a series at threshold θ.
pub fn events(y: &[f64], threshold: f64) -> Vec<usize> {
    (EVENT_MIN_INDEX..y.len())
        .filter(|&c| y[c] > threshold && y[c - EVENT_QUIET..c].iter().all(|&v| v <= threshold))
        .collect()
}

/// How to scale a trace before scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// The contract's rule (docs/contract.md §4): as is when it has an event at θ, else `× (θ+5)/P97`.
    Auto,
    /// As is.
    None,
    /// Multiply by this factor.
    Factor(f64),
}

impl std::str::FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Scale::Auto),
            "none" => Ok(Scale::None),
            f => f
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(Scale::Factor)
                .ok_or_else(|| {
                    format!("bad --scale {f:?}: expected auto, none or a positive factor")
                }),
        }
    }
}

/// A trace ready to score: the scaled values and its group.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The trace's name.
    pub name: String,
    /// Timestamps, Unix ms.
    pub ts: Vec<TsMs>,
    /// The values, scaled when `scaled`.
    pub y: Vec<f64>,
    /// Whether the values were scaled `× 85 / P97` (no event at θ as they were).
    pub scaled: bool,
    /// The pool it counts in: `cpu_native`, `cpu_scaled` or `mem_scaled`.
    pub group: String,
    /// The nominal step Δ (median step), ms.
    pub step_ms: i64,
}

/// A trace directory that could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum TraceDirError {
    /// The directory or one of its files could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a trace.
    #[error("{path}: {source}")]
    Trace {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: TraceError,
    },
}

/// The `.csv` files of `dir`, sorted by name.
pub fn trace_files_in(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, TraceDirError> {
    let io = |source| TraceDirError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|x| x == "csv") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every trace of `dir` (its `.csv` files by name), parsed and prepared at `threshold` with
/// `Scale::Auto`: the traces as the tests, examples and `alarm backtest` score them.
pub fn prepare_dir(dir: &std::path::Path, threshold: f64) -> Result<Vec<Prepared>, TraceDirError> {
    let mut out = Vec::new();
    for path in trace_files_in(dir)? {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| TraceDirError::Io { path: path.clone(), source })?;
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let trace =
            parse_trace(&name, &text).map_err(|source| TraceDirError::Trace { path, source })?;
        out.push(prepare(&trace, Scale::Auto, threshold));
    }
    Ok(out)
}

/// Scales a trace and names its group.
pub fn prepare(trace: &Trace, scale: Scale, threshold: f64) -> Prepared {
    let (y, scaled) = match scale {
        Scale::None => (trace.y.clone(), false),
        Scale::Factor(f) => (trace.y.iter().map(|x| x * f).collect(), true),
        Scale::Auto if !events(&trace.y, threshold).is_empty() => (trace.y.clone(), false),
        Scale::Auto => {
            let p = percentile_linear(&trace.y, 0.97);
            let target = threshold + 5.0;
            (trace.y.iter().map(|x| x * target / p).collect(), true)
        }
    };
    let kind = if trace.name.to_ascii_lowercase().contains("mem") { "mem" } else { "cpu" };
    let group = format!("{kind}_{}", if scaled { "scaled" } else { "native" });
    let mut steps: Vec<i64> = trace.ts.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_unstable();
    let step_ms = steps[steps.len() / 2];
    Prepared { name: trace.name.clone(), ts: trace.ts.clone(), y, scaled, group, step_ms }
}

/// Scoring settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protocol {
    /// θ, the threshold.
    pub threshold: f64,
    /// H, the forecast horizon, ms.
    pub horizon_ms: i64,
    /// AMBER needs the forecast above θ on this many samples in a row (1 = no debounce).
    pub debounce: u32,
}

impl Default for Protocol {
    fn default() -> Self {
        Self { threshold: 80.0, horizon_ms: 600_000, debounce: 1 }
    }
}

/// Per-sample "forecast above θ" of a forecaster fed the trace row by row.
pub fn forecast_flags(p: &Prepared, proto: &Protocol, f: &mut dyn Forecaster) -> Vec<bool> {
    flags_of(&forecasts(p, proto, f))
}

/// Per-sample forecasts (for `t_i + H`) of a forecaster fed the trace row by row.
pub fn forecasts(p: &Prepared, proto: &Protocol, f: &mut dyn Forecaster) -> Vec<Option<Forecast>> {
    f.reset();
    let mut out = Vec::with_capacity(p.y.len());
    for (&t, &y) in p.ts.iter().zip(&p.y) {
        f.push(t, y);
        out.push(f.forecast(t + proto.horizon_ms, proto.threshold));
    }
    out
}

/// "Forecast above θ" per sample.
pub fn flags_of(forecasts: &[Option<Forecast>]) -> Vec<bool> {
    forecasts.iter().map(|f| f.is_some_and(|f| f.above)).collect()
}

/// The protocol's AMBER per sample: `i ≥ 12`, `y ≤ θ`, and the forecast above θ on
/// `debounce` samples in a row.
pub fn amber_samples(p: &Prepared, proto: &Protocol, forecast_above: &[bool]) -> Vec<bool> {
    let n = p.y.len();
    let th = proto.threshold;
    let raw: Vec<bool> = (0..n)
        .map(|i| i >= WARMUP && p.y[i] <= th && forecast_above.get(i).copied().unwrap_or(false))
        .collect();
    let d = proto.debounce.max(1) as usize;
    (0..n).map(|i| i + 1 >= d && raw[i + 1 - d..=i].iter().all(|&r| r)).collect()
}

/// Lead times and ETA errors of the caught events of one trace (or a pool).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Timing {
    /// Per caught event: `t_c − t_k`, k the earliest AMBER sample in `[c−h, c−1]`, ms.
    pub leads_ms: Vec<i64>,
    /// Per caught event whose AMBER announced an ETA: announced crossing time minus the real
    /// one, ms (`t_s + eta_s − t_c`, s the first sample of the AMBER episode holding k: the
    /// ETA the engine's AMBER event carries). Positive = announced later than it came.
    pub eta_errors_ms: Vec<i64>,
    /// Caught events whose AMBER carried no ETA.
    pub no_eta: usize,
}

impl Timing {
    /// Pools `o` into this.
    pub fn add(&mut self, o: &Timing) {
        self.leads_ms.extend_from_slice(&o.leads_ms);
        self.eta_errors_ms.extend_from_slice(&o.eta_errors_ms);
        self.no_eta += o.no_eta;
    }
    /// Median lead time, minutes (0 when nothing was caught).
    pub fn median_lead_minutes(&self) -> f64 {
        median_i64(&self.leads_ms) / 60_000.0
    }
    /// Median of |ETA error|, minutes.
    pub fn median_abs_eta_error_minutes(&self) -> f64 {
        let abs: Vec<i64> = self.eta_errors_ms.iter().map(|e| e.abs()).collect();
        median_i64(&abs) / 60_000.0
    }
    /// Median signed ETA error, minutes (positive = announced too late).
    pub fn median_eta_error_minutes(&self) -> f64 {
        median_i64(&self.eta_errors_ms) / 60_000.0
    }
}

fn median_i64(v: &[i64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    }
}

/// The lead times and ETA errors of the events caught by `forecasts` (as scored by [`score`]).
pub fn timing(p: &Prepared, proto: &Protocol, forecasts: &[Option<Forecast>]) -> Timing {
    let amber = amber_samples(p, proto, &flags_of(forecasts));
    let h = horizon_samples(p, proto);
    let mut t = Timing::default();
    for c in events(&p.y, proto.threshold) {
        let Some(k) = (c.saturating_sub(h)..c).find(|&k| amber[k]) else { continue };
        t.leads_ms.push(p.ts[c] - p.ts[k]);
        let mut s = k;
        while s > 0 && amber[s - 1] {
            s -= 1;
        }
        match forecasts[s].and_then(|f| f.eta_ms) {
            Some(eta) => t.eta_errors_ms.push(p.ts[s] + eta - p.ts[c]),
            None => t.no_eta += 1,
        }
    }
    t
}

/// The oracle: `f[i] = y[i+h]` (it reads the future; the scorer's self-check).
pub fn oracle_flags(p: &Prepared, proto: &Protocol) -> Vec<bool> {
    let h = horizon_samples(p, proto);
    (0..p.y.len()).map(|i| p.y.get(i + h).is_some_and(|&v| v > proto.threshold)).collect()
}

/// `h = H/Δ` in samples.
pub fn horizon_samples(p: &Prepared, proto: &Protocol) -> usize {
    (proto.horizon_ms / p.step_ms.max(1)).max(1) as usize
}

/// Counts of one trace or a pool of traces. Derived figures are methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Score {
    /// Traces pooled.
    pub traces: usize,
    /// Events (crossings after 30 quiet minutes).
    pub events: usize,
    /// Events with AMBER on within H before them.
    pub caught: usize,
    /// Sum of the caught events' lead times, ms.
    pub lead_ms_sum: i64,
    /// AMBER episodes followed by a crossing within H.
    pub true_episodes: usize,
    /// AMBER episodes not followed by a crossing within H.
    pub false_episodes: usize,
    /// AMBER episodes too near the end to be scored.
    pub unscored_episodes: usize,
    /// Days from sample 12 to the last sample.
    pub days: f64,
    /// Samples with AMBER on.
    pub amber_samples: usize,
    /// Samples `≤ θ` after warm-up (the AMBER % denominator).
    pub eligible_samples: usize,
    /// AMBER samples with no crossing in the next H.
    pub false_amber_samples: usize,
    /// Σ Δ over the false-AMBER samples, ms.
    pub false_amber_ms: i64,
}

impl Score {
    /// Pools another score into this one (counts add).
    pub fn add(&mut self, o: &Score) {
        self.traces += o.traces;
        self.events += o.events;
        self.caught += o.caught;
        self.lead_ms_sum += o.lead_ms_sum;
        self.true_episodes += o.true_episodes;
        self.false_episodes += o.false_episodes;
        self.unscored_episodes += o.unscored_episodes;
        self.days += o.days;
        self.amber_samples += o.amber_samples;
        self.eligible_samples += o.eligible_samples;
        self.false_amber_samples += o.false_amber_samples;
        self.false_amber_ms += o.false_amber_ms;
    }
    /// Caught events / events.
    pub fn recall(&self) -> f64 {
        ratio(self.caught as f64, self.events as f64)
    }
    /// Mean lead time of the caught events, minutes.
    pub fn lead_minutes(&self) -> f64 {
        ratio(self.lead_ms_sum as f64 / 60_000.0, self.caught as f64)
    }
    /// True episodes / scored episodes.
    pub fn precision(&self) -> f64 {
        ratio(self.true_episodes as f64, (self.true_episodes + self.false_episodes) as f64)
    }
    /// False episodes per day.
    pub fn false_per_day(&self) -> f64 {
        ratio(self.false_episodes as f64, self.days)
    }
    /// AMBER samples / eligible samples, percent.
    pub fn amber_pct(&self) -> f64 {
        100.0 * ratio(self.amber_samples as f64, self.eligible_samples as f64)
    }
    /// Minutes of false AMBER per day.
    pub fn false_amber_minutes_per_day(&self) -> f64 {
        ratio(self.false_amber_ms as f64 / 60_000.0, self.days)
    }
    /// Issue 18's check against another setting (`predict_linear` at a window): more
    /// catches at no more false alarms per day and no higher AMBER %.
    pub fn beats(&self, other: &Score) -> bool {
        self.caught > other.caught
            && self.false_per_day() <= other.false_per_day()
            && self.amber_pct() <= other.amber_pct()
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Scores one prepared trace given the per-sample "forecast above θ" flags.
pub fn score(p: &Prepared, proto: &Protocol, forecast_above: &[bool]) -> Score {
    let n = p.y.len();
    let th = proto.threshold;
    let h = horizon_samples(p, proto);
    let amber = amber_samples(p, proto, forecast_above);
    let above_in = |from: usize, to: usize| p.y[from.min(n)..to.min(n)].iter().any(|&v| v > th);

    let mut s = Score { traces: 1, ..Score::default() };
    for c in events(&p.y, th) {
        s.events += 1;
        if let Some(k) = (c.saturating_sub(h)..c).find(|&k| amber[k]) {
            s.caught += 1;
            s.lead_ms_sum += p.ts[c] - p.ts[k];
        }
    }
    let mut i = 0;
    while i < n {
        if !amber[i] {
            i += 1;
            continue;
        }
        while i + 1 < n && amber[i + 1] {
            i += 1;
        }
        let e = i;
        if e + h > n - 1 {
            s.unscored_episodes += 1;
        } else if above_in(e + 1, e + h + 1) {
            s.true_episodes += 1;
        } else {
            s.false_episodes += 1;
        }
        i += 1;
    }
    #[allow(clippy::needless_range_loop)] // i indexes y and amber and is the sample index
    for i in WARMUP..n {
        if p.y[i] <= th {
            s.eligible_samples += 1;
        }
        if amber[i] {
            s.amber_samples += 1;
            if i + h < n && !above_in(i + 1, i + h + 1) {
                s.false_amber_samples += 1;
                s.false_amber_ms += p.step_ms;
            }
        }
    }
    if n > WARMUP {
        s.days = (p.ts[n - 1] - p.ts[WARMUP]) as f64 / 86_400_000.0;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_ms() {
        let cases = [
            ("1970-01-01 00:00:00", Some(0)),
            ("1970-01-01 00:05:00", Some(300_000)),
            ("2014-02-14 14:30:00", Some(1_392_388_200_000)),
            ("2000-03-01 00:00:00", Some(951_868_800_000)),
            ("2024-02-29 23:59:59", Some(1_709_251_199_000)),
            ("2024-13-01 00:00:00", None),
            ("2024-01-01", None),
            ("timestamp", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text), want, "{text}");
        }
    }

    #[test]
    fn trace_parses_and_rejects() {
        let t =
            parse_trace("x", "timestamp,value\n2014-02-14 14:30:00,0.5\n2014-02-14 14:35:00,1\n")
                .unwrap();
        assert_eq!(t.ts, vec![1_392_388_200_000, 1_392_388_500_000]);
        assert_eq!(t.y, vec![0.5, 1.0]);
        assert_eq!(
            parse_trace("x", "timestamp,value\n2014-02-14 14:30:00,abc\n"),
            Err(TraceError::Line { line: 2, reason: "bad value".into() })
        );
        assert_eq!(
            parse_trace("x", "2014-02-14 14:30:00,1\n2014-02-14 14:30:00,2\n"),
            Err(TraceError::NotIncreasing { line: 2 })
        );
        assert_eq!(parse_trace("x", "timestamp,value\n"), Err(TraceError::TooShort));
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 97) == 3.91; ([5], 50) == 5; ([1, 3], 50) == 2.
        assert!((percentile_linear(&[4.0, 1.0, 3.0, 2.0], 0.97) - 3.91).abs() < 1e-12);
        assert_eq!(percentile_linear(&[5.0], 0.5), 5.0);
        assert_eq!(percentile_linear(&[3.0, 1.0], 0.5), 2.0);
    }

    /// A synthetic trace at 5-minute steps.
    fn prepared(y: &[f64]) -> Prepared {
        Prepared {
            name: "t".into(),
            ts: (0..y.len() as i64).map(|i| i * 300_000).collect(),
            y: y.to_vec(),
            scaled: false,
            group: "cpu_native".into(),
            step_ms: 300_000,
        }
    }

    #[test]
    fn events_need_thirty_quiet_minutes() {
        let mut y = vec![10.0; 40];
        y[20] = 90.0; // event
        y[24] = 90.0; // continuation: only 3 quiet samples before
        y[35] = 90.0; // event: 10 quiet samples before
        y[5] = 90.0; // before index 15: never an event
        assert_eq!(events(&y, 80.0), vec![20, 35]);
    }

    #[test]
    fn scorer_counts_caught_lead_episodes_and_guards() {
        let mut y = vec![10.0; 40];
        y[20] = 90.0;
        let p = prepared(&y);
        let proto = Protocol::default();
        let mut flags = vec![false; 40];
        // A true episode catching the event two samples ahead, and a false one.
        flags[18] = true;
        flags[19] = true;
        flags[30] = true;
        let s = score(&p, &proto, &flags);
        assert_eq!((s.events, s.caught, s.lead_ms_sum), (1, 1, 600_000));
        assert_eq!((s.true_episodes, s.false_episodes, s.unscored_episodes), (1, 1, 0));
        assert_eq!((s.amber_samples, s.eligible_samples, s.false_amber_samples), (3, 27, 1));
        assert!((s.days - 27.0 * 300.0 / 86_400.0).abs() < 1e-12);
        // With debounce 2 the lone sample 30 no longer counts, and the event is caught later.
        let s2 = score(&p, &Protocol { debounce: 2, ..proto }, &flags);
        assert_eq!((s2.caught, s2.lead_ms_sum, s2.false_episodes), (1, 300_000, 0));
        // An episode at the end is unscored, and the warm-up never raises AMBER.
        let mut late = vec![false; 40];
        late[39] = true;
        late[3] = true;
        let s3 = score(&p, &proto, &late);
        assert_eq!((s3.amber_samples, s3.unscored_episodes, s3.false_episodes), (1, 1, 0));
    }
}
