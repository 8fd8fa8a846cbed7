//! Ingestion: `POST /api/v1/samples` and the legacy `PUT /ressources-usage/save-all`.
//!
//! The body is read whole (at most `max_body_bytes` on the wire), gunzipped when
//! `Content-Encoding: gzip` through a decoder that stops at `max_body_bytes` of output (so a
//! gzip bomb costs at most that much memory and answers `413`), parsed and validated by
//! `procwatch_model::validate`, and only a fully valid batch reaches the store. Large bodies are
//! decoded on the blocking pool so they do not stall the async workers.

use std::io::Read;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use procwatch_model::validate::{self, Limits, Rejection};
use procwatch_model::Batch;
use serde::Serialize;

use crate::error::ApiError;
use crate::guard::{self, WriteAuth};
use crate::time::now_ms;
use crate::AppState;

/// Bodies at least this large are decoded on the blocking pool.
const BLOCKING_DECODE_BYTES: usize = 256 * 1024;

/// The answer to an accepted batch: the server's acknowledgement. The agent counts a batch as
/// delivered only on this exact shape with its own `host`, `seq` and sample count (a 2xx from
/// a proxy or captive portal is not an acknowledgement).
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Samples stored (new or replaced).
    pub samples: usize,
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
}

pub async fn post_samples(
    State(st): State<AppState>,
    auth: Option<Extension<WriteAuth>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, Response> {
    let batch = decode(&st, &headers, body, validate::decode_batch)
        .await
        .map_err(IntoResponse::into_response)?;
    if let Some(refused) = admit(&st, auth, &batch) {
        return Err(refused);
    }
    let out = st.store.write_batch(&batch).await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(Json(Accepted {
        samples: out.samples,
        host_totals: out.host_totals,
        seq_gap: out.seq_gap,
        received: batch.samples.len(),
        host: batch.host,
        seq: batch.seq,
    }))
}

/// The seed's answer.
#[derive(Debug, Serialize)]
pub struct LegacyOk {
    #[serde(rename = "Response")]
    pub response: &'static str,
}

pub async fn put_legacy(
    State(st): State<AppState>,
    auth: Option<Extension<WriteAuth>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LegacyOk>, Response> {
    let batch = decode(&st, &headers, body, validate::decode_legacy)
        .await
        .map_err(IntoResponse::into_response)?;
    if let Some(refused) = admit(&st, auth, &batch) {
        return Err(refused);
    }
    st.store.write_batch(&batch).await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(Json(LegacyOk { response: "Ok" }))
}

/// The checks that need the batch's host, before the store is called: the token may write
/// this host (403), the host's rate (429), the series caps (413/429/507); `Some` is the
/// refusal. See [`crate::guard`].
fn admit(st: &AppState, auth: Option<Extension<WriteAuth>>, batch: &Batch) -> Option<Response> {
    let auth = auth.map_or(WriteAuth::AnyHost, |Extension(a)| a);
    if let Err(e) = guard::check_host(&auth, &batch.host) {
        return Some(e.into_response());
    }
    if auth == WriteAuth::AnyHost {
        if let Err(wait) = st.rate.check(&batch.host, std::time::Instant::now()) {
            return Some(crate::limits::too_many(st, "rate_limited", wait));
        }
    }
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
/// (`crate::limits::count_rejection`).
async fn decode(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    decoder: Decoder,
) -> Result<Batch, ApiError> {
    let decoded = match body {
        Ok(body) => decode_body(st, headers, body, decoder).await,
        Err(rejection) => Err(ApiError::from(rejection)),
    };
    if let Err(e) = &decoded {
        crate::limits::count_rejection(st, e);
    }
    decoded
}

async fn decode_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    decoder: Decoder,
) -> Result<Batch, ApiError> {
    let gzip = is_gzip(headers)?;
    let max = st.config.max_body_bytes;
    let limits = Limits {
        max_samples: st.config.max_samples,
        ..Limits::new(now_ms(), st.config.retention.as_millis() as i64)
    };
    let blocking = body.len() >= BLOCKING_DECODE_BYTES || gzip;
    let work = move || -> Result<Batch, ApiError> {
        if gzip {
            let raw = gunzip_bounded(&body, max)?;
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

/// Gunzips `body`, refusing with 413 as soon as the output would pass `max` bytes.
pub fn gunzip_bounded(body: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(max));
    let mut dec = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("invalid gzip body: {e}")))?;
    if out.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "request body over {max} bytes after decompression"
        )));
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
