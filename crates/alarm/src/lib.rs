//! procwatch-alarm: the alarm engine, the forecasters and the forecaster scorer. No I/O:
//! time is always an argument, nothing is read from a clock, a file or the network.
//!
//! # Engine (called by the server every interval)
//!
//! ```ignore
//! let mut engine = Engine::new(RuleSet::from_specs(&defaults, &rules)?);
//! engine.restore(&open_events_from_store);              // after a restart
//! let events = engine.evaluate(now, &series, &hosts);   // store + notify these
//! let open = engine.active();
//! ```
//!
//! - **Series.** One state machine per (host, process, metric). cpu and mem are always
//!   evaluated; `cores` only where a rule names it. The first rule whose host glob, process
//!   glob and metric match wins; otherwise the defaults: T = 80, hysteresis 5, clear_for 2,
//!   H = 10 min, W = 10 min, debounce 2, procwatch's forecaster.
//! - **Steps per sample.** Each new sample (newer than the last one seen) is one evaluation
//!   step, with the sample's timestamp as the time of any transition, so results do not
//!   depend on when the server happens to call `evaluate`. `debounce` and `clear_for` count
//!   samples.
//! - **RED** when the value is above T. It clears when the value is below T − hysteresis on
//!   `clear_for` samples in a row (to AMBER if the forecast still says so, else OK).
//! - **AMBER** when not RED and the forecaster says "above T at t + H" on `debounce` samples
//!   in a row; it clears after `clear_for` samples without that signal. AMBER never fires
//!   before the window W is full (W/interval + 1 samples since the series started or came
//!   back from a gap); procwatch's default forecaster also needs 1 h (twelve 5-minute buckets)
//!   of history before it says anything. The AMBER event carries the forecast value and the
//!   estimated seconds until T is crossed.
//! - **Stale.** A series with no sample for 3 intervals: if it has an open alarm, that alarm
//!   is closed and a STALE event opens (it is never reported as resolved); an OK series is
//!   simply forgotten (processes exit all the time). The STALE event starts 3 intervals after
//!   the last sample (not when the engine noticed), and an engine that only sees the samples
//!   come back (it did not evaluate during the gap, or it read the gap in one window) records
//!   the same RED→STALE→… events: transitions depend on the samples only, so two server
//!   replicas on one store derive the same events with the same ids. When samples return
//!   after more than 3 intervals, the series is evaluated afresh from STALE (the forecast
//!   history restarts after the gap). A late batch whose samples are not newer than the
//!   STALE start withdraws it: the STALE event is closed where it started (`end == start`)
//!   and the event it replaced is open again under its own id (as on a replica that saw the
//!   batch in time). One (host, process, metric) never has two open events. A STALE alarm is
//!   expired by the server after a while ([`Engine::expire_stale`], `end = start + limit`).
//! - **Host silent** (dead man's switch). A host whose `last_seen` is 3 intervals old opens a
//!   RED event with `kind = host_silent`, `process = ""`, `metric = cpu` (the model needs
//!   one), `start = last_seen + 3 intervals` (the moment it went silent, the same on every
//!   replica), `value` = seconds silent, `threshold` = the 3-interval limit in seconds. It
//!   closes with an OK event when the host is heard from again, at its first sample after the
//!   silence (its `last_seen` if the input holds none); if that sample is not newer than the
//!   event's start (a late batch), the silence never happened: the event is closed with
//!   `end == start` and no OK event follows.
//! - **Restore.** [`Engine::restore`] re-opens the store's open events; samples at or before
//!   a restored event's start only prime the forecaster (they were judged before the
//!   restart), so the server may hand the engine its whole read-back window.
//! - **Events.** Every transition returns the previous open event closed (`end` set; level
//!   unchanged) followed by the new event with `previous` set; a return to OK is an event of
//!   level OK with `start == end`. Ids are FNV-1a hashes of (kind, host, process, metric,
//!   start): stable, so storing by id is an upsert. `peak` grows while an event is open
//!   (see [`Engine::active`]).
//!
//! # Rules (TOML)
//!
//! The server reads `[alarm_defaults]` and `[[rules]]` from the config file as [`RuleSpec`]s
//! and resolves them with [`RuleSet::from_specs`]: unset fields of the defaults take the
//! built-in values above, unset fields of a rule take the defaults. Durations are humantime
//! strings; `metric` absent means cpu and mem; `method` is `procwatch` (default; uses
//! `sensitivity`, −3..=6), `linear` (uses `window`), `holt` (uses `alpha`, `beta`) or
//! `persistence`. Unknown keys are errors.
//!
//! ```toml
//! [alarm_defaults]
//! threshold = 85
//! [[rules]]
//! host = "db-*"
//! process = "postgres"
//! metric = "mem"
//! threshold = 90
//! horizon = "30m"
//! method = "linear"
//! window = "15m"
//! ```
//!
//! # Forecasters
//!
//! [`forecast::Forecaster`] is fed samples with real timestamps and asked about `t + H`.
//! `linear` (Prometheus `predict_linear`, least squares over W/interval + 1 samples),
//! `holt` (α, β per sample), `persistence`, and procwatch's default [`forecast::Robust`]: on
//! 5-minute (H/2) bucket medians, a Theil–Sen trend `b` and the noise σ (1.4826 × MAD of the
//! bucket-to-bucket changes over 2 h); AMBER when `y + φ·b·h + z·σ·√h > T`, `z` being the
//! rule's `sensitivity`; never within 30 min after a sample above T. The trend window and
//! the damping φ are per metric, as the knob is: for mem a 1-hour trend damped to half
//! ([`forecast::Shape::MEMORY`]), for cpu a 30-minute undamped one ([`forecast::Shape::CPU`]),
//! z = 1 for both ([`rules::default_shape`], [`rules::default_sensitivity`]): each is what
//! the nested leave-one-trace-out cross-validation ([`cv`]) picks on all traces of its
//! family (`tests/heldout.rs` checks it). Why: BENCHMARKS.md, section Forecaster.
//!
//! # Backtest
//!
//! [`backtest`] implements docs/contract.md §4 "Scoring a forecaster" exactly (it reproduces the
//! contract's cross-check counts); the forecasters it scores are the ones above.

#![deny(missing_docs)]

pub mod backtest;
pub mod cv;
pub mod engine;
pub mod forecast;
pub mod rules;

pub use engine::{
    event_id, Engine, HostSeen, Pause, SeriesInput, Warmup, PAUSED_REASON, STALE_INTERVALS,
};
pub use forecast::{Forecast, Forecaster};
pub use rules::{
    Glob, Hysteresis, Method, Rule, RuleError, RuleSet, RuleSpec, DEFAULT_CORES_THRESHOLD,
    DEFAULT_HYSTERESIS_RATIO,
};
