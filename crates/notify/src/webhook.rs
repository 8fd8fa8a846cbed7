//! Webhook: each event is POSTed as its JSON (the `AlarmEvent` shape of the API), retried with
//! exponential backoff and full jitter on network errors, 408, 429 and 5xx, up to
//! `max_attempts`; any other 4xx is final (retrying would not help). The retry decision and
//! the backoff are the shared ones of `procwatch_model::retry`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use procwatch_model::retry::{Backoff, RetryAction};
use procwatch_model::AlarmEvent;
use rand::Rng;

use crate::{Notifier, NotifyError};

/// How a notifier retries a delivery: the shared [`Backoff`] (by default 250 ms, doubling, at
/// most 10 s, full jitter) for at most `max_attempts` attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The waits between attempts.
    pub backoff: Backoff,
    /// Attempts in all (at least 1 is made).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                base: Duration::from_millis(250),
                factor: 2.0,
                max: Duration::from_secs(10),
            },
            max_attempts: 6,
        }
    }
}

/// A jittered wait after the `attempt`-th failure (0-based) under `backoff`.
pub fn jittered(backoff: &Backoff, attempt: u32) -> Duration {
    backoff.delay(attempt, rand::thread_rng().gen_range(0.0..=1.0))
}

/// Whether a status is worth retrying: [`RetryAction::Retry`] (408, 429, 5xx). Any other 4xx,
/// a redirect or a refused token is final for a notifier (retrying would not help).
pub fn retryable(status: reqwest::StatusCode) -> bool {
    RetryAction::from_status(status.as_u16()).is_transient()
}

/// POSTs each event as JSON to a URL, with extra headers, retrying per its [`RetryPolicy`].
pub struct Webhook {
    url: String,
    headers: BTreeMap<String, String>,
    retry: RetryPolicy,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook to `url` sending `headers` with each event.
    pub fn new(
        url: impl Into<String>,
        headers: BTreeMap<String, String>,
        retry: RetryPolicy,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { url: url.into(), headers, retry, client }
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
        let attempts = self.retry.max_attempts.max(1);
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
                    tokio::time::sleep(jittered(&self.retry.backoff, attempt)).await;
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
        let backoff = RetryPolicy {
            backoff: Backoff {
                base: Duration::from_millis(5),
                factor: 2.0,
                max: Duration::from_millis(20),
            },
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
