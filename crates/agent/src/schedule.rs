//! The sweep thread (on schedule, never waiting on disk or network) and the spool thread that
//! appends and fsyncs what it took.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use procwatch_model::schedule::Schedule;
use tokio::sync::Notify;
use tracing::{debug, error, warn};

use crate::batch::encode_sweep;
use crate::{AgentConfig, AgentStats, Spool, SweepData, SweepFn};

/// How many taken sweeps may wait for the disk before the sweep loop itself waits.
pub(crate) const APPEND_QUEUE: usize = 64;

/// Takes the sweeps on schedule and hands them to the appender. It touches neither the disk
/// nor the spool lock, so a slow fsync or a busy sender cannot delay a sweep's start.
pub(crate) fn sweep_loop(
    cfg: AgentConfig,
    mut sweep: SweepFn,
    to_spool: mpsc::SyncSender<SweepData>,
    stats: Arc<AgentStats>,
    stop_rx: mpsc::Receiver<()>,
) {
    let mut schedule = Schedule::new(cfg.clock.instant(), cfg.interval);
    let mut taken = 0u64;
    loop {
        let deadline = schedule.deadline();
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
        // Overran a whole interval (or the machine slept): skip, don't bunch up.
        let skipped = schedule.advance(cfg.clock.instant());
        stats.missed_ticks.fetch_add(skipped, Ordering::Relaxed);
    }
}

/// Appends every taken sweep to the spool (fsynced), then wakes the sender. Returns when the
/// sweep loop has stopped and every sweep it took is spooled.
pub(crate) fn append_loop(
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
