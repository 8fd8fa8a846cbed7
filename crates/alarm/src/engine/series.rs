//! One (host, process, metric) series' state machine: the forecast signal, debouncing,
//! hysteresis and STALE, fed sample by sample by [`super::Engine`].

use super::{event_id, transition, SeriesInput, FALLBACK_INTERVAL_MS, STALE_INTERVALS};
use crate::forecast::{Forecaster, Quiet};
use crate::rules::Rule;
use procwatch_model::{AlarmEvent, AlarmKind, Level, Metric, TsMs};
use std::sync::Arc;

pub(super) struct SeriesState {
    /// Shared with every series the rule matches (one `Arc` per rule, not a copy per series).
    pub(super) rule: Arc<Rule>,
    pub(super) forecaster: Option<Box<dyn Forecaster>>,
    pub(super) interval_ms: Option<i64>,
    pub(super) last_ts: Option<TsMs>,
    pub(super) last_value: f64,
    /// Samples pushed since the forecaster was (re)started.
    pub(super) seen: usize,
    /// Timestamp of the first sample since the forecaster was (re)started: its warm-up began.
    pub(super) warm_since: Option<TsMs>,
    pub(super) level: Level,
    /// Boxed: most series have none, and an event is ~200 bytes inline.
    pub(super) open: Option<Box<AlarmEvent>>,
    /// Consecutive samples with the forecast signal on / off.
    pub(super) signal_on: u32,
    pub(super) signal_off: u32,
    /// Consecutive samples below T − hysteresis while RED.
    pub(super) below: u32,
    /// Restored from the store: samples at or before this instant only prime the forecaster
    /// (they were judged before the restart, the open event is their outcome).
    pub(super) resume_after: Option<TsMs>,
    /// While STALE: the level and event it replaced, so a late batch (samples older than the
    /// STALE start) can withdraw it.
    pub(super) before_stale: Option<Box<(Level, AlarmEvent)>>,
    /// Dormant (issue 16): the series is OK and so low that its forecaster cannot signal
    /// (`Forecaster::quiescence`), so it was dropped. A sample above the ceiling wakes it: the
    /// forecaster is rebuilt from the pass's input, which the evaluator extends back to
    /// `Engine::history_needed` (the store keeps every sample the forecaster saw).
    pub(super) dormant: Option<Quiet>,
}

impl SeriesState {
    pub(super) fn new(rule: Arc<Rule>) -> Self {
        Self {
            rule,
            forecaster: None,
            interval_ms: None,
            last_ts: None,
            last_value: 0.0,
            seen: 0,
            warm_since: None,
            level: Level::Ok,
            open: None,
            signal_on: 0,
            signal_off: 0,
            below: 0,
            resume_after: None,
            before_stale: None,
            dormant: None,
        }
    }

    /// The series' open alarm turns STALE at `at` (3 intervals after its last sample).
    pub(super) fn go_stale(
        &mut self,
        host: &str,
        process: &str,
        metric: Metric,
        at: TsMs,
        out: &mut Vec<AlarmEvent>,
    ) {
        // The STALE event carries what raised the alarm (its value and peak), not whatever the
        // last sample happened to be.
        let (raised, peak) =
            self.open.as_ref().map_or((self.last_value, self.last_value), |e| (e.value, e.peak));
        let mut proto = self.event(host, process, metric, Level::Stale, at, raised, None);
        proto.peak = peak.max(raised);
        let level = self.level;
        self.before_stale = transition(out, &mut self.open, proto).map(|ev| Box::new((level, ev)));
        self.level = Level::Stale;
    }

    /// A sample older than the STALE start arrived: the STALE was premature. It is closed
    /// where it started, and the event it replaced is open again.
    pub(super) fn withdraw_stale(&mut self, out: &mut Vec<AlarmEvent>) {
        let Some(before) = self.before_stale.take() else { return };
        let (level, mut prev) = *before;
        if let Some(mut stale) = self.open.take() {
            stale.end = Some(stale.start);
            out.push(*stale);
        }
        prev.end = None;
        out.push(prev.clone());
        self.open = Some(Box::new(prev));
        self.level = level;
    }

    /// Forgets the forecaster's history (after a gap).
    pub(super) fn restart(&mut self) {
        if let Some(f) = &mut self.forecaster {
            f.reset();
        }
        self.dormant = None;
        self.seen = 0;
        self.warm_since = None;
        self.signal_on = 0;
        self.signal_off = 0;
    }

    /// History needed before AMBER may fire: the method's warm-up (for the series' metric:
    /// its default shape sets procwatch's), and the window W full.
    pub(super) fn warmup_ms(&self, metric: Metric) -> i64 {
        let r = &self.rule;
        r.method.for_metric(metric).warmup_ms(r.window_ms, r.horizon_ms).max(r.window_ms)
    }

    /// Samples needed before AMBER may fire: the window W full.
    pub(super) fn min_samples(&self) -> usize {
        let interval = self.interval_ms.unwrap_or(FALLBACK_INTERVAL_MS).max(1);
        (self.rule.window_ms / interval) as usize + 1
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn event(
        &self,
        host: &str,
        process: &str,
        metric: Metric,
        level: Level,
        at: TsMs,
        value: f64,
        forecast: Option<(f64, Option<i64>)>,
    ) -> AlarmEvent {
        AlarmEvent {
            id: event_id(AlarmKind::Series, host, process, metric, at),
            kind: AlarmKind::Series,
            host: host.to_owned(),
            process: process.to_owned(),
            metric,
            level,
            previous: self.level,
            start: at,
            end: None,
            value,
            peak: value,
            threshold: self.rule.threshold,
            forecast: forecast.map(|f| f.0),
            eta_seconds: forecast.and_then(|f| f.1).map(|ms| ms as f64 / 1000.0),
            reason: None,
        }
    }

    pub(super) fn feed(
        &mut self,
        input: &SeriesInput<'_>,
        metric: Metric,
        out: &mut Vec<AlarmEvent>,
        dormancy: bool,
    ) {
        let interval = input.interval_ms.max(1);
        if self.interval_ms != Some(interval) {
            // A new sampling interval: the forecaster is rebuilt for it.
            self.interval_ms = Some(interval);
            self.forecaster = None;
            self.dormant = None;
            self.seen = 0;
            self.warm_since = None;
        }
        let stale_after = STALE_INTERVALS * interval;
        for s in input.samples {
            if self.last_ts.is_some_and(|t| s.ts <= t) {
                continue;
            }
            // An extra metric a sample does not carry: no reading.
            let Some(v) = metric.value(s) else { continue };
            if self.resume_after.is_some_and(|r| s.ts <= r) {
                self.wake_unless_within(metric, input, s.ts, v);
                self.observe(metric, s.ts, v);
                continue;
            }
            if self.level == Level::Stale {
                let stale_start = self.open.as_ref().map(|e| e.start);
                if stale_start.is_some_and(|start| s.ts <= start) {
                    self.withdraw_stale(out);
                }
                self.before_stale = None;
            }
            if let Some(t) = self.last_ts.filter(|&t| s.ts - t > stale_after) {
                // A gap of more than 3 intervals: whether or not the engine looked during it,
                // an open alarm went STALE when the third interval ended.
                if matches!(self.level, Level::Red | Level::Amber) {
                    self.go_stale(input.host, input.process, metric, t + stale_after, out);
                    self.before_stale = None;
                }
                self.restart();
            }
            self.wake_unless_within(metric, input, s.ts, v);
            self.step(input.host, input.process, metric, s.ts, v, out);
            if dormancy {
                self.maybe_sleep();
            }
        }
    }

    /// The first instant of history the pass must give with `samples` for this series to wake
    /// exactly: `Some` when it is dormant and one of the new samples is above its ceiling.
    pub(super) fn history_needed(
        &self,
        metric: Metric,
        samples: &[procwatch_model::Sample],
    ) -> Option<TsMs> {
        let q = self.dormant?;
        let wake = samples
            .iter()
            .filter(|s| self.last_ts.is_none_or(|t| s.ts > t))
            .find(|s| metric.value(s).is_some_and(|v| !(0.0..=q.ceiling).contains(&v)))?;
        Some(self.replay_from(wake.ts, q))
    }

    fn replay_from(&self, ts: TsMs, q: Quiet) -> TsMs {
        let back = ts.saturating_sub(q.memory_ms);
        self.warm_since.map_or(back, |w| w.max(back))
    }

    /// A dormant series whose next sample `v` (at `ts`) leaves its band gets its forecaster
    /// back: a fresh one fed the input's samples of the replay span before `ts`, as `observe`
    /// would have fed them (push, then forecast at the rule's horizon and threshold).
    fn wake_unless_within(&mut self, metric: Metric, input: &SeriesInput<'_>, ts: TsMs, v: f64) {
        let Some(q) = self.dormant else { return };
        if (0.0..=q.ceiling).contains(&v) {
            return;
        }
        let from = self.replay_from(ts, q);
        self.dormant = None;
        let rule = &self.rule;
        let interval = self.interval_ms.unwrap_or(FALLBACK_INTERVAL_MS);
        let mut f =
            rule.method.for_metric(metric).forecaster(rule.window_ms, rule.horizon_ms, interval);
        let replay = input.samples.iter().filter(|s| s.ts >= from && s.ts < ts);
        for (t, y) in replay.filter_map(|s| Some((s.ts, metric.value(s)?))) {
            f.push(t, y);
            let _ = f.forecast(t + rule.horizon_ms, rule.threshold);
        }
        self.forecaster = Some(f);
    }

    /// Drops the forecaster of an OK series that cannot signal while it stays low (see
    /// `dormant`). Only when dormancy is on for the engine, and for an OK series with no
    /// open event: a woken series is judged by its rebuilt forecaster from its next sample on.
    pub(super) fn maybe_sleep(&mut self) {
        if self.level != Level::Ok || self.open.is_some() || self.dormant.is_some() {
            return;
        }
        let Some(f) = &self.forecaster else { return };
        let interval = self.interval_ms.unwrap_or(FALLBACK_INTERVAL_MS).max(1);
        let rule = &self.rule;
        if let Some(q) = f.quiescence(rule.threshold, rule.horizon_ms, STALE_INTERVALS * interval) {
            self.forecaster = None;
            self.dormant = Some(q);
        }
    }

    /// Pushes a sample to the forecaster and counts the forecast signal; returns the forecast.
    /// The forecaster is the one `procwatch alarm backtest` scores: built by
    /// [`crate::Method::forecaster`] from the rule's method resolved for the metric.
    pub(super) fn observe(&mut self, metric: Metric, ts: TsMs, v: f64) -> Option<crate::Forecast> {
        if self.dormant.is_some() {
            // Within the band (a sample above it woke the series first): no forecast can
            // signal, so none is computed.
            self.seen += 1;
            self.warm_since.get_or_insert(ts);
            self.last_ts = Some(ts);
            self.last_value = v;
            self.signal_off += 1;
            self.signal_on = 0;
            return None;
        }
        let rule = &self.rule;
        let interval = self.interval_ms.unwrap_or(FALLBACK_INTERVAL_MS);
        let f = self.forecaster.get_or_insert_with(|| {
            rule.method.for_metric(metric).forecaster(rule.window_ms, rule.horizon_ms, interval)
        });
        f.push(ts, v);
        let fc = f.forecast(ts + rule.horizon_ms, rule.threshold);
        self.seen += 1;
        self.warm_since.get_or_insert(ts);
        self.last_ts = Some(ts);
        self.last_value = v;
        let signal = self.seen >= self.min_samples() && fc.is_some_and(|f| f.above);
        if signal {
            self.signal_on += 1;
            self.signal_off = 0;
        } else {
            self.signal_off += 1;
            self.signal_on = 0;
        }
        fc
    }

    /// One sample through the state machine.
    pub(super) fn step(
        &mut self,
        host: &str,
        process: &str,
        metric: Metric,
        ts: TsMs,
        v: f64,
        out: &mut Vec<AlarmEvent>,
    ) {
        let fc = self.observe(metric, ts, v);
        let t = self.rule.threshold;
        let amber_ready = self.signal_on >= self.rule.debounce;
        let next = if v > t {
            Level::Red
        } else {
            match self.level {
                Level::Red => {
                    if v < t - self.rule.hysteresis {
                        self.below += 1;
                    } else {
                        self.below = 0;
                    }
                    match (self.below >= self.rule.clear_for, amber_ready) {
                        (false, _) => Level::Red,
                        (true, true) => Level::Amber,
                        (true, false) => Level::Ok,
                    }
                }
                Level::Amber if self.signal_off >= self.rule.clear_for => Level::Ok,
                Level::Amber => Level::Amber,
                Level::Ok | Level::Stale if amber_ready => Level::Amber,
                Level::Ok | Level::Stale => Level::Ok,
            }
        };
        if let Some(open) = &mut self.open {
            open.peak = open.peak.max(v);
        }
        if next == self.level {
            return;
        }
        if next == Level::Red {
            self.below = 0;
        }
        let forecast = fc.map(|f| (f.value, if next == Level::Amber { f.eta_ms } else { None }));
        let proto = self.event(host, process, metric, next, ts, v, forecast);
        transition(out, &mut self.open, proto);
        self.level = next;
    }
}
