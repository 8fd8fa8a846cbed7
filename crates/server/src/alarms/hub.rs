//! The alarm event hub: the log of this run's transitions (for `Last-Event-ID` replays), the
//! broadcast channel the streams subscribe to, and the shutdown signal that ends them.

use std::collections::VecDeque;
use std::sync::Mutex;

use procwatch_model::{AlarmEvent, TsMs};
use tokio::sync::{broadcast, watch};

/// Events kept for `Last-Event-ID` replays.
pub const LOG_CAP: usize = 1024;
/// Events a stream may fall behind before it is cut (it then reconnects and replays).
const CHANNEL_CAP: usize = 256;

struct Log {
    seq: u64,
    events: VecDeque<(u64, AlarmEvent)>,
}

/// Publishes transitions to the streams and keeps the last [`LOG_CAP`] for replays.
pub struct Hub {
    log: Mutex<Log>,
    tx: broadcast::Sender<(u64, AlarmEvent)>,
    /// Tells apart the ids of this run from those of an earlier one.
    boot: String,
    closing: watch::Sender<bool>,
}

impl Hub {
    /// `now`: the server's start, which names this run's event stream (`boot`).
    pub fn new(now: TsMs) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAP);
        let (closing, _) = watch::channel(false);
        Hub {
            log: Mutex::new(Log { seq: 0, events: VecDeque::new() }),
            tx,
            boot: format!("{now:x}"),
            closing,
        }
    }

    /// The name of this run's event ids (`<boot>-<n>`).
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// A receiver of every event published from now on, with its sequence number.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, AlarmEvent)> {
        self.tx.subscribe()
    }

    /// Ends every open stream (at shutdown, so the graceful shutdown does not wait on them).
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }

    /// Completes once [`Hub::close`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Appends to the log and tells the subscribers.
    pub fn publish(&self, ev: AlarmEvent) {
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
    /// whether the start is the `active` alarms (`true`) rather than the missed events.
    pub fn replay(
        &self,
        last_event_id: Option<&str>,
        active: impl FnOnce() -> Vec<AlarmEvent>,
    ) -> (Vec<(u64, AlarmEvent)>, u64, bool) {
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
            _ => (active().into_iter().map(|ev| (log.seq, ev)).collect(), log.seq, true),
        }
    }
}
