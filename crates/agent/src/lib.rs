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

pub mod ship;
pub mod spool;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use procwatch_model::clock::Clock;
use procwatch_model::{HostTotal, Sample, TsMs};
use rand::SeedableRng;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

pub use ship::{Backoff, BackoffConfig, Expected, RetryAction, Shipper, ShipperConfig};
pub use spool::{Dropped, Record, Spool, SpoolConfig, SpoolError};

/// The error type of a sweep function.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One sweep as the collector produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepData {
    /// When the sweep was taken, Unix ms (every sample carries it).
    pub ts: TsMs,
    pub host_totals: Vec<HostTotal>,
    pub samples: Vec<Sample>,
}

/// Produces sweeps. `Ok(None)` means "nothing this time" (e.g. a collector priming its
/// counters on the first call).
pub type SweepFn = Box<dyn FnMut() -> Result<Option<SweepData>, BoxError> + Send>;

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The `host` of every batch.
    pub host: String,
    /// The `agent` of every batch, e.g. `procwatch/0.1.0`.
    pub agent: String,
    /// Sweep interval.
    pub interval: Duration,
    pub shipper: ShipperConfig,
    pub backoff: BackoffConfig,
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
        }
    }
}

/// Agent failures (only at start: once running, failures are retried or logged).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("sweep thread: {0}")]
    Thread(String),
}

/// Counters, readable while the agent runs.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub sweeps: AtomicU64,
    pub sweep_errors: AtomicU64,
    /// Ticks skipped because a sweep overran a whole interval.
    pub missed_ticks: AtomicU64,
    pub spooled_samples: AtomicU64,
    pub requests_ok: AtomicU64,
    pub sent_records: AtomicU64,
    pub sent_samples: AtomicU64,
    pub retries: AtomicU64,
    pub quarantined_records: AtomicU64,
    /// Quarantined batches deleted (or never written) to keep the quarantine under its cap.
    pub quarantine_evicted_files: AtomicU64,
    /// Attempts answered by something that is not the server's ingestion route (3xx, 404, 405,
    /// a 2xx that is not its acknowledgement); the batch stayed in the spool.
    pub misconfigured_answers: AtomicU64,
    pub dropped_samples: AtomicU64,
    /// Records resent after a restart because they were in flight when the agent stopped.
    pub resent_records: AtomicU64,
    /// The latest sweep start since the agent started, microseconds after its schedule.
    pub max_lateness_us: AtomicU64,
    /// The longest spool append (lock wait + write + fsync), microseconds.
    pub max_append_us: AtomicU64,
    lateness_us: Mutex<std::collections::VecDeque<u64>>,
}

/// How many sweep lateness figures [`AgentStats::lateness_us`] keeps (the most recent).
pub const LATENESS_KEPT: usize = 10_000;

impl AgentStats {
    /// How late each of the last [`LATENESS_KEPT`] sweeps started after its scheduled time,
    /// microseconds, oldest first.
    pub fn lateness_us(&self) -> Vec<u64> {
        self.lateness_us.lock().map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    fn record_lateness(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.max_lateness_us.fetch_max(us, Ordering::Relaxed);
        if let Ok(mut v) = self.lateness_us.lock() {
            if v.len() >= LATENESS_KEPT {
                v.pop_front();
            }
            v.push_back(us);
        }
    }
}

/// A running agent.
pub struct Agent {
    stats: Arc<AgentStats>,
    stop: Arc<AtomicBool>,
    stop_tx: mpsc::Sender<()>,
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
        let shipper = Shipper::new(&config.shipper)?;
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let sender_stop = Arc::new(Notify::new());
        let sweeps_done = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = mpsc::channel();

        let (to_spool, from_sweeps) = mpsc::sync_channel(APPEND_QUEUE);
        let appender = {
            let spool = spool.clone();
            let wake = wake.clone();
            let stats = stats.clone();
            let cfg = config.clone();
            let done = sweeps_done.clone();
            std::thread::Builder::new()
                .name("procwatch-spool".into())
                .spawn(move || append_loop(cfg, from_sweeps, spool, wake, stats, done))
                .map_err(|e| AgentError::Thread(e.to_string()))?
        };
        let sweeper = {
            let stats = stats.clone();
            let cfg = config.clone();
            std::thread::Builder::new()
                .name("procwatch-sweep".into())
                .spawn(move || sweep_loop(cfg, sweep, to_spool, stats, stop_rx))
                .map_err(|e| AgentError::Thread(e.to_string()))?
        };
        let sender = tokio::spawn(send_loop(
            config.clone(),
            shipper,
            spool,
            wake,
            stats.clone(),
            stop.clone(),
            sender_stop.clone(),
        ));
        Ok(Agent {
            stats,
            stop,
            stop_tx,
            sweeper: Some(sweeper),
            appender: Some(appender),
            sender,
            sender_stop,
            sweeps_done,
            drain_timeout: config.drain_timeout,
        })
    }

    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    /// Stops sweeping, lets the sender deliver what it can within the drain timeout, stops it.
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(());
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

/// Encodes a sweep as a spool record payload:
/// `interval_ms: u64 LE | host_len: u16 LE | host | totals_len: u32 LE | totals JSON array |
/// samples JSON array`. Requests are built by splicing these arrays, with no re-parsing.
pub fn encode_sweep(host: &str, interval_ms: u64, sweep: &SweepData) -> Vec<u8> {
    let totals = serde_json::to_vec(&sweep.host_totals).unwrap_or_else(|_| b"[]".to_vec());
    let samples = serde_json::to_vec(&sweep.samples).unwrap_or_else(|_| b"[]".to_vec());
    let host = &host.as_bytes()[..host.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(18 + host.len() + totals.len() + samples.len());
    out.extend_from_slice(&interval_ms.to_le_bytes());
    out.extend_from_slice(&(host.len() as u16).to_le_bytes());
    out.extend_from_slice(host);
    out.extend_from_slice(&(totals.len() as u32).to_le_bytes());
    out.extend_from_slice(&totals);
    out.extend_from_slice(&samples);
    out
}

/// The parts of a record payload; `None` if it is malformed.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadParts<'a> {
    pub interval_ms: u64,
    pub host: &'a str,
    pub totals_json: &'a [u8],
    pub samples_json: &'a [u8],
}

pub fn decode_payload(p: &[u8]) -> Option<PayloadParts<'_>> {
    let interval_ms = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    let hl = u16::from_le_bytes(p.get(8..10)?.try_into().ok()?) as usize;
    let host = std::str::from_utf8(p.get(10..10 + hl)?).ok()?;
    let at = 10 + hl;
    let tl = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
    let totals_json = p.get(at + 4..at + 4 + tl)?;
    let samples_json = p.get(at + 4 + tl..)?;
    Some(PayloadParts { interval_ms, host, totals_json, samples_json })
}

/// Appends the elements of the JSON array `arr` to `out` (comma-separated after `first`).
fn splice_array(out: &mut Vec<u8>, arr: &[u8], first: &mut bool) {
    let inner = match (arr.first(), arr.last()) {
        (Some(b'['), Some(b']')) if arr.len() >= 2 => &arr[1..arr.len() - 1],
        _ => return,
    };
    if inner.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(inner);
}

/// Builds one `POST /api/v1/samples` body from spooled records (all of one host).
pub fn build_batch(
    host: &str,
    agent: &str,
    seq: u64,
    dropped: u64,
    records: &[(PayloadParts<'_>, u64)],
) -> Vec<u8> {
    let interval_ms = records.first().map_or(0, |(p, _)| p.interval_ms);
    let cap =
        records.iter().map(|(p, _)| p.totals_json.len() + p.samples_json.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(cap + 256);
    out.extend_from_slice(b"{\"host\":");
    out.extend_from_slice(&serde_json::to_vec(host).unwrap_or_default());
    out.extend_from_slice(b",\"agent\":");
    out.extend_from_slice(&serde_json::to_vec(agent).unwrap_or_default());
    out.extend_from_slice(format!(",\"seq\":{seq},\"interval_ms\":{interval_ms}").as_bytes());
    if dropped > 0 {
        out.extend_from_slice(format!(",\"dropped_samples\":{dropped}").as_bytes());
    }
    out.extend_from_slice(b",\"host_totals\":[");
    let mut first = true;
    for (p, _) in records {
        splice_array(&mut out, p.totals_json, &mut first);
    }
    out.extend_from_slice(b"],\"samples\":[");
    let mut first = true;
    for (p, _) in records {
        splice_array(&mut out, p.samples_json, &mut first);
    }
    out.extend_from_slice(b"]}");
    out
}

/// How many taken sweeps may wait for the disk before the sweep loop itself waits.
const APPEND_QUEUE: usize = 64;

/// Takes the sweeps on schedule and hands them to the appender. It touches neither the disk
/// nor the spool lock, so a slow fsync or a busy sender cannot delay a sweep's start.
fn sweep_loop(
    cfg: AgentConfig,
    mut sweep: SweepFn,
    to_spool: mpsc::SyncSender<SweepData>,
    stats: Arc<AgentStats>,
    stop_rx: mpsc::Receiver<()>,
) {
    let mut deadline = cfg.clock.instant();
    let mut taken = 0u64;
    loop {
        let wait = deadline.saturating_duration_since(cfg.clock.instant());
        match stop_rx.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let started = cfg.clock.instant();
        stats.record_lateness(started.saturating_duration_since(deadline));
        match sweep() {
            Ok(Some(s)) => {
                if to_spool.send(s).is_err() {
                    return;
                }
                taken += 1;
            }
            Ok(None) => {}
            Err(e) => {
                stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                warn!(message = "Sweep failed.", error = %e);
            }
        }
        if cfg.max_sweeps.is_some_and(|m| taken >= m) {
            return;
        }
        deadline += cfg.interval;
        let now = cfg.clock.instant();
        while deadline + cfg.interval <= now {
            // Overran a whole interval (or the machine slept): skip, don't bunch up.
            deadline += cfg.interval;
            stats.missed_ticks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Appends every taken sweep to the spool (fsynced), then wakes the sender. Returns when the
/// sweep loop has stopped and every sweep it took is spooled.
fn append_loop(
    cfg: AgentConfig,
    from_sweeps: mpsc::Receiver<SweepData>,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stats: Arc<AgentStats>,
    done: Arc<Notify>,
) {
    let interval_ms = cfg.interval.as_millis() as u64;
    while let Ok(s) = from_sweeps.recv() {
        let n = s.samples.len() as u32;
        let payload = encode_sweep(&cfg.host, interval_ms, &s);
        let t = cfg.clock.instant();
        let result = match spool.lock() {
            Ok(mut sp) => sp.append(s.ts, n, &payload, cfg.clock.now_ms()),
            Err(_) => break,
        };
        let took = cfg.clock.instant().saturating_duration_since(t);
        stats.max_append_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok((id, dropped)) => {
                stats.sweeps.fetch_add(1, Ordering::Relaxed);
                stats.spooled_samples.fetch_add(n as u64, Ordering::Relaxed);
                if dropped.samples > 0 {
                    stats.dropped_samples.fetch_add(dropped.samples, Ordering::Relaxed);
                }
                debug!(message = "Sweep spooled.", ts = s.ts, samples = n, id);
                wake.notify_one();
            }
            Err(e) => {
                // The disk refused: the sweep is lost, and we say so.
                stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                stats.dropped_samples.fetch_add(n as u64, Ordering::Relaxed);
                error!(message = "Could not spool a sweep; it is lost.", error = %e, samples = n);
            }
        }
    }
    done.notify_one();
}

/// A request built from the spool.
struct Request {
    /// The batch's `host` (that of its first record).
    host: String,
    seq: u64,
    /// The last record id the request holds; `None` for a request that only reports drops.
    last_id: Option<u64>,
    dropped: u64,
    records: u64,
    samples: u64,
    body: Vec<u8>,
    /// Whether the records of the body are the very ones the spool holds (vs. a resend where
    /// some went meanwhile).
    single: bool,
}

enum Next {
    Idle,
    Send(Request),
}

/// Reads the next request from the spool (the one in flight first), persisting it as in
/// flight before it is sent.
fn next_request(
    cfg: &AgentConfig,
    spool: &mut Spool,
    solo_until: Option<u64>,
    allow_drop_only: bool,
) -> Result<Next, SpoolError> {
    let st = spool.state().clone();
    let (records, seq, dropped) = if let Some(inf) = st.inflight {
        spool.settle_inflight_drops();
        let recs = spool.read_range(st.next_unacked, inf.last_id, usize::MAX, usize::MAX)?;
        if recs.is_empty() {
            // Its records went (caps) while it was in flight: nothing to resend.
            spool.clear_inflight(false)?;
            return next_request(cfg, spool, solo_until, allow_drop_only);
        }
        (recs, inf.seq, inf.dropped)
    } else {
        let max_records = if solo_until.is_some_and(|u| st.next_unacked <= u) {
            1
        } else {
            cfg.max_batch_records.max(1)
        };
        let mut recs = spool.read(max_records, cfg.max_batch_bytes)?;
        // Keep to one host and the sample cap.
        let mut samples = 0usize;
        let mut host: Option<String> = None;
        let mut keep = 0;
        for r in &recs {
            let h = decode_payload(&r.payload).map(|p| p.host.to_string());
            if keep > 0 && (samples + r.samples as usize > cfg.max_batch_samples || h != host) {
                break;
            }
            if keep == 0 {
                host = h;
            }
            samples += r.samples as usize;
            keep += 1;
        }
        recs.truncate(keep);
        if recs.is_empty() {
            if st.dropped_pending == 0 || !allow_drop_only {
                return Ok(Next::Idle);
            }
            // Drops to report and no sweep to carry them: a batch of no samples carries them.
            let seq = st.next_seq;
            spool.take_seq(seq)?;
            return Ok(Next::Send(Request {
                host: cfg.host.clone(),
                seq,
                last_id: None,
                dropped: st.dropped_pending,
                records: 0,
                samples: 0,
                body: build_batch(&cfg.host, &cfg.agent, seq, st.dropped_pending, &[]),
                single: false,
            }));
        }
        (recs, st.next_seq, st.dropped_pending)
    };
    let last_id = records.last().map_or(0, |r| r.id);
    let req_last_id = Some(last_id);
    let mut parts = Vec::with_capacity(records.len());
    let mut host = cfg.host.clone();
    // Samples of the records actually in the body: what the server's ack must count.
    let mut samples = 0u64;
    for r in &records {
        match decode_payload(&r.payload) {
            Some(p) => {
                if parts.is_empty() {
                    host = p.host.to_string();
                }
                samples += u64::from(r.samples);
                parts.push((p, r.id));
            }
            None => warn!(message = "Malformed spool record skipped.", id = r.id),
        }
    }
    let body = build_batch(&host, &cfg.agent, seq, dropped, &parts);
    let req = Request {
        host,
        seq,
        last_id: req_last_id,
        dropped,
        records: records.len() as u64,
        samples,
        body,
        single: records.len() == 1,
    };
    if st.inflight.is_none() {
        spool.set_inflight(spool::Inflight { seq, last_id, dropped })?;
    }
    Ok(Next::Send(req))
}

async fn send_loop(
    cfg: AgentConfig,
    shipper: Shipper,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stats: Arc<AgentStats>,
    stop: Arc<AtomicBool>,
    stop_notify: Arc<Notify>,
) {
    let mut backoff = Backoff::new(cfg.backoff, Box::new(rand::rngs::StdRng::from_entropy()));
    // Records up to this id are sent one per request (after a multi-sweep request was refused).
    let mut solo_until: u64 = 0;
    let mut solo = false;
    // A request carrying only a drop count was refused: let the next sweep carry it instead.
    let mut drop_only_refused = false;
    let mut outage_started: Option<Instant> = None;
    loop {
        let next = {
            let Ok(mut sp) = spool.lock() else { return };
            next_request(&cfg, &mut sp, solo.then_some(solo_until), !drop_only_refused)
        };
        let req = match next {
            Ok(Next::Send(r)) => r,
            Ok(Next::Idle) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = stop_notify.notified() => {}
                }
                continue;
            }
            Err(e) => {
                error!(message = "Spool read failed; retrying.", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if solo && req.last_id.is_some_and(|l| l >= solo_until) {
            solo = false;
        }
        let expected = Expected { host: &req.host, seq: req.seq, samples: req.samples };
        let result = shipper.send(&req.body, &expected).await;
        match result {
            Ok(()) => {
                if let Some(t) = outage_started.take() {
                    info!(
                        message = "Server reachable again.",
                        after_s = cfg.clock.instant().saturating_duration_since(t).as_secs_f64(),
                        attempts = backoff.attempt()
                    );
                }
                backoff.reset();
                if req.last_id.is_some() {
                    drop_only_refused = false;
                }
                acked(&spool, &req, &stats);
                stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                stats.sent_records.fetch_add(req.records, Ordering::Relaxed);
                stats.sent_samples.fetch_add(req.samples, Ordering::Relaxed);
                debug!(
                    message = "Batch delivered.",
                    seq = req.seq,
                    records = req.records,
                    samples = req.samples,
                    dropped_reported = req.dropped
                );
                if req.dropped > 0 {
                    warn!(
                        message = "Reported dropped samples to the server.",
                        dropped_samples = req.dropped
                    );
                }
            }
            Err(RetryAction::DontRetry(reason)) if req.last_id.is_none() => {
                error!(
                    message = "Server refused a batch reporting dropped samples; the next sweep will carry the count.",
                    dropped_samples = req.dropped,
                    %reason
                );
                drop_only_refused = true;
            }
            Err(RetryAction::DontRetry(reason)) if !req.single => {
                warn!(
                    message = "Server refused a multi-sweep batch; resending its sweeps one by one.",
                    seq = req.seq,
                    records = req.records,
                    %reason
                );
                solo = true;
                solo_until = req.last_id.unwrap_or(0);
                if let Ok(mut sp) = spool.lock() {
                    if let Err(e) = sp.clear_inflight(true) {
                        error!(message = "Could not persist the spool state.", error = %e);
                    }
                }
            }
            Err(RetryAction::DontRetry(reason)) => {
                let q = quarantine(&cfg, &req, &reason, &stats);
                error!(
                    message = "Server refused a batch; quarantined, not retried.",
                    seq = req.seq,
                    samples = req.samples,
                    file = %q,
                    %reason
                );
                stats.quarantined_records.fetch_add(req.records, Ordering::Relaxed);
                stats.dropped_samples.fetch_add(req.samples, Ordering::Relaxed);
                if let Ok(mut sp) = spool.lock() {
                    // The server stored nothing: give the seq back, keep its drop count
                    // pending, and count the refused samples as dropped.
                    let r = sp.clear_inflight(true).and_then(|()| {
                        if let Some(id) = req.last_id {
                            sp.ack_through(id, 0)?;
                        }
                        sp.count_dropped(Dropped { records: req.records, samples: req.samples })
                    });
                    if let Err(e) = r {
                        error!(message = "Could not persist the spool state.", error = %e);
                    }
                }
            }
            Err(action @ (RetryAction::Retry(_) | RetryAction::Misconfigured(_))) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                if outage_started.is_none() {
                    outage_started = Some(cfg.clock.instant());
                }
                let delay = backoff.next_delay();
                let misconfigured = matches!(action, RetryAction::Misconfigured(_));
                let reason = action.reason();
                if misconfigured {
                    stats.misconfigured_answers.fetch_add(1, Ordering::Relaxed);
                    error!(
                        message = "The answer is not the procwatch server's acknowledgement; the batch stays spooled, will retry. Check --server.",
                        seq = req.seq,
                        samples = req.samples,
                        %reason,
                        retry_in_ms = delay.as_millis() as u64
                    );
                } else if reason.contains("HTTP 401") || reason.contains("HTTP 403") {
                    error!(
                        message = "Server refused the token; will retry.",
                        seq = req.seq,
                        %reason,
                        retry_in_ms = delay.as_millis() as u64
                    );
                } else {
                    warn!(
                        message = "Delivery failed; will retry.",
                        seq = req.seq,
                        attempt = backoff.attempt(),
                        %reason,
                        retry_in_ms = delay.as_millis() as u64
                    );
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop_notify.notified() => {
                        // Shutdown: one last try right away, then give up (the spool keeps it).
                    }
                }
            }
        }
    }
}

/// The server accepted `req`: move the ack cursor past it and settle the drop counts.
fn acked(spool: &Mutex<Spool>, req: &Request, stats: &AgentStats) {
    let Ok(mut sp) = spool.lock() else { return };
    let result = match req.last_id {
        Some(id) => sp.ack_through(id, req.dropped).map(|restored| {
            let _ = stats.dropped_samples.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(restored))
            });
        }),
        None => sp.ack_dropped(req.dropped),
    };
    if let Err(e) = result {
        // The next start resends this request (same seq): a duplicate, not a loss.
        error!(message = "Could not persist the ack; the batch may be resent.", error = %e);
    }
}

/// Writes a refused request to `<spool>/quarantine/`, first deleting the oldest quarantined
/// batches so the directory stays under `cfg.quarantine_max_bytes`; returns the file path (or
/// why not).
fn quarantine(cfg: &AgentConfig, req: &Request, reason: &str, stats: &AgentStats) -> String {
    let dir = cfg.spool.dir.join("quarantine");
    let name = format!("{:013}-seq{}-id{}", cfg.clock.now_ms(), req.seq, req.last_id.unwrap_or(0));
    let body = dir.join(format!("{name}.json"));
    let err = dir.join(format!("{name}.error.txt"));
    let reason = &reason[..floor_char_boundary(reason, 4096)];
    let need = (req.body.len() + reason.len()) as u64;
    if need > cfg.quarantine_max_bytes {
        stats.quarantine_evicted_files.fetch_add(1, Ordering::Relaxed);
        warn!(
            message = "Refused batch larger than the quarantine cap; not kept.",
            bytes = need,
            quarantine_max_bytes = cfg.quarantine_max_bytes
        );
        return "<not written: larger than --quarantine-max-bytes>".to_owned();
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return format!("<not written: {e}>");
    }
    let evicted = make_room(&dir, cfg.quarantine_max_bytes - need);
    if evicted > 0 {
        stats.quarantine_evicted_files.fetch_add(evicted, Ordering::Relaxed);
        warn!(
            message = "Quarantine over its cap; deleted the oldest refused batches.",
            deleted = evicted,
            quarantine_max_bytes = cfg.quarantine_max_bytes
        );
    }
    let result = std::fs::write(&body, &req.body).and_then(|()| std::fs::write(&err, reason));
    match result {
        Ok(()) => body.display().to_string(),
        Err(e) => format!("<not written: {e}>"),
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Deletes the oldest quarantined batches (a `.json` and its `.error.txt`, oldest by name,
/// which starts with the zero-padded time) until the directory holds at most `budget` bytes;
/// returns how many batches went.
fn make_room(dir: &std::path::Path, budget: u64) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut files: Vec<(String, u64)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let len = e.metadata().ok().filter(|m| m.is_file())?.len();
            Some((e.file_name().to_string_lossy().into_owned(), len))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, l)| l).sum();
    if total <= budget {
        return 0;
    }
    files.sort();
    let mut evicted = 0;
    let mut i = 0;
    while total > budget && i < files.len() {
        let stem = files[i].0.split('.').next().unwrap_or_default().to_owned();
        // Every file of this batch (they sort next to each other).
        while i < files.len() && files[i].0.split('.').next() == Some(stem.as_str()) {
            if std::fs::remove_file(dir.join(&files[i].0)).is_ok() {
                total = total.saturating_sub(files[i].1);
            }
            i += 1;
        }
        evicted += 1;
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(ts: TsMs, n: usize) -> SweepData {
        SweepData {
            ts,
            host_totals: vec![HostTotal { ts, cpu: 10.0, mem: 20.0, unattributed_cpu: None }],
            samples: (0..n)
                .map(|i| Sample {
                    ts,
                    process: format!("p{i}"),
                    cpu: 1.0,
                    cores: 0.02,
                    mem: 0.5,
                    rss: 1 << 20,
                    count: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn payload_round_trips_and_batches_splice() {
        let a = encode_sweep("web-1", 10_000, &sweep(1000, 2));
        let b = encode_sweep("web-1", 10_000, &sweep(2000, 0));
        let c = encode_sweep("web-1", 10_000, &sweep(3000, 1));
        let pa = decode_payload(&a).unwrap();
        assert_eq!(pa.host, "web-1");
        assert_eq!(pa.interval_ms, 10_000);
        let parts =
            vec![(pa, 0), (decode_payload(&b).unwrap(), 1), (decode_payload(&c).unwrap(), 2)];
        let body = build_batch("web-1", "procwatch/test", 7, 3, &parts);
        let batch: procwatch_model::Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!(batch.seq, 7);
        assert_eq!(batch.dropped_samples, 3);
        assert_eq!(batch.interval_ms, 10_000);
        assert_eq!(batch.host_totals.len(), 3);
        assert_eq!(batch.samples.iter().map(|s| s.ts).collect::<Vec<_>>(), vec![1000, 1000, 3000]);
        assert_eq!(batch.samples, {
            let mut v = sweep(1000, 2).samples;
            v.extend(sweep(3000, 1).samples);
            v
        });
        assert!(decode_payload(&a[..5]).is_none());
    }
}
