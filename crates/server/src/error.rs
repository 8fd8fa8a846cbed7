//! `ApiError`: the one error type of every handler, and its JSON body
//! `{"error": "...", "problems": [...]}`.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use procwatch_model::validate::{Problem, Rejection};
use procwatch_store::StoreError;
use serde::Serialize;

/// Everything a handler can answer besides success. Each variant is one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a refused batch or a bad parameter. `problems` names index and field.
    #[error("{message}")]
    BadRequest {
        /// What was refused, for a person.
        message: String,
        /// Each problem found (sample index when in a batch, field, reason).
        problems: Vec<Problem>,
    },
    /// 401: no or wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token of the wrong kind.
    #[error("{0}")]
    Forbidden(String),
    /// 421: a `Host` the server does not answer to (see `crate::guard`).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// 404: unknown host, process or route.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request took longer than the server's request timeout.
    #[error("request timed out")]
    Timeout,
    /// 413: body over the limit, before or after decompression.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a `Content-Encoding` other than gzip or identity, or a write that is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many requests in flight.
    #[error("too many requests in flight; retry later")]
    TooManyRequests,
    /// 429 with a reason: a quota of this client is used up (e.g. a host's series cap).
    #[error("{0}")]
    QuotaExceeded(String),
    /// 507: the server-wide series cap is reached.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 503: the store cannot be reached; the client may retry. The detail (which may hold a
    /// backend's own error body) is logged, never sent to the client.
    #[error("{0}")]
    Unavailable(String),
    /// 503: a server limit that frees up by itself (open streams, charts rendering); the
    /// message says which and is sent as is.
    #[error("{0}")]
    Busy(String),
    /// 500: the details are logged, the body stays generic.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with `message` and no per-field problem.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), problems: Vec::new() }
    }

    /// A bad query or path parameter, named as a problem.
    pub fn bad_param(name: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::BadRequest {
            message: format!("bad parameter {name}: {reason}"),
            problems: vec![Problem { index: None, field: name.to_owned(), reason }],
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests | ApiError::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a client is told when the store fails: the backend's own message (an InfluxDB error
/// body, say) stays in the server's log.
pub const STORE_UNAVAILABLE: &str =
    "store unavailable: the server's log has the cause; retry later (agents keep the batch)";

/// The JSON body of every error.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it, for a person.
    pub error: String,
    /// Per-field problems (index of the sample, field, reason); empty when none.
    pub problems: Vec<Problem>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (error, problems) = match self {
            ApiError::BadRequest { message, problems } => (message, problems),
            ApiError::Internal(detail) => {
                tracing::error!(message = "Internal error.", %detail);
                ("internal error".to_owned(), Vec::new())
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(message = "Store unavailable.", %detail);
                (STORE_UNAVAILABLE.to_owned(), Vec::new())
            }
            other => (other.to_string(), Vec::new()),
        };
        (status, Json(ErrorBody { error, problems })).into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::BadRequest { message: r.message(), problems: r.problems }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidInput(m) => ApiError::bad_request(m),
            StoreError::NotFound(m) => ApiError::NotFound(format!("not found: {m}")),
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Other(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("request body too large: {}", r.body_text()))
        } else {
            ApiError::bad_request(format!("cannot read request body: {}", r.body_text()))
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("bad path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query string: {}", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_errors_do_not_echo_the_backend_body() {
        let secret = "influxdb write: 400 Bad Request: {\"error\":\"partial write: db=secret_db\"}";
        let resp = ApiError::from(StoreError::Unavailable(secret.to_owned())).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("secret_db") && !body.contains("influxdb"), "{body}");
        assert!(body.contains("retry later"), "{body}");
    }
}
