//! procwatch-agent: take a sweep on schedule, spool it, ship it; lose nothing.
//!
//! ```text
//!  sweep thread ──queue──▶ spool thread ──append + fsync──▶ Spool (segments, CRC, state)
//!  (on schedule; never waits                                   │ oldest first    ▲ ack on 2xx
//!   on the disk or the network)                                ▼                 │
//!                                            sender task (tokio: retry, backoff, quarantine)
//!                                                              │ POST /api/v1/samples (gzip)
//!                                                              ▼
//!                                                           server
//! ```
//!
//! Decisions a user needs to know:
//!
//! - **Every sweep is written to the spool first** (fsynced by default), and only then sent.
//!   A sweep the agent took survives a server outage, a server `kill -9`, and an agent
//!   `kill -9`; after a restart the spooled backlog is sent oldest first.
//! - **Schedule.** Sweeps run on a dedicated thread at `start + k × interval` (from the
//!   previous deadline, so no drift); a sweep that overruns a whole interval skips the missed
//!   ticks (counted) rather than bunching up. The sweep thread never waits on the network nor
//!   on the disk: it hands each sweep to a spool thread (a queue of at most 64 sweeps) that
//!   appends and fsyncs it, and only then is it sent. [`AgentStats`] records how late each
//!   sweep started.
//! - **Batches.** Live, one request per sweep. After an outage the backlog is replayed oldest
//!   first in larger requests: up to [`AgentConfig::max_batch_records`] sweeps (default 360),
//!   4 MiB of JSON and 50,000 samples a request, gzip-compressed.
//! - **`seq`** numbers requests (not sweeps), from 0, and is kept in `state.json` in the spool
//!   directory, so it continues across restarts. A retried request keeps its `seq`; a request
//!   that was in flight when the agent died is resent after the restart with the same `seq` and
//!   the same records, so the server sees a retry, not a gap (and does not count its
//!   `dropped_samples` twice). Records it held are counted in [`AgentStats::resent_records`]
//!   (they may be duplicates; writes are idempotent). Deleting the spool directory restarts
//!   `seq` at 0: more than 1,000 below the highest `seq` the server saw, that is a reset (new
//!   baseline, counted as new); within 1,000 of it, the server takes the batches as old (no
//!   gap, their `dropped_samples` not added until `seq` passes the highest one it saw).
//! - **Acknowledgement.** A batch counts as delivered (and leaves the spool) only when the
//!   answer is a 2xx whose body is the server's own acknowledgement of that batch: JSON
//!   `{samples, host_totals, seq_gap, received, host, seq}` with the sample count sent in
//!   `received` (and the same host and seq; servers older than hardening round 2 send none of
//!   these three, and their `samples` must equal the count sent). Redirects are never followed. A 3xx, 404, 405, or a 2xx that is anything else
//!   (an HTML page from a proxy or captive portal, a wrong count) is a configuration error:
//!   the batch stays in the spool, is retried with backoff, and each attempt logs an `error`
//!   with the reason.
//! - **Failures.** Connection errors, timeouts, 408, 429, 5xx, and also 401/403 (a token
//!   problem is not a bad batch) are retried with exponential backoff and full jitter
//!   ([`BackoffConfig`]: 500 ms × 2ⁿ, capped at 30 s). Any other 4xx (400, 413, …) means this
//!   batch can never be accepted: a multi-sweep request is split and resent one sweep at a
//!   time; a single sweep refused is written to `<spool>/quarantine/` with the server's error
//!   (logged at `error`), counted as dropped and reported, and not retried. The quarantine is
//!   capped at [`AgentConfig::quarantine_max_bytes`] (64 MiB): past it the oldest quarantined
//!   batches are deleted (counted in [`AgentStats::quarantine_evicted_files`], logged at
//!   `warn`; their samples were already counted as dropped and reported when they were
//!   refused), and a single refused batch larger than the cap is not written at all.
//! - **Drops.** When a spool cap (256 MiB, 48 h by default) forces a drop, the dropped samples
//!   are counted, logged at `warn`, and sent as `dropped_samples` in the next request; the
//!   count is cleared only when the server accepted that request.
//! - **Where.** `procwatch agent --server URL` spools in `--spool-dir` (default
//!   `./procwatch-data/spool`, the data directory `procwatch up` uses); the directory holds
//!   the segment files, `state.json`, and `quarantine/` (refused sweeps as the JSON body that
//!   was refused plus `*.error.txt` with the server's answer; bounded by
//!   `--quarantine-max-bytes`, oldest deleted first — resend or remove them by hand). Caps: `--spool-max-bytes`
//!   (256MiB), `--spool-max-age` (48h); `--spool-fsync false` skips the per-append fsync;
//!   `--retry-max` caps the backoff (30s); `--request-timeout` (30s).
//! - **Shutdown.** On shutdown the sweep loop stops, and the sender tries to deliver what is
//!   spooled for up to [`AgentConfig::drain_timeout`] (default 5 s); whatever is left stays in
//!   the spool for the next start.

#![deny(missing_docs)]

mod batch;
pub mod directive;
mod quarantine;
mod schedule;
mod send;
pub mod settings;
pub mod ship;
pub mod spool;
mod stats;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use procwatch_model::clock::Clock;
use procwatch_model::{HostTotal, Sample, TsMs};
use tokio::sync::Notify;
use tracing::{info, warn};

pub use batch::{build_batch, build_batch_with, decode_payload, encode_sweep, PayloadParts};
pub use directive::Control;
use directive::Wake;
pub use procwatch_model::retry::RetryAction;
use schedule::{append_loop, sweep_loop, APPEND_QUEUE};
use send::send_loop;
pub use settings::{Filter, Settings};
pub use ship::{Backoff, BackoffConfig, Expected, Failure, Shipper, ShipperConfig};
pub use spool::{Dropped, Record, Spool, SpoolConfig, SpoolError};
pub use stats::{AgentStats, LATENESS_KEPT};

/// The error type of a sweep function.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One sweep as the collector produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepData {
    /// When the sweep was taken, Unix ms (every sample carries it).
    pub ts: TsMs,
    /// Host-wide totals of the sweep.
    pub host_totals: Vec<HostTotal>,
    /// One sample per process group.
    pub samples: Vec<Sample>,
}

/// Produces sweeps. `Ok(None)` means "nothing this time" (e.g. a collector priming its
/// counters on the first call). It is handed the settings the agent runs at that sweep (the
/// flags, or the server's directives over them): the sweep collects `settings.metrics`, the
/// extra metrics asked for; the interval, the pause and the process filter are applied by the
/// agent around it.
pub type SweepFn = Box<dyn FnMut(&Settings) -> Result<Option<SweepData>, BoxError> + Send>;

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The `host` of every batch.
    pub host: String,
    /// The `agent` of every batch, e.g. `procwatch/0.1.0`.
    pub agent: String,
    /// Sweep interval.
    pub interval: Duration,
    /// The HTTP client: server, token, timeouts, TLS.
    pub shipper: ShipperConfig,
    /// Waits between delivery attempts.
    pub backoff: BackoffConfig,
    /// Where and how much to spool.
    pub spool: SpoolConfig,
    /// Sweeps per request at most (during replay). Default 360 (1 h at 10 s).
    pub max_batch_records: usize,
    /// JSON bytes per request at most (a single sweep may exceed it). Default 4 MiB.
    pub max_batch_bytes: usize,
    /// Samples per request at most (the server takes up to 100,000). Default 50,000.
    pub max_batch_samples: usize,
    /// Stop after this many sweeps (then drain and return). `None`: run until shutdown.
    pub max_sweeps: Option<u64>,
    /// How long to keep sending after shutdown (or after `max_sweeps`). Default 5 s.
    pub drain_timeout: Duration,
    /// Where time comes from: the sweep schedule, spool ages, quarantine names, outages.
    pub clock: Arc<dyn Clock>,
    /// Bytes `<spool>/quarantine/` may hold at most (oldest refused batches deleted first).
    /// Default 64 MiB.
    pub quarantine_max_bytes: u64,
    /// The extra metrics (`procwatch_model::directive::EXTRA_METRIC_NAMES`) of the flags: the
    /// base a `metrics` directive replaces. Default none.
    pub metrics: Vec<String>,
    /// Whether the sweep function collects extra metrics at all: when it cannot (the portable
    /// collector), a directive asking for some is refused and reported. Default true.
    pub extras_supported: bool,
}

impl AgentConfig {
    /// Defaults for `host` shipping to `server`, spooling in `spool_dir`.
    pub fn new(
        host: impl Into<String>,
        server: impl Into<String>,
        spool_dir: impl Into<std::path::PathBuf>,
    ) -> Self {
        AgentConfig {
            host: host.into(),
            agent: concat!("procwatch/", env!("CARGO_PKG_VERSION")).to_string(),
            interval: Duration::from_secs(10),
            shipper: ShipperConfig::new(server),
            backoff: BackoffConfig::default(),
            spool: SpoolConfig::new(spool_dir),
            max_batch_records: 360,
            max_batch_bytes: 4 << 20,
            max_batch_samples: 50_000,
            max_sweeps: None,
            drain_timeout: Duration::from_secs(5),
            clock: procwatch_model::clock::system(),
            quarantine_max_bytes: 64 << 20,
            metrics: Vec::new(),
            extras_supported: true,
        }
    }
}

/// Agent failures (only at start: once running, failures are retried or logged).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    /// The spool could not be opened.
    Spool(#[from] SpoolError),
    #[error("HTTP client: {0}")]
    /// The HTTP client could not be built (e.g. a bad CA file).
    Client(#[from] reqwest::Error),
    #[error("sweep thread: {0}")]
    /// A thread could not be started.
    Thread(String),
}

/// A running agent.
pub struct Agent {
    stats: Arc<AgentStats>,
    stop: Arc<AtomicBool>,
    stop_tx: mpsc::Sender<Wake>,
    control: Arc<Control>,
    sweeper: Option<std::thread::JoinHandle<()>>,
    appender: Option<std::thread::JoinHandle<()>>,
    sender: tokio::task::JoinHandle<()>,
    sender_stop: Arc<Notify>,
    sweeps_done: Arc<Notify>,
    drain_timeout: Duration,
}

/// Runs the agent until `shutdown` resolves (or `max_sweeps` are taken), then drains.
pub async fn run(
    config: AgentConfig,
    sweep: SweepFn,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<AgentStats>, AgentError> {
    let agent = Agent::start(config, sweep)?;
    let stats = agent.stats();
    tokio::select! {
        () = shutdown => {}
        () = agent.sweeps_done.notified() => {}
    }
    agent.stop().await;
    Ok(stats)
}

impl Agent {
    /// Opens the spool, starts the sweep thread and the sender task. Needs a tokio runtime.
    pub fn start(config: AgentConfig, sweep: SweepFn) -> Result<Agent, AgentError> {
        let (spool, report) = Spool::open(config.spool.clone())?;
        if report.pending_records > 0 {
            info!(
                message = "Spool holds unsent sweeps; replaying them oldest first.",
                records = report.pending_records,
                dir = %config.spool.dir.display()
            );
        }
        let stats = Arc::new(AgentStats::default());
        if let Some(inf) = report.inflight {
            let resent = spool
                .read_range(0, inf.last_id, usize::MAX, usize::MAX)
                .map(|r| r.len() as u64)
                .unwrap_or(0);
            stats.resent_records.store(resent, Ordering::Relaxed);
            info!(
                message = "Resending the request in flight at the last stop (same seq).",
                seq = inf.seq,
                records = resent
            );
        }
        let mut control = Control::load(
            &config.spool.dir,
            Settings { metrics: config.metrics.clone(), ..Settings::new(config.interval) },
            config.spool.fsync,
        );
        control.extras_supported = config.extras_supported;
        let control = Arc::new(control);
        let shipper = Shipper::new(&config.shipper)?;
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let sender_stop = Arc::new(Notify::new());
        let sweeps_done = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = mpsc::channel();
        control.set_waker(stop_tx.clone());

        let (to_spool, from_sweeps) = mpsc::sync_channel(APPEND_QUEUE);
        let appender = {
            let spool = spool.clone();
            let wake = wake.clone();
            let stats = stats.clone();
            let cfg = config.clone();
            let done = sweeps_done.clone();
            let control = control.clone();
            std::thread::Builder::new()
                .name("procwatch-spool".into())
                .spawn(move || append_loop(cfg, from_sweeps, spool, wake, stats, done, control))
                .map_err(|e| AgentError::Thread(e.to_string()))?
        };
        let sweeper = {
            let stats = stats.clone();
            let cfg = config.clone();
            let control = control.clone();
            std::thread::Builder::new()
                .name("procwatch-sweep".into())
                .spawn(move || sweep_loop(cfg, sweep, to_spool, stats, stop_rx, control))
                .map_err(|e| AgentError::Thread(e.to_string()))?
        };
        let sender = tokio::spawn(send_loop(
            config.clone(),
            shipper,
            spool,
            wake,
            stats.clone(),
            send::Stop { flag: stop.clone(), notify: sender_stop.clone() },
            control.clone(),
        ));
        Ok(Agent {
            stats,
            stop,
            stop_tx,
            control,
            sweeper: Some(sweeper),
            appender: Some(appender),
            sender,
            sender_stop,
            sweeps_done,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The agent's counters (shared; readable while it runs).
    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    /// The agent's steerable settings (what directives change).
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Stops sweeping, lets the sender deliver what it can within the drain timeout, stops it.
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(Wake::Stop);
        if let Some(h) = self.sweeper.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // The sweep loop is gone, so the queue closes: the appender spools what is left.
        if let Some(h) = self.appender.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        self.sender_stop.notify_one();
        match tokio::time::timeout(self.drain_timeout, &mut self.sender).await {
            Ok(_) => {}
            Err(_) => {
                warn!(
                    message = "Shutdown: unsent sweeps stay in the spool for the next start.",
                    drain_timeout_ms = self.drain_timeout.as_millis() as u64
                );
                self.sender.abort();
            }
        }
    }
}
