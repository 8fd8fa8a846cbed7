//! Group commit: batches that wait for a `/write` at the same time go to influxd in one
//! request. influxd's cost is largely per request (HTTP, WAL fsync): with spare CPU it took
//! about 1.4× more samples/s in requests of 5,000 points than one agent batch per request
//! (BENCHMARKS.md, "InfluxDB backend").
//!
//! Every batch is answered only after influxd answered 204 for the request that carried it.
//! A combined request that influxd could not take (`Unavailable`: down, 5xx, timeout) fails
//! every batch in it with 503 (all retried by their agents); one it refused (a 400: a field
//! type conflict, say) is retried batch by batch, so a batch is refused only for its own
//! points (one host's conflict cannot refuse another host's batch). Points of a failed
//! request that did land are rewritten by the retries, which overwrites them (idempotent).

use std::sync::{Arc, Mutex};

use procwatch_store::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::client::Client;

/// At most this many bytes of line protocol in one combined request (~3,000 samples).
pub(crate) const MAX_COMBINED_BYTES: usize = 512 * 1024;

/// One batch's lines, waiting for their write.
struct Pending {
    rp: Option<String>,
    lines: String,
    done: oneshot::Sender<Result<(), Failure>>,
}

/// A `StoreError` that can be sent to every batch of a failed request.
#[derive(Debug, Clone)]
enum Failure {
    Invalid(String),
    Unavailable(String),
    Other(String),
}

impl Failure {
    fn of(e: &StoreError) -> Self {
        match e {
            StoreError::InvalidInput(m) => Failure::Invalid(m.clone()),
            StoreError::Unavailable(m) => Failure::Unavailable(m.clone()),
            e => Failure::Other(e.to_string()),
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            Failure::Invalid(m) => StoreError::InvalidInput(m),
            Failure::Unavailable(m) => StoreError::Unavailable(m),
            Failure::Other(m) => StoreError::Other(m.into()),
        }
    }
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// Whether a flush task is running (it takes whatever is queued until the queue is empty).
    flushing: bool,
}

/// The write queue of one store.
#[derive(Clone)]
pub(crate) struct Coalescer {
    client: Client,
    db: String,
    queue: Arc<Mutex<Queue>>,
}

impl Coalescer {
    pub(crate) fn new(client: Client, db: String) -> Self {
        Self { client, db, queue: Arc::default() }
    }

    /// Writes `lines` (one batch's points, ending with its bookkeeping point), possibly in one
    /// request with other batches waiting at the same time; returns once influxd answered for
    /// them.
    pub(crate) async fn write(&self, rp: Option<&str>, lines: String) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().expect("write queue");
            q.pending.push(Pending { rp: rp.map(str::to_string), lines, done });
            !std::mem::replace(&mut q.flushing, true)
        };
        if start {
            // Its own task: a request whose caller went away still answers the others.
            tokio::spawn(self.clone().flush());
        }
        match answer.await {
            Ok(r) => r.map_err(Failure::into_error),
            Err(_) => Err(StoreError::Unavailable("influxdb write task ended".into())),
        }
    }

    async fn flush(self) {
        loop {
            let taken = {
                let mut q = self.queue.lock().expect("write queue");
                if q.pending.is_empty() {
                    q.flushing = false;
                    return;
                }
                // The first waiting batch and those after it for the same RP, up to the cap.
                let rp = q.pending[0].rp.clone();
                let mut bytes = 0;
                let mut taken = Vec::new();
                let mut rest = Vec::new();
                for p in q.pending.drain(..) {
                    if p.rp == rp
                        && (taken.is_empty() || bytes + p.lines.len() <= MAX_COMBINED_BYTES)
                    {
                        bytes += p.lines.len();
                        taken.push(p);
                    } else {
                        rest.push(p);
                    }
                }
                q.pending = rest;
                taken
            };
            self.write_group(taken).await;
        }
    }

    async fn write_group(&self, group: Vec<Pending>) {
        let rp = group[0].rp.clone();
        if group.len() == 1 {
            let p = group.into_iter().next().expect("one");
            let r = self.client.write(&self.db, rp.as_deref(), &p.lines).await;
            let _ = p.done.send(r.map_err(|e| Failure::of(&e)));
            return;
        }
        let body: String = group.iter().map(|p| p.lines.as_str()).collect();
        match self.client.write(&self.db, rp.as_deref(), &body).await {
            Ok(()) => {
                for p in group {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e @ StoreError::Unavailable(_)) => {
                // Every batch may be retried: no need to ask influxd again for each.
                let f = Failure::of(&e);
                for p in group {
                    let _ = p.done.send(Err(f.clone()));
                }
            }
            Err(_) => {
                // Refused (a 400, say): each batch gets its own verdict.
                for p in group {
                    let r = self.client.write(&self.db, rp.as_deref(), &p.lines).await;
                    let _ = p.done.send(r.map_err(|e| Failure::of(&e)));
                }
            }
        }
    }
}
