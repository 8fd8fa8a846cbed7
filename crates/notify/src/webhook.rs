//! Webhook: each event is POSTed as its JSON (the `AlarmEvent` shape of the API), retried with
//! exponential backoff and full jitter on network errors, 408, 429 and 5xx, up to
//! `max_attempts`; any other 4xx is final (retrying would not help).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use procwatch_model::AlarmEvent;
use rand::Rng;

use crate::{Notifier, NotifyError};

/// Retry policy: attempt n (0-based) waits a random time in `[0, min(max, base × 2^n)]`
/// before the next.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(250), max: Duration::from_secs(10), max_attempts: 6 }
    }
}

impl Backoff {
    /// The cap of the wait after the `attempt`-th failure (0-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A jittered wait after the `attempt`-th failure.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt).as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=cap))
    }
}

/// Whether a status is worth retrying.
pub fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

pub struct Webhook {
    url: String,
    headers: BTreeMap<String, String>,
    backoff: Backoff,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(
        url: impl Into<String>,
        headers: BTreeMap<String, String>,
        backoff: Backoff,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { url: url.into(), headers, backoff, client }
    }

    async fn post_once(&self, ev: &AlarmEvent) -> Result<(), (bool, String)> {
        let mut req = self.client.post(&self.url).json(ev);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err((retryable(r.status()), format!("status {}", r.status()))),
            Err(e) => Err((true, e.to_string())),
        }
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn notify(&self, ev: &AlarmEvent) -> Result<(), NotifyError> {
        let attempts = self.backoff.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            match self.post_once(ev).await {
                Ok(()) => return Ok(()),
                Err((retry, why)) => {
                    last = why;
                    if !retry || attempt + 1 == attempts {
                        break;
                    }
                    tracing::debug!(message = "Webhook failed, retrying.", url = %self.url, attempt, reason = %last);
                    tokio::time::sleep(self.backoff.delay(attempt)).await;
                }
            }
        }
        Err(NotifyError::Delivery { target: self.url.clone(), reason: last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn backoff_grows_then_caps_and_jitters_below_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: 5,
        };
        let caps: Vec<u128> = (0..6).map(|n| b.cap(n).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.cap(200), Duration::from_secs(1));
        for n in 0..6 {
            assert!(b.delay(n) <= b.cap(n));
        }
    }

    /// A receiver that fails twice with 503 then accepts: the event arrives, after 3 tries;
    /// a 400 is not retried.
    #[tokio::test]
    async fn retries_5xx_until_delivered_and_gives_up_on_4xx() {
        use axum::http::{HeaderMap, StatusCode};
        let calls = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(tokio::sync::Mutex::new(Vec::<(String, String)>::new()));
        let (c, b) = (calls.clone(), bodies.clone());
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(move |h: HeaderMap, body: String| async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    if n < 2 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let auth =
                        h.get("x-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    b.lock().await.push((auth, body));
                    StatusCode::NO_CONTENT
                }),
            )
            .route("/bad", axum::routing::post(|| async { StatusCode::BAD_REQUEST }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let backoff = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
            max_attempts: 4,
        };
        let headers = BTreeMap::from([("x-key".to_owned(), "k1".to_owned())]);
        let hook = Webhook::new(format!("http://{addr}/hook"), headers, backoff);
        let ev = crate::console::tests_support::event();
        hook.notify(&ev).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let got = bodies.lock().await.clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "k1");
        let back: AlarmEvent = serde_json::from_str(&got[0].1).unwrap();
        assert_eq!(back, ev);

        let bad = Webhook::new(format!("http://{addr}/bad"), BTreeMap::new(), backoff);
        let err = bad.notify(&ev).await.unwrap_err();
        assert!(err.to_string().contains("400"), "{err}");
        server.abort();
    }
}
