//! Hardening round 2, the data path: per-host tokens, the seq rule, rate limits per host and
//! cardinality caps, through the real server over real HTTP.

use std::sync::Arc;

use procwatch_model::Batch;
use procwatch_server::admission::{HostTokens, SeriesLimits};
use procwatch_server::ServerConfig;
use procwatch_store::conformance::red_event;
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::Value;

use crate::util::*;

async fn spawn_sqlite(config: ServerConfig) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    (spawn_app_with(Arc::new(store), config).await, dir)
}

async fn post(app: &TestApp, token: &str, b: &Batch) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url("/api/v1/samples"))
        .bearer_auth(token)
        .json(b)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

async fn stored(app: &TestApp) -> Value {
    let (s, usage) = app.get_json("/api/v1/usage?window=1h&per_host=true").await;
    assert_eq!(s, 200);
    usage["rows"].clone()
}

async fn host(app: &TestApp, name: &str) -> Value {
    let (_, hosts) = app.get_json("/api/v1/hosts").await;
    hosts["hosts"].as_array().unwrap().iter().find(|h| h["host"] == name).cloned().unwrap()
}

const WEB: &str = "web-1-token-0123456789";
const DB: &str = "db-1-token-0123456789ab";
const GLOBAL: &str = "global-write-token";

fn tokens_config(only: bool) -> ServerConfig {
    let file = format!("# host token\nweb-1 {WEB}\ndb-1\t{DB}\n");
    ServerConfig {
        write_token: Some(GLOBAL.into()),
        host_tokens: Some(Arc::new(HostTokens::parse(&file).unwrap())),
        host_tokens_only: only,
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_token_writes_only_its_host() {
    let (app, _dir) = spawn_sqlite(tokens_config(false)).await;
    let t = now_ms();
    let (s, ack) = post(&app, WEB, &batch("web-1", 1, vec![sample(t, "nginx", 1.0, 1.0)])).await;
    assert_eq!(s, 200, "{ack}");
    assert_eq!((ack["host"].as_str(), ack["seq"].as_u64()), (Some("web-1"), Some(1)));
    let before = stored(&app).await;
    // web-1's token forging db-1 and web-2: 403 with a message naming both hosts.
    for target in ["db-1", "web-2"] {
        let (s, body) =
            post(&app, WEB, &batch(target, 1, vec![sample(t, "forged", 99.0, 99.0)])).await;
        assert_eq!(s, 403, "{body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains("web-1") && msg.contains(target), "{msg}");
    }
    assert_eq!(stored(&app).await, before, "a refused batch changed stored data");
    // A wrong token is 401; db-1's own token writes db-1; the global token any host.
    assert_eq!(post(&app, "nope-nope-nope-nope", &batch("db-1", 1, vec![])).await.0, 401);
    assert_eq!(post(&app, DB, &batch("db-1", 1, vec![sample(t, "pg", 1.0, 1.0)])).await.0, 200);
    assert_eq!(post(&app, GLOBAL, &batch("web-9", 1, vec![sample(t, "x", 1.0, 1.0)])).await.0, 200);
    app.stop().await;

    // The operator can turn the global token off for ingestion.
    let (app, _dir) = spawn_sqlite(tokens_config(true)).await;
    let (s, body) = post(&app, GLOBAL, &batch("web-1", 1, vec![sample(t, "x", 1.0, 1.0)])).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("host_tokens_only"));
    assert_eq!(post(&app, WEB, &batch("web-1", 1, vec![sample(t, "x", 1.0, 1.0)])).await.0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_seq_does_not_make_the_real_agents_batches_old() {
    let (app, _dir) = spawn_sqlite(ServerConfig::default()).await;
    let t = now_ms() - 60_000;
    for seq in 1..=3 {
        let b = batch("web-1", seq, vec![sample(t + seq as i64 * 1000, "a", 1.0, 1.0)]);
        assert_eq!(app.post_batch(&b).await.0, 200);
    }
    // Another writer (same token) claims seq 1,000,000 for web-1.
    let forged = batch("web-1", 1_000_000, vec![sample(t + 10_000, "forged", 1.0, 1.0)]);
    let (s, ack) = app.post_batch(&forged).await;
    assert_eq!((s, ack["seq_gap"].as_u64()), (200, Some(0)), "{ack}");
    // The real agent goes on with seq 4, reporting 5 dropped samples: counted, not "old".
    let mut real = batch("web-1", 4, vec![sample(t + 20_000, "a", 2.0, 2.0)]);
    real.dropped_samples = 5;
    assert_eq!(app.post_batch(&real).await.0, 200);
    let mut next = batch("web-1", 6, vec![sample(t + 30_000, "a", 2.0, 2.0)]);
    next.dropped_samples = 1;
    let (_, ack) = app.post_batch(&next).await;
    assert_eq!(ack["seq_gap"], 1, "gaps are counted again after the reset: {ack}");
    let h = host(&app, "web-1").await;
    assert_eq!(h["dropped_samples"], 6, "{h}");
    assert_eq!(h["last_seq"], 6, "{h}");
    assert_eq!(h["seq_gaps"], 1, "{h}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_host_gets_429_while_another_keeps_getting_2xx() {
    // Everything on loopback shares one IP and here one token: the buckets are per host.
    let config = ServerConfig {
        write_token: Some(GLOBAL.into()),
        ingest_rate: 2.0,
        ingest_burst: 3,
        ..ServerConfig::default()
    };
    let (app, _dir) = spawn_sqlite(config).await;
    let t = now_ms();
    let n = app.breaches("rate_limited").await;
    let mut flood = Vec::new();
    for seq in 1..=30u64 {
        let b = batch("flood", seq, vec![sample(t + seq as i64, "a", 1.0, 1.0)]);
        flood.push(post(&app, GLOBAL, &b).await.0);
    }
    assert!(flood.iter().filter(|&&s| s == 429).count() >= 20, "{flood:?}");
    // The well-behaved host, meanwhile, within its own rate: every request 2xx.
    for seq in 1..=3u64 {
        let b = batch("calm", seq, vec![sample(t + seq as i64, "a", 1.0, 1.0)]);
        assert_eq!(post(&app, GLOBAL, &b).await.0, 200, "calm seq {seq}");
        let b = batch("flood", 100 + seq, vec![sample(t, "a", 1.0, 1.0)]);
        assert_eq!(post(&app, GLOBAL, &b).await.0, 429, "flood is still limited");
    }
    assert!(app.breaches("rate_limited").await >= n + 20);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_caps_answer_413_429_507_and_are_counted_before_the_store() {
    let config = ServerConfig {
        ingest_rate: 0.0,
        series_limits: SeriesLimits { per_batch: 50, per_host: 80, total: 120 },
        ..ServerConfig::default()
    };
    let (app, _dir) = spawn_sqlite(config).await;
    let t = now_ms();
    let procs = |host: &str, seq: u64, r: std::ops::Range<u32>| {
        batch(host, seq, r.map(|i| sample(t, &format!("p{i}"), 1.0, 1.0)).collect())
    };
    assert_eq!(app.post_batch(&procs("a", 1, 0..50)).await.0, 200);
    let before = stored(&app).await;
    let cases = [
        (procs("a", 2, 100..151), 413, "series_per_batch"),
        (procs("a", 3, 50..81), 429, "series_per_host"),
    ];
    for (b, status, reason) in cases {
        let n = app.breaches(reason).await;
        let (s, body) = app.post_batch(&b).await;
        assert_eq!(s, status, "{reason}: {body}");
        assert!(body["error"].as_str().unwrap().contains("max_series"), "{body}");
        assert_eq!(app.breaches(reason).await, n + 1, "{reason} counted");
        assert_eq!(stored(&app).await, before, "{reason}: stored data changed");
    }
    // Known series stay writable at the host's cap; another host fills the total.
    assert_eq!(app.post_batch(&procs("a", 4, 0..50)).await.0, 200);
    assert_eq!(app.post_batch(&procs("b", 1, 0..50)).await.0, 200);
    let n = app.breaches("series_total").await;
    let (s, body) = app.post_batch(&procs("c", 1, 0..21)).await;
    assert_eq!(s, 507, "{body}");
    assert_eq!(app.breaches("series_total").await, n + 1);
    let (s, _) = app.get_json("/healthz").await;
    assert_eq!(s, 200);
    app.stop().await;
}

/// Follows `next` until `null`; returns every item of `key` and the number of pages.
async fn all_pages(app: &TestApp, first: &str, key: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut url = first.to_owned();
    loop {
        let (s, body) = app.get_json(&url).await;
        assert_eq!(s, 200, "{url}: {body}");
        pages += 1;
        items.extend(body[key].as_array().unwrap().iter().cloned());
        match body["next"].as_str() {
            Some(c) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                url = format!("{first}{sep}cursor={c}");
            }
            None => {
                assert!(body["next"].is_null(), "{body}");
                return (items, pages);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_routes_paginate_with_a_next_cursor() {
    let (app, _dir) =
        spawn_sqlite(ServerConfig { ingest_rate: 0.0, ..ServerConfig::default() }).await;
    let t = now_ms() - 1000;
    for h in 0..7u32 {
        let samples = (0..9).map(|p| sample(t, &format!("p{p}"), 1.0, 1.0)).collect();
        assert_eq!(app.post_batch(&batch(&format!("h{h}"), 1, samples)).await.0, 200);
    }
    // usage: 63 rows in pages of 10, each row once, in the unpaginated order.
    let (all, pages) = all_pages(&app, "/api/v1/usage?window=1h&limit=100000", "rows").await;
    assert_eq!((all.len(), pages), (63, 1));
    let (paged, pages) = all_pages(&app, "/api/v1/usage?window=1h&limit=10", "rows").await;
    assert_eq!((paged.len(), pages), (63, 7));
    assert_eq!(paged, all);
    // hosts: 7 in pages of 3.
    let (hosts, pages) = all_pages(&app, "/api/v1/hosts?limit=3", "hosts").await;
    assert_eq!(pages, 3);
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["h0", "h1", "h2", "h3", "h4", "h5", "h6"]);
    // alarms: 5 events in pages of 2, newest first as unpaginated.
    for i in 0..5i64 {
        let ev = red_event(&format!("ev-{i}"), "h0", &format!("p{i}"), t - 10_000 + i * 1000);
        app.store.put_alarm_event(&ev).await.unwrap();
    }
    let (all, _) = all_pages(&app, "/api/v1/alarms?from=-1h", "alarms").await;
    assert_eq!(all.len(), 5);
    let (alarms, pages) = all_pages(&app, "/api/v1/alarms?from=-1h&limit=2", "alarms").await;
    assert_eq!(pages, 3);
    assert_eq!(alarms, all);
    // A forged cursor is a 400 naming the parameter.
    for bad in ["zzz", "o99999999999", "o1r9_1"] {
        let (s, body) = app.get_json(&format!("/api/v1/usage?cursor={bad}")).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert_eq!(body["problems"][0]["field"], "cursor");
    }
    app.stop().await;
}
