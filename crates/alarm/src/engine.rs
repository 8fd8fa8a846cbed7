//! The alarm state machine: one per (host, process, metric), plus one per host.

use crate::rules::{Rule, RuleSet};
use procwatch_model::{AlarmEvent, AlarmKind, Level, Metric, Sample, TsMs};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A series or host with no sample for this many intervals is stale / silent.
pub use procwatch_model::STALE_INTERVALS;
/// The interval assumed for a restored alarm whose series was not seen again yet.
const FALLBACK_INTERVAL_MS: i64 = 10_000;

mod process;
mod series;
use process::ProcessStates;
use series::SeriesState;

/// The samples of one (host, process) the server hands to [`Engine::evaluate`].
#[derive(Debug, Clone, Copy)]
pub struct SeriesInput<'a> {
    /// The host the samples came from.
    pub host: &'a str,
    /// The process name (per host, processes are grouped by name).
    pub process: &'a str,
    /// Oldest first. Samples at or before the last one the engine saw are skipped, so
    /// overlapping windows are fine.
    pub samples: &'a [Sample],
    /// The host's declared sampling interval, ms: staleness and forecast steps follow it.
    pub interval_ms: i64,
}

/// When the server last heard from a host.
#[derive(Debug, Clone, Copy)]
pub struct HostSeen<'a> {
    /// The host's name.
    pub host: &'a str,
    /// Timestamp (Unix ms) of the host's newest data (sample or host total).
    pub last_seen: TsMs,
    /// The host's declared sampling interval, ms: it is silent after 3 of them.
    pub interval_ms: i64,
    /// What its agent reported of a pause by directive, if it ever reported one (issue 19).
    pub pause: Option<Pause>,
}

/// A host's sampling paused by an operator's directive, as its agent reports it. A paused
/// agent sends heartbeats (batches without samples), so:
/// - a heartbeat that says "paused" counts as hearing from the host: a paused host goes
///   host-silent only when its heartbeats stop too (3 intervals after the last one); the
///   last paused heartbeat still counts after a resume, so the first samples have 3 intervals
///   to arrive;
/// - a series of a host paused now does not go STALE when its samples stop: its open alarm
///   (RED, AMBER, or STALE) is closed with the reason [`PAUSED_REASON`] at the moment it would
///   have gone STALE, and the series is forgotten, so a resumed host starts from OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// Whether the agent's newest batch said sampling is paused.
    pub paused: bool,
    /// When the newest batch that said so arrived (Unix ms, the clock of `now`).
    pub heartbeat: TsMs,
}

/// The reason of a series alarm closed because its host was paused (see [`Pause`]).
pub const PAUSED_REASON: &str = "host paused by directive: sampling stopped on purpose";

impl HostSeen<'_> {
    /// When the host was last heard from: its newest data, or a newer heartbeat that said it
    /// is paused.
    pub fn heard(&self) -> TsMs {
        self.pause.map_or(self.last_seen, |p| self.last_seen.max(p.heartbeat))
    }

    /// Whether the host's sampling is paused by directive now.
    pub fn paused(&self) -> bool {
        self.pause.is_some_and(|p| p.paused)
    }
}

/// (host, process, metric); the names are interned in [`Engine`]'s name set, so the three
/// metrics of a series and every series of a host share one copy of each name.
type Key = (Arc<str>, Arc<str>, Metric);

/// (host, process): the engine's B-tree holds the series of a process under one key.
type ProcessKey = (Arc<str>, Arc<str>);

/// One series' forecast warm-up, as [`Engine::warmups`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// The series' host.
    pub host: String,
    /// The series' process name.
    pub process: String,
    /// The metric the rule forecasts.
    pub metric: Metric,
    /// History the rule's forecaster needs before it can raise AMBER: the method's own
    /// warm-up ([`crate::Method::warmup_ms`]) or the rule's window, whichever is longer.
    pub warmup_ms: i64,
    /// History it has: first to last sample since the forecaster last (re)started.
    pub history_ms: i64,
    /// `warmup_ms - history_ms`, at least 0; 0 = the forecast is ready.
    pub ready_in_ms: i64,
}

struct HostState {
    open: Option<Box<AlarmEvent>>,
    /// `last_seen` of the host when its open host-silent event was raised.
    quiet_since: TsMs,
}

/// The alarm engine. Pure: time comes in as arguments, nothing is read or written.
pub struct Engine {
    /// `rules.rules` then `rules.defaults` (see [`RuleSet::rule_for`]), shared by the series
    /// they match.
    shared: Vec<Arc<Rule>>,
    /// One entry per process, its series' states in metric order in one allocation, so
    /// walking it visits (host, process, metric) in order. Out of line: a B-tree filled in key
    /// order (a pass feeds hosts and processes in order) keeps its nodes about half full, so
    /// inline states would cost twice their size (BENCHMARKS.md "Session 12"); a node slot is
    /// the key and the states' pointer and length (48 bytes), one a process instead of one a
    /// series.
    series: BTreeMap<ProcessKey, ProcessStates>,
    /// OK series forgotten for silence, with their last sample (kept an hour): one that
    /// comes back skips what it was already judged on (an overlapping read window), so no
    /// past transition is derived, and delivered, twice.
    forgotten: HashMap<Key, TsMs>,
    hosts: BTreeMap<String, HostState>,
    /// Host and process names of the followed series, once each (see [`Key`]); names no key
    /// holds any more are dropped after each pass.
    names: HashSet<Arc<str>>,
    /// The extra metrics (issue 19) some rule names: evaluated besides cpu, cores and mem.
    extra_metrics: Vec<Metric>,
    /// Whether quiet OK series drop their forecaster (issue 16; on by default, see
    /// [`Engine::set_dormancy`]).
    dormancy: bool,
    /// Fed since the last [`Engine::finish`]: for each host with an open host alarm, its
    /// first sample after the silence (when it was heard from again).
    heard_back: HashMap<Arc<str>, TsMs>,
}

impl Engine {
    /// Whether some rule names an extra metric (the evaluator must then read the extras).
    pub fn needs_extras(&self) -> bool {
        !self.extra_metrics.is_empty()
    }

    /// Dormancy (issue 16, on by default): an OK series whose forecaster holds only values
    /// so low that no forecast can cross its threshold (`Forecaster::quiescence`: under
    /// ≈ 11 % for the default CPU rule, ≈ 13 % for memory) drops the forecaster, and gets it
    /// back, rebuilt exactly from stored samples, at its first sample above that ceiling. The
    /// caller must then give that series' history: [`Engine::history_needed`]. Events are the
    /// same either way; off keeps every forecaster (for comparison).
    pub fn set_dormancy(&mut self, on: bool) {
        self.dormancy = on;
        if !on {
            for st in self.series.values_mut().flat_map(ProcessStates::iter_mut) {
                st.forget_quiet();
            }
        }
    }

    /// Series whose forecaster is dropped while they stay low (see [`Engine::set_dormancy`]).
    pub fn dormant_series(&self) -> usize {
        self.series
            .values()
            .flat_map(ProcessStates::iter)
            .filter(|st| st.dormant().is_some())
            .count()
    }

    /// The first instant of history a pass must include in the samples of `(host, process)`
    /// (besides its new ones) for the engine to judge them exactly: `Some` when one of its
    /// series is dormant and a new sample in `samples` wakes it (its forecaster is then rebuilt
    /// from the samples since that instant). `None`: the pass's samples are enough.
    pub fn history_needed(
        &self,
        host: &str,
        process: &str,
        samples: &[procwatch_model::Sample],
    ) -> Option<TsMs> {
        let (host, process) = (self.names.get(host)?, self.names.get(process)?);
        let states = self.series.get(&(host.clone(), process.clone()))?;
        [Metric::Cpu, Metric::Cores, Metric::Mem]
            .into_iter()
            .chain(self.extra_metrics.iter().copied())
            .filter_map(|m| states.get(m)?.history_needed(m, samples))
            .min()
    }
}

/// What glibc's malloc (64-bit) takes for a request of `bytes`: the request and an 8-byte
/// header, rounded up to 16, at least 32; nothing for 0 (no allocation).
fn malloc_chunk(bytes: usize) -> usize {
    match bytes {
        0 => 0,
        _ => (bytes + 8).next_multiple_of(16).max(32),
    }
}

/// The one shared copy of `name` in `names`.
fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(n.clone());
    n
}

/// Stable event id: FNV-1a 64 of (kind, host, process, metric, start), hex.
pub fn event_id(kind: AlarmKind, host: &str, process: &str, metric: Metric, start: TsMs) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let kind = match kind {
        AlarmKind::Series => "series",
        AlarmKind::HostSilent => "host_silent",
        AlarmKind::HostRetired => "host_retired",
    };
    let start = start.to_string();
    for part in [kind, host, process, metric.as_str(), start.as_str()] {
        for &b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// `90s`, `10m`, `2h`: a duration for a person.
fn short_secs(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// What one transition produces: the closed previous event (if any) and the new one.
/// Returns the closed previous event.
fn transition(
    out: &mut Vec<AlarmEvent>,
    open: &mut Option<Box<AlarmEvent>>,
    proto: AlarmEvent,
) -> Option<AlarmEvent> {
    let prev = open.take().map(|mut ev| {
        ev.end = Some(proto.start);
        out.push((*ev).clone());
        *ev
    });
    let mut ev = proto;
    ev.previous = prev.as_ref().map_or(Level::Ok, |p| p.level);
    if ev.level == Level::Ok {
        ev.end = Some(ev.start);
        out.push(ev);
    } else {
        out.push(ev.clone());
        *open = Some(Box::new(ev));
    }
    prev
}

/// The host-silent event raised at `start` (`value` = seconds silent at `now`).
fn host_event(h: &HostSeen<'_>, level: Level, start: TsMs, now: TsMs, limit: i64) -> AlarmEvent {
    let silent_s = (now - h.last_seen).max(0) as f64 / 1000.0;
    AlarmEvent {
        id: event_id(AlarmKind::HostSilent, h.host, "", Metric::Cpu, start),
        kind: AlarmKind::HostSilent,
        host: h.host.to_owned(),
        process: String::new(),
        metric: Metric::Cpu,
        level,
        previous: Level::Ok,
        start,
        end: None,
        value: silent_s,
        peak: silent_s,
        threshold: limit as f64 / 1000.0,
        forecast: None,
        eta_seconds: None,
        reason: None,
    }
}

impl Engine {
    /// An engine with no series yet, evaluating `rules`.
    pub fn new(rules: RuleSet) -> Self {
        let shared: Vec<Arc<Rule>> = rules
            .rules
            .iter()
            .chain(std::iter::once(&rules.defaults))
            .cloned()
            .map(Arc::new)
            .collect();
        let mut extra_metrics: Vec<Metric> =
            shared.iter().filter_map(|r| r.metric).filter(|m| Metric::EXTRAS.contains(m)).collect();
        extra_metrics.sort();
        extra_metrics.dedup();
        let (series, forgotten, hosts) = (BTreeMap::new(), HashMap::new(), BTreeMap::new());
        Self {
            shared,
            series,
            forgotten,
            hosts,
            names: HashSet::new(),
            extra_metrics,
            dormancy: true,
            heard_back: HashMap::new(),
        }
    }

    /// [`RuleSet::rule_for`], as the shared copy of the rule (`shared` is [`Engine::shared`]).
    fn shared_rule(
        shared: &[Arc<Rule>],
        host: &str,
        process: &str,
        metric: Metric,
    ) -> Option<Arc<Rule>> {
        let n = shared.len() - 1;
        shared[..n]
            .iter()
            .find(|r| r.matches(host, process, metric))
            .or_else(|| (!metric.needs_rule()).then_some(&shared[n]))
            .cloned()
    }

    /// Drops the names no series key holds any more.
    fn sweep_names(&mut self) {
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }

    /// Estimated heap bytes of the engine's state (series and host state machines, their
    /// forecasters, open events and interned names), from sizes and capacities: cheap enough
    /// for every `/metrics` scrape; an estimate, not an allocator count.
    pub fn estimated_bytes(&self) -> usize {
        // A B-tree filled in key order keeps its nodes about half full: a slot (the process's
        // key and its states' pointer and length) costs about twice its size; the states one
        // malloc chunk of their size (a quiet process's three: 312 bytes, a 320-byte chunk).
        let slot = std::mem::size_of::<(ProcessKey, ProcessStates)>();
        let state = std::mem::size_of::<SeriesState>();
        let event = std::mem::size_of::<AlarmEvent>() + 96;
        let series: usize = self
            .series
            .values()
            .map(|states| {
                let each: usize = states
                    .iter()
                    .map(|st| {
                        st.forecaster().map_or(0, |f| f.heap_bytes())
                            + st.open.as_ref().map_or(0, |_| event)
                            + st.before_stale.as_ref().map_or(0, |_| event)
                    })
                    .sum();
                2 * slot + malloc_chunk(states.len() * state) + each
            })
            .sum();
        let hosts = self.hosts.len() * (std::mem::size_of::<(String, HostState)>() + 32 + event);
        let names: usize = self.names.iter().map(|n| n.len() + 16 + 8 + 8).sum();
        series + hosts + names + std::mem::size_of::<Arc<Rule>>() * self.shared.len()
    }

    /// One evaluation pass at `now`: feeds the new samples through each series' state
    /// machine (one step per new sample), then marks silent series and hosts. Returns every
    /// transition, in order: for a series leaving a non-OK level, its event closed (`end`
    /// set), then the new event (an OK event has `start == end`).
    pub fn evaluate(
        &mut self,
        now: TsMs,
        series: &[SeriesInput<'_>],
        hosts: &[HostSeen<'_>],
    ) -> Vec<AlarmEvent> {
        let mut out = self.feed(series);
        out.extend(self.finish(now, hosts));
        out
    }

    /// The first half of [`Engine::evaluate`]: feeds `series` through their state machines
    /// and returns their transitions. A pass may feed its series in parts (the evaluator feeds
    /// a large fleet host by host, so a pass never holds every series' samples at once), then
    /// calls [`Engine::finish`] once; that is the same as one `evaluate` with all the parts.
    pub fn feed(&mut self, series: &[SeriesInput<'_>]) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        // The first sample of each silent host (one with an open host alarm): when it was
        // heard from again.
        for input in series {
            let Some((host, state)) = self.hosts.get_key_value(input.host) else { continue };
            if state.open.is_none() {
                continue;
            }
            let quiet = state.quiet_since;
            let Some(first) = input.samples.iter().map(|s| s.ts).filter(|&t| t > quiet).min()
            else {
                continue;
            };
            let host = intern(&mut self.names, host);
            let at = self.heard_back.entry(host).or_insert(first);
            *at = (*at).min(first);
        }
        for input in series {
            // The extras only when some rule names them (issue 19).
            let extras = self.extra_metrics.iter().copied();
            let metrics = [Metric::Cpu, Metric::Cores, Metric::Mem].into_iter().chain(extras);
            let mut rules = metrics
                .filter_map(|m| {
                    Some((m, Self::shared_rule(&self.shared, input.host, input.process, m)?))
                })
                .peekable();
            if rules.peek().is_none() {
                continue;
            }
            let host = intern(&mut self.names, input.host);
            let process = intern(&mut self.names, input.process);
            let states = self.series.entry((host.clone(), process.clone())).or_default();
            for (metric, rule) in rules {
                let forgotten = &mut self.forgotten;
                let st = states.get_or_insert_with(metric, || {
                    let mut st = SeriesState::new(rule, metric);
                    if let Some(at) = forgotten.remove(&(host.clone(), process.clone(), metric)) {
                        st.set_resume_after(at);
                    }
                    st
                });
                st.feed(input, metric, &mut out, self.dormancy);
            }
        }
        out
    }

    /// Feeds `series` as history, as the server does on its first pass and when it takes
    /// hosts over: [`Engine::feed`], except that it records no host's return from silence (the
    /// pass that follows records returns from what it reads itself), and keeps what the
    /// pass's own feeds recorded before it. That is `evaluate(0, series, &[])` without its
    /// sweep over every series (nothing is silent at time 0), which made a restart at a large
    /// fleet cost one no-op sweep per host, and without dropping the returns recorded so far.
    pub fn replay(&mut self, series: &[SeriesInput<'_>]) -> Vec<AlarmEvent> {
        let recorded = std::mem::take(&mut self.heard_back);
        let out = self.feed(series);
        self.heard_back = recorded;
        out
    }

    /// The second half of [`Engine::evaluate`], once per pass after [`Engine::feed`]: marks
    /// silent series and hosts at `now` and returns those transitions.
    pub fn finish(&mut self, now: TsMs, hosts: &[HostSeen<'_>]) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        let heard_back = std::mem::take(&mut self.heard_back);
        // Silent series: an open alarm turns Stale (from the moment the third interval
        // without a sample ended, not from `now`); an OK series is forgotten.
        let host_interval: BTreeMap<&str, i64> =
            hosts.iter().map(|h| (h.host, h.interval_ms)).collect();
        let host_last_seen: BTreeMap<&str, TsMs> =
            hosts.iter().map(|h| (h.host, h.last_seen)).collect();
        let paused: HashSet<&str> = hosts.iter().filter(|h| h.paused()).map(|h| h.host).collect();
        let forgotten = &mut self.forgotten;
        forgotten.retain(|_, last| now.saturating_sub(*last) < 3_600_000);
        self.series.retain(|(host, process), states| {
            states.retain(|st| {
                let metric = st.metric;
                let interval = st
                    .interval_ms()
                    .or_else(|| host_interval.get(&**host).copied())
                    .unwrap_or(FALLBACK_INTERVAL_MS)
                    .max(1);
                let last = st.last_ts().or(st.open.as_ref().map(|e| e.start));
                let Some(stale_at) = last.map(|t| t + STALE_INTERVALS * interval) else {
                    return true;
                };
                if now < stale_at {
                    return true;
                }
                match st.level {
                    Level::Ok => {
                        forgotten.insert(
                            (host.clone(), process.clone(), metric),
                            st.last_ts().unwrap_or(stale_at),
                        );
                        return false;
                    }
                    // Paused on purpose: not STALE, closed (see `Pause`).
                    _ if paused.contains(&**host) => {
                        if let Some(mut ev) = st.open.take() {
                            let at = if st.level == Level::Stale { now } else { stale_at };
                            ev.end = Some(at.max(ev.start));
                            ev.reason = Some(PAUSED_REASON.to_owned());
                            out.push(*ev);
                        }
                        forgotten.insert(
                            (host.clone(), process.clone(), metric),
                            st.last_ts().unwrap_or(stale_at),
                        );
                        return false;
                    }
                    Level::Stale => {}
                    _ => st.go_stale(host, process, metric, stale_at, &mut out),
                }
                // The host kept reporting for 3 intervals after the series went STALE: the
                // process exited (or is no longer sampled). Its alarm closes, with the reason,
                // and the series is forgotten; a silent host keeps its series STALE instead.
                let stale_start = st.open.as_ref().map_or(stale_at, |e| e.start);
                let host_seen = host_last_seen.get(&**host).copied();
                if host_seen.is_some_and(|seen| seen >= stale_start + STALE_INTERVALS * interval) {
                    if let Some(mut ev) = st.open.take() {
                        let secs = (STALE_INTERVALS * interval) as f64 / 1000.0;
                        ev.end = Some(stale_start + STALE_INTERVALS * interval);
                        ev.reason = Some(format!(
                            "process exited: no sample of it for {} while its host kept reporting",
                            short_secs(2.0 * secs)
                        ));
                        out.push(*ev);
                    }
                    return false;
                }
                true
            });
            !states.is_empty()
        });
        for h in hosts {
            // A paused host is judged on its heartbeats (see `Pause`).
            let h = &HostSeen { last_seen: h.heard(), ..*h };
            let state = self
                .hosts
                .entry(h.host.to_owned())
                .or_insert(HostState { open: None, quiet_since: h.last_seen });
            let limit = STALE_INTERVALS * h.interval_ms.max(1);
            if state.open.is_some() && h.last_seen > state.quiet_since {
                // Heard from again: at its first sample after the silence.
                let quiet = state.quiet_since;
                let back = heard_back
                    .get(h.host)
                    .copied()
                    .filter(|&t| t > quiet)
                    .unwrap_or(h.last_seen)
                    .min(h.last_seen);
                let start = state.open.as_ref().map_or(back, |e| e.start);
                if back <= start {
                    // Its samples were only late: the silence never happened. The event is
                    // closed where it started, and no recovery follows.
                    if let Some(mut ev) = state.open.take() {
                        ev.end = Some(ev.start);
                        out.push(*ev);
                    }
                } else {
                    transition(
                        &mut out,
                        &mut state.open,
                        host_event(h, Level::Ok, back, now, limit),
                    );
                }
            }
            let silent_at = h.last_seen + limit;
            match &mut state.open {
                None if now >= silent_at => {
                    state.quiet_since = h.last_seen;
                    transition(
                        &mut out,
                        &mut state.open,
                        host_event(h, Level::Red, silent_at, now, limit),
                    );
                }
                Some(ev) => {
                    ev.value = (now - h.last_seen).max(0) as f64 / 1000.0;
                    ev.peak = ev.peak.max(ev.value);
                }
                None => {}
            }
        }
        drop(heard_back);
        self.sweep_names();
        out
    }

    /// Retires `host` at `at`: closes its open alarms (host silent and every series) with
    /// `reason` and forgets them, then records the retirement itself as a `host_retired`
    /// event (level OK, `start == end == at`). Returns the closed events, then that one.
    pub fn retire_host(&mut self, host: &str, at: TsMs, reason: &str) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        let close = |ev: Option<Box<AlarmEvent>>, out: &mut Vec<AlarmEvent>| {
            if let Some(mut ev) = ev {
                ev.end = Some(at.max(ev.start));
                ev.reason = Some(reason.to_owned());
                out.push(*ev);
            }
        };
        if let Some(h) = self.hosts.remove(host) {
            close(h.open, &mut out);
        }
        self.series.retain(|(h, _), states| {
            if &**h != host {
                return true;
            }
            for st in states.iter_mut() {
                close(st.open.take(), &mut out);
            }
            false
        });
        out.push(AlarmEvent {
            id: event_id(AlarmKind::HostRetired, host, "", Metric::Cpu, at),
            kind: AlarmKind::HostRetired,
            host: host.to_owned(),
            process: String::new(),
            metric: Metric::Cpu,
            level: Level::Ok,
            previous: Level::Ok,
            start: at,
            end: Some(at),
            value: 0.0,
            peak: 0.0,
            threshold: 0.0,
            forecast: None,
            eta_seconds: None,
            reason: Some(reason.to_owned()),
        });
        self.sweep_names();
        out
    }

    /// Closes the host-silent alarms of hosts the store no longer lists (retention dropped
    /// them, or another replica retired them): without this they would stay open forever.
    /// `listed` is every host the store lists now.
    pub fn forget_unlisted_hosts(&mut self, listed: &[&str], at: TsMs) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        self.hosts.retain(|name, h| {
            if listed.contains(&name.as_str()) {
                return true;
            }
            if let Some(mut ev) = h.open.take() {
                ev.end = Some(at.max(ev.start));
                ev.reason = Some(
                    "host left the store (retention dropped it, or it was retired)".to_owned(),
                );
                out.push(*ev);
            }
            false
        });
        out
    }

    /// Forgets `host` without closing anything: another server evaluates it now (its open
    /// alarms stay open in the store, where the new owner restores them from). No event.
    pub fn release_host(&mut self, host: &str) {
        self.hosts.remove(host);
        self.series.retain(|(h, _), _| &**h != host);
        self.forgotten.retain(|(h, _, _), _| &**h != host);
        self.sweep_names();
    }

    /// The currently open alarms (series and hosts), ordered by host, process, metric.
    pub fn active(&self) -> Vec<AlarmEvent> {
        let mut v: Vec<AlarmEvent> = (self.series.values().flat_map(ProcessStates::iter))
            .filter_map(|s| s.open.as_deref().cloned())
            .collect();
        v.extend(self.hosts.values().filter_map(|h| h.open.as_deref().cloned()));
        v.sort_by(|a, b| (&a.host, &a.process, a.metric).cmp(&(&b.host, &b.process, b.metric)));
        v
    }

    /// Ends the alarms that have been STALE for `max_stale_ms` or more and forgets those
    /// series (typically a process that exited while in alarm). Returns the closed events
    /// (level STALE, `end = start + max_stale_ms`, the same on every replica); no OK event
    /// follows: the series was never seen to recover.
    pub fn expire_stale(&mut self, now: TsMs, max_stale_ms: i64) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        self.series.retain(|_, states| {
            states.retain(|st| {
            if st.level != Level::Stale {
                return true;
            }
            let Some(start) = st.open.as_ref().map(|e| e.start) else {
                return true;
            };
            if now - start < max_stale_ms {
                return true;
            }
            if let Some(mut ev) = st.open.take() {
                ev.end = Some(start + max_stale_ms);
                ev.reason = Some(format!(
                    "no sample for {} after going STALE: the process exited or is no longer sampled",
                    short_secs(max_stale_ms as f64 / 1000.0)
                ));
                out.push(*ev);
            }
            false
            });
            !states.is_empty()
        });
        self.sweep_names();
        out
    }

    /// The newest sample the engine has seen of (host, process), over its metrics; for a
    /// series restored from the store and not seen since, the start of its open event. The
    /// server reads a returning series back from here, so samples that arrived late are not
    /// skipped.
    pub fn last_sample(&self, host: &str, process: &str) -> Option<TsMs> {
        let (host, process) = (self.names.get(host)?.clone(), self.names.get(process)?.clone());
        let states = self.series.get(&(host, process))?;
        [Metric::Cpu, Metric::Cores, Metric::Mem]
            .into_iter()
            .filter_map(|m| states.get(m))
            .filter_map(|st| st.last_ts().or(st.resume_after()))
            .max()
    }

    /// The forecast warm-up of every series the engine follows, in key order: how much
    /// history its forecaster has and how much more it needs before AMBER can fire. Measured
    /// in sample time (first to last sample since the forecaster last (re)started), so no clock
    /// is read.
    pub fn warmups(&self) -> Vec<Warmup> {
        self.series
            .iter()
            .flat_map(|((host, process), states)| states.iter().map(move |st| (host, process, st)))
            .map(|(host, process, st)| {
                let metric = st.metric;
                let need = st.warmup_ms(metric);
                let have = match (st.warm_since(), st.last_ts()) {
                    (Some(a), Some(b)) => (b - a).max(0),
                    _ => 0,
                };
                Warmup {
                    host: host.to_string(),
                    process: process.to_string(),
                    metric,
                    warmup_ms: need,
                    history_ms: have,
                    ready_in_ms: (need - have).max(0),
                }
            })
            .collect()
    }

    /// Re-opens the alarms the store holds as open (after a restart), so the next
    /// evaluation continues them instead of raising them again.
    pub fn restore(&mut self, open: &[AlarmEvent]) {
        for ev in open.iter().filter(|e| e.end.is_none() && e.level != Level::Ok) {
            match ev.kind {
                AlarmKind::HostRetired => {}
                AlarmKind::HostSilent => {
                    let limit = (ev.threshold * 1000.0).round() as i64;
                    self.hosts.insert(
                        ev.host.clone(),
                        HostState {
                            open: Some(Box::new(ev.clone())),
                            quiet_since: ev.start - limit,
                        },
                    );
                }
                AlarmKind::Series => {
                    let rule = Self::shared_rule(&self.shared, &ev.host, &ev.process, ev.metric)
                        .unwrap_or_else(|| self.shared[self.shared.len() - 1].clone());
                    let mut st = SeriesState::new(rule, ev.metric);
                    st.level = ev.level;
                    st.last_value = ev.value;
                    st.set_resume_after(ev.start);
                    st.open = Some(Box::new(ev.clone()));
                    let key =
                        (intern(&mut self.names, &ev.host), intern(&mut self.names, &ev.process));
                    self.series.entry(key).or_default().insert(st);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
