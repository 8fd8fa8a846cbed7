//! One (host, process, metric) series' state machine: the forecast signal, debouncing,
//! hysteresis and STALE, fed sample by sample by [`super::Engine`].

use super::{event_id, transition, SeriesInput, FALLBACK_INTERVAL_MS, STALE_INTERVALS};
use crate::forecast::{Forecaster, Quiet};
use crate::rules::Rule;
use procwatch_model::{AlarmEvent, AlarmKind, Level, Metric, TsMs};
use std::num::NonZeroI64;
use std::sync::Arc;

/// 104 bytes (it was 160), in its process's one allocation (`super::ProcessStates`): most
/// series are dormant, so this is most of what a quiet process costs the engine. The optional timestamps
/// are plain `i64`s with a presence bit in `flags` (any `i64` stays a valid timestamp), the
/// two signal counters one run and its direction (at most one of them is ever non-zero), and
/// the forecaster and the dormant promise one field (a dormant series has no forecaster).
/// Read them through the accessors below; `engine/tests.rs` pins the size.
pub(super) struct SeriesState {
    /// Shared with every series the rule matches (one `Arc` per rule, not a copy per series).
    pub(super) rule: Arc<Rule>,
    model: Model,
    /// The last sampling interval fed, ms: at least 1 (`SeriesInput::interval_ms.max(1)`), so
    /// the niche of `NonZeroI64` holds `None` and every interval a client declares fits.
    interval: Option<NonZeroI64>,
    /// With [`Flags::LAST_TS`]: the newest sample's timestamp.
    last_ts: TsMs,
    pub(super) last_value: f64,
    /// With [`Flags::WARM_SINCE`]: the first sample since the forecaster was (re)started, when
    /// its warm-up began.
    warm_since: TsMs,
    /// Boxed: most series have none, and an event is ~200 bytes inline.
    pub(super) open: Option<Box<AlarmEvent>>,
    /// With [`Flags::RESUME_AFTER`]: restored from the store (or forgotten and back), samples
    /// at or before this instant only prime the forecaster (they were judged before, the open
    /// event is their outcome).
    resume_after: TsMs,
    /// While STALE: the level and event it replaced, so a late batch (samples older than the
    /// STALE start) can withdraw it.
    pub(super) before_stale: Option<Box<(Level, AlarmEvent)>>,
    /// Samples pushed since the forecaster was (re)started, saturating: it is only compared
    /// with `min_samples` (the window's samples, 61 for the default rule at 10 s), so saturating
    /// changes nothing while that is at most `u32::MAX` (a window under 49 days even at 1 ms).
    seen: u32,
    /// Consecutive samples with the forecast signal on ([`Flags::SIGNAL_ON`]) or off.
    signal_run: u32,
    /// Consecutive samples below T − hysteresis while RED.
    pub(super) below: u32,
    pub(super) level: Level,
    /// The series' metric: its place among its process's series (`super::ProcessStates`).
    pub(super) metric: Metric,
    flags: Flags,
}

/// The series' forecaster, or what replaced it.
enum Model {
    /// None yet (a new series, a new interval, or dormancy turned off while dormant): built at
    /// the next sample.
    Cold,
    Live(Box<dyn Forecaster>),
    /// Dormant (issue 16): the series is OK and so low that its forecaster cannot signal
    /// (`Forecaster::quiescence`), so it was dropped. A sample above the ceiling wakes it: the
    /// forecaster is rebuilt from the pass's input, which the evaluator extends back to
    /// `Engine::history_needed` (the store keeps every sample the forecaster saw).
    Dormant(Quiet),
}

/// Which of [`SeriesState`]'s optional fields hold a value, and the signal run's direction.
#[derive(Clone, Copy, Default)]
struct Flags(u8);

impl Flags {
    const LAST_TS: u8 = 1;
    const WARM_SINCE: u8 = 2;
    const RESUME_AFTER: u8 = 4;
    const SIGNAL_ON: u8 = 8;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }
}

impl SeriesState {
    pub(super) fn new(rule: Arc<Rule>, metric: Metric) -> Self {
        Self {
            rule,
            model: Model::Cold,
            interval: None,
            last_ts: 0,
            last_value: 0.0,
            warm_since: 0,
            open: None,
            resume_after: 0,
            before_stale: None,
            seen: 0,
            signal_run: 0,
            below: 0,
            level: Level::Ok,
            metric,
            flags: Flags::default(),
        }
    }

    /// The series' live forecaster (none while cold or dormant).
    pub(super) fn forecaster(&self) -> Option<&dyn Forecaster> {
        match &self.model {
            Model::Live(f) => Some(&**f),
            Model::Cold | Model::Dormant(_) => None,
        }
    }

    /// The promise its forecaster gave when it was dropped, while the series is dormant.
    pub(super) fn dormant(&self) -> Option<Quiet> {
        match self.model {
            Model::Dormant(q) => Some(q),
            Model::Cold | Model::Live(_) => None,
        }
    }

    /// No longer dormant, without a forecaster: the next sample builds a fresh one.
    pub(super) fn forget_quiet(&mut self) {
        if let Model::Dormant(_) = self.model {
            self.model = Model::Cold;
        }
    }

    /// The interval of the samples last fed, ms.
    pub(super) fn interval_ms(&self) -> Option<i64> {
        self.interval.map(NonZeroI64::get)
    }

    /// The newest sample's timestamp.
    pub(super) fn last_ts(&self) -> Option<TsMs> {
        self.flags.has(Flags::LAST_TS).then_some(self.last_ts)
    }

    /// The first sample since the forecaster was (re)started.
    pub(super) fn warm_since(&self) -> Option<TsMs> {
        self.flags.has(Flags::WARM_SINCE).then_some(self.warm_since)
    }

    fn clear_warm_since(&mut self) {
        self.flags.set(Flags::WARM_SINCE, false);
    }

    /// Samples at or before this instant only prime the forecaster (see `resume_after`).
    pub(super) fn resume_after(&self) -> Option<TsMs> {
        self.flags.has(Flags::RESUME_AFTER).then_some(self.resume_after)
    }

    pub(super) fn set_resume_after(&mut self, at: TsMs) {
        self.resume_after = at;
        self.flags.set(Flags::RESUME_AFTER, true);
    }

    /// Consecutive samples with the forecast signal on.
    fn signal_on(&self) -> u32 {
        if self.flags.has(Flags::SIGNAL_ON) {
            self.signal_run
        } else {
            0
        }
    }

    /// Consecutive samples with the forecast signal off.
    fn signal_off(&self) -> u32 {
        if self.flags.has(Flags::SIGNAL_ON) {
            0
        } else {
            self.signal_run
        }
    }

    /// One more sample with the signal `on` (its run grows) or off (the other run ends).
    fn count_signal(&mut self, on: bool) {
        if self.flags.has(Flags::SIGNAL_ON) == on {
            self.signal_run += 1;
        } else {
            self.flags.set(Flags::SIGNAL_ON, on);
            self.signal_run = 1;
        }
    }

    /// A sample observed at `ts` (value `v`): counted, and the warm-up starts if it had not.
    fn record(&mut self, ts: TsMs, v: f64) {
        self.seen = self.seen.saturating_add(1);
        if !self.flags.has(Flags::WARM_SINCE) {
            self.warm_since = ts;
            self.flags.set(Flags::WARM_SINCE, true);
        }
        self.last_ts = ts;
        self.flags.set(Flags::LAST_TS, true);
        self.last_value = v;
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
        match &mut self.model {
            Model::Live(f) => f.reset(),
            Model::Dormant(_) => self.model = Model::Cold,
            Model::Cold => {}
        }
        self.seen = 0;
        self.clear_warm_since();
        self.signal_run = 0;
    }

    /// History needed before AMBER may fire: the method's warm-up (for the series' metric:
    /// its default shape sets procwatch's), and the window W full.
    pub(super) fn warmup_ms(&self, metric: Metric) -> i64 {
        let r = &self.rule;
        r.method.for_metric(metric).warmup_ms(r.window_ms, r.horizon_ms).max(r.window_ms)
    }

    /// Samples needed before AMBER may fire: the window W full.
    pub(super) fn min_samples(&self) -> usize {
        let interval = self.interval_ms().unwrap_or(FALLBACK_INTERVAL_MS).max(1);
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
        // `Some`: at least 1.
        let fed = NonZeroI64::new(interval);
        if self.interval != fed {
            // A new sampling interval: the forecaster is rebuilt for it.
            self.interval = fed;
            self.model = Model::Cold;
            self.seen = 0;
            self.clear_warm_since();
        }
        let stale_after = STALE_INTERVALS * interval;
        for s in input.samples {
            if self.last_ts().is_some_and(|t| s.ts <= t) {
                continue;
            }
            // An extra metric a sample does not carry: no reading.
            let Some(v) = metric.value(s) else { continue };
            if self.resume_after().is_some_and(|r| s.ts <= r) {
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
            if let Some(t) = self.last_ts().filter(|&t| s.ts - t > stale_after) {
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
        let q = self.dormant()?;
        let wake = samples
            .iter()
            .filter(|s| self.last_ts().is_none_or(|t| s.ts > t))
            .find(|s| metric.value(s).is_some_and(|v| !(0.0..=q.ceiling).contains(&v)))?;
        Some(self.replay_from(wake.ts, q))
    }

    fn replay_from(&self, ts: TsMs, q: Quiet) -> TsMs {
        let back = ts.saturating_sub(q.memory_ms);
        self.warm_since().map_or(back, |w| w.max(back))
    }

    /// A dormant series whose next sample `v` (at `ts`) leaves its band gets its forecaster
    /// back: a fresh one fed the input's samples of the replay span before `ts`, as `observe`
    /// would have fed them (push, then forecast at the rule's horizon and threshold).
    fn wake_unless_within(&mut self, metric: Metric, input: &SeriesInput<'_>, ts: TsMs, v: f64) {
        let Some(q) = self.dormant() else { return };
        if (0.0..=q.ceiling).contains(&v) {
            return;
        }
        let from = self.replay_from(ts, q);
        let rule = &self.rule;
        let interval = self.interval_ms().unwrap_or(FALLBACK_INTERVAL_MS);
        let mut f =
            rule.method.for_metric(metric).forecaster(rule.window_ms, rule.horizon_ms, interval);
        let replay = input.samples.iter().filter(|s| s.ts >= from && s.ts < ts);
        for (t, y) in replay.filter_map(|s| Some((s.ts, metric.value(s)?))) {
            f.push(t, y);
            let _ = f.forecast(t + rule.horizon_ms, rule.threshold);
        }
        self.model = Model::Live(f);
    }

    /// Drops the forecaster of an OK series that cannot signal while it stays low (see
    /// `dormant`). Only when dormancy is on for the engine, and for an OK series with no
    /// open event: a woken series is judged by its rebuilt forecaster from its next sample on.
    pub(super) fn maybe_sleep(&mut self) {
        if self.level != Level::Ok || self.open.is_some() {
            return;
        }
        let Some(f) = self.forecaster() else { return };
        let interval = self.interval_ms().unwrap_or(FALLBACK_INTERVAL_MS).max(1);
        let rule = &self.rule;
        if let Some(q) = f.quiescence(rule.threshold, rule.horizon_ms, STALE_INTERVALS * interval) {
            self.model = Model::Dormant(q);
        }
    }

    /// Pushes a sample to the forecaster and counts the forecast signal; returns the forecast.
    /// The forecaster is the one `procwatch alarm backtest` scores: built by
    /// [`crate::Method::forecaster`] from the rule's method resolved for the metric.
    pub(super) fn observe(&mut self, metric: Metric, ts: TsMs, v: f64) -> Option<crate::Forecast> {
        if self.dormant().is_some() {
            // Within the band (a sample above it woke the series first): no forecast can
            // signal, so none is computed.
            self.record(ts, v);
            self.count_signal(false);
            return None;
        }
        let rule = &self.rule;
        let interval = self.interval_ms().unwrap_or(FALLBACK_INTERVAL_MS);
        // Cold (dormant returned above): a fresh forecaster.
        let mut f = match std::mem::replace(&mut self.model, Model::Cold) {
            Model::Live(f) => f,
            Model::Cold | Model::Dormant(_) => {
                rule.method.for_metric(metric).forecaster(rule.window_ms, rule.horizon_ms, interval)
            }
        };
        f.push(ts, v);
        let fc = f.forecast(ts + rule.horizon_ms, rule.threshold);
        self.model = Model::Live(f);
        self.record(ts, v);
        let signal = self.seen as usize >= self.min_samples() && fc.is_some_and(|f| f.above);
        self.count_signal(signal);
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
        let amber_ready = self.signal_on() >= self.rule.debounce;
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
                Level::Amber if self.signal_off() >= self.rule.clear_for => Level::Ok,
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
