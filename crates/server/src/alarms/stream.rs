//! `GET /api/v1/alarms/stream`: the alarm transitions as Server-Sent Events (see the module
//! documentation of [`crate::alarms`] for the protocol).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use procwatch_model::AlarmEvent;

use crate::error::ApiError;
use crate::AppState;

/// Keep-alive comment period of the stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse_event(boot: &str, seq: u64, ev: &AlarmEvent) -> Event {
    Event::default()
        .event("alarm")
        .id(format!("{boot}-{seq}"))
        .json_data(ev)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

/// What the live part of a stream carries.
enum Live {
    Alarm(u64, AlarmEvent),
    /// The client fell behind the alarm channel: the stream is cut (it reconnects, replays).
    Lagged,
    Directive(procwatch_model::directive::DirectiveRecord),
}

fn directive_event(d: &procwatch_model::directive::DirectiveRecord) -> Event {
    Event::default()
        .event("directive")
        .json_data(d)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

/// `GET /api/v1/alarms/stream`.
///
/// At most `max_streams` streams are open at once (each holds a connection and a subscriber):
/// past it the answer is 503 with `Retry-After`, counted as `limit_breaches{reason="streams"}`.
pub(super) async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(permit) = st.stream_permits.clone().try_acquire_owned() else {
        st.metrics.limit_breach("streams");
        let mut resp = ApiError::Busy(format!(
            "{} alarm streams are open, the most this server allows (max_streams); retry later",
            st.config.max_streams
        ))
        .into_response();
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return resp;
    };
    stream_events(st, headers, permit).into_response()
}

fn stream_events(
    st: AppState,
    headers: HeaderMap,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let alarms = st.alarms.clone();
    let hub = &alarms.hub;
    // Subscribe before reading the log, so nothing falls between the two.
    let rx = hub.subscribe();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (first, after, snapshot) = hub.replay(last, || alarms.active());
    let boot = hub.boot().to_owned();
    // After a snapshot of the active alarms, `event: synced` lists their ids: a client may
    // drop whatever else it believed open (an alarm that closed while it was away).
    let synced = snapshot.then(|| {
        let ids: Vec<&str> = first.iter().map(|(_, e)| e.id.as_str()).collect();
        Event::default()
            .event("synced")
            .id(format!("{boot}-{after}"))
            .data(serde_json::json!({ "active": ids }).to_string())
    });
    let b1 = boot.clone();
    let head = futures::stream::iter(
        first.into_iter().map(move |(seq, ev)| sse_event(&b1, seq, &ev)).chain(synced).map(Ok),
    );
    // A lagging client is cut (take_while on the first error): it reconnects and replays.
    // Directive changes (`event: directive`, no id: not replayed; their log is
    // GET /api/v1/agents/directives) are merged in; a lag there only skips them.
    let alarms_live = tokio_stream::wrappers::BroadcastStream::new(rx).map(|r| match r {
        Ok((seq, ev)) => Live::Alarm(seq, ev),
        Err(_) => Live::Lagged,
    });
    let directives = tokio_stream::wrappers::BroadcastStream::new(st.agents.subscribe())
        .filter_map(|r| futures::future::ready(r.ok().map(Live::Directive)));
    let live = futures::stream::select(alarms_live, directives)
        .take_while(|l| futures::future::ready(!matches!(l, Live::Lagged)))
        .filter_map(move |l| {
            let out = match l {
                Live::Alarm(seq, ev) if seq > after => Some(Ok(sse_event(&boot, seq, &ev))),
                Live::Directive(d) => Some(Ok(directive_event(&d))),
                _ => None,
            };
            futures::future::ready(out)
        });
    // The permit lives as long as the stream.
    let events = head.chain(live).take_until(hub.closed()).map(move |e| {
        let _held = &permit;
        e
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}
