//! Alarms in the server: the evaluator task, the event log, and the alarm routes.
//!
//! Files: [`evaluator`] (the pass and its task; sees only an [`EvalContext`], never
//! `AppState`), [`hub`] (event log, broadcast, shutdown of the streams), [`stream`] (the SSE
//! route), [`routes`] (the other read routes); this file holds [`Alarms`], the shared state.
//!
//! What a user needs to know:
//! - **Evaluation.** Every `--interval` (the server's interval, 10 s by default) the server
//!   reads the new samples of every series from the store (`Storage::window`; the first pass
//!   after start reads W + H back, the largest window + horizon of the rules, one host at a
//!   time so that a restart never holds the whole fleet's history at once, so `linear`
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
//! - **Several servers on one store** (`ServerConfig::ownership`, the cluster membership): a
//!   pass evaluates only the hosts this server owns, and none while it has no share; hosts
//!   taken over have their open alarms restored from the store (see [`share`] and
//!   [`crate::ownership`]).
//! - **Events.** Every transition is stored with `Storage::put_alarm_events`, a pass's events
//!   in one call (upsert by id; an open event has no `end`). An open event's growing `peak` is
//!   written back after each pass.
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

pub mod evaluator;
pub mod hub;
pub mod routes;
mod share;
pub mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use procwatch_alarm::{Engine, RuleSet};
use procwatch_model::{AlarmEvent, TsMs};
use procwatch_store::{Storage, StoreError};

pub use evaluator::{spawn_evaluator, EvalContext};
pub use hub::Hub;
pub use routes::*;
pub use stream::KEEP_ALIVE;

use crate::AppState;

/// A STALE alarm whose series stays silent this long is closed (end set, no OK event) and
/// the series forgotten: typically a process that exited while in alarm.
pub const STALE_EXPIRY: Duration = Duration::from_secs(3600);

/// The server's alarm state: the engine, the open alarms, the event hub.
pub struct Alarms {
    rules: RuleSet,
    engine: Mutex<Engine>,
    active: RwLock<Vec<AlarmEvent>>,
    /// The event log and its subscribers.
    pub hub: Hub,
    /// Where the next pass starts reading samples (None: not evaluated yet).
    cursor: Mutex<Option<TsMs>>,
    /// Transitions of the first pass's history fed so far (`prime`), kept until a pass gets
    /// to store and publish them: a first pass that fails after feeding some hosts loses none.
    primed: Mutex<Vec<AlarmEvent>>,
    /// `now` of the first pass (host silence is judged from 3 intervals after it).
    first_eval: Mutex<Option<TsMs>>,
    /// (peak, value) last written of each open event.
    written: Mutex<HashMap<String, (f64, f64)>>,
    last_eval_us: AtomicU64,
    /// Held for a whole evaluation pass and a whole retirement, so a pass that read the
    /// hosts before a retirement cannot re-open what the retirement closed.
    pass: tokio::sync::Mutex<()>,
    /// The hosts the last pass evaluated, with a cluster membership (see [`share`]).
    owned: Mutex<share::Owned>,
    /// What the evaluator is doing (`GET /api/v1/health`).
    evaluation: RwLock<crate::ownership::Evaluation>,
}

impl From<&AppState> for EvalContext {
    fn from(st: &AppState) -> Self {
        EvalContext {
            store: st.store.clone(),
            clock: st.config.clock.clone(),
            interval: st.config.interval,
            metrics: st.metrics.clone(),
            governor: st.governor.clone(),
            ownership: st.config.ownership.clone(),
            agents: st.agents.clone(),
        }
    }
}

impl Alarms {
    /// `now`: the server's start, which names this run's event stream (`boot`).
    pub fn new(rules: RuleSet, now: TsMs) -> Self {
        Self {
            engine: Mutex::new(Engine::new(rules.clone())),
            rules,
            active: RwLock::new(Vec::new()),
            hub: Hub::new(now),
            cursor: Mutex::new(None),
            primed: Mutex::new(Vec::new()),
            first_eval: Mutex::new(None),
            written: Mutex::new(HashMap::new()),
            last_eval_us: AtomicU64::new(0),
            pass: tokio::sync::Mutex::new(()),
            owned: Mutex::new(share::Owned::default()),
            evaluation: RwLock::new(crate::ownership::Evaluation::Starting),
        }
    }

    /// The alarm rules the server evaluates (defaults and per-rule overrides).
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

    /// (Estimated heap bytes of the engine's state, series whose forecaster is dropped while
    /// they stay low): [`procwatch_alarm::Engine::estimated_bytes`],
    /// [`procwatch_alarm::Engine::dormant_series`], read under one lock.
    pub fn engine_figures(&self) -> (usize, usize) {
        let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        (engine.estimated_bytes(), engine.dormant_series())
    }

    /// How long the last evaluation pass took (zero before the first).
    pub fn last_evaluation(&self) -> Duration {
        Duration::from_micros(self.last_eval_us.load(Ordering::Relaxed))
    }

    /// Ends every open stream (at shutdown, so the graceful shutdown does not wait on them).
    pub fn close_streams(&self) {
        self.hub.close();
    }

    fn set_active(&self, v: Vec<AlarmEvent>) {
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// Re-opens the store's open events in the engine (once, at start).
    pub async fn restore(&self, store: &dyn Storage) -> Result<usize, StoreError> {
        self.restore_hosts(store, None).await
    }

    /// Retires `host` (see [`crate::retire`]): the store first (so a `NotFound` changes
    /// nothing), then the engine closes its alarms with `reason`; every event is stored, then
    /// published. Returns the host's `last_seen` and the events.
    pub async fn retire_host(
        &self,
        store: &dyn Storage,
        host: &str,
        now: TsMs,
        reason: &str,
    ) -> Result<(TsMs, Vec<AlarmEvent>), StoreError> {
        let _pass = self.pass.lock().await;
        let last_seen = store.retire_host(host, now).await?;
        let (events, active) = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            (engine.retire_host(host, now, reason), engine.active())
        };
        if let Err(error) = store.put_alarm_events(&events).await {
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            tracing::warn!(message = "Cannot store alarm events.", %error, count = events.len(), ids = ?ids);
        }
        self.set_active(active);
        for ev in &events {
            self.hub.publish(ev.clone());
        }
        Ok((last_seen, events))
    }
}
