//! The dashboard's routes over HTTP (in-process): the page, its assets, charts, `/metrics`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use procwatch_model::{Batch, Sample};
use procwatch_store::memory::MemoryStore;
use tower::ServiceExt;

use crate::{AppState, ServerConfig};

async fn app(read_token: Option<&str>) -> (axum::Router, AppState) {
    let config = ServerConfig { read_token: read_token.map(str::to_owned), ..Default::default() };
    app_with(config).await
}

async fn app_with(config: ServerConfig) -> (axum::Router, AppState) {
    let state = AppState::new(Arc::new(MemoryStore::new()), config);
    let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
    let samples = (0..5)
        .map(|i| Sample {
            ts: now - (5 - i) * 10_000,
            process: "java".into(),
            cpu: 10.0 * i as f64,
            cores: 0.2 * i as f64,
            mem: 5.0,
            rss: 1 << 30,
            count: 2,
            extras: None,
        })
        .collect();
    let batch = Batch {
        host: "web-1".into(),
        agent: "test".into(),
        seq: 1,
        interval_ms: 10_000,
        host_totals: vec![],
        samples,
        dropped_samples: 0,
        report: None,
    };
    state.store.write_batch(&batch).await.unwrap();
    (crate::router(state.clone()), state)
}

async fn get(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn page_and_assets_with_cache_headers() {
    let (app, _) = app(Some("secret")).await;
    let (status, h, body) = get(&app, "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "the page is open even with a read token");
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert!(body.contains("<title>procwatch</title>"));
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    let (status, _, _) = get(&app, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let versioned = body
        .split('"')
        .find(|s| s.starts_with("/assets/app.js?v="))
        .expect("the page links app.js")
        .to_owned();
    let (status, h, js) = get(&app, &versioned, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(js.contains("EventSource") || js.contains("text/event-stream"));
    let (_, h, _) = get(&app, "/assets/app.js?v=1", &[]).await;
    assert_eq!(h[header::CACHE_CONTROL], "no-cache", "a wrong version is not immutable");
    let (_, h, _) = get(&app, "/assets/app.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    let (status, h, body) = get(&app, "/assets/nope.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    assert!(body.contains("nope.js"));
}

/// The chart draws the threshold of the alarm rule matching the series: the built-in
/// `cores` rule or a `cores` rule for java gives java's cores chart a threshold line
/// (none with the built-in rule off and no rule).
#[tokio::test]
async fn chart_draws_the_rules_threshold() {
    use procwatch_alarm::{Glob, RuleSet, RuleSpec};
    let threshold_colour = |svg: &str| svg.to_lowercase().contains("#dc2626");
    let uri = "/api/v1/hosts/web-1/processes/java/chart.svg?metric=cores";
    // The built-in cores rule (0.9 cores) is a rule for every process's cores.
    let (builtin, _) = app(None).await;
    let (status, _, svg) = get(&builtin, uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{svg}");
    assert!(threshold_colour(&svg), "the built-in cores rule's threshold is drawn");
    let off = RuleSpec { cores_threshold: Some(0.0), ..RuleSpec::default() };
    let none = RuleSet::from_specs(&off, &[]).unwrap();
    let (plain, _) = app_with(ServerConfig { alarm_rules: none, ..Default::default() }).await;
    let (status, _, svg) = get(&plain, uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{svg}");
    assert!(!threshold_colour(&svg), "no rule for cores: no threshold");
    let rule = RuleSpec {
        process: Some(Glob::new("java")),
        metric: Some(procwatch_model::Metric::Cores),
        threshold: Some(0.5),
        ..RuleSpec::default()
    };
    let rules = RuleSet::from_specs(&RuleSpec::default(), &[rule]).unwrap();
    let (ruled, _) = app_with(ServerConfig { alarm_rules: rules, ..Default::default() }).await;
    let (status, _, svg) = get(&ruled, uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{svg}");
    assert!(threshold_colour(&svg), "the cores rule's threshold is drawn");
}

#[tokio::test]
async fn chart_route() {
    let (app, _) = app(Some("secret")).await;
    let auth = [("authorization", "Bearer secret")];
    let base = "/api/v1/hosts/web-1/processes/java/chart.svg";
    let (status, _, _) = get(&app, base, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "charts are a read route");
    let (status, h, svg) = get(&app, &format!("{base}?window=5m&theme=dark"), &auth).await;
    assert_eq!(status, StatusCode::OK, "{svg}");
    assert_eq!(h[header::CONTENT_TYPE], "image/svg+xml");
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<circle").count(), 5, "one marker per sample");
    let (status, _, body) = get(&app, &format!("{base}?metric=disk"), &auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("metric"));
    let (status, _, _) = get(&app, &format!("{base}?window=1s"), &auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&app, "/api/v1/hosts/web-1/processes/nope/chart.svg", &auth).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_route() {
    let (app, _) = app(None).await;
    let (status, h, text) = get(&app, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(
        text.contains("procwatch_process_cpu_percent{host=\"web-1\",process=\"java\"} 40.0"),
        "{text}"
    );
    assert!(
        text.contains("procwatch_process_rss_bytes{host=\"web-1\",process=\"java\"} 1073741824")
    );
    assert!(text.contains("procwatch_ingested_samples_total{format=\"v1\"} 5"));
    assert!(text.contains("procwatch_refused_batches_total{reason=\"invalid\"} 0"));
    // A refused batch is counted by reason, and the request by route.
    let req = Request::post("/api/v1/samples")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (_, _, text) = get(&app, "/metrics", &[]).await;
    assert!(text.contains("procwatch_refused_batches_total{reason=\"invalid\"} 1"), "{text}");
    assert!(text.contains(
        "procwatch_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/samples\",status=\"400\"} 1"
    ));
}
