//! Hardening: every limit refused with its status and counted in `/metrics`, the server healthy
//! and the stored data unchanged afterwards; a wrong or missing token is 401 on every read and
//! write route of the route table; HTTPS round trip with a certificate made at test time.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use procwatch_server::{Access, ServerConfig, ROUTES};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

/// Routes of the merged routers that serve the static dashboard shell (no data): open by design.
const STATIC_SHELL: [&str; 3] = ["/", "/index.html", "/assets/{name}"];

fn concrete(path: &str) -> String {
    path.replace("{host}", "h1").replace("{process}", "p1").replace("{name}", "app.js")
}

fn all_routes() -> Vec<(Method, String, Access)> {
    let mut v: Vec<_> =
        ROUTES.iter().map(|r| (r.method.clone(), r.path.to_owned(), r.access)).collect();
    for (m, p) in procwatch_server::openapi::MERGED_ROUTES {
        if !STATIC_SHELL.contains(p) {
            v.push((Method::from_bytes(m.as_bytes()).unwrap(), (*p).to_owned(), Access::Read));
        }
    }
    v
}

async fn spawn_sqlite(config: ServerConfig) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    (spawn_app_with(Arc::new(store), config).await, dir)
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_on_every_route() {
    let config = ServerConfig {
        write_token: Some("w-secret".into()),
        read_token: Some("r-secret".into()),
        admin_token: Some("a-secret".into()),
        ..ServerConfig::default()
    };
    let app = spawn_app_with(Arc::new(procwatch_store::memory::MemoryStore::new()), config).await;
    let routes = all_routes();
    let guarded = routes.iter().filter(|r| r.2 != Access::Open).count();
    assert!(guarded >= 15, "the table lost routes: {guarded}");
    for (method, path, access) in &routes {
        if *access == Access::Open {
            continue;
        }
        let url = app.url(&concrete(path));
        for auth in [None, Some("Bearer nope"), Some("Basic w-secret"), Some("Bearer r-secret-x")] {
            let mut req = app.client.request(method.clone(), &url).body("{}");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].is_string(), "{method} {path}: JSON error");
        }
        // The right token of the role passes the guard (any answer but 401/403); the one admin
        // route (steering agents) takes the admin token.
        let admin = *method == Method::POST && path == "/api/v1/agents/directives";
        let token = match access {
            _ if admin => "a-secret",
            Access::Write => "w-secret",
            _ => "r-secret",
        };
        let req = app.client.request(method.clone(), &url).bearer_auth(token);
        let req = if *access == Access::Write || admin {
            req.header("content-type", "application/json").body("{}")
        } else {
            req
        };
        let resp = if path.ends_with("/stream") {
            // An SSE stream answers 200 at once and then stays open.
            tokio::time::timeout(Duration::from_secs(5), req.send()).await.unwrap().unwrap()
        } else {
            req.send().await.unwrap()
        };
        assert!(
            ![401, 403].contains(&resp.status().as_u16()),
            "{method} {path}: {}",
            resp.status()
        );
    }
    app.stop().await;
}

/// What the store holds, as the API shows it.
async fn snapshot(app: &TestApp) -> (Value, Value) {
    let (s1, all) = app.get_json("/ressources-usage/get-all-detailed").await;
    let (s2, usage) = app.get_json("/api/v1/usage?window=1h").await;
    assert_eq!((s1, s2), (200, 200));
    (all, usage["rows"].clone())
}

async fn assert_healthy_and_unchanged(app: &TestApp, before: &(Value, Value), what: &str) {
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200, "{what}: healthz");
    let (status, _) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{what}: readyz");
    assert_eq!(&snapshot(app).await, before, "{what}: stored data changed");
}

#[tokio::test]
async fn every_limit_answers_its_status_and_is_counted() {
    let config = ServerConfig {
        max_body_bytes: 64 * 1024,
        max_samples: 50,
        request_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(300),
        ingest_rate: 0.0,
        ..ServerConfig::default()
    };
    let (app, _dir) = spawn_sqlite(config).await;
    let t = now_ms();
    let (status, _) =
        app.post_batch(&batch("web-1", 1, vec![sample(t, "postgres", 5.0, 2.0)])).await;
    assert_eq!(status, 200);
    let before = snapshot(&app).await;
    let post = |body: Vec<u8>, gz: bool| {
        let mut req = app
            .client
            .post(app.url("/api/v1/samples"))
            .header("content-type", "application/json")
            .body(body);
        if gz {
            req = req.header("content-encoding", "gzip");
        }
        req
    };

    // 413: body on the wire.
    let n = app.breaches("body_too_large").await;
    let resp = post(vec![b' '; 65 * 1024], false).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(app.breaches("body_too_large").await, n + 1);
    assert_healthy_and_unchanged(&app, &before, "body").await;

    // 413: a gzip bomb (2 KiB on the wire, 10 MiB inflated).
    let n = app.breaches("decompressed_too_large").await;
    let bomb = gzip(&vec![b' '; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let resp = post(bomb, true).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(app.breaches("decompressed_too_large").await, n + 1);
    assert_healthy_and_unchanged(&app, &before, "gzip bomb").await;

    // 400: too many samples, naming the field.
    let n = app.breaches("too_many_samples").await;
    let many: Vec<_> = (0..51).map(|i| sample(t, &format!("p{i}"), 1.0, 1.0)).collect();
    let (status, err) = app.post_batch(&batch("web-1", 2, many)).await;
    assert_eq!((status, err["problems"][0]["field"].as_str()), (400, Some("samples")));
    assert_eq!(app.breaches("too_many_samples").await, n + 1);
    assert_healthy_and_unchanged(&app, &before, "samples").await;

    // 400: names too long (host 254 bytes; process 256 bytes).
    let n = app.breaches("name_too_long").await;
    let (status, err) =
        app.post_batch(&batch(&"h".repeat(254), 3, vec![sample(t, "x", 1.0, 1.0)])).await;
    assert_eq!((status, err["problems"][0]["field"].as_str()), (400, Some("host")));
    let (status, err) =
        app.post_batch(&batch("web-1", 3, vec![sample(t, &"p".repeat(256), 1.0, 1.0)])).await;
    assert_eq!((status, err["problems"][0]["field"].as_str()), (400, Some("process")));
    assert_eq!(app.breaches("name_too_long").await, n + 2);
    assert_healthy_and_unchanged(&app, &before, "names").await;

    // 408: a body that trickles in slower than the request timeout.
    let n = app.breaches("request_timeout").await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /api/v1/samples HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"ho")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("the server answers a slow body")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert_eq!(app.breaches("request_timeout").await, n + 1);

    // Slowloris: a request head that never ends is cut after header_read_timeout.
    let n = app.breaches("header_timeout").await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection of a slow head is closed");
    assert!(buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"));
    assert_eq!(app.breaches("header_timeout").await, n + 1);
    assert_healthy_and_unchanged(&app, &before, "slow clients").await;
    app.stop().await;
}

/// A request whose body never finishes: holds a permit until the server's timeout.
async fn hold_request(addr: &str, method: &str, path: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn rate_limit_is_429_with_retry_after() {
    // Time stands still (no refill between the burst's requests however slow the machine is)
    // until the test moves it past the Retry-After.
    let clock = Arc::new(procwatch_model::clock::ManualClock::new(now_ms()));
    let config = ServerConfig {
        ingest_rate: 2.0,
        ingest_burst: 3,
        clock: clock.clone(),
        ..ServerConfig::default()
    };
    let (app, _dir) = spawn_sqlite(config).await;
    let t = now_ms();
    // A burst of 3 passes, the 4th is 429 with Retry-After.
    let n = app.breaches("rate_limited").await;
    for seq in 1..=3 {
        let (status, _) =
            app.post_batch(&batch("web-1", seq, vec![sample(t, "a", 1.0, 1.0)])).await;
        assert_eq!(status, 200, "seq {seq}");
    }
    let before = snapshot(&app).await;
    let resp = app
        .client
        .post(app.url("/api/v1/samples"))
        .json(&batch("web-1", 4, vec![sample(t + 1, "b", 1.0, 1.0)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(app.breaches("rate_limited").await, n + 1);
    assert_healthy_and_unchanged(&app, &before, "rate").await;
    assert!(before.0.get("b").is_none(), "the refused batch is not stored");
    // The bucket refills: after the wait it says, the same batch is taken.
    clock.advance(Duration::from_secs(retry));
    let (status, _) = app.post_batch(&batch("web-1", 4, vec![sample(t + 1, "b", 1.0, 1.0)])).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn concurrency_limit_is_429_and_probes_still_answer() {
    let config = ServerConfig {
        max_concurrent_requests: 2,
        ingest_rate: 0.0,
        request_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    let (app, _dir) = spawn_sqlite(config).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let before = snapshot(&app).await;
    let n = app.breaches("concurrency").await;
    let held_a = hold_request(&addr, "PUT", "/ressources-usage/save-all").await;
    let held_b = hold_request(&addr, "POST", "/api/v1/samples").await;
    // Both held requests take their permits once the server has read their heads: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let resp = loop {
        let resp = app.client.get(app.url("/api/v1/hosts")).send().await.unwrap();
        if resp.status() == 429 || std::time::Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200, "probes are not limited");
    drop((held_a, held_b));
    // The server notices the closed connections and frees their permits: poll (a 429 meanwhile
    // is one more breach, counted).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut refused_meanwhile = 0;
    while app.client.get(app.url("/api/v1/hosts")).send().await.unwrap().status() != 200 {
        refused_meanwhile += 1;
        assert!(std::time::Instant::now() < deadline, "the held requests' permits never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.breaches("concurrency").await, n + 1 + refused_meanwhile);
    assert_healthy_and_unchanged(&app, &before, "concurrency").await;
    app.stop().await;
}

#[tokio::test]
async fn rate_limit_is_per_token_when_tokens_are_set() {
    let config = ServerConfig {
        write_token: Some("w".into()),
        ingest_rate: 1.0,
        ingest_burst: 1,
        ..ServerConfig::default()
    };
    let app = spawn_app_with(Arc::new(procwatch_store::memory::MemoryStore::new()), config).await;
    let t = now_ms();
    let send = |seq: u64, auth: &'static str| {
        app.client
            .post(app.url("/api/v1/samples"))
            .header("authorization", auth)
            .json(&batch("web-1", seq, vec![sample(t, "a", 1.0, 1.0)]))
            .send()
    };
    assert_eq!(send(1, "Bearer w").await.unwrap().status(), 200);
    assert_eq!(send(2, "Bearer w").await.unwrap().status(), 429);
    // A wrong token is refused before it can spend the bucket (401, not 429).
    assert_eq!(send(3, "Bearer x").await.unwrap().status(), 401);
    app.stop().await;
}

fn test_cert() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

#[tokio::test]
async fn tls_round_trip_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_cert();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let tls = procwatch_server::serve::tls_config(&cert_path, &key_path).unwrap();
    let config = ServerConfig { tls: Some(tls), ..ServerConfig::default() };
    let (mut app, _data) = spawn_sqlite(config).await;
    let port = app.url.rsplit(':').next().unwrap().to_owned();
    app.url = format!("https://localhost:{port}");
    app.client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let t = now_ms();
    let (status, body) =
        app.post_batch(&batch("tls-1", 1, vec![sample(t, "nginx", 7.0, 3.0)])).await;
    assert_eq!(status, 200, "{body}");
    let (status, all) = app.get_json("/ressources-usage/get-all?host=tls-1").await;
    assert_eq!(status, 200);
    assert_close(all["nginx"][1].as_f64().unwrap(), 7.0, "cpu over TLS");

    // A client that does not trust the certificate is refused by the handshake...
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    assert!(untrusting.get(app.url("/healthz")).send().await.is_err());
    // ...and plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new();
    assert!(plain.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err());
    // The server still serves.
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[test]
fn tls_config_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_cert();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("cert.pem"), &cert).unwrap();
    std::fs::write(p("key.pem"), &key).unwrap();
    std::fs::write(p("empty.pem"), "").unwrap();
    assert!(procwatch_server::serve::tls_config(&p("cert.pem"), &p("key.pem")).is_ok());
    assert!(procwatch_server::serve::tls_config(&p("empty.pem"), &p("key.pem")).is_err());
    assert!(procwatch_server::serve::tls_config(&p("cert.pem"), &p("empty.pem")).is_err());
    assert!(procwatch_server::serve::tls_config(&p("missing.pem"), &p("key.pem")).is_err());
    // A key that does not match the certificate.
    let (_, other_key) = test_cert();
    std::fs::write(p("other.pem"), other_key).unwrap();
    assert!(procwatch_server::serve::tls_config(&p("cert.pem"), &p("other.pem")).is_err());
}
