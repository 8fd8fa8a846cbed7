//! procwatch-notify: where alarm events go once the server has raised them. This crate does the
//! I/O the alarm engine (`procwatch-alarm`) must not: it follows the server's event stream and
//! hands each event to notifiers.
//!
//! - [`follow`]: the client of `GET /api/v1/alarms/stream` (Server-Sent Events, parsed by the
//!   pure [`sse`] parser). It reconnects forever with exponential backoff and jitter (0.25 s
//!   doubling to 10 s, reset once connected), sends `Last-Event-ID` so the server replays
//!   what it missed (or, if the server restarted, the alarms active now), treats 45 s without
//!   a byte (the server sends a keep-alive every 15 s) as a dead connection, and drops events
//!   it has already delivered (same id, level and open/closed state), so a reconnect never
//!   notifies twice. 401, 403 and 404 are final: a wrong token or URL does not fix itself.
//! - [`Notifier`]s: [`console::Console`] (one line per transition:
//!   `RED   web-1 java cpu 93.1% > 80%`, coloured when asked), [`webhook::Webhook`] (JSON POST
//!   of the `AlarmEvent`, retried with backoff on network errors, 408, 429 and 5xx, up to 6
//!   tries) and [`alertmanager::Alertmanager`] (`POST /api/v2/alerts`, firing alerts re-sent
//!   every minute, closed events sent with `endsAt`, so they resolve).
//! - Every notifier gets every event, in order, on its own task: a slow webhook never delays
//!   the console.
//!
//! Configuration (read by `procwatch alarm` from its `--config` file):
//!
//! ```toml
//! [[notifiers]]
//! type = "webhook"
//! url = "https://hooks.example.com/procwatch"
//! headers = { Authorization = "Bearer s3cret" }   # optional
//! max_attempts = 6                                # optional
//!
//! [[notifiers]]
//! type = "alertmanager"
//! url = "http://127.0.0.1:9093"
//! resend = "1m"                                   # optional
//! ```
//!
//! The webhook receives exactly what the stream carries: every transition, including the
//! closing copy of the previous event (`end` set) that precedes its successor.

#![deny(missing_docs)]

pub mod alertmanager;
pub mod console;
pub mod follow;
pub mod sse;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use procwatch_model::AlarmEvent;
use serde::Deserialize;

/// Why a notification or the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Every attempt to deliver failed.
    #[error("cannot deliver to {target}: {reason}")]
    Delivery {
        /// The URL.
        target: String,
        /// The last failure.
        reason: String,
    },
    #[error("write failed: {0}")]
    /// Writing a notification (e.g. to the console) failed.
    Io(#[from] std::io::Error),
    /// The server refused the stream for good (bad token, wrong URL).
    #[error("the server refused the alarm stream: {0}")]
    Refused(String),
    #[error("bad notifier config: {0}")]
    /// A notifier's settings are wrong (file and key in the message).
    Config(String),
}

/// Somewhere alarm events go.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// For logs.
    fn name(&self) -> &str;

    /// Delivers one event (retrying as the notifier sees fit).
    async fn notify(&self, ev: &AlarmEvent) -> Result<(), NotifyError>;

    /// The server listed the alarms open now (after the follower connected afresh, e.g. to a
    /// restarted server): whatever else the notifier holds as open has closed meanwhile.
    async fn synced(&self, _active_ids: &[String]) -> Result<(), NotifyError> {
        Ok(())
    }

    /// An alarm this notifier was already given (by an earlier run of the follower, per its
    /// state file) is still open: the server listed it again after a (re)connect. Not a new
    /// transition: webhooks are not posted again; the console says "still active since …".
    async fn still_active(&self, _ev: &AlarmEvent) -> Result<(), NotifyError> {
        Ok(())
    }

    /// How often [`Notifier::tick`] wants to run, if at all.
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (Alertmanager re-sends firing alerts).
    async fn tick(&self) -> Result<(), NotifyError> {
        Ok(())
    }
}

/// One `[[notifiers]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifierSpec {
    /// POST each event as JSON to `url`.
    Webhook {
        /// Where to POST.
        url: String,
        #[serde(default)]
        /// Extra headers (e.g. an authorisation).
        headers: BTreeMap<String, String>,
        /// Attempts in all (default 6).
        max_attempts: Option<u32>,
    },
    /// Keep an Alertmanager's alerts in step with the alarms.
    Alertmanager {
        /// The Alertmanager's base URL.
        url: String,
        /// humantime duration, default 1m.
        resend: Option<String>,
    },
}

impl NotifierSpec {
    /// Builds the notifier.
    pub fn build(&self) -> Result<Arc<dyn Notifier>, NotifyError> {
        let check_url = |url: &str| {
            reqwest::Url::parse(url)
                .map_err(|e| NotifyError::Config(format!("url {url:?}: {e}")))
                .map(|_| ())
        };
        Ok(match self {
            NotifierSpec::Webhook { url, headers, max_attempts } => {
                check_url(url)?;
                let mut retry = webhook::RetryPolicy::default();
                if let Some(n) = max_attempts {
                    retry.max_attempts = (*n).max(1);
                }
                Arc::new(webhook::Webhook::new(url, headers.clone(), retry))
            }
            NotifierSpec::Alertmanager { url, resend } => {
                check_url(url)?;
                let resend = match resend {
                    Some(s) => parse_duration(s)?,
                    None => Duration::from_secs(60),
                };
                Arc::new(alertmanager::Alertmanager::new(
                    url,
                    resend,
                    webhook::RetryPolicy::default(),
                ))
            }
        })
    }
}

/// A notifier duration: the shared syntax (`procwatch_model::duration`: `500ms`, `10s`, `1m`,
/// `1h30m`), or a bare number of seconds; more than 0.
fn parse_duration(s: &str) -> Result<Duration, NotifyError> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        // A bare number is seconds here (it always was).
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            procwatch_model::duration::parse(s).map_err(|e| NotifyError::Config(e.to_string()))?
        }
    };
    if d.is_zero() {
        return Err(NotifyError::Config(format!("duration {s:?} must be more than 0")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_tables_parse() {
        #[derive(Deserialize)]
        struct File {
            notifiers: Vec<NotifierSpec>,
        }
        let f: File = toml::from_str(
            r#"
            [[notifiers]]
            type = "webhook"
            url = "http://127.0.0.1:1/hook"
            headers = { Authorization = "Bearer x" }
            [[notifiers]]
            type = "alertmanager"
            url = "http://127.0.0.1:9093"
            resend = "30s"
            "#,
        )
        .unwrap();
        assert_eq!(f.notifiers.len(), 2);
        assert!(
            matches!(&f.notifiers[0], NotifierSpec::Webhook { headers, .. } if headers["Authorization"] == "Bearer x")
        );
        for n in &f.notifiers {
            n.build().unwrap();
        }
        let bad = NotifierSpec::Webhook {
            url: "not a url".into(),
            headers: BTreeMap::new(),
            max_attempts: None,
        };
        assert!(bad.build().is_err());
        assert!(toml::from_str::<File>("[[notifiers]]\ntype = \"pager\"\nurl = \"x\"").is_err());
        assert!(toml::from_str::<File>(
            "[[notifiers]]\ntype = \"webhook\"\nurl = \"http://a\"\nuri = 1"
        )
        .is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("10 s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    }
}
