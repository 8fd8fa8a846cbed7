//! Alarms in the server: the evaluator task, the event log, and the alarm routes.
//!
//! What a user needs to know:
//! - **Evaluation.** Every `--interval` (the server's interval, 10 s by default) the server
//!   reads the new samples of every series from the store (`Storage::window`; the first pass
//!   after start reads W + H back, the largest window + horizon of the rules, so `linear`
//!   forecasters start primed; procwatch's default forecaster needs 1 h of history and warms
//!   up again after a restart; later passes read from the previous pass minus 3 intervals, so batches
//!   that arrive late are still seen) and the hosts (`Storage::hosts`), and runs the pure
//!   engine of `procwatch-alarm` over them. A host whose agent went silent for 3 of its
//!   intervals raises a `host_silent` RED alarm (judged only from 3 of its intervals after
//!   the server's first pass, so a server restart does not page for every host); a series
//!   with no sample for 3 intervals goes STALE, never resolved; an alarm STALE for
//!   [`STALE_EXPIRY`] (1 h) is closed (its event gets an `end`, no OK event follows) and the
//!   series forgotten, so a process that exited while in alarm does not stay listed forever.
//!   Event times come from the data (see `procwatch-alarm`: STALE starts 3 intervals after
//!   the last sample, host silence 3 intervals after `last_seen`), so several replicas on one
//!   store derive the same events under the same ids. A series whose host the store does not
//!   list yet waits for the next pass (its interval is unknown). A series the engine knows
//!   that comes back after a gap, or through a late batch, is read again from the last sample
//!   the engine saw of it (at most 1 h before the pass's window), so every replica steps
//!   through the same samples. Each pass is timed: logged at debug, exported as
//!   `procwatch_alarm_evaluation_duration_seconds`, and readable with
//!   [`Alarms::last_evaluation`].
//! - **Events.** Every transition is stored with `Storage::put_alarm_event` (upsert by id; an
//!   open event has no `end`). An open event's growing `peak` is written back after each pass.
//!   At start the open events of the store are restored into the engine, so a restart neither
//!   raises them again nor forgets them. No pass runs before the restore succeeded: with the
//!   store down at start, the evaluator retries it (100 ms, doubling, at most every 10 s)
//!   while the server serves. Replicas converge: a replica that has not yet seen a transition
//!   another one stored may briefly write the event back open (its `peak`), until its own next
//!   pass closes it the same way.
//! - **Routes** (read token when one is set):
//!   - `GET /ressources-usage/query-alarm/` (also without the trailing slash) →
//!     `{"postgres": "RED", "java": "AMBER"}`: processes with an open alarm now (RED, AMBER
//!     or STALE), the worst level over their metrics; `?host=` one host, else the worst level
//!     across hosts. Host alarms (`host_silent`) have no process and are not listed here.
//!   - `GET /api/v1/alarms` → `{"alarms": [AlarmEvent...]}` newest first; `active=true` only
//!     open events; filters `host`, `process`, `metric`, `level`, `from`, `to` (on `start`;
//!     times as in [`crate::time`]), `limit` (the page size: default 100, 0 = the largest page,
//!     `page::MAX_PAGE`), `cursor` (the `next` of the previous page; see [`crate::page`]).
//!   - `GET /api/v1/alarms/stream`: Server-Sent Events, one `event: alarm` per transition,
//!     `data:` the `AlarmEvent` JSON (the closing copy of the previous event, `end` set, comes
//!     before its successor), `id: <boot>-<n>`, a `: keep-alive` comment every 15 s. On
//!     connect the alarms open now are sent first, then `event: synced` with
//!     `data: {"active": [ids]}` (anything else a client thought open has closed meanwhile);
//!     with a `Last-Event-ID` of this server's run that is still in its log (the last 1024
//!     events), the events after it are sent instead, so a reconnecting client misses
//!     nothing. A client too slow to keep up is
//!     disconnected (it reconnects and replays). Streams end when the server shuts down.
//!   - `GET /api/v1/rules` → `{"interval_ms", "defaults": Rule, "rules": [Rule...]}`: the
//!     effective rules, from `[alarm_defaults]` and `[[rules]]` of the config file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use procwatch_alarm::{Engine, HostSeen, Method, Rule, RuleSet, SeriesInput, STALE_INTERVALS};
use procwatch_model::validate::MAX_FUTURE_MS;
use procwatch_model::{AlarmEvent, Level, Metric, TsMs};
use procwatch_store::{AlarmQuery, StoreError, UsageQuery};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::time::parse_time_ms;
use crate::AppState;

/// Events kept for `Last-Event-ID` replays.
const LOG_CAP: usize = 1024;
/// Events a stream may fall behind before it is cut (it then reconnects and replays).
const CHANNEL_CAP: usize = 256;
/// A STALE alarm whose series stays silent this long is closed (end set, no OK event) and
/// the series forgotten: typically a process that exited while in alarm.
pub const STALE_EXPIRY: Duration = Duration::from_secs(3600);
/// How far before its read window a returning series is read back, at most.
const REREAD_MAX_MS: i64 = 3_600_000;
/// The first and the longest wait between two attempts to restore the open alarms.
const RESTORE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// Keep-alive comment period of the stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Log {
    seq: u64,
    events: VecDeque<(u64, AlarmEvent)>,
}

/// The server's alarm state: the engine, the open alarms, the event log and its subscribers.
pub struct Alarms {
    rules: RuleSet,
    engine: Mutex<Engine>,
    active: RwLock<Vec<AlarmEvent>>,
    log: Mutex<Log>,
    tx: broadcast::Sender<(u64, AlarmEvent)>,
    /// Tells apart the ids of this run from those of an earlier one.
    boot: String,
    /// Where the next pass starts reading samples (None: not evaluated yet).
    cursor: Mutex<Option<TsMs>>,
    /// `now` of the first pass (host silence is judged from 3 intervals after it).
    first_eval: Mutex<Option<TsMs>>,
    /// (peak, value) last written of each open event.
    written: Mutex<HashMap<String, (f64, f64)>>,
    last_eval_us: AtomicU64,
    closing: watch::Sender<bool>,
    /// Held for a whole evaluation pass and a whole retirement, so a pass that read the
    /// hosts before a retirement cannot re-open what the retirement closed.
    pass: tokio::sync::Mutex<()>,
}

impl Alarms {
    /// `now`: the server's start, which names this run's event stream (`boot`).
    pub fn new(rules: RuleSet, now: TsMs) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAP);
        let (closing, _) = watch::channel(false);
        Self {
            engine: Mutex::new(Engine::new(rules.clone())),
            rules,
            active: RwLock::new(Vec::new()),
            log: Mutex::new(Log { seq: 0, events: VecDeque::new() }),
            tx,
            boot: format!("{now:x}"),
            cursor: Mutex::new(None),
            first_eval: Mutex::new(None),
            written: Mutex::new(HashMap::new()),
            last_eval_us: AtomicU64::new(0),
            closing,
            pass: tokio::sync::Mutex::new(()),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The alarms open now (series and hosts), by host, process, metric.
    pub fn active(&self) -> Vec<AlarmEvent> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every followed series' forecast warm-up (see [`procwatch_alarm::Engine::warmups`]).
    pub fn warmups(&self) -> Vec<procwatch_alarm::Warmup> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).warmups()
    }

    /// How long the last evaluation pass took (zero before the first).
    pub fn last_evaluation(&self) -> Duration {
        Duration::from_micros(self.last_eval_us.load(Ordering::Relaxed))
    }

    /// Ends every open stream (at shutdown, so the graceful shutdown does not wait on them).
    pub fn close_streams(&self) {
        let _ = self.closing.send(true);
    }

    fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    fn set_active(&self, v: Vec<AlarmEvent>) {
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// Appends to the log and tells the subscribers.
    fn publish(&self, ev: AlarmEvent) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.seq += 1;
        let seq = log.seq;
        log.events.push_back((seq, ev.clone()));
        if log.events.len() > LOG_CAP {
            log.events.pop_front();
        }
        let _ = self.tx.send((seq, ev));
    }

    /// What a new stream starts with, the sequence number after which live events follow, and
    /// whether the start is the active alarms (`true`) rather than the missed events.
    fn replay(&self, last_event_id: Option<&str>) -> (Vec<(u64, AlarmEvent)>, u64, bool) {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let since = last_event_id
            .and_then(|id| id.split_once('-'))
            .filter(|(boot, _)| *boot == self.boot)
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .filter(|n| *n <= log.seq);
        let oldest = log.events.front().map_or(log.seq + 1, |(s, _)| *s);
        match since {
            Some(n) if n + 1 >= oldest => {
                (log.events.iter().filter(|(s, _)| *s > n).cloned().collect(), log.seq, false)
            }
            _ => (self.active().into_iter().map(|ev| (log.seq, ev)).collect(), log.seq, true),
        }
    }

    /// Re-opens the store's open events in the engine (once, at start).
    pub async fn restore(&self, st: &AppState) -> Result<usize, StoreError> {
        let open =
            st.store.alarm_events(&AlarmQuery { active_only: true, ..Default::default() }).await?;
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        engine.restore(&open);
        let active = engine.active();
        drop(engine);
        let n = active.len();
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            for ev in &active {
                written.insert(ev.id.clone(), (ev.peak, ev.value));
            }
        }
        self.set_active(active);
        Ok(n)
    }

    /// Retires `host` (see [`crate::retire`]): the store first (so a `NotFound` changes
    /// nothing), then the engine closes its alarms with `reason`; every event is stored, then
    /// published. Returns the host's `last_seen` and the events.
    pub async fn retire_host(
        &self,
        st: &AppState,
        host: &str,
        now: TsMs,
        reason: &str,
    ) -> Result<(TsMs, Vec<AlarmEvent>), StoreError> {
        let _pass = self.pass.lock().await;
        let last_seen = st.store.retire_host(host, now).await?;
        let (events, active) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            (engine.retire_host(host, now, reason), engine.active())
        };
        for ev in &events {
            if let Err(error) = st.store.put_alarm_event(ev).await {
                tracing::warn!(message = "Cannot store an alarm event.", %error, id = %ev.id);
            }
        }
        self.set_active(active);
        for ev in &events {
            self.publish(ev.clone());
        }
        Ok((last_seen, events))
    }

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
    pub async fn evaluate(&self, st: &AppState, now: TsMs) -> Result<Vec<AlarmEvent>, StoreError> {
        let _pass = self.pass.lock().await;
        let started = st.config.clock.instant();
        let interval_ms = (st.config.interval.as_millis() as i64).max(1);
        let from = {
            let cursor = *self.cursor.lock().unwrap_or_else(|p| p.into_inner());
            match cursor {
                Some(c) => c - procwatch_model::stale_after_ms(interval_ms).max(30_000),
                None => now - self.lookback_ms(interval_ms),
            }
        };
        let to = now + MAX_FUTURE_MS + 1;
        let hosts = st.store.hosts().await?;
        let mut windows = st
            .store
            .window(&UsageQuery { from, to, host: None, process: None, per_host: true })
            .await?;
        // A series of a host the store does not list yet (its batch's bookkeeping lands after
        // its samples) waits for the next pass, which reads it again: judged with a guessed
        // interval it could go STALE at once.
        let known: std::collections::HashSet<&str> =
            hosts.iter().map(|h| h.host.as_str()).collect();
        windows.retain(|w| known.contains(w.host.as_str()));
        // A series coming back after a gap (or through a late batch) is read again from the
        // last sample the engine saw of it (at most REREAD_MAX before `from`), so every replica
        // steps through the same samples whatever its read window.
        let reread: Vec<(usize, TsMs)> = {
            let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            windows
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    let last = engine.last_sample(&w.host, &w.process)?;
                    (last < from).then_some((i, last.max(from - REREAD_MAX_MS)))
                })
                .collect()
        };
        for (i, since) in reread {
            let w = &windows[i];
            let q = UsageQuery {
                from: since,
                to,
                host: Some(w.host.clone()),
                process: Some(w.process.clone()),
                per_host: true,
            };
            if let Some(full) = st.store.window(&q).await?.into_iter().next() {
                windows[i].samples = full.samples;
            }
        }
        let host_interval: BTreeMap<&str, i64> = hosts
            .iter()
            .map(|h| {
                let i = if h.interval_ms > 0 { h.interval_ms as i64 } else { interval_ms };
                (h.host.as_str(), i)
            })
            .collect();
        let series: Vec<SeriesInput<'_>> = windows
            .iter()
            .map(|w| SeriesInput {
                host: &w.host,
                process: &w.process,
                samples: &w.samples,
                interval_ms: host_interval.get(w.host.as_str()).copied().unwrap_or(interval_ms),
            })
            .collect();
        // A host is judged silent only once the server itself has been evaluating for 3 of the
        // host's intervals: after a restart, agents need that long to be heard again.
        let first = *self.first_eval.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(now);
        let seen: Vec<HostSeen<'_>> = hosts
            .iter()
            .filter(|h| now - first >= STALE_INTERVALS * host_interval[h.host.as_str()])
            .map(|h| HostSeen {
                host: &h.host,
                last_seen: h.last_seen,
                interval_ms: host_interval[h.host.as_str()],
            })
            .collect();
        let (events, active) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let mut events = engine.evaluate(now, &series, &seen);
            events.extend(engine.expire_stale(now, STALE_EXPIRY.as_millis() as i64));
            let listed: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
            events.extend(engine.forget_unlisted_hosts(&listed, now));
            (events, engine.active())
        };
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        // Store first, then tell: a client that reacts to an event finds it in the store.
        for ev in &events {
            if let Err(error) = st.store.put_alarm_event(ev).await {
                tracing::warn!(message = "Cannot store an alarm event.", %error, id = %ev.id);
            }
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
        for ev in &updates {
            if let Err(error) = st.store.put_alarm_event(ev).await {
                tracing::warn!(message = "Cannot update an alarm event.", %error, id = %ev.id);
            }
        }
        st.governor.set_alarming(&active);
        self.set_active(active);
        for ev in &events {
            self.publish(ev.clone());
        }
        let took = st.config.clock.instant().saturating_duration_since(started);
        self.last_eval_us.store(took.as_micros() as u64, Ordering::Relaxed);
        st.metrics.observe_evaluation(took);
        tracing::debug!(
            message = "Alarms evaluated.",
            series = windows.len(),
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
}

/// Restores the open alarms, then evaluates every interval until `stop` turns true.
pub fn spawn_evaluator(
    st: AppState,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // No pass before the open alarms are restored: a pass without them would raise them
        // again under new ids. The server serves meanwhile; the store may just be down.
        let mut wait = RESTORE_BACKOFF.0;
        loop {
            match st.alarms.restore(&st).await {
                Ok(n) => {
                    tracing::info!(message = "Alarm evaluation started.", restored = n, rules = st.alarms.rules.rules.len(), interval = ?st.config.interval);
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
        let mut tick = tokio::time::interval(st.config.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = st.alarms.evaluate(&st, st.config.clock.now_ms()).await {
                        tracing::warn!(message = "Alarm evaluation failed.", %error);
                    }
                }
                _ = stop.changed() => break,
            }
        }
    })
}

/// The alarm routes (read routes).
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/ressources-usage/query-alarm/", get(query_alarm))
        .route("/ressources-usage/query-alarm", get(query_alarm))
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/stream", get(stream))
        .route("/api/v1/rules", get(rules))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::require_read))
}

#[derive(Debug, Default, Deserialize)]
pub struct HostParam {
    pub host: Option<String>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// Processes in alarm now, worst level per process name.
pub fn worst_by_process(active: &[AlarmEvent], host: Option<&str>) -> BTreeMap<String, Level> {
    let mut out: BTreeMap<String, Level> = BTreeMap::new();
    for ev in active {
        if ev.process.is_empty() || ev.level == Level::Ok || host.is_some_and(|h| h != ev.host) {
            continue;
        }
        let slot = out.entry(ev.process.clone()).or_insert(ev.level);
        *slot = (*slot).max(ev.level);
    }
    out
}

/// `GET /ressources-usage/query-alarm/` → `{"postgres": "RED", "java": "AMBER"}`.
async fn query_alarm(
    State(st): State<AppState>,
    q: QueryResult<HostParam>,
) -> Result<Json<BTreeMap<String, Level>>, ApiError> {
    let p = q?.0;
    let host = p.host.filter(|h| !h.is_empty());
    Ok(Json(worst_by_process(&st.alarms.active(), host.as_deref())))
}

#[derive(Debug, Default, Deserialize)]
pub struct AlarmParams {
    pub active: Option<String>,
    pub host: Option<String>,
    pub process: Option<String>,
    pub metric: Option<String>,
    pub level: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<String>,
    /// The `next` of the previous page (see [`crate::page`]).
    pub cursor: Option<String>,
}

/// Parses the query string of `GET /api/v1/alarms`.
pub fn alarm_query(p: AlarmParams, now: TsMs) -> Result<AlarmQuery, ApiError> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let active_only = match nonempty(p.active).as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_param("active", format!("{other:?}: true or false")))
        }
    };
    let metric = nonempty(p.metric)
        .map(|m| m.parse::<Metric>().map_err(|e| ApiError::bad_param("metric", e)))
        .transpose()?;
    let level = nonempty(p.level)
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "OK" => Ok(Level::Ok),
            "STALE" => Ok(Level::Stale),
            "AMBER" => Ok(Level::Amber),
            "RED" => Ok(Level::Red),
            _ => Err(ApiError::bad_param("level", format!("{l:?}: OK, STALE, AMBER or RED"))),
        })
        .transpose()?;
    let time = |name: &str, v: Option<String>| {
        nonempty(v)
            .map(|s| parse_time_ms(&s, now).map_err(|e| ApiError::bad_param(name, e)))
            .transpose()
    };
    let from = time("from", p.from)?;
    let to = time("to", p.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_param("from", "after to"));
        }
    }
    let limit = match nonempty(p.limit) {
        None => 100,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_param("limit", format!("{s:?}: a number ≥ 0")))?,
    };
    Ok(AlarmQuery {
        active_only,
        host: nonempty(p.host),
        process: nonempty(p.process),
        metric,
        level,
        from,
        to,
        limit,
    })
}

#[derive(Debug, Serialize)]
pub struct AlarmsResponse {
    pub alarms: Vec<AlarmEvent>,
    /// The cursor of the next page (`null`: this is the last). See [`crate::page`].
    pub next: Option<String>,
}

/// `GET /api/v1/alarms`.
async fn list(
    State(st): State<AppState>,
    q: QueryResult<AlarmParams>,
) -> Result<Json<AlarmsResponse>, ApiError> {
    let p = q?.0;
    let offset = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(crate::page::Cursor::decode)
        .transpose()?
        .map_or(0, |c| c.offset);
    let mut q = alarm_query(p, st.config.clock.now_ms())?;
    // `limit` is the page size (0 = the largest page); one more event tells whether a next
    // page exists.
    let size = crate::page::size(Some(q.limit).filter(|&l| l > 0), crate::page::MAX_PAGE);
    q.limit = offset.saturating_add(size).saturating_add(1);
    let events = st.store.alarm_events(&q).await?;
    let (alarms, next) = crate::page::take(events, offset, size, None);
    Ok(Json(AlarmsResponse { alarms, next }))
}

fn sse_event(boot: &str, seq: u64, ev: &AlarmEvent) -> Event {
    Event::default()
        .event("alarm")
        .id(format!("{boot}-{seq}"))
        .json_data(ev)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

/// `GET /api/v1/alarms/stream`.
///
/// At most `max_streams` streams are open at once (each holds a connection and a subscriber):
/// past it the answer is 503 with `Retry-After`, counted as `limit_breaches{reason="streams"}`.
async fn stream(State(st): State<AppState>, headers: HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(permit) = st.stream_permits.clone().try_acquire_owned() else {
        st.metrics.limit_breach("streams");
        let mut resp = ApiError::Busy(format!(
            "{} alarm streams are open, the most this server allows (max_streams); retry later",
            st.config.max_streams
        ))
        .into_response();
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return resp;
    };
    stream_events(st, headers, permit).into_response()
}

fn stream_events(
    st: AppState,
    headers: HeaderMap,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let hub = st.alarms.clone();
    // Subscribe before reading the log, so nothing falls between the two.
    let rx = hub.tx.subscribe();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (first, after, snapshot) = hub.replay(last);
    let boot = hub.boot.clone();
    // After a snapshot of the active alarms, `event: synced` lists their ids: a client may
    // drop whatever else it believed open (an alarm that closed while it was away).
    let synced = snapshot.then(|| {
        let ids: Vec<&str> = first.iter().map(|(_, e)| e.id.as_str()).collect();
        Event::default()
            .event("synced")
            .id(format!("{boot}-{after}"))
            .data(serde_json::json!({ "active": ids }).to_string())
    });
    let b1 = boot.clone();
    let head = futures::stream::iter(
        first.into_iter().map(move |(seq, ev)| sse_event(&b1, seq, &ev)).chain(synced).map(Ok),
    );
    // A lagging client is cut (take_while on the first error): it reconnects and replays.
    let live = tokio_stream::wrappers::BroadcastStream::new(rx)
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(move |r| {
            let out = match r {
                Ok((seq, ev)) if seq > after => Some(Ok(sse_event(&boot, seq, &ev))),
                _ => None,
            };
            futures::future::ready(out)
        });
    // The permit lives as long as the stream.
    let events = head.chain(live).take_until(hub.closed()).map(move |e| {
        let _held = &permit;
        e
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

/// A rule as `GET /api/v1/rules` shows it.
#[derive(Debug, Serialize)]
pub struct RuleView {
    pub host: String,
    pub process: String,
    /// `null`: cpu and mem.
    pub metric: Option<Metric>,
    pub threshold: f64,
    pub hysteresis: f64,
    pub clear_for: u32,
    pub horizon_ms: i64,
    pub window_ms: i64,
    pub debounce: u32,
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// procwatch's forecaster: the rule's sensitivity (absent = the metric's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<f64>,
    /// How long a new series must be sampled before this rule's forecaster can raise AMBER:
    /// the method's warm-up, and at least the window (the engine waits for a full window).
    pub warmup_ms: i64,
}

impl From<&Rule> for RuleView {
    fn from(r: &Rule) -> Self {
        let sensitivity = match r.method {
            Method::Procwatch { sensitivity } => sensitivity,
            _ => None,
        };
        let (method, alpha, beta) = match r.method {
            Method::Procwatch { .. } => ("procwatch", None, None),
            Method::Linear => ("linear", None, None),
            Method::Holt { alpha, beta } => ("holt", Some(alpha), Some(beta)),
            Method::Persistence => ("persistence", None, None),
        };
        RuleView {
            host: r.host.as_str().to_owned(),
            process: r.process.as_str().to_owned(),
            metric: r.metric,
            threshold: r.threshold,
            hysteresis: r.hysteresis,
            clear_for: r.clear_for,
            horizon_ms: r.horizon_ms,
            window_ms: r.window_ms,
            debounce: r.debounce,
            method,
            alpha,
            beta,
            sensitivity,
            warmup_ms: r.method.warmup_ms(r.window_ms, r.horizon_ms).max(r.window_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RulesResponse {
    pub interval_ms: u64,
    pub defaults: RuleView,
    pub rules: Vec<RuleView>,
}

/// `GET /api/v1/rules`.
async fn rules(State(st): State<AppState>) -> Json<RulesResponse> {
    let set = st.alarms.rules();
    Json(RulesResponse {
        interval_ms: st.config.interval.as_millis() as u64,
        defaults: RuleView::from(&set.defaults),
        rules: set.rules.iter().map(RuleView::from).collect(),
    })
}

/// One series of `GET /api/v1/forecasts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForecastView {
    pub host: String,
    pub process: String,
    pub metric: Metric,
    /// Whether the forecaster has its warm-up of history: AMBER can fire.
    pub ready: bool,
    /// How much more sample history it needs, ms (0 when ready).
    pub ready_in_ms: i64,
    pub history_ms: i64,
    pub warmup_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ForecastsResponse {
    /// Series whose forecast is not ready yet.
    pub warming_up: usize,
    /// The shortest `ready_in_ms` of those; null when none is warming up.
    pub first_ready_in_ms: Option<i64>,
    pub series: Vec<ForecastView>,
}

/// `GET /api/v1/forecasts`: per series the engine follows, whether its forecast (AMBER) is
/// warmed up and, if not, in how many ms of samples it will be. Bounded by the engine's series,
/// which the store's own caps bound; the optional `host` filter is an exact match.
pub async fn forecasts(
    State(st): State<AppState>,
    q: QueryResult<HostParam>,
) -> Result<Json<ForecastsResponse>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let series: Vec<ForecastView> = st
        .alarms
        .warmups()
        .into_iter()
        .filter(|w| q.host.as_deref().is_none_or(|h| h == w.host))
        .map(|w| ForecastView {
            ready: w.ready_in_ms == 0,
            ready_in_ms: w.ready_in_ms,
            history_ms: w.history_ms,
            warmup_ms: w.warmup_ms,
            host: w.host,
            process: w.process,
            metric: w.metric,
        })
        .collect();
    let warming: Vec<i64> = series.iter().filter(|s| !s.ready).map(|s| s.ready_in_ms).collect();
    Ok(Json(ForecastsResponse {
        warming_up: warming.len(),
        first_ready_in_ms: warming.iter().copied().min(),
        series,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ServerConfig, ServerError};
    use procwatch_model::{AlarmKind, Batch, Sample};
    use procwatch_store::memory::MemoryStore;
    use procwatch_store::Storage;
    use std::sync::Arc;

    const NOW: TsMs = 1_764_072_000_000;

    fn state(rules: RuleSet) -> AppState {
        let config = ServerConfig {
            interval: Duration::from_secs(1),
            alarm_rules: rules,
            ..ServerConfig::default()
        };
        AppState::new(Arc::new(MemoryStore::new()), config)
    }

    fn batch(host: &str, process: &str, points: &[(TsMs, f64)]) -> Batch {
        Batch {
            host: host.into(),
            agent: "test".into(),
            seq: 0,
            interval_ms: 1000,
            host_totals: vec![],
            samples: points
                .iter()
                .map(|&(ts, cpu)| Sample {
                    ts,
                    process: process.into(),
                    cpu,
                    // These tests are about cpu: no process here saturates a core, so the
                    // built-in cores rule stays quiet.
                    cores: 0.0,
                    mem: 1.0,
                    rss: 1,
                    count: 1,
                })
                .collect(),
            dropped_samples: 0,
        }
    }

    fn red(host: &str, process: &str, level: Level) -> AlarmEvent {
        AlarmEvent {
            id: format!("{host}/{process}/{level}"),
            kind: AlarmKind::Series,
            host: host.into(),
            process: process.into(),
            metric: Metric::Cpu,
            level,
            previous: Level::Ok,
            start: NOW,
            end: None,
            value: 90.0,
            peak: 90.0,
            threshold: 80.0,
            forecast: None,
            eta_seconds: None,
            reason: None,
        }
    }

    #[tokio::test]
    async fn a_vanished_series_goes_stale_then_expires() {
        let st = state(RuleSet::default());
        let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
        st.store.write_batch(&batch("web-1", "gone", &[(now, 95.0)])).await.unwrap();
        // Keep the host itself alive, so only the series is silent.
        let alive = |t: TsMs| batch("web-1", "alive", &[(t, 1.0)]);
        let mut levels = Vec::new();
        for t in [now, now + 3_000, now + 3_600_000, now + 3_603_000] {
            st.store.write_batch(&alive(t)).await.unwrap();
            for e in st.alarms.evaluate(&st, t).await.unwrap() {
                levels.push((e.process, e.level, e.end.is_some()));
            }
        }
        let gone: Vec<_> =
            levels.into_iter().filter(|l| l.0 == "gone").map(|l| (l.1, l.2)).collect();
        assert_eq!(
            gone,
            [(Level::Red, false), (Level::Red, true), (Level::Stale, false), (Level::Stale, true)]
        );
        assert!(st.alarms.active().is_empty());
        let open = st
            .store
            .alarm_events(&AlarmQuery { active_only: true, ..Default::default() })
            .await
            .unwrap();
        assert!(open.is_empty(), "{open:?}");
    }

    #[test]
    fn query_alarm_is_the_worst_level_per_process() {
        let active = [
            red("a", "java", Level::Amber),
            red("b", "java", Level::Red),
            red("a", "pg", Level::Stale),
            AlarmEvent {
                kind: AlarmKind::HostSilent,
                process: String::new(),
                ..red("c", "", Level::Red)
            },
        ];
        let all = worst_by_process(&active, None);
        assert_eq!(all, BTreeMap::from([("java".into(), Level::Red), ("pg".into(), Level::Stale)]));
        let a = worst_by_process(&active, Some("a"));
        assert_eq!(a, BTreeMap::from([("java".into(), Level::Amber), ("pg".into(), Level::Stale)]));
        assert!(worst_by_process(&active, Some("zz")).is_empty());
        assert_eq!(serde_json::to_string(&all).unwrap(), r#"{"java":"RED","pg":"STALE"}"#);
    }

    #[test]
    fn alarm_filters_parse_and_bad_ones_are_400() {
        let p = |pairs: &[(&str, &str)]| {
            let qs: String =
                pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
            let params: AlarmParams = serde_urlencoded_like(&qs);
            alarm_query(params, NOW)
        };
        let q = p(&[
            ("active", "true"),
            ("host", "h"),
            ("metric", "mem"),
            ("level", "red"),
            ("from", "-1h"),
            ("limit", "5"),
        ])
        .unwrap();
        assert!(q.active_only);
        assert_eq!(
            (q.host.as_deref(), q.metric, q.level),
            (Some("h"), Some(Metric::Mem), Some(Level::Red))
        );
        assert_eq!((q.from, q.to, q.limit), (Some(NOW - 3_600_000), None, 5));
        let d = p(&[]).unwrap();
        assert!(!d.active_only && d.limit == 100 && d.host.is_none());
        for bad in [
            ("active", "yes"),
            ("metric", "disk"),
            ("level", "PURPLE"),
            ("from", "soon"),
            ("limit", "-1"),
        ] {
            let e = p(&[bad]).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert!(p(&[("from", "now"), ("to", "-1h")]).is_err());
    }

    /// A tiny `a=b&c=d` reader for the tests (values here need no decoding).
    fn serde_urlencoded_like(qs: &str) -> AlarmParams {
        let mut p = AlarmParams::default();
        for pair in qs.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            let v = Some(v.to_owned());
            match k {
                "active" => p.active = v,
                "host" => p.host = v,
                "process" => p.process = v,
                "metric" => p.metric = v,
                "level" => p.level = v,
                "from" => p.from = v,
                "to" => p.to = v,
                "limit" => p.limit = v,
                _ => panic!("{k}"),
            }
        }
        p
    }

    #[test]
    fn replay_sends_the_missed_events_or_else_the_active_ones() {
        let hub = Alarms::new(RuleSet::default(), 1);
        hub.set_active(vec![red("h", "now-active", Level::Red)]);
        for i in 0..5 {
            hub.publish(red("h", &format!("p{i}"), Level::Red));
        }
        let id = |n: u64| format!("{}-{n}", hub.boot);
        let procs =
            |v: Vec<(u64, AlarmEvent)>| v.into_iter().map(|(_, e)| e.process).collect::<Vec<_>>();
        let (missed, after, snapshot) = hub.replay(Some(&id(3)));
        assert_eq!(
            (procs(missed), after, snapshot),
            (vec!["p3".to_owned(), "p4".to_owned()], 5, false)
        );
        assert!(hub.replay(Some(&id(5))).0.is_empty());
        // No id, another run's id, or an id ahead of the log: the active alarms.
        for last in [None, Some("0-3".to_owned()), Some(id(99))] {
            let (first, after, snapshot) = hub.replay(last.as_deref());
            assert_eq!(
                (procs(first), after, snapshot),
                (vec!["now-active".to_owned()], 5, true),
                "{last:?}"
            );
        }
        // An id older than the log's start: the active alarms too.
        for i in 0..LOG_CAP {
            hub.publish(red("h", &format!("q{i}"), Level::Red));
        }
        assert_eq!(procs(hub.replay(Some(&id(2))).0), vec!["now-active".to_owned()]);
    }

    #[tokio::test]
    async fn evaluation_stores_events_restores_them_and_raises_silent_hosts() {
        let rules = RuleSet::from_specs(
            &Default::default(),
            &[procwatch_alarm::RuleSpec {
                process: Some(procwatch_alarm::Glob::new("hot*")),
                threshold: Some(10.0),
                ..Default::default()
            }],
        )
        .unwrap();
        let st = state(rules.clone());
        let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
        let pts: Vec<(TsMs, f64)> = (0..3).map(|i| (now - 2000 + i * 1000, 40.0)).collect();
        st.store.write_batch(&batch("web-1", "hot1", &pts)).await.unwrap();
        st.store.write_batch(&batch("web-1", "cool", &pts)).await.unwrap();
        // An old host, silent for a minute.
        st.store.write_batch(&batch("old-1", "x", &[(now - 60_000, 1.0)])).await.unwrap();
        let mut events = st.alarms.evaluate(&st, now).await.unwrap();
        // Host silence is judged from 3 intervals after the first pass on.
        assert!(events.iter().all(|e| e.kind == AlarmKind::Series), "{events:?}");
        st.store.write_batch(&batch("web-1", "hot1", &[(now + 2500, 41.0)])).await.unwrap();
        events.extend(st.alarms.evaluate(&st, now + 3000).await.unwrap());
        let red: Vec<_> = events.iter().filter(|e| e.level == Level::Red).collect();
        assert_eq!(red.len(), 2, "{events:?}");
        assert!(red.iter().any(|e| e.process == "hot1" && e.metric == Metric::Cpu));
        assert!(red.iter().any(|e| e.host == "old-1" && e.kind == AlarmKind::HostSilent));
        assert_eq!(worst_by_process(&st.alarms.active(), None).get("hot1"), Some(&Level::Red));
        let stored = st
            .store
            .alarm_events(&AlarmQuery { active_only: true, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert!(st.alarms.last_evaluation() > Duration::ZERO);
        // A second pass over the same samples changes nothing.
        assert!(st.alarms.evaluate(&st, now + 3010).await.unwrap().is_empty());

        // A new server on the same store restores the open alarms and does not raise them again.
        let again = AppState::new(
            st.store.clone(),
            ServerConfig {
                interval: Duration::from_secs(1),
                alarm_rules: rules,
                ..ServerConfig::default()
            },
        );
        assert_eq!(again.alarms.restore(&again).await.unwrap(), 2);
        assert_eq!(again.alarms.active().len(), 2);
        let more: Vec<(TsMs, f64)> = vec![(now + 4000, 45.0)];
        again.store.write_batch(&batch("web-1", "hot1", &more)).await.unwrap();
        let evs = again.alarms.evaluate(&again, now + 4000).await.unwrap();
        assert!(
            evs.iter().all(|e| e.level != Level::Red || e.end.is_some()),
            "raised twice: {evs:?}"
        );
        // The peak of the open event grew, and was written back.
        let open = again
            .store
            .alarm_events(&AlarmQuery {
                active_only: true,
                process: Some("hot1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(open[0].peak, 45.0);
    }

    type Body = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

    /// The next `event: alarm` block (comments skipped, `synced` counted).
    async fn next_event(body: &mut Body, text: &mut String, synced: &mut usize) -> String {
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if block.lines().any(|l| l == "event:synced" || l == "event: synced") {
                    *synced += 1;
                } else if block.lines().any(|l| l.starts_with("data:")) {
                    return block;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Over real HTTP: the stream starts with the active alarms, then carries new events with
    /// ids; a reconnect with `Last-Event-ID` gets exactly the missed ones; a request timeout
    /// shorter than the stream's life does not cut it; shutdown ends open streams.
    #[tokio::test]
    async fn stream_replays_and_ends_at_shutdown() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
        let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
        store.write_batch(&batch("web-1", "java", &[(now - 1000, 95.0)])).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = ServerConfig {
            interval: Duration::from_millis(100),
            request_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server: tokio::task::JoinHandle<Result<(), ServerError>> =
            tokio::spawn(crate::run(listener, config, store.clone(), async move {
                let _ = stop_rx.await;
            }));
        let client = reqwest::Client::new();
        let open = |last: Option<String>| {
            let mut r = client.get(format!("{url}/api/v1/alarms/stream"));
            if let Some(id) = last {
                r = r.header("last-event-id", id);
            }
            r.send()
        };
        let resp = open(None).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body: Body = Box::pin(resp.bytes_stream());
        let mut text = String::new();
        let mut synced = 0;
        let field = |block: &str, name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_owned())
        };
        // The RED of java (the evaluator runs every 100 ms).
        let first = next_event(&mut body, &mut text, &mut synced).await;
        assert_eq!(field(&first, "event").as_deref(), Some("alarm"));
        let ev: AlarmEvent = serde_json::from_str(&field(&first, "data").unwrap()).unwrap();
        assert_eq!((ev.process.as_str(), ev.level), ("java", Level::Red));
        let first_id = field(&first, "id").unwrap();
        // More events while "disconnected": a second process goes RED.
        store.write_batch(&batch("web-1", "pg", &[(now - 500, 97.0)])).await.unwrap();
        let second = next_event(&mut body, &mut text, &mut synced).await;
        assert_eq!(synced, 1, "a fresh stream says when its snapshot is complete");
        assert!(second.contains("\"process\":\"pg\""), "{second}");
        // Past the 300 ms request timeout, the stream is still open.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Reconnecting after the first event replays exactly the second.
        let replay = open(Some(first_id)).await.unwrap();
        let mut rb = replay.bytes_stream();
        let chunk = tokio::time::timeout(Duration::from_secs(5), rb.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let got = String::from_utf8(chunk.to_vec()).unwrap();
        assert!(
            got.contains("\"process\":\"pg\"") && !got.contains("\"process\":\"java\""),
            "{got}"
        );
        assert!(!got.contains("synced"), "a replay is not a snapshot: {got}");
        // The list and query-alarm routes agree.
        let list: serde_json::Value = client
            .get(format!("{url}/api/v1/alarms?active=true"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["alarms"].as_array().unwrap().len(), 2);
        let q: serde_json::Value = client
            .get(format!("{url}/ressources-usage/query-alarm/?host=web-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(q, serde_json::json!({"java": "RED", "pg": "RED"}));
        // Shutdown with two streams open still completes.
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("shutdown not held")
            .unwrap()
            .unwrap();
    }
}
