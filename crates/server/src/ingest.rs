//! Ingestion: `POST /api/v1/samples` and the legacy `PUT /ressources-usage/save-all`.
//!
//! The body is read as a stream (at most `max_body_bytes` on the wire; a larger
//! `Content-Length` is refused before a byte is read), gunzipped when `Content-Encoding: gzip`
//! through a decoder that stops at `max_body_bytes` of output and at [`MAX_GZIP_RATIO`] times
//! the compressed size plus [`GZIP_SLACK`] (so a 16 KB gzip bomb costs about 2.6 MiB, not
//! 16 MiB, and answers `413`), parsed and validated by `procwatch_model::validate` (which
//! diagnoses a refused body item by item, without a `Value` tree of the whole), and only a
//! fully valid batch reaches the store. Large bodies are decoded on the blocking pool so they
//! do not stall the async workers.
//!
//! Memory in flight is bounded in bytes, not only in requests: every byte of body held, on
//! the wire and after gunzip, takes its share of `max_inflight_bytes` (64 MiB by default, at
//! least twice `max_body_bytes`) as it arrives; a request that would pass it is answered 429
//! with `Retry-After: 1` (agents retry) and counted as `limit_breaches{reason="inflight_bytes"}`.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use procwatch_model::validate::{self, Limits, Rejection};
use procwatch_model::Batch;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::{self, WriteAuth};
use crate::error::ApiError;
use crate::AppState;

/// Bodies at least this large are decoded on the blocking pool.
const BLOCKING_DECODE_BYTES: usize = 256 * 1024;

/// A gzipped body may grow at most this many times its compressed size (plus
/// [`GZIP_SLACK`]): agents' JSON compresses about 10x, a bomb of zeros about 1000x.
pub const MAX_GZIP_RATIO: usize = 100;
/// Decompressed bytes always allowed besides the ratio.
pub const GZIP_SLACK: usize = 1 << 20;

/// A request's share of `max_inflight_bytes`, taken in KiB as its body grows.
pub struct Budget {
    sem: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    kib: usize,
}

impl Budget {
    /// An empty budget drawing on `sem` (one permit per KiB); the permits held return to it
    /// on drop.
    pub fn new(sem: Arc<Semaphore>) -> Self {
        Budget { sem, held: None, kib: 0 }
    }

    /// Makes sure `bytes` in total are covered; `TooManyRequests` when the server's budget is
    /// spent.
    pub fn cover(&mut self, bytes: usize) -> Result<(), ApiError> {
        let need = bytes.div_ceil(1024);
        if need <= self.kib {
            return Ok(());
        }
        let take = |n: usize| {
            let n = u32::try_from(n).map_err(|_| ApiError::TooManyRequests)?;
            self.sem.clone().try_acquire_many_owned(n).map_err(|_| ApiError::TooManyRequests)
        };
        // At least 256 KiB more at a time (fewer semaphore calls on a growing body), else
        // exactly what is missing.
        let permit = take((need - self.kib).max(256)).or_else(|_| take(need - self.kib))?;
        self.kib += permit.num_permits();
        match &mut self.held {
            Some(h) => h.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

/// The answer to an accepted batch: the server's acknowledgement. The agent counts a batch as
/// delivered only on this exact shape with its own `host`, `seq` and sample count (a 2xx from
/// a proxy or captive portal is not an acknowledgement).
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Samples stored (new or replaced).
    pub samples: usize,
    /// Host-total rows stored.
    pub host_totals: usize,
    /// Batches missing between the previous `seq` of this host and this one.
    pub seq_gap: u64,
    /// Samples the batch held, all taken care of (`samples` may be fewer: a sample older than
    /// the store's retention floor is dropped, not stored). The agent checks this count.
    pub received: usize,
    /// The batch's `host`, echoed.
    pub host: String,
    /// The batch's `seq`, echoed.
    pub seq: u64,
    /// A directive for the agent (control channel, [`crate::agents`]): present when the batch
    /// carries a report and the server holds a newer directive for its host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directive: Option<procwatch_model::directive::Directive>,
}

/// `POST /api/v1/samples`: validates, admits (host token, rate, governor fold, series caps) and writes
/// one batch; answers [`Accepted`] only once the write is durable.
pub async fn post_samples(
    State(st): State<AppState>,
    auth: Option<Extension<WriteAuth>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, Response> {
    let mut batch = decode(&st, &headers, body, validate::decode_batch).await?;
    // What the agent sent (it checks this count), before the governor folds the tail.
    let received = batch.samples.len();
    if let Some(refused) = admit(&st, auth, &mut batch) {
        return Err(refused);
    }
    let out = st.store.write_batch(&batch).await.map_err(|e| ApiError::from(e).into_response())?;
    let (directive, tracked) = st.agents.after_batch(&batch, st.config.clock.now_ms());
    if !tracked {
        st.metrics.limit_breach("agents");
    }
    Ok(Json(Accepted {
        samples: out.samples,
        host_totals: out.host_totals,
        seq_gap: out.seq_gap,
        received,
        host: batch.host,
        seq: batch.seq,
        directive,
    }))
}

/// The seed's answer.
#[derive(Debug, Serialize)]
pub struct LegacyOk {
    /// Always `"OK"` (the seed's answer, field name kept).
    #[serde(rename = "Response")]
    pub response: &'static str,
}

/// `PUT /ressources-usage/save-all`: the seed's payload, joined into one batch and written
/// like `POST /api/v1/samples`; answers [`LegacyOk`] once durable.
pub async fn put_legacy(
    State(st): State<AppState>,
    auth: Option<Extension<WriteAuth>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LegacyOk>, Response> {
    let mut batch = decode(&st, &headers, body, validate::decode_legacy).await?;
    if let Some(refused) = admit(&st, auth, &mut batch) {
        return Err(refused);
    }
    st.store.write_batch(&batch).await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(Json(LegacyOk { response: "Ok" }))
}

/// The checks that need the batch's host, before the store is called: the token may write
/// this host (403), the host's rate (429), then the governor folds the tail
/// ([`crate::governor`]), then the series caps (413/429/507); `Some` is the refusal. See
/// [`crate::guard`].
fn admit(st: &AppState, auth: Option<Extension<WriteAuth>>, batch: &mut Batch) -> Option<Response> {
    let auth = auth.map_or(WriteAuth::AnyHost, |Extension(a)| a);
    if let Err(e) = admission::check_host(&auth, &batch.host) {
        return Some(e.into_response());
    }
    if auth == WriteAuth::AnyHost {
        if let Err(wait) = st.rate.check(&batch.host, st.config.clock.instant()) {
            return Some(crate::limits::too_many(st, "rate_limited", wait));
        }
    }
    st.governor.apply(batch, st.alarms.rules());
    if let Err(b) = st.series.admit(batch, &st.config.series_limits) {
        st.metrics.limit_breach(b.reason);
        tracing::warn!(message = "Batch refused by a series cap.", host = %batch.host, reason = b.reason);
        let err = match b.reason {
            "series_per_batch" => ApiError::PayloadTooLarge(b.message),
            "series_per_host" => ApiError::QuotaExceeded(b.message),
            _ => ApiError::InsufficientStorage(b.message),
        };
        let mut resp = err.into_response();
        if resp.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("60"));
        }
        return Some(resp);
    }
    None
}

type Decoder = fn(&[u8], &Limits) -> Result<Batch, Rejection>;

/// Decodes and validates a body; a refusal caused by a limit is counted
/// (`crate::limits::count_rejection`), a spent byte budget is 429 with `Retry-After`.
async fn decode(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    decoder: Decoder,
) -> Result<Batch, Response> {
    match decode_body(st, headers, body, decoder).await {
        Ok(b) => Ok(b),
        Err(ApiError::TooManyRequests) => {
            Err(crate::limits::too_many(st, "inflight_bytes", std::time::Duration::from_secs(1)))
        }
        Err(e) => {
            crate::limits::count_rejection(st, &e);
            Err(e.into_response())
        }
    }
}

/// Reads the body as it arrives, at most `max` bytes, each covered by `budget`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    budget: &mut Budget,
) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("request body too large: over {max} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let declared = declared.unwrap_or(0) as usize;
    budget.cover(declared)?;
    let mut buf = Vec::with_capacity(declared);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
        let len = buf.len() + chunk.len();
        if len > max {
            return Err(too_large());
        }
        budget.cover(len)?;
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn decode_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    decoder: Decoder,
) -> Result<Batch, ApiError> {
    let gzip = is_gzip(headers)?;
    let max = st.config.max_body_bytes;
    let mut budget = Budget::new(st.body_bytes.clone());
    let body = read_body(headers, body, max, &mut budget).await?;
    let limits = Limits {
        max_samples: st.config.max_samples,
        ..Limits::new(st.config.clock.now_ms(), st.config.retention.as_millis() as i64)
    };
    let blocking = body.len() >= BLOCKING_DECODE_BYTES || gzip;
    let work = move || -> Result<Batch, ApiError> {
        let mut budget = budget;
        if gzip {
            let raw = gunzip_budgeted(&body, max, Some(&mut budget))?;
            drop(body);
            Ok(decoder(&raw, &limits)?)
        } else {
            Ok(decoder(&body, &limits)?)
        }
    };
    if blocking {
        tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        work()
    }
}

fn is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else { return Ok(false) };
    let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match v.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {other:?} not supported: send gzip or no encoding"
        ))),
    }
}

/// Gunzips `body`, refusing with 413 as soon as the output would pass `max` bytes or
/// [`MAX_GZIP_RATIO`] times the input plus [`GZIP_SLACK`].
pub fn gunzip_bounded(body: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    gunzip_budgeted(body, max, None)
}

/// [`gunzip_bounded`], with every output byte (and the input) covered by `budget`.
pub fn gunzip_budgeted(
    body: &[u8],
    max: usize,
    mut budget: Option<&mut Budget>,
) -> Result<Vec<u8>, ApiError> {
    let by_ratio = body.len().saturating_mul(MAX_GZIP_RATIO).saturating_add(GZIP_SLACK);
    let limit = max.min(by_ratio);
    // The first guess of the output's size is covered by the budget before it is allocated.
    let first = body.len().saturating_mul(4).clamp(4096, 1 << 20).min(limit + 1);
    if let Some(b) = budget.as_deref_mut() {
        b.cover(body.len() + first)?;
    }
    let mut out = Vec::with_capacity(first);
    // The body is in memory: the `bufread` decoder reads it in place (the `read` one would
    // wrap it in a 32 KiB buffer), and the output is decoded straight into `out`, no chunk
    // buffer in between (both per request in flight: 96 KiB each before).
    let mut dec = flate2::bufread::MultiGzDecoder::new(body).take(limit as u64 + 1);
    loop {
        if out.len() == out.capacity() {
            // Grow by half, never past the limit (+1 to see that it is crossed).
            let more = (out.len() / 2).max(4096).min(limit + 1 - out.len().min(limit));
            if let Some(b) = budget.as_deref_mut() {
                b.cover(body.len() + out.len() + more)?;
            }
            out.reserve_exact(more.max(1));
        }
        let start = out.len();
        // Zeroed (so made resident) a bounded step at a time, not the whole spare capacity.
        out.resize(out.capacity().min(start + (256 << 10)), 0);
        let n = match dec.read(&mut out[start..]) {
            Ok(n) => n,
            Err(e) => return Err(ApiError::bad_request(format!("invalid gzip body: {e}"))),
        };
        out.truncate(start + n);
        if n == 0 {
            break;
        }
        if out.len() > limit {
            let why = if limit < max {
                format!("more than {MAX_GZIP_RATIO} times its compressed size")
            } else {
                format!("over {max} bytes")
            };
            return Err(ApiError::PayloadTooLarge(format!(
                "request body {why} after decompression"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_round_trip_and_bounds() {
        let data = vec![b'x'; 10_000];
        assert_eq!(gunzip_bounded(&gz(&data), 10_000).unwrap(), data);
        assert!(matches!(gunzip_bounded(&gz(&data), 9_999), Err(ApiError::PayloadTooLarge(_))));
        assert!(matches!(gunzip_bounded(b"not gzip", 100), Err(ApiError::BadRequest { .. })));
        // A bomb stops at the ratio, long before the size limit.
        let bomb = gz(&vec![0u8; 8 << 20]);
        let err = gunzip_bounded(&bomb, 16 << 20).unwrap_err();
        assert!(err.to_string().contains("times its compressed size"), "{err}");
    }

    #[test]
    fn encodings() {
        let mut h = HeaderMap::new();
        assert!(!is_gzip(&h).unwrap());
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(is_gzip(&h).unwrap());
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(is_gzip(&h), Err(ApiError::UnsupportedMediaType(_))));
    }
}
