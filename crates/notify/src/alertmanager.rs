//! Prometheus Alertmanager: `POST {url}/api/v2/alerts`.
//!
//! - Each open event (RED, AMBER, STALE, host silent) is one alert. Labels: `alertname`
//!   (`ProcwatchRed`, `ProcwatchAmber`, `ProcwatchStale`, `ProcwatchHostSilent`), `host`,
//!   `process` (absent for a host alarm: Alertmanager drops empty labels), `metric`,
//!   `severity` (`critical` for RED and host silent, `warning` for AMBER, `info` for STALE).
//!   Annotations: `summary` (the console line), `value`, `threshold`, and for AMBER
//!   `forecast`.
//! - `startsAt` is the event's start. A firing alert is sent with `endsAt` = now + 4 ×
//!   `resend` and re-sent every `resend` (default 1 min) while it is open, as Prometheus does:
//!   if procwatch alarm stops, Alertmanager resolves its alerts by itself a few minutes later.
//! - When the event closes (the server sends it again with `end` set, on a change of level or
//!   on recovery), the alert is sent once more with `endsAt` = its end: resolved. After a
//!   fresh connect the server lists the alarms open now; alerts not on that list (closed
//!   while the follower was away) are resolved at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use procwatch_model::clock::Clock;
use procwatch_model::{AlarmEvent, AlarmKind, Level, TsMs};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::console::format_line;
use crate::webhook::{jittered, retryable, RetryPolicy};
use crate::{Notifier, NotifyError};

/// Posts alarms to an Alertmanager's `/api/v2/alerts`, re-sending active ones (see the module documentation).
pub struct Alertmanager {
    url: String,
    resend: Duration,
    retry: RetryPolicy,
    client: reqwest::Client,
    /// Open alerts by event id, re-sent on every tick.
    firing: Mutex<BTreeMap<String, AlarmEvent>>,
    clock: Arc<dyn Clock>,
}

fn rfc3339(ms: TsMs) -> String {
    procwatch_model::clock::Utc::from_ms(ms.max(0)).rfc3339()
}

/// The alert of an event; `ends_at` is when Alertmanager should consider it resolved.
pub fn alert(ev: &AlarmEvent, ends_at: TsMs) -> Value {
    let (name, severity) = match (ev.kind, ev.level) {
        (AlarmKind::HostSilent, _) => ("ProcwatchHostSilent", "critical"),
        (_, Level::Red) => ("ProcwatchRed", "critical"),
        (_, Level::Amber) => ("ProcwatchAmber", "warning"),
        (_, Level::Stale) => ("ProcwatchStale", "info"),
        (_, Level::Ok) => ("ProcwatchOk", "none"),
    };
    let mut labels = json!({
        "alertname": name,
        "host": ev.host,
        "metric": ev.metric.as_str(),
        "severity": severity,
    });
    if !ev.process.is_empty() {
        labels["process"] = ev.process.clone().into();
    }
    let mut annotations = json!({
        "summary": format_line(ev),
        "value": format!("{:.1}", ev.value),
        "threshold": format!("{}", ev.threshold),
    });
    if let Some(f) = ev.forecast {
        annotations["forecast"] = format!("{f:.1}").into();
    }
    json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(ev.start),
        "endsAt": rfc3339(ends_at),
    })
}

impl Alertmanager {
    /// `url` is Alertmanager's base URL (`http://127.0.0.1:9093`).
    pub fn new(url: impl Into<String>, resend: Duration, retry: RetryPolicy) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let url = url.into().trim_end_matches('/').to_owned();
        let clock = procwatch_model::clock::system();
        Self { url, resend, retry, client, firing: Mutex::new(BTreeMap::new()), clock }
    }

    /// The same notifier with `endsAt` computed from `clock` (tests drive time with it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn firing_until(&self) -> TsMs {
        self.clock.now_ms() + 4 * self.resend.as_millis() as TsMs
    }

    async fn post(&self, alerts: &[Value]) -> Result<(), NotifyError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let url = format!("{}/api/v2/alerts", self.url);
        let attempts = self.retry.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            let retry = match self.client.post(&url).json(alerts).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    last = format!("status {status}: {}", r.text().await.unwrap_or_default());
                    retryable(status)
                }
                Err(e) => {
                    last = e.to_string();
                    true
                }
            };
            if !retry || attempt + 1 == attempts {
                break;
            }
            tokio::time::sleep(jittered(&self.retry.backoff, attempt)).await;
        }
        Err(NotifyError::Delivery { target: url, reason: last })
    }
}

#[async_trait]
impl Notifier for Alertmanager {
    fn name(&self) -> &str {
        "alertmanager"
    }

    async fn notify(&self, ev: &AlarmEvent) -> Result<(), NotifyError> {
        let body = {
            let mut firing = self.firing.lock().await;
            match (ev.level, ev.end) {
                // A recovery event: the closing copy of the alarm already ended its alert.
                (Level::Ok, _) => return Ok(()),
                (_, Some(end)) => {
                    firing.remove(&ev.id);
                    alert(ev, end)
                }
                (_, None) => {
                    firing.insert(ev.id.clone(), ev.clone());
                    alert(ev, self.firing_until())
                }
            }
        };
        self.post(&[body]).await
    }

    async fn still_active(&self, ev: &AlarmEvent) -> Result<(), NotifyError> {
        // Announced by an earlier run: kept firing by the periodic re-send, not posted now.
        self.firing.lock().await.insert(ev.id.clone(), ev.clone());
        Ok(())
    }

    async fn synced(&self, active_ids: &[String]) -> Result<(), NotifyError> {
        let now = self.clock.now_ms();
        let gone: Vec<Value> = {
            let mut firing = self.firing.lock().await;
            let stale: Vec<String> =
                firing.keys().filter(|id| !active_ids.contains(id)).cloned().collect();
            stale.iter().filter_map(|id| firing.remove(id)).map(|ev| alert(&ev, now)).collect()
        };
        self.post(&gone).await
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(self.resend)
    }

    async fn tick(&self) -> Result<(), NotifyError> {
        let until = self.firing_until();
        let alerts: Vec<Value> =
            self.firing.lock().await.values().map(|ev| alert(ev, until)).collect();
        self.post(&alerts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a recording receiver: firing with `endsAt` ahead, re-sent on tick, resolved on
    /// the closing copy, and resolved at once when a sync no longer lists it.
    #[tokio::test]
    async fn fires_resends_and_resolves() {
        let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let sink = posts.clone();
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let sink = sink.clone();
                async move { sink.lock().unwrap().push(v) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let clock = Arc::new(procwatch_model::clock::ManualClock::new(1_700_000_000_000));
        let am = Alertmanager::new(url, Duration::from_secs(60), RetryPolicy::default())
            .with_clock(clock.clone());
        let mut a = crate::console::tests_support::event();
        a.start = clock.now_ms();
        let mut b = a.clone();
        b.id = "b".into();
        b.process = "pg".into();
        am.notify(&a).await.unwrap();
        am.notify(&b).await.unwrap();
        am.tick().await.unwrap();
        let mut closed = a.clone();
        closed.end = Some(a.start + 5000);
        am.notify(&closed).await.unwrap();
        am.synced(&[]).await.unwrap();
        am.tick().await.unwrap(); // nothing left firing: nothing sent
        server.abort();
        let posts = posts.lock().unwrap().clone();
        assert_eq!(posts.len(), 5, "{posts:#?}");
        let ends = |p: &Value, i: usize| p[i]["endsAt"].as_str().unwrap().to_owned();
        // Time stood still: firing ends exactly 4 resend periods ahead.
        assert_eq!(ends(&posts[0], 0), rfc3339(a.start + 240_000), "firing ends ahead");
        assert_eq!(posts[2].as_array().unwrap().len(), 2, "the tick re-sends both");
        assert_eq!(ends(&posts[3], 0), rfc3339(a.start + 5000), "closed: resolved at its end");
        assert_eq!(posts[4][0]["labels"]["process"], "pg", "not listed by the sync: resolved");
        assert_eq!(ends(&posts[4], 0), rfc3339(clock.now_ms()), "resolved now");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_072_000_250), "2025-11-25T12:00:00.250Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn labels_name_the_level_and_drop_empty_process() {
        let mut ev = crate::console::tests_support::event();
        let a = alert(&ev, 2000);
        assert_eq!(a["labels"]["alertname"], "ProcwatchRed");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["process"], "java");
        assert_eq!(a["annotations"]["summary"], "RED   web-1 java cpu 93.1% > 80%");
        assert_eq!(a["endsAt"], "1970-01-01T00:00:02.000Z");
        ev.kind = AlarmKind::HostSilent;
        ev.process.clear();
        let a = alert(&ev, 2000);
        assert_eq!(a["labels"]["alertname"], "ProcwatchHostSilent");
        assert!(a["labels"].get("process").is_none());
    }
}
