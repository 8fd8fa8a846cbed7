//! The alarm evaluator: one pass reads the new samples and the hosts from the store, runs the
//! engine over them, stores the transitions and publishes them (see the module documentation
//! of [`crate::alarms`] for what a pass reads and when). It sees only an [`EvalContext`]: the
//! store, the clock, the interval, the metrics and the governor, never the server's whole state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use procwatch_alarm::{HostSeen, SeriesInput, STALE_INTERVALS};
use procwatch_model::clock::Clock;
use procwatch_model::validate::MAX_FUTURE_MS;
use procwatch_model::{AlarmEvent, Level, TsMs};
use procwatch_store::{Storage, StoreError, UsageQuery};
use tokio::sync::watch;

use super::share::Scope;
use super::{Alarms, STALE_EXPIRY};
use crate::governor::Governor;
use crate::metrics::Metrics;
use crate::ownership::Ownership;

/// How far before its read window a returning series is read back, at most.
const REREAD_MAX_MS: i64 = 3_600_000;
/// The first and the longest wait between two attempts to restore the open alarms.
const RESTORE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// What an evaluation pass needs: the store, the clock, the server's interval (for hosts that
/// declared none), and where to report the pass's duration. Cheap to clone.
#[derive(Clone)]
pub struct EvalContext {
    /// The store the pass reads windows from and writes alarm events to.
    pub store: Arc<dyn Storage>,
    /// Where the pass's "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// The server's sampling interval, for hosts that declared none (staleness is 3 intervals).
    pub interval: Duration,
    /// Where the pass's duration is recorded.
    pub metrics: Arc<Metrics>,
    /// Told the open alarms after each pass: alarming series keep full resolution.
    pub governor: Arc<Governor>,
    /// Which hosts this server evaluates, when several servers share the store (`None`: every
    /// host). See [`crate::ownership`].
    pub ownership: Option<Arc<dyn Ownership>>,
    /// The agents registry: which hosts are paused by directive, and their heartbeats.
    pub agents: Arc<crate::agents::Agents>,
}

impl Alarms {
    /// Samples read back on the first pass: the largest window + horizon of the rules.
    fn lookback_ms(&self, interval_ms: i64) -> i64 {
        std::iter::once(&self.rules.defaults)
            .chain(&self.rules.rules)
            .map(|r| r.window_ms + r.horizon_ms)
            .max()
            .unwrap_or(0)
            .max(procwatch_model::stale_after_ms(interval_ms))
    }

    /// One evaluation pass at `now`: returns the transitions it stored and published.
    pub async fn evaluate(
        &self,
        ctx: impl Into<EvalContext>,
        now: TsMs,
    ) -> Result<Vec<AlarmEvent>, StoreError> {
        let ctx: EvalContext = ctx.into();
        let _pass = self.pass.lock().await;
        let started = ctx.clock.instant();
        let interval_ms = (ctx.interval.as_millis() as i64).max(1);
        let to = now + MAX_FUTURE_MS + 1;
        let hosts = ctx.store.hosts().await?;
        // With a cluster membership, only this server's share of the hosts (none while the
        // membership is down); see `share`.
        let scope = self.scope(&ctx, &hosts).await?;
        if let Scope::Paused = scope {
            return Ok(Vec::new());
        }
        let host_interval: BTreeMap<&str, i64> = hosts
            .iter()
            .map(|h| {
                (h.host.as_str(), procwatch_model::trusted_interval_ms(h.interval_ms, interval_ms))
            })
            .collect();
        let overlap = procwatch_model::stale_after_ms(interval_ms).max(30_000);
        let cursor = *self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let from = match cursor {
            Some(c) => c - overlap,
            None => {
                // The first pass reads the rules' whole lookback (20 min by default): one host
                // at a time, so that a restart at a large fleet does not hold every series'
                // history at once, then the recent part with the others as any pass does.
                let back = now - self.lookback_ms(interval_ms);
                let split = now - overlap;
                self.prime(&ctx, &hosts, &scope, &host_interval, (back, split)).await?;
                back.max(split - overlap)
            }
        };
        // With the window in the server's own memory (the embedded store) the pass reads and
        // feeds one host at a time: a pass over 300,000 series held ≈ 0.2 GB of samples at
        // once every interval (issue 16). A remote store is read in one query, as one read is
        // far cheaper there than a thousand.
        let by_host = ctx.store.series_usage_is_local();
        let gained = match &scope {
            Scope::Hosts { gained, .. } if !gained.is_empty() => Some(gained),
            _ => None,
        };
        let mut fed = Vec::new();
        let mut series_count = 0;
        let mut discovered = Vec::new();
        let pass = PassSpan { from, to, interval_ms, host_interval: &host_interval };
        // What is fed in one read after the host-by-host feeds: the whole pass from a remote
        // store, and on either store the series of hosts taken over that continue an alarm.
        let mut rest = Vec::new();
        if by_host {
            let covered = hosts.iter().filter(|h| scope.covers(&h.host));
            for h in covered.filter(|h| gained.is_none_or(|g| !g.contains(&h.host))) {
                let q = UsageQuery {
                    from,
                    to,
                    host: Some(h.host.clone()),
                    process: None,
                    per_host: true,
                };
                let windows = ctx.store.window(&q).await?;
                series_count += windows.len();
                fed.extend(self.feed_windows(&ctx, windows, &pass, Some(&h.host)).await?);
            }
        } else {
            let q = UsageQuery { from, to, host: None, process: None, per_host: true };
            rest = ctx.store.window(&q).await?;
            // A series of a host the store does not list yet (its batch's bookkeeping lands
            // after its samples) waits for the next pass, which reads it again: judged with a
            // guessed interval it could go STALE at once.
            let known: std::collections::HashSet<&str> =
                hosts.iter().map(|h| h.host.as_str()).collect();
            rest.retain(|w| known.contains(w.host.as_str()) && scope.covers(&w.host));
        }
        // Hosts taken over from another member (or on the first pass): see `share`.
        if let Some(gained) = gained {
            let span = (now - self.lookback_ms(interval_ms), to);
            let taken = self.take_over(&ctx, gained, &mut rest, &host_interval, span);
            discovered.extend(taken.await?);
        }
        series_count += rest.len();
        fed.extend(self.feed_windows(&ctx, rest, &pass, None).await?);
        // A host is judged silent only once the server itself has been evaluating for 3 of the
        // host's intervals: after a restart, agents need that long to be heard again.
        let first = *self.first_eval.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(now);
        // A host paused by directive is judged on its heartbeats (`procwatch_alarm::Pause`).
        let pauses = ctx.agents.pauses();
        let seen: Vec<HostSeen<'_>> = hosts
            .iter()
            .filter(|h| scope.covers(&h.host))
            .filter(|h| now - first >= STALE_INTERVALS * host_interval[h.host.as_str()])
            .map(|h| HostSeen {
                host: &h.host,
                last_seen: h.last_seen,
                interval_ms: host_interval[h.host.as_str()],
                pause: pauses.get(&h.host).copied(),
            })
            .collect();
        let (events, active) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let primed =
                std::mem::take(&mut *self.primed.lock().unwrap_or_else(|p| p.into_inner()));
            let mut events = primed;
            events.extend(discovered);
            events.extend(fed);
            events.extend(engine.finish(now, &seen));
            events.extend(engine.expire_stale(now, STALE_EXPIRY.as_millis() as i64));
            let listed: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
            events.extend(engine.forget_unlisted_hosts(&listed, now));
            (events, engine.active())
        };
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        // Store first, then tell: a client that reacts to an event finds it in the store. The
        // pass's events go in one call (one INSERT on the cluster store, not one per event).
        if let Err(error) = ctx.store.put_alarm_events(&events).await {
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            tracing::warn!(message = "Cannot store alarm events.", %error, count = events.len(), ids = ?ids);
        }
        let mut updates = Vec::new();
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let open: HashMap<&str, &AlarmEvent> =
                active.iter().map(|e| (e.id.as_str(), e)).collect();
            written.retain(|id, _| open.contains_key(id.as_str()));
            for ev in &active {
                let now_figures = (ev.peak, ev.value);
                match written.insert(ev.id.clone(), now_figures) {
                    Some(old) if old != now_figures => updates.push(ev.clone()),
                    _ => {}
                }
            }
        }
        if let Err(error) = ctx.store.put_alarm_events(&updates).await {
            let ids: Vec<&str> = updates.iter().map(|e| e.id.as_str()).collect();
            tracing::warn!(message = "Cannot update alarm events.", %error, count = updates.len(), ids = ?ids);
        }
        ctx.governor.set_alarming(&active);
        self.set_active(active);
        for ev in &events {
            self.hub.publish(ev.clone());
        }
        let took = ctx.clock.instant().saturating_duration_since(started);
        self.last_eval_us.store(took.as_micros() as u64, Ordering::Relaxed);
        ctx.metrics.observe_evaluation(took);
        tracing::debug!(
            message = "Alarms evaluated.",
            series = series_count,
            hosts = hosts.len(),
            events = events.len(),
            took_us = took.as_micros() as u64
        );
        for ev in events.iter().filter(|e| e.end.is_none() || e.level == Level::Ok) {
            tracing::info!(
                message = "Alarm.",
                level = ev.level.as_str(),
                host = %ev.host,
                process = %ev.process,
                metric = ev.metric.as_str(),
                value = ev.value,
                threshold = ev.threshold
            );
        }
        Ok(events)
    }

    /// Replaces the samples of each of `windows` for which `since` (asked under the engine's
    /// lock) names an instant by its series' stored samples of `[since, to)`.
    async fn read_back(
        &self,
        ctx: &EvalContext,
        windows: &mut [procwatch_store::SeriesWindow],
        to: TsMs,
        since: impl Fn(&procwatch_alarm::Engine, &procwatch_store::SeriesWindow) -> Option<TsMs>,
    ) -> Result<(), StoreError> {
        let reads: Vec<(usize, TsMs)> = {
            let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            windows.iter().enumerate().filter_map(|(i, w)| Some((i, since(&engine, w)?))).collect()
        };
        for (i, from) in reads {
            let w = &windows[i];
            let q = UsageQuery {
                from,
                to,
                host: Some(w.host.clone()),
                process: Some(w.process.clone()),
                per_host: true,
            };
            if let Some(full) = ctx.store.window(&q).await?.into_iter().next() {
                windows[i].samples = full.samples;
            }
        }
        Ok(())
    }

    /// Feeds one read of the pass (`host`: the one host it holds, `None`: any) to the engine,
    /// after reading back what the engine needs beyond the pass's window: a series returning
    /// after a gap from its last sample, a dormant series that wakes from its forecaster's
    /// memory, the opt-in extras. Returns the transitions.
    async fn feed_windows(
        &self,
        ctx: &EvalContext,
        mut windows: Vec<procwatch_store::SeriesWindow>,
        pass: &PassSpan<'_>,
        host: Option<&String>,
    ) -> Result<Vec<AlarmEvent>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let (from, to) = (pass.from, pass.to);
        // A series coming back after a gap (or through a late batch) is read again from the
        // last sample the engine saw of it (at most REREAD_MAX before `from`), so every replica
        // steps through the same samples whatever its read window.
        self.read_back(ctx, &mut windows, to, |engine, w| {
            let last = engine.last_sample(&w.host, &w.process)?;
            (last < from).then_some(last.max(from - REREAD_MAX_MS))
        })
        .await?;
        // A dormant series (its forecaster dropped while it stayed low, issue 16) that a new
        // sample wakes gets its forecaster rebuilt from its stored history: read from where
        // the engine asks (at most the forecaster's memory, ≈ 2 h, for that one series).
        self.read_back(ctx, &mut windows, to, |engine, w| {
            let since = engine.history_needed(&w.host, &w.process, &w.samples)?;
            w.samples.first().is_some_and(|s| s.ts > since).then_some(since)
        })
        .await?;
        // Rules on the opt-in extras (issue 19): their figures, stored apart, join the samples.
        let needs_extras = self.engine.lock().unwrap_or_else(|p| p.into_inner()).needs_extras();
        if needs_extras {
            let first = windows.iter().filter_map(|w| w.samples.first()).map(|s| s.ts).min();
            let q = UsageQuery {
                from: first.unwrap_or(from).min(from),
                to,
                host: host.cloned(),
                process: None,
                per_host: true,
            };
            procwatch_store::extras::attach(&mut windows, ctx.store.extras_window(&q).await?);
        }
        let series = series_inputs(&windows, pass.host_interval, pass.interval_ms);
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        Ok(engine.feed(&series))
    }

    /// The first pass's history of `span`, read and fed to the engine one host at a time
    /// (hosts taken over are restored by `take_over` instead). Replayed, as a take-over is:
    /// nothing is judged silent here; the pass that follows judges silence at its `now`.
    /// The transitions the history holds wait in `primed` for the pass to store them. A host
    /// fed by an earlier, failed attempt is not fed twice (the engine skips what it has seen).
    async fn prime(
        &self,
        ctx: &EvalContext,
        hosts: &[procwatch_store::HostInfo],
        scope: &Scope,
        host_interval: &BTreeMap<&str, i64>,
        (from, to): (TsMs, TsMs),
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let needs_extras = self.engine.lock().unwrap_or_else(|p| p.into_inner()).needs_extras();
        let fallback = (ctx.interval.as_millis() as i64).max(1);
        for h in hosts.iter().filter(|h| scope.covers(&h.host) && !scope.gained(&h.host)) {
            let q =
                UsageQuery { from, to, host: Some(h.host.clone()), process: None, per_host: true };
            let mut windows = ctx.store.window(&q).await?;
            if windows.is_empty() {
                continue;
            }
            if needs_extras {
                procwatch_store::extras::attach(&mut windows, ctx.store.extras_window(&q).await?);
            }
            let inputs = series_inputs(&windows, host_interval, fallback);
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let events = engine.replay(&inputs);
            self.primed.lock().unwrap_or_else(|p| p.into_inner()).extend(events);
        }
        Ok(())
    }
}

/// What every read of one pass shares: its window `[from, to)`, the server's interval and
/// each host's.
struct PassSpan<'a> {
    from: TsMs,
    to: TsMs,
    interval_ms: i64,
    host_interval: &'a BTreeMap<&'a str, i64>,
}

/// The engine's inputs for `windows`, each with its host's interval (`fallback` for a host
/// `host_interval` does not list).
pub(super) fn series_inputs<'a>(
    windows: &'a [procwatch_store::SeriesWindow],
    host_interval: &BTreeMap<&str, i64>,
    fallback: i64,
) -> Vec<SeriesInput<'a>> {
    windows
        .iter()
        .map(|w| SeriesInput {
            host: &w.host,
            process: &w.process,
            samples: &w.samples,
            interval_ms: host_interval.get(w.host.as_str()).copied().unwrap_or(fallback),
        })
        .collect()
}

/// Restores the open alarms, then evaluates every `ctx.interval` until `stop` turns true.
pub fn spawn_evaluator(
    alarms: Arc<Alarms>,
    ctx: EvalContext,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // No pass before the open alarms are restored: a pass without them would raise them
        // again under new ids. The server serves meanwhile; the store may just be down.
        // With a cluster membership, each pass restores the hosts it takes over instead.
        let mut wait = RESTORE_BACKOFF.0;
        while ctx.ownership.is_none() {
            match alarms.restore(&*ctx.store).await {
                Ok(n) => {
                    tracing::info!(message = "Alarm evaluation started.", restored = n, rules = alarms.rules().rules.len(), interval = ?ctx.interval);
                    break;
                }
                Err(error) => {
                    tracing::warn!(message = "Cannot restore open alarms; retrying.", %error, retry_in = ?wait);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            wait = (wait * 2).min(RESTORE_BACKOFF.1);
        }
        if ctx.ownership.is_some() {
            tracing::info!(message = "Alarm evaluation started: each pass evaluates this server's share of the hosts.", rules = alarms.rules().rules.len(), interval = ?ctx.interval);
        }
        let mut tick = tokio::time::interval(ctx.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = alarms.evaluate(ctx.clone(), ctx.clock.now_ms()).await {
                        tracing::warn!(message = "Alarm evaluation failed.", %error);
                    }
                }
                _ = stop.changed() => break,
            }
        }
    })
}
