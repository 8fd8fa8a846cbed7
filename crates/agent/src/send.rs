//! The sender: builds requests from the spool (oldest first, merged during replay), ships
//! them, and acts on the answer (ack, retry with backoff, split, quarantine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::batch::{build_batch_with, decode_payload};
use crate::directive::Control;
use crate::quarantine::quarantine;
use crate::{
    spool, AgentConfig, AgentStats, Backoff, Dropped, Expected, Failure, RetryAction, Shipper,
    Spool, SpoolError,
};

/// A request built from the spool.
pub(crate) struct Request {
    /// The batch's `host` (that of its first record).
    pub(crate) host: String,
    pub(crate) seq: u64,
    /// The last record id the request holds; `None` for a request that only reports drops.
    pub(crate) last_id: Option<u64>,
    pub(crate) dropped: u64,
    pub(crate) records: u64,
    pub(crate) samples: u64,
    pub(crate) body: Vec<u8>,
    /// Whether the records of the body are the very ones the spool holds (vs. a resend where
    /// some went meanwhile).
    pub(crate) single: bool,
}

enum Next {
    Idle,
    Send(Request),
}

/// Reads the next request from the spool (the one in flight first), persisting it as in
/// flight before it is sent.
/// What goes into a request besides the spooled records.
struct Extras<'a> {
    /// The agent's report for the envelope.
    report: &'a procwatch_model::directive::AgentReport,
    /// A paused agent's heartbeat is due: send a batch of no samples if nothing else is.
    heartbeat: bool,
}

fn next_request(
    cfg: &AgentConfig,
    spool: &mut Spool,
    solo_until: Option<u64>,
    allow_drop_only: bool,
    extras: &Extras<'_>,
) -> Result<Next, SpoolError> {
    let report = Some(extras.report);
    let st = spool.state().clone();
    let (records, seq, dropped) = if let Some(inf) = st.inflight {
        spool.settle_inflight_drops();
        let recs = spool.read_range(st.next_unacked, inf.last_id, usize::MAX, usize::MAX)?;
        if recs.is_empty() {
            // Its records went (caps) while it was in flight: nothing to resend.
            spool.clear_inflight(false)?;
            return next_request(cfg, spool, solo_until, allow_drop_only, extras);
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
            let drops = st.dropped_pending > 0 && allow_drop_only;
            if !drops && !extras.heartbeat {
                return Ok(Next::Idle);
            }
            // Drops to report (or a paused agent's heartbeat) and no sweep to carry them: a
            // batch of no samples carries them.
            let seq = st.next_seq;
            spool.take_seq(seq)?;
            return Ok(Next::Send(Request {
                host: cfg.host.clone(),
                seq,
                last_id: None,
                dropped: st.dropped_pending,
                records: 0,
                samples: 0,
                body: build_batch_with(&cfg.host, &cfg.agent, seq, st.dropped_pending, &[], report),
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
    let body = build_batch_with(&host, &cfg.agent, seq, dropped, &parts, report);
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

/// How the sender is told to stop: the flag, and the wake-up of its waits.
pub(crate) struct Stop {
    pub(crate) flag: Arc<AtomicBool>,
    pub(crate) notify: Arc<Notify>,
}

pub(crate) async fn send_loop(
    cfg: AgentConfig,
    shipper: Shipper,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    stats: Arc<AgentStats>,
    stop: Stop,
    control: Arc<Control>,
) {
    let Stop { flag: stop, notify: stop_notify } = stop;
    let mut backoff = Backoff::new(cfg.backoff, Box::new(rand::rngs::StdRng::from_entropy()));
    // Records up to this id are sent one per request (after a multi-sweep request was refused).
    let mut solo_until: u64 = 0;
    let mut solo = false;
    // A request carrying only a drop count was refused: let the next sweep carry it instead.
    let mut drop_only_refused = false;
    let mut outage_started: Option<Instant> = None;
    // A paused agent posts a heartbeat when it sent nothing for an interval.
    let mut heartbeat = false;
    loop {
        let next = {
            let Ok(mut sp) = spool.lock() else { return };
            let report =
                control.report(sp.pending_records(), stats.dropped_samples.load(Ordering::Relaxed));
            let extras = Extras { report: &report, heartbeat };
            next_request(&cfg, &mut sp, solo.then_some(solo_until), !drop_only_refused, &extras)
        };
        heartbeat = false;
        let req = match next {
            Ok(Next::Send(r)) => r,
            Ok(Next::Idle) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let beat = if control.paused() { control.interval() } else { Duration::MAX };
                tokio::select! {
                    () = wake.notified() => {}
                    () = stop_notify.notified() => {}
                    () = tokio::time::sleep(beat), if control.paused() => heartbeat = true,
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
            Ok(directive) => {
                if let Some(d) = directive {
                    control.offer(&d);
                }
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
            Err(Failure { action: RetryAction::Quarantine, reason }) if req.last_id.is_none() => {
                error!(
                    message = "Server refused a batch reporting dropped samples; the next sweep will carry the count.",
                    dropped_samples = req.dropped,
                    %reason
                );
                drop_only_refused = true;
            }
            Err(Failure { action: RetryAction::Quarantine, reason }) if !req.single => {
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
            Err(Failure { action: RetryAction::Quarantine, reason }) => {
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
            Err(Failure { action, reason }) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                if outage_started.is_none() {
                    outage_started = Some(cfg.clock.instant());
                }
                let delay = backoff.next_delay();
                if action == RetryAction::Misconfigured {
                    stats.misconfigured_answers.fetch_add(1, Ordering::Relaxed);
                    error!(
                        message = "The answer is not the procwatch server's acknowledgement; the batch stays spooled, will retry. Check --server.",
                        seq = req.seq,
                        samples = req.samples,
                        %reason,
                        retry_in_ms = delay.as_millis() as u64
                    );
                } else if action == RetryAction::Unauthorized {
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
