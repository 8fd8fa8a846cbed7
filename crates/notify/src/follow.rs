//! Following the server's alarm stream, and fanning events out to notifiers.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use procwatch_model::{AlarmEvent, Level};
use tokio::sync::mpsc;

use crate::sse::SseParser;
use crate::webhook::jittered;
use crate::{Notifier, NotifyError};
use procwatch_model::retry::{Backoff, RetryAction};

/// What the follower hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A new event.
    Event(AlarmEvent),
    /// The server's list of the alarms open now (after a fresh connect): anything else a
    /// notifier holds as open has closed meanwhile.
    Synced(Vec<String>),
    /// An open alarm an earlier run of the follower already delivered (per its state file),
    /// still open at this start. A reconnect within one run stays quiet.
    StillActive(AlarmEvent),
}

/// How to reach the stream.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The server's base URL (`http://127.0.0.1:8000`).
    pub server: String,
    /// Read token, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// A connection silent this long is dead (the server sends keep-alives every 15 s).
    pub idle_timeout: Duration,
    /// Waits between reconnects.
    pub backoff: Backoff,
    /// Where the follower keeps the last event id it saw and what it delivered, so a restart
    /// resumes (`Last-Event-ID`) and delivers each transition once per notifier. `None`: in
    /// memory only (a restart re-announces the open alarms).
    pub state_file: Option<std::path::PathBuf>,
}

impl FollowOptions {
    /// Following `server`'s stream with `token`: 45 s idle timeout, 250 ms–10 s backoff, no state file.
    pub fn new(server: impl Into<String>, token: Option<String>) -> Self {
        Self {
            server: server.into().trim_end_matches('/').to_owned(),
            token,
            idle_timeout: Duration::from_secs(45),
            backoff: Backoff {
                base: Duration::from_millis(250),
                factor: 2.0,
                max: Duration::from_secs(10),
            },
            state_file: None,
        }
    }
}

/// What the state file holds (JSON): the last SSE id and the deliveries remembered by
/// [`Seen`], oldest first.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    last_event_id: Option<String>,
    delivered: Vec<(String, Level, bool)>,
}

fn load_state(path: &std::path::Path) -> State {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(message = "Unreadable follower state; starting afresh.", path = %path.display(), %error);
            State::default()
        }),
        Err(_) => State::default(),
    }
}

/// Writes the state next to its place, fsyncs it, renames it over (never a torn file) and
/// fsyncs the directory.
fn save_state(path: &std::path::Path, last_id: Option<&str>, seen: &Seen) {
    let state = State {
        last_event_id: last_id.map(str::to_owned),
        delivered: seen.order.iter().cloned().collect(),
    };
    let tmp = path.with_extension("tmp");
    let result = serde_json::to_vec(&state).map_err(std::io::Error::other).and_then(|bytes| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory is: without this a power cut could
        // bring the old state back and the notifiers would be sent old transitions again.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    });
    if let Err(error) = result {
        tracing::warn!(message = "Cannot save the follower state.", path = %path.display(), %error);
    }
}

/// Remembers the last few thousand deliveries so a replay after a reconnect is not notified
/// twice.
struct Seen {
    set: HashSet<(String, Level, bool)>,
    order: VecDeque<(String, Level, bool)>,
}

impl Seen {
    const CAP: usize = 4096;

    fn new() -> Self {
        Self { set: HashSet::new(), order: VecDeque::new() }
    }

    fn restore(delivered: Vec<(String, Level, bool)>) -> Self {
        let mut seen = Self::new();
        let skip = delivered.len().saturating_sub(Self::CAP);
        for key in delivered.into_iter().skip(skip) {
            if seen.set.insert(key.clone()) {
                seen.order.push_back(key);
            }
        }
        seen
    }

    /// `true` the first time an (id, level, closed) is offered.
    fn first(&mut self, ev: &AlarmEvent) -> bool {
        let key = (ev.id.clone(), ev.level, ev.end.is_some());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// `event: synced` data.
#[derive(serde::Deserialize)]
struct Synced {
    active: Vec<String>,
}

enum Ended {
    /// The connection ended or failed; try again.
    Retry(String),
    /// The server refused; give up.
    Fatal(String),
}

/// Follows the stream forever, sending each new event to `tx`. Returns only when the server
/// refuses the stream for good (401/403: [`RetryAction::Unauthorized`]; a 3xx, 404 or 405:
/// [`RetryAction::Misconfigured`]) or `tx` is closed.
pub async fn follow(
    opts: FollowOptions,
    tx: mpsc::UnboundedSender<Delivery>,
) -> Result<(), NotifyError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| NotifyError::Config(e.to_string()))?;
    let url = format!("{}/api/v1/alarms/stream", opts.server);
    let state = opts.state_file.as_deref().map(load_state).unwrap_or_default();
    let mut seen = Seen::restore(state.delivered);
    let mut last_id: Option<String> = state.last_event_id;
    if !seen.order.is_empty() {
        still_active_at_start(&client, &opts, &seen, &tx).await;
    }
    let mut failures: u32 = 0;
    loop {
        let mut connected = false;
        match once(&client, &url, &opts, &mut last_id, &mut seen, &tx, &mut connected).await {
            Ended::Fatal(why) => return Err(NotifyError::Refused(why)),
            Ended::Retry(why) => {
                if tx.is_closed() {
                    return Ok(());
                }
                if connected {
                    failures = 0;
                }
                let wait = jittered(&opts.backoff, failures);
                failures = failures.saturating_add(1);
                tracing::warn!(message = "Alarm stream lost; reconnecting.", reason = %why, wait_ms = wait.as_millis() as u64);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A restart with a state file: the alarms open now that were already delivered are handed
/// on as [`Delivery::StillActive`] (the stream then resumes after the last id seen, so it will
/// not list them). Best effort: without an answer the follower just resumes.
async fn still_active_at_start(
    client: &reqwest::Client,
    opts: &FollowOptions,
    seen: &Seen,
    tx: &mpsc::UnboundedSender<Delivery>,
) {
    let mut req = client
        .get(format!("{}/api/v1/alarms?active=true&limit=1000", opts.server))
        .timeout(Duration::from_secs(10));
    if let Some(t) = &opts.token {
        req = req.bearer_auth(t);
    }
    #[derive(serde::Deserialize)]
    struct Active {
        alarms: Vec<AlarmEvent>,
    }
    let active = match req.send().await.and_then(reqwest::Response::error_for_status) {
        Ok(r) => r.json::<Active>().await.map(|a| a.alarms).unwrap_or_default(),
        Err(error) => {
            tracing::debug!(message = "Cannot list the active alarms at start.", %error);
            return;
        }
    };
    for ev in active.into_iter().rev() {
        if ev.end.is_none() && seen.set.contains(&(ev.id.clone(), ev.level, false)) {
            let _ = tx.send(Delivery::StillActive(ev));
        }
    }
}

async fn once(
    client: &reqwest::Client,
    url: &str,
    opts: &FollowOptions,
    last_id: &mut Option<String>,
    seen: &mut Seen,
    tx: &mpsc::UnboundedSender<Delivery>,
    connected: &mut bool,
) -> Ended {
    let mut req = client.get(url).header("accept", "text/event-stream");
    if let Some(t) = &opts.token {
        req = req.bearer_auth(t);
    }
    if let Some(id) = last_id.as_deref() {
        req = req.header("last-event-id", id);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Ended::Retry(format!("cannot connect: {e}")),
    };
    let status = resp.status();
    match RetryAction::from_status(status.as_u16()) {
        RetryAction::Done => {}
        // A refused token or a URL that is not the stream fails the same way every time:
        // give up loudly rather than reconnect forever.
        RetryAction::Unauthorized | RetryAction::Misconfigured => {
            let body = resp.text().await.unwrap_or_default();
            return Ended::Fatal(format!("{status}: {}", body.trim()));
        }
        // The stream request carries nothing but `Last-Event-ID`; a server that refuses it
        // (or is overloaded) may take it later.
        RetryAction::Retry | RetryAction::Quarantine => {
            return Ended::Retry(format!("status {status}"))
        }
    }
    *connected = true;
    tracing::info!(message = "Following the alarm stream.", url);
    let mut parser = SseParser::new();
    let mut body = resp.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(opts.idle_timeout, body.next()).await {
            Err(_) => return Ended::Retry("no data or keep-alive in time".into()),
            Ok(None) => return Ended::Retry("the server closed the stream".into()),
            Ok(Some(Err(e))) => return Ended::Retry(e.to_string()),
            Ok(Some(Ok(c))) => c,
        };
        for e in parser.push(&chunk) {
            if e.id.is_some() {
                last_id.clone_from(&e.id);
            }
            let delivery = match e.event.as_str() {
                "alarm" | "message" => match serde_json::from_str::<AlarmEvent>(&e.data) {
                    Ok(ev) if seen.first(&ev) => Delivery::Event(ev),
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(message = "Unreadable alarm event.", %err);
                        continue;
                    }
                },
                "synced" => match serde_json::from_str::<Synced>(&e.data) {
                    Ok(s) => Delivery::Synced(s.active),
                    Err(err) => {
                        tracing::warn!(message = "Unreadable synced event.", %err);
                        continue;
                    }
                },
                _ => continue,
            };
            if tx.send(delivery).is_err() {
                return Ended::Retry("receiver gone".into());
            }
            if let Some(path) = &opts.state_file {
                save_state(path, last_id.as_deref(), seen);
            }
        }
    }
}

/// Hands every event from `rx` to every notifier, each on its own task and in order, and
/// runs the notifiers' periodic ticks. Returns when `rx` closes and every notifier is done.
pub async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    notifiers: Vec<Arc<dyn Notifier>>,
) {
    let mut lanes = Vec::new();
    let mut tasks = Vec::new();
    for n in notifiers {
        let (tx, mut lane) = mpsc::unbounded_channel::<Delivery>();
        lanes.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut tick = n.tick_every().map(|every| {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                let ticked = async {
                    match &mut tick {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    d = lane.recv() => {
                        let result = match d {
                            None => break,
                            Some(Delivery::Event(ev)) => n.notify(&ev).await,
                            Some(Delivery::Synced(ids)) => n.synced(&ids).await,
                            Some(Delivery::StillActive(ev)) => n.still_active(&ev).await,
                        };
                        if let Err(error) = result {
                            tracing::warn!(message = "Notification failed.", notifier = n.name(), %error);
                        }
                    }
                    () = ticked => {
                        if let Err(error) = n.tick().await {
                            tracing::warn!(message = "Notifier resend failed.", notifier = n.name(), %error);
                        }
                    }
                }
            }
        }));
    }
    while let Some(ev) = rx.recv().await {
        for lane in &lanes {
            let _ = lane.send(ev.clone());
        }
    }
    drop(lanes);
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn block(id: &str, ev: &AlarmEvent) -> String {
        format!("event: alarm\nid: {id}\ndata: {}\n\n", serde_json::to_string(ev).unwrap())
    }

    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn quick(url: &str, token: Option<&str>) -> FollowOptions {
        let mut o = FollowOptions::new(url, token.map(str::to_owned));
        o.backoff.base = Duration::from_millis(10);
        o.backoff.max = Duration::from_millis(50);
        o
    }

    /// The server closes the stream after each answer: the follower reconnects with
    /// `Last-Event-ID` and the bearer token, and delivers each event once although the second
    /// answer repeats the first event.
    #[tokio::test]
    async fn reconnects_with_last_event_id_and_drops_repeats() {
        let a = crate::console::tests_support::event();
        let mut b = a.clone();
        b.id = "other".into();
        b.process = "pg".into();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen_ids =
            Arc::new(std::sync::Mutex::new(Vec::<(Option<String>, Option<String>)>::new()));
        let (c, ids, a2, b2) = (calls.clone(), seen_ids.clone(), a.clone(), b.clone());
        let app = axum::Router::new().route(
            "/api/v1/alarms/stream",
            axum::routing::get(move |h: HeaderMap| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
                ids.lock().unwrap().push((header("last-event-id"), header("authorization")));
                let body = match n {
                    0 => format!(": hello\n\n{}", block("r-1", &a2)),
                    1 => format!("{}{}", block("r-1", &a2), block("r-2", &b2)),
                    _ => String::new(),
                };
                async move { ([("content-type", "text/event-stream")], body) }
            }),
        );
        let url = serve(app).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(follow(quick(&url, Some("tok")), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        let second =
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!((first, second), (Delivery::Event(a), Delivery::Event(b)));
        // Wait for a third connection, then check nothing else was delivered.
        while calls.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rx.try_recv().is_err());
        let ids = seen_ids.lock().unwrap().clone();
        assert_eq!(ids[0], (None, Some("Bearer tok".into())));
        assert_eq!(ids[1].0.as_deref(), Some("r-1"));
        assert_eq!(ids[2].0.as_deref(), Some("r-2"));
        task.abort();
    }

    /// The error that ends a follower of `app`'s stream (within 5 s).
    async fn follow_error(app: axum::Router) -> String {
        let url = serve(app).await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let run = follow(quick(&url, None), tx);
        tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap_err().to_string()
    }

    #[tokio::test]
    async fn a_refused_token_ends_the_follower() {
        let app = axum::Router::new().route(
            "/api/v1/alarms/stream",
            axum::routing::get(|| async {
                (StatusCode::UNAUTHORIZED, "{\"error\":\"wrong read token\"}")
            }),
        );
        let err = follow_error(app).await;
        assert!(err.contains("401"), "{err}");
    }

    /// The retry decision is `RetryAction`'s: a 503 (twice) is retried, then a URL that is not
    /// the stream (404, a server without the route) ends the follower.
    #[tokio::test]
    async fn transient_answers_are_retried_and_a_wrong_url_ends_the_follower() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/api/v1/alarms/stream",
            axum::routing::get(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "busy")
                    } else {
                        (StatusCode::NOT_FOUND, "no such route")
                    }
                }
            }),
        );
        let err = follow_error(app).await;
        assert!(err.contains("404"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// Every notifier gets every event in order, and the periodic tick runs.
    #[tokio::test]
    async fn dispatch_fans_out_in_order() {
        struct Rec(std::sync::Mutex<Vec<String>>, AtomicUsize);
        #[async_trait::async_trait]
        impl Notifier for Rec {
            fn name(&self) -> &str {
                "rec"
            }
            async fn notify(&self, ev: &AlarmEvent) -> Result<(), NotifyError> {
                self.0.lock().unwrap().push(ev.id.clone());
                Ok(())
            }
            fn tick_every(&self) -> Option<Duration> {
                Some(Duration::from_millis(5))
            }
            async fn tick(&self) -> Result<(), NotifyError> {
                self.1.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
        let r1 = Arc::new(Rec(Default::default(), AtomicUsize::new(0)));
        let r2 = Arc::new(Rec(Default::default(), AtomicUsize::new(0)));
        let (tx, rx) = mpsc::unbounded_channel();
        let d = tokio::spawn(dispatch(rx, vec![r1.clone(), r2.clone()]));
        for i in 0..20 {
            let mut ev = crate::console::tests_support::event();
            ev.id = i.to_string();
            tx.send(Delivery::Event(ev)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(tx);
        d.await.unwrap();
        let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(*r1.0.lock().unwrap(), want);
        assert_eq!(*r2.0.lock().unwrap(), want);
        assert!(r1.1.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn seen_drops_replays_but_not_the_closing_copy() {
        let mut s = Seen::new();
        let ev = crate::console::tests_support::event();
        assert!(s.first(&ev));
        assert!(!s.first(&ev));
        let mut closed = ev.clone();
        closed.end = Some(10);
        assert!(s.first(&closed));
        assert!(!s.first(&closed));
        for i in 0..Seen::CAP + 10 {
            let mut e = ev.clone();
            e.id = i.to_string();
            s.first(&e);
        }
        assert!(s.set.len() <= Seen::CAP);
    }
}
