//! The page and its assets: embedded in the binary, linked by content hash, answered with
//! ETags and cache headers.

use std::sync::OnceLock;

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("../../assets/index.html");

/// FNV-1a, 64 bit: a content hash for cache busting and ETags (not for security).
pub fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The page with each `{{name}}` placeholder replaced by `/assets/name?v=<hash>`.
fn index() -> &'static (String, String) {
    static INDEX: OnceLock<(String, String)> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut page = INDEX_TEMPLATE.to_owned();
        for a in ASSETS {
            let url = format!("/assets/{}?v={}", a.name, &content_hash(a.body)[..12]);
            page = page.replace(&format!("{{{{{}}}}}", a.name), &url);
        }
        page = page.replace("{{version}}", env!("CARGO_PKG_VERSION"));
        let etag = format!("\"{}\"", content_hash(page.as_bytes()));
        (page, etag)
    })
}

/// Bytes of the page and all its assets, as served (uncompressed).
pub fn page_weight() -> usize {
    index().0.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

pub(super) async fn serve_index(headers: HeaderMap) -> Response {
    let (page, etag) = index();
    if not_modified(&headers, etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::ETAG, etag.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
                    .to_owned(),
            ),
        ],
        page.clone(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct AssetParams {
    v: Option<String>,
}

pub(super) async fn serve_asset(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<AssetParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (Path(name), Query(p)) = match (path, q) {
        (Ok(n), Ok(p)) => (n, p),
        (Err(e), _) => return ApiError::from(e).into_response(),
        (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::NotFound(format!("no asset {name:?}")).into_response();
    };
    let hash = content_hash(a.body);
    let etag = format!("\"{hash}\"");
    // A versioned URL never changes content; an unversioned one is revalidated.
    let cache = if p.v.as_deref().is_some_and(|v| v.len() >= 12 && hash.starts_with(v)) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if not_modified(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut resp =
        ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, cache)], a.body)
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }

    #[test]
    fn index_links_versioned_assets() {
        let (page, etag) = index();
        for a in ASSETS {
            assert!(page.contains(&format!("/assets/{}?v=", a.name)), "{} not linked", a.name);
        }
        assert!(!page.contains("{{"), "placeholder left in the page");
        assert!(etag.starts_with('"'));
        assert!(page_weight() > page.len());
    }
}
