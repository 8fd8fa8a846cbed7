//! Browser-borne attacks: CSRF and DNS rebinding (issue 13, finding 13).
//!
//! - **Host.** When the server listens on a loopback address, a request whose `Host` (or
//!   HTTP/2 `:authority`) names anything but `localhost`, a loopback IP (`127.0.0.1`, `[::1]`,
//!   any `127.x.y.z`) or a name of `allowed_hosts` (any port) is answered `421`. A web page
//!   that rebinds its own name to 127.0.0.1 therefore cannot read or write the server. A request
//!   without any host (HTTP/1.0) is let through: browsers always send one.
//! - **Origin.** A state-changing request (any method but GET, HEAD, OPTIONS) that carries an
//!   `Origin` other than the server's own (same host and port as `Host`) is answered `403`:
//!   browsers send `Origin` on cross-site POST/PUT, tools and agents send none.
//! - **Content-Type.** Ingestion needs `Content-Type: application/json` (parameters such as
//!   `charset` allowed) or `415`: a cross-site HTML form can only send `text/plain`,
//!   `multipart/form-data` or `application/x-www-form-urlencoded` without a CORS preflight.
//!   The agent, the legacy client (python-requests `json=`) and `loadgen` send
//!   `application/json`.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use procwatch_model::text::truncate;

use crate::error::ApiError;
use crate::AppState;

/// The host part (no port, no brackets) of an authority `host[:port]` / `[v6]:port`.
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// Whether `authority` is acceptable on a loopback-bound server.
pub fn host_allowed(authority: &str, allow: &[String]) -> bool {
    let host = host_of(authority);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    allow.iter().any(|a| a.eq_ignore_ascii_case(host))
}

/// The authority the client addressed: HTTP/2 `:authority`, else the `Host` header.
fn authority(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers().get(header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Whether `origin` (`scheme://host[:port]`) is the server itself as addressed by `authority`.
pub fn same_origin(origin: &str, authority: Option<&str>) -> bool {
    let Some(authority) = authority else { return false };
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let norm = |a: &str| {
        let a = a.trim().trim_end_matches('/').to_ascii_lowercase();
        let has_port = match a.rsplit_once(':') {
            Some((_, p)) => {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !a.ends_with(']')
            }
            None => false,
        };
        if has_port {
            a
        } else {
            format!("{a}:{default_port}")
        }
    };
    norm(rest) == norm(authority)
}

/// Middleware on every route: the Host and Origin checks of the module doc.
pub async fn browser_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let auth = authority(&req);
    if st.loopback {
        if let Some(a) = &auth {
            if !host_allowed(a, &st.config.allowed_hosts) {
                st.metrics.limit_breach("bad_host");
                return ApiError::MisdirectedRequest(format!(
                    "unexpected Host {:?}: this server listens on loopback and answers only \
                     localhost, loopback addresses and the names of allowed_hosts \
                     (--allowed-host)",
                    truncate(a, 100)
                ))
                .into_response();
            }
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            if !same_origin(&origin, auth.as_deref()) {
                st.metrics.limit_breach("cross_origin");
                return ApiError::Forbidden(format!(
                    "cross-origin request from {:?} refused: state-changing requests must come \
                     from the server's own origin or from a client that sends no Origin",
                    truncate(&origin, 100)
                ))
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Refuses a write whose `Content-Type` is not JSON (415).
pub fn require_json(req: &Request) -> Result<(), ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()).unwrap_or(b"");
    let ct = String::from_utf8_lossy(ct);
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "Content-Type {:?} not accepted: send the body as Content-Type: application/json",
        truncate(&ct, 100)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = vec![];
        for ok in ["localhost", "localhost:8000", "127.0.0.1:1", "[::1]:80", "[::1]", "127.3.4.5"] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8000", "10.0.0.1:80", "localhost.evil:80", ""] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        assert!(host_allowed("mon.internal:8000", &["MON.internal".to_owned()]));
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:8000", Some("127.0.0.1:8000")));
        assert!(same_origin("http://localhost", Some("localhost:80")));
        assert!(same_origin("https://[::1]:9", Some("[::1]:9")));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:8000")));
        assert!(!same_origin("http://127.0.0.1:8001", Some("127.0.0.1:8000")));
        assert!(!same_origin("null", Some("127.0.0.1:8000")));
        assert!(!same_origin("http://127.0.0.1:8000", None));
    }
}
