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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use procwatch_model::clock::{Clock, SystemClock};

    use super::*;
    use crate::testing::read_request;

    fn answer(s: &mut std::net::TcpStream, status: &str, body: &str) {
        let a = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(a.as_bytes()).expect("answer");
    }

    /// Two batches queued behind a write in flight go out in one request; when influxd
    /// refuses that request (400), each is written alone and gets its own verdict.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_batches_share_a_request_and_a_refusal_is_judged_per_batch() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (got_first, first_arrived) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for i in 0..4 {
                let (mut s, _) = listener.accept().expect("accept");
                let req = read_request(&mut s);
                let body = req.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                let refused = r#"{"error":"partial write: field type conflict: dropped=1"}"#;
                match i {
                    0 => {
                        got_first.send(()).unwrap();
                        released.recv().unwrap();
                        answer(&mut s, "204 No Content", "");
                    }
                    // The combined request, then each batch alone: "c" is the bad one.
                    _ if body.contains("h=c") => answer(&mut s, "400 Bad Request", refused),
                    _ => answer(&mut s, "204 No Content", ""),
                }
                bodies.push(body);
            }
            bodies
        });
        let client = Client::new(&url, None, Duration::from_secs(5), false).expect("client");
        let co = Coalescer::new(client, "db".into());
        let a = tokio::spawn({
            let co = co.clone();
            async move { co.write(None, "m,h=a f=1i 1\n".into()).await }
        });
        tokio::task::spawn_blocking(move || first_arrived.recv().unwrap()).await.unwrap();
        let b = tokio::spawn({
            let co = co.clone();
            async move { co.write(None, "m,h=b f=1i 1\n".into()).await }
        });
        let c = tokio::spawn({
            let co = co.clone();
            async move { co.write(None, "m,h=c f=1i 1\n".into()).await }
        });
        // Both queued behind the write in flight, then let it finish.
        let clock = SystemClock;
        let deadline = clock.instant() + Duration::from_secs(10);
        while co.queue.lock().unwrap().pending.len() < 2 {
            assert!(clock.instant() < deadline, "the two batches never queued");
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok(), "the good batch is not refused for the bad one");
        let e = c.await.unwrap().expect_err("the bad batch is refused");
        assert!(matches!(e, StoreError::InvalidInput(_)), "{e:?}");
        let bodies = server.join().unwrap();
        assert!(bodies[1].contains("h=b") && bodies[1].contains("h=c"), "{bodies:?}");
        // Then each alone, in either order.
        let mut alone = vec![bodies[2].clone(), bodies[3].clone()];
        alone.sort();
        assert_eq!(alone, ["m,h=b f=1i 1\n", "m,h=c f=1i 1\n"], "{bodies:?}");
    }
}
