//! The sweep thread (on schedule, never waiting on disk or network) and the spool thread that
//! appends and fsyncs what it took.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use procwatch_model::schedule::Schedule;
use tokio::sync::Notify;
use tracing::{debug, error, warn};

use crate::batch::encode_sweep;
use crate::directive::{Control, Wake};
use crate::{AgentConfig, AgentStats, Spool, SweepData, SweepFn};

/// How many taken sweeps may wait for the disk before the sweep loop itself waits.
pub(crate) const APPEND_QUEUE: usize = 64;

/// Takes the sweeps on schedule and hands them to the appender. It touches neither the disk
/// nor the spool lock, so a slow fsync or a busy sender cannot delay a sweep's start. It reads
/// the interval, the pause and the process filter from `control` (the server's directives):
/// a new interval restarts the schedule from now, a paused agent takes no sweep (but one asked
/// for with `sweep_now`), and the filter drops the processes it does not admit before the sweep
/// is spooled.
pub(crate) fn sweep_loop(
    cfg: AgentConfig,
    mut sweep: SweepFn,
    to_spool: mpsc::SyncSender<SweepData>,
    stats: Arc<AgentStats>,
    stop_rx: mpsc::Receiver<Wake>,
    control: Arc<Control>,
) {
    let mut interval = control.interval();
    let mut schedule = Schedule::new(cfg.clock.instant(), interval);
    let mut taken = 0u64;
    loop {
        let deadline = schedule.deadline();
        let wait = deadline.saturating_duration_since(cfg.clock.instant());
        let forced = match stop_rx.recv_timeout(wait) {
            Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Wake::Reconfigure) => {
                if control.interval() != interval {
                    interval = control.interval();
                    schedule = Schedule::new(cfg.clock.instant() + interval, interval);
                }
                if !control.take_sweep_now() {
                    continue;
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        };
        let (paused, filter) = control.sweep_view();
        if !paused || forced {
            let started = cfg.clock.instant();
            if !forced {
                stats.record_lateness(started.saturating_duration_since(deadline));
            }
            match sweep(&control.settings()) {
                Ok(Some(mut s)) => {
                    if let Some(f) = &filter {
                        s.samples.retain(|x| f.admits(&x.process));
                    }
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
        }
        if forced {
            continue; // an extra sweep: the schedule stays where it was
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
    control: Arc<Control>,
) {
    while let Ok(s) = from_sweeps.recv() {
        let interval_ms = control.interval().as_millis() as u64;
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
