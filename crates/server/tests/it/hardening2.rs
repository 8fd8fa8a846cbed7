//! Hardening, round 2 (issue 13), the HTTP layer: each finding reproduced against the real
//! server on 127.0.0.1:0 over real sockets; the server stays healthy and nothing stored
//! changes. See RELIABILITY.md, "Hardening, round 2 (HTTP layer)".

use std::sync::Arc;
use std::time::Duration;

use procwatch_model::Sample;
use procwatch_server::ServerConfig;
use procwatch_store::memory::MemoryStore;
use serde_json::Value;

use crate::util::*;

/// A generous deadline for "answers at all" (hangs are what is tested, not speed).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What the store holds, as the API shows it.
async fn snapshot(app: &TestApp) -> Value {
    let (status, usage) = app.get_json("/api/v1/usage?window=1h").await;
    assert_eq!(status, 200);
    usage["rows"].clone()
}

async fn assert_healthy(app: &TestApp, what: &str) {
    let get = app.client.get(app.url("/healthz")).send();
    let resp = tokio::time::timeout(ANSWER_WITHIN, get).await;
    let resp = resp.unwrap_or_else(|_| panic!("{what}: /healthz did not answer"));
    assert_eq!(resp.unwrap().status(), 200, "{what}: healthz");
}

async fn memory_app(config: ServerConfig) -> TestApp {
    spawn_app_with(Arc::new(MemoryStore::new()), config).await
}

/// Finding 1: a client-chosen method or path never becomes a label value.
#[tokio::test]
async fn request_labels_stay_a_closed_set() {
    let app = memory_app(ServerConfig::default()).await;
    let _ = app.metrics_text().await;
    let before = app.metrics_text().await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let url = app.url(&format!("/nowhere/{i}/x{i}"));
        let resp = app.client.request(method, url).send().await.unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    for i in 0..100 {
        let _ = app.client.get(app.url(&format!("/api/v1/hosts/h{i}/totals"))).send().await;
    }
    let after = app.metrics_text().await;
    assert!(!after.contains("FOO"), "a client method became a label value");
    assert!(!after.contains("/nowhere"), "a client path became a label value");
    let series = |t: &str| {
        t.lines().filter(|l| l.starts_with("procwatch_http_request_duration_seconds_count")).count()
    };
    // The closed set: methods × matched routes (or `unmatched`) × statuses seen.
    assert!(series(&after) <= series(&before) + 4, "{} -> {}", series(&before), series(&after));
    assert!(
        after.contains("method=\"other\",route=\"unmatched\",status=\"404\""),
        "unknown methods are `other`"
    );
    assert!(after.len() < before.len() + 16 * 1024, "{} -> {}", before.len(), after.len());
    assert_healthy(&app, "labels").await;
    app.stop().await;
}

fn huge_batch(process: &str, cores: f64) -> procwatch_model::Batch {
    let now = now_ms();
    let samples: Vec<Sample> = (0..5)
        .map(|i| Sample {
            ts: now - (5 - i) * 10_000,
            process: process.into(),
            cpu: 50.0,
            cores,
            mem: 5.0,
            rss: 1 << 20,
            count: 1,
            extras: None,
        })
        .collect();
    batch("web-1", 1, samples)
}

/// Characters XML 1.0 forbids in a document.
fn xml_invalid(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Finding 3 (and the U+FFFF low): huge numbers reach the chart and it answers at once.
#[tokio::test]
async fn chart_with_huge_numbers_answers_and_stays_valid_xml() {
    let app = memory_app(ServerConfig::default()).await;
    let (status, body) = app.post_batch(&huge_batch("big\u{ffff}one", 1.7e308)).await;
    assert_eq!(status, 200, "{body}");
    let before = snapshot(&app).await;
    let base = "/api/v1/hosts/web-1/processes/big%EF%BF%BFone/chart.svg";
    let get = |q: &'static str| {
        let url = app.url(&format!("{base}{q}"));
        let client = app.client.clone();
        async move {
            let resp = tokio::time::timeout(ANSWER_WITHIN, client.get(url).send())
                .await
                .unwrap_or_else(|_| panic!("chart {q} never answered"))
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // Two at once used to freeze both async workers of a 2-core machine.
    let (a, b) = tokio::join!(get("?threshold=1.7e308"), get("?metric=cores&threshold=1.7e308"));
    for (status, body) in [a, b] {
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("threshold"), "{body}");
    }
    for q in ["?threshold=inf", "?threshold=NaN", "?threshold=-1", "?horizon=100000d"] {
        assert_eq!(get(q).await.0, 400, "{q}");
    }
    // A stored 1.7e308 (a valid sample) is drawn at the axis cap, as a valid document.
    for q in ["?metric=cores", "?metric=cpu", "?metric=cores&threshold=8"] {
        let (status, svg) = get(q).await;
        assert_eq!(status, 200, "{q}: {svg}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{q}");
        let bad: Vec<char> = svg.chars().filter(|c| xml_invalid(*c)).collect();
        assert!(bad.is_empty(), "{q}: XML-invalid characters {bad:?} in the SVG");
    }
    assert!(breaches(&app.metrics_text().await, "bad_number") >= 2);
    assert_healthy(&app, "chart").await;
    assert_eq!(snapshot(&app).await, before, "stored data changed");
    app.stop().await;
}

/// Finding 5: one capped glob; a pathological pattern is refused, a legal worst case answers.
#[tokio::test]
async fn pathological_globs_are_refused_and_healthz_answers() {
    let app = memory_app(ServerConfig::default()).await;
    let now = now_ms();
    for chunk in 0..10 {
        let samples = (0..2_000)
            .map(|i| sample(now - 1_000, &format!("p{}-{}", chunk, "a".repeat(i % 200)), 1.0, 1.0))
            .collect();
        app.store.write_batch(&batch(&format!("h{chunk}"), 1, samples)).await.unwrap();
    }
    let before = app.metrics_text().await;
    let url = |q: &str| app.url(&format!("/api/v1/usage?window=1h&metrics=cpu&stats=last&{q}"));
    let stars = "*".repeat(60_000);
    let send = app.client.get(url(&format!("process={stars}"))).send();
    let health = app.client.get(app.url("/healthz")).send();
    let (resp, health) = tokio::join!(send, health);
    let resp = resp.unwrap();
    assert_eq!(health.unwrap().status(), 200);
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["problems"][0]["field"], "process", "{body}");
    let many = "*a".repeat(17);
    assert_eq!(app.client.get(url(&format!("host={many}"))).send().await.unwrap().status(), 400);
    // The worst legal pattern (16 wildcards, near-misses everywhere) over 20,000 series.
    let worst = format!("{}b", "*a".repeat(15));
    let resp = tokio::time::timeout(
        ANSWER_WITHIN,
        app.client.get(url(&format!("process={worst}"))).send(),
    )
    .await
    .expect("the worst legal glob answers")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["rows"].as_array().unwrap().len(), 0);
    // `?` is one character, the same in queries as in alarm rules.
    let (status, body) = app.get_json("/api/v1/usage?window=1h&host=h?&process=p3-a").await;
    assert_eq!(status, 200);
    assert_eq!(body["rows"].as_array().unwrap().len(), 1, "{body}");
    let after = app.metrics_text().await;
    assert_eq!(breaches(&after, "glob"), breaches(&before, "glob") + 2);
    assert_healthy(&app, "globs").await;
    app.stop().await;
}

/// Finding 13: CSRF and DNS rebinding.
#[tokio::test]
async fn cross_site_writes_and_rebinding_are_refused() {
    let config = ServerConfig { allowed_hosts: vec!["mon.internal".into()], ..Default::default() };
    let app = memory_app(config).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let body =
        serde_json::to_vec(&batch("csrf", 1, vec![sample(now_ms(), "p", 1.0, 1.0)])).unwrap();
    let post = |ct: Option<&str>, host: Option<String>, origin: Option<String>| {
        let mut r = app.client.post(app.url("/api/v1/samples")).body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        if let Some(h) = host {
            r = r.header("host", h);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("JSON error body");
            (status, body)
        }
    };
    // What a cross-site form or a no-cors fetch can send: refused before anything is stored.
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let (status, body) = post(ct, None, None).await;
        assert_eq!(status, 415, "{ct:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("application/json"), "{body}");
    }
    let evil = Some("http://evil.example".to_owned());
    let (status, body) = post(Some("application/json"), None, evil).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cross-origin"), "{body}");
    // DNS rebinding: the page's own name in Host, on a read and on a write.
    let rebound = Some(format!("evil.example:{port}"));
    let (status, body) = post(Some("application/json"), rebound.clone(), None).await;
    assert_eq!(status, 421, "{body}");
    let resp = app
        .client
        .get(app.url("/api/v1/hosts"))
        .header("host", rebound.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);
    let (status, hosts) = app.get_json("/api/v1/hosts").await;
    assert_eq!(status, 200);
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 0, "nothing was stored: {hosts}");
    // What legitimate clients send still works: same origin, localhost, the allow-list.
    let own = Some(format!("http://{addr}"));
    let (status, body) = post(Some("application/json; charset=utf-8"), None, own).await;
    assert_eq!(status, 200, "{body}");
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), "mon.internal".to_owned()] {
        let (status, body) = post(Some("application/json"), Some(host.clone()), None).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // The legacy client (python-requests `json=`) sends application/json.
    let legacy = serde_json::json!({"ipaddress": "10.0.0.5", "data": [
        {"timestamp": now_ms() as f64 / 1000.0, "value": 1.0, "process_name": "x", "type_data": "cpu"}]});
    let resp = app
        .client
        .put(app.url("/ressources-usage/save-all"))
        .json(&legacy)
        .header("user-agent", "python-requests/2.31.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = app.metrics_text().await;
    assert_eq!(breaches(&text, "not_json"), 3);
    assert_eq!(breaches(&text, "cross_origin"), 1);
    assert_eq!(breaches(&text, "bad_host"), 2);
    assert_healthy(&app, "csrf").await;
    app.stop().await;
}

/// Lows: SSE streams are capped; a path that does not parse is a JSON 400; the page
/// forbids framing; a non-loopback listener with tokens but without TLS warns.
#[tokio::test]
async fn streams_are_capped_and_rejections_are_json() {
    let config = ServerConfig { max_streams: 2, ..Default::default() };
    let app = memory_app(config).await;
    let open = || app.client.get(app.url("/api/v1/alarms/stream")).send();
    let s1 = open().await.unwrap();
    let s2 = open().await.unwrap();
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let third = open().await.unwrap();
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("max_streams"), "{body}");
    assert_eq!(breaches(&app.metrics_text().await, "streams"), 1);
    drop(s1);
    // The closed stream's slot comes back (the server notices the closed connection).
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let s = open().await.unwrap();
        if s.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a stream slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A path segment that is not UTF-8.
    for path in ["/api/v1/hosts/%FF/totals", "/api/v1/hosts/%FF/processes/p/history"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.expect("a JSON error");
        assert!(body["error"].as_str().unwrap().contains("path"), "{body}");
    }
    let resp = app.client.get(app.url("/assets/app.js?v=1&v=2")).send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("json"));
    let resp = app.client.get(app.url("/")).send().await.unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_healthy(&app, "streams").await;
    drop(s2);
    app.stop().await;
}

/// Reads until the server closes the connection; `false` if it is still open at the deadline.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut buf)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

/// Polls `/metrics` until `reason` has been counted `want` times.
async fn wait_breaches(app: &TestApp, reason: &str, want: u64) -> String {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let text = app.metrics_text().await;
        if breaches(&text, reason) >= want {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reason} never reached {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finding 2: a client that sends only the HTTP/2 preface (or nothing), and an HTTP/2
/// connection left idle after its request, are closed and counted.
#[tokio::test]
async fn preface_only_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let config = ServerConfig {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let app = memory_app(config).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut preface = tokio::net::TcpStream::connect(&addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(closed_by_server(&mut preface).await, "a preface-only HTTP/2 client stays connected");
    assert!(closed_by_server(&mut silent).await, "a silent client stays connected");
    // The silent one sent nothing; the preface-only one started a head that never came.
    wait_breaches(&app, "first_request_timeout", 1).await;
    wait_breaches(&app, "header_timeout", 1).await;

    // HTTP/2 with prior knowledge: one request, then idle.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{addr}/healthz")).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    // The server ends the idle connection: the driver returns.
    let ended = tokio::time::timeout(ANSWER_WITHIN, driver).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stays open");
    let text = wait_breaches(&app, "idle_timeout", 1).await;
    assert!(text.contains("procwatch_connections_open "), "{text}");
    assert_healthy(&app, "idle").await;
    app.stop().await;
}

/// Finding 2: idle sockets above the cap are refused and counted; a health check and a client
/// connected before still get answers.
#[tokio::test]
async fn connection_cap_keeps_room_for_health_checks_and_connected_clients() {
    let config = ServerConfig { max_connections: 8, ..Default::default() };
    let app = memory_app(config).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    // An agent connected before the flood (its keep-alive connection is reused).
    let agent = reqwest::Client::new();
    assert_eq!(agent.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let headroom = procwatch_server::serve::headroom(8) as u64;
    // Past the cap and its headroom, connections are closed as soon as they are accepted.
    let text = {
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            let t = agent.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
            if breaches(&t, "connection_limit") >= 40 - 7 {
                break t;
            }
            assert!(tokio::time::Instant::now() < deadline, "connections past the cap not refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(breaches(&text, "connection_limit") >= 40 - 7 - headroom);
    // A health check on a new connection gets through (the headroom recycles quickly).
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let fresh = reqwest::Client::new();
        match fresh.get(app.url("/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "/healthz never got through");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connected agent is still served.
    let before = snapshot(&app).await;
    let b = batch("agent", 1, vec![sample(now_ms(), "p", 1.0, 1.0)]);
    let resp = agent.post(app.url("/api/v1/samples")).json(&b).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_ne!(snapshot(&app).await, before);
    drop(flood);
    app.stop().await;
}

/// Low: a non-loopback listener with tokens but without TLS is warned about at startup.
#[test]
fn tokens_without_tls_off_loopback_are_warned_about() {
    let with_tokens = ServerConfig { write_token: Some("w".into()), ..Default::default() };
    let mut st = procwatch_server::AppState::new(Arc::new(MemoryStore::new()), with_tokens);
    assert!(procwatch_server::exposure_warning(&st).is_some_and(|w| w.contains("TLS")));
    st.loopback = true;
    assert!(procwatch_server::exposure_warning(&st).is_none(), "loopback stays quiet");
    let open = procwatch_server::AppState::new(Arc::new(MemoryStore::new()), Default::default());
    assert!(procwatch_server::exposure_warning(&open).is_none(), "no tokens: --insecure's rule");
}

/// Finding 7: bodies in flight share a byte budget; past it a write is 429 with
/// `Retry-After`, and the budget comes back when the holders go.
#[tokio::test]
async fn body_bytes_in_flight_are_bounded() {
    use tokio::io::AsyncWriteExt;
    // The budget is at least two bodies of the largest size: 2 × 64 KiB.
    let config = ServerConfig {
        max_body_bytes: 64 * 1024,
        max_inflight_bytes: 1,
        ingest_rate: 0.0,
        ..Default::default()
    };
    let app = memory_app(config).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = "POST /api/v1/samples HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                    content-type: application/json\r\ncontent-length: 65536\r\n\r\n{";
        s.write_all(head.as_bytes()).await.unwrap();
        held.push(s);
    }
    let post = |body: Vec<u8>| {
        app.client
            .post(app.url("/api/v1/samples"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Once both holders have their share, a third body is refused.
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let refused = loop {
        let resp = post(b"{".to_vec()).await.unwrap();
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.status(), 400, "an invalid body while the budget lasts");
        assert!(tokio::time::Instant::now() < deadline, "the byte budget never ran out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(breaches(&app.metrics_text().await, "inflight_bytes"), 1);
    drop(held);
    let b = serde_json::to_vec(&batch("budget", 1, vec![sample(now_ms(), "p", 1.0, 1.0)])).unwrap();
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let status = post(b.clone()).await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(tokio::time::Instant::now() < deadline, "the budget never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_healthy(&app, "budget").await;
    app.stop().await;
}
