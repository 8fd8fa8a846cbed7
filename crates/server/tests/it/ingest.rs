//! Ingestion over HTTP: round trip, legacy PUT, validation, limits, idempotence.

use serde_json::{json, Value};

use crate::util::*;

#[tokio::test]
async fn batch_round_trip_sqlite() {
    round_trip(spawn_app().await).await;
}

#[tokio::test]
async fn batch_round_trip_memory() {
    round_trip(spawn_memory_app().await).await;
}

async fn round_trip(app: TestApp) {
    let t = now_ms() - 60_000;
    let b = batch(
        "web-1",
        1,
        vec![
            sample(t, "postgres", 12.5, 3.25),
            sample(t, "nginx", 1.0, 0.5),
            sample(t + 10_000, "postgres", 7.5, 3.75),
        ],
    );
    let (status, body) = app.post_batch(&b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["samples"], 3);
    assert_eq!(body["host_totals"], 1);

    let (status, body) = app.get_json("/api/v1/usage?host=web-1&process=postgres").await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["host"], "web-1");
    assert_close(rows[0]["cpu"]["mean"].as_f64().unwrap(), mean(&[12.5, 7.5]), "cpu mean");
    assert_close(rows[0]["cpu"]["max"].as_f64().unwrap(), 12.5, "cpu max");
    assert_close(rows[0]["cpu"]["last"].as_f64().unwrap(), 7.5, "cpu last");
    assert_close(rows[0]["mem"]["min"].as_f64().unwrap(), 3.25, "mem min");
    assert_eq!(rows[0]["samples"], 2);

    let (_, hist) = app.get_json("/api/v1/hosts/web-1/processes/postgres/history?from=-10m").await;
    let pts: Vec<f64> =
        hist["points"].as_array().unwrap().iter().map(|p| p["cpu"].as_f64().unwrap()).collect();
    assert_eq!(pts, vec![12.5, 7.5]);
    let (_, totals) = app.get_json("/api/v1/hosts/web-1/totals?from=-10m").await;
    assert_eq!(totals["totals"][0]["cpu"], 40.0);
    assert_eq!(totals["totals"][0]["unattributed_cpu"], 1.5);
    app.stop().await;
}

/// The seed client's payload, exactly: float timestamps, every process of the host in one
/// request, cpu and mem as separate points.
#[tokio::test]
async fn legacy_put_then_get_all_means() {
    let app = spawn_app().await;
    let now = now_ms() as f64 / 1000.0;
    // (seconds ago, process, cpu per-core %, mem %)
    let sweeps: [(f64, &str, f64, f64); 6] = [
        (120.25, "chrome.exe", 150.0, 12.5),
        (120.25, "python", 3.0, 1.25),
        (60.5, "chrome.exe", 250.0, 13.5),
        (60.5, "python", 5.0, 1.75),
        (0.75, "chrome.exe", 50.0, 14.0),
        (0.75, "python", 4.0, 2.0),
    ];
    let mut data = Vec::new();
    for (ago, name, cpu, mem) in sweeps {
        data.push(
            json!({"timestamp": now - ago, "value": mem, "process_name": name, "type_data": "mem"}),
        );
        data.push(
            json!({"timestamp": now - ago, "value": cpu, "process_name": name, "type_data": "cpu"}),
        );
    }
    let payload = json!({"ipaddress": "10.0.0.5", "data": data});
    let resp =
        app.client.put(app.url("/ressources-usage/save-all")).json(&payload).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"Response": "Ok"}));

    let (status, all) = app.get_json("/ressources-usage/get-all?host=10.0.0.5").await;
    assert_eq!(status, 200);
    for name in ["chrome.exe", "python"] {
        let rows: Vec<_> = sweeps.iter().filter(|s| s.1 == name).collect();
        let want_mem = mean(&rows.iter().map(|s| s.3).collect::<Vec<_>>());
        let want_cpu = mean(&rows.iter().map(|s| s.2.min(100.0)).collect::<Vec<_>>());
        assert_close(all[name][0].as_f64().unwrap(), want_mem, &format!("{name} mem"));
        assert_close(all[name][1].as_f64().unwrap(), want_cpu, &format!("{name} cpu"));
    }
    assert_eq!(all.as_object().unwrap().len(), 2);
    // Without host: the same, as there is one host.
    let (_, all_hosts) = app.get_json("/ressources-usage/get-all").await;
    assert_eq!(all, all_hosts);
    // cores keep the per-core figure.
    let (_, usage) = app.get_json("/api/v1/usage?host=10.0.0.5&process=chrome.exe").await;
    assert_close(usage["rows"][0]["cores"]["max"].as_f64().unwrap(), 2.5, "chrome cores max");
    app.stop().await;
}

/// One bad field at sample index 1 of three; the batch must be refused whole.
#[tokio::test]
async fn every_validation_rule_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let now = now_ms();
    let good =
        |i: usize| json!({"ts": now - 1000, "process": format!("p{i}"), "cpu": 1.0, "mem": 1.0});
    let bad_cases: Vec<(&str, Value, &str)> = vec![
        ("cpu-high", json!({"cpu": 100.5}), "cpu"),
        ("cpu-neg", json!({"cpu": -1}), "cpu"),
        ("cpu-inf", json!({"cpu": "1e999"}), "cpu"),
        ("cpu-str", json!({"cpu": "high"}), "cpu"),
        ("mem-high", json!({"mem": 250}), "mem"),
        ("cores-neg", json!({"cores": -0.5}), "cores"),
        ("rss-neg", json!({"rss": -1}), "rss"),
        ("rss-frac", json!({"rss": 1.5}), "rss"),
        ("count-neg", json!({"count": -3}), "count"),
        ("count-frac", json!({"count": 0.5}), "count"),
        ("ts-old", json!({"ts": now - 49 * 3_600_000}), "ts"),
        ("ts-future", json!({"ts": now + 6 * 60_000}), "ts"),
        ("proc-empty", json!({"process": ""}), "process"),
        ("proc-long", json!({"process": "x".repeat(256)}), "process"),
        ("proc-ctrl", json!({"process": "a\nb"}), "process"),
    ];
    for (host, patch, field) in bad_cases {
        let mut bad = good(1);
        for (k, v) in patch.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let body = json!({"host": host, "seq": 1, "samples": [good(0), bad, good(2)]}).to_string();
        // `1e999` cannot be a serde_json value: splice it in as raw text.
        let body = body.replace("\"1e999\"", "1e999");
        let resp = app
            .client
            .post(app.url("/api/v1/samples"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{host}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains(field), "{host}: {err}");
        assert_eq!(err["problems"][0]["field"], field, "{host}: {err}");
        assert_eq!(err["problems"][0]["index"], 1, "{host}: {err}");
    }
    // Batch-level rules.
    for (host, field) in [("", "host"), ("web 1", "host"), (&*"h".repeat(254), "host")] {
        let body = json!({"host": host, "samples": [good(0)]});
        let (status, err) = post_raw(&app, &body).await;
        assert_eq!((status, err["problems"][0]["field"].as_str()), (400, Some(field)), "{host:?}");
    }
    // Nothing of any refused batch was stored.
    let (_, hosts) = app.get_json("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"], json!([]), "{hosts}");
    let (_, all) = app.get_json("/ressources-usage/get-all").await;
    assert_eq!(all, json!({}));
    assert!(app.store.hosts().await.unwrap().is_empty());
    app.stop().await;
}

async fn post_raw(app: &TestApp, body: &Value) -> (u16, Value) {
    let resp = app.client.post(app.url("/api/v1/samples")).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn legacy_validation_names_the_point() {
    let app = spawn_app().await;
    let now = now_ms() as f64 / 1000.0;
    let payload = json!({"ipaddress": "10.0.0.9", "data": [
        {"timestamp": now, "value": 1.0, "process_name": "a", "type_data": "cpu"},
        {"timestamp": now, "value": 102401.0, "process_name": "a", "type_data": "cpu"}]});
    let resp =
        app.client.put(app.url("/ressources-usage/save-all")).json(&payload).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        (err["problems"][0]["index"].as_u64(), err["problems"][0]["field"].as_str()),
        (Some(1), Some("value"))
    );
    let (_, hosts) = app.get_json("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn too_many_samples_is_refused() {
    let app = spawn_app().await;
    let t = now_ms();
    let samples: Vec<_> =
        (0..100_001).map(|i| sample(t, &format!("p{}", i % 1000), 1.0, 1.0)).collect();
    let (status, err) = app.post_batch(&batch("big", 1, samples)).await;
    assert_eq!(status, 400);
    assert_eq!(err["problems"][0]["field"], "samples");
    app.stop().await;
}

#[tokio::test]
async fn gzip_body_is_accepted() {
    let app = spawn_app().await;
    let b = batch("gz-1", 1, vec![sample(now_ms(), "java", 30.0, 20.0)]);
    let resp = app
        .client
        .post(app.url("/api/v1/samples"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&serde_json::to_vec(&b).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, all) = app.get_json("/ressources-usage/get-all?host=gz-1").await;
    assert_eq!(all, json!({"java": [20.0, 30.0]}));
    app.stop().await;
}

#[tokio::test]
async fn gzip_bomb_and_oversized_body_are_413() {
    let app = spawn_app().await;
    // 100 gzip members of 1 MiB of spaces each: ~100 KiB that inflate to 100 MiB.
    let member = gzip(&vec![b' '; 1 << 20]);
    let bomb: Vec<u8> = member.iter().copied().cycle().take(member.len() * 100).collect();
    assert!(bomb.len() < 1 << 20);
    for path in ["/api/v1/samples", "/ressources-usage/save-all"] {
        let req = if path.ends_with("save-all") {
            app.client.put(app.url(path))
        } else {
            app.client.post(app.url(path))
        };
        let req = req.header("content-type", "application/json");
        let resp = req.header("content-encoding", "gzip").body(bomb.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 413, "{path}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("decompression"), "{err}");
    }
    // 17 MiB of plain JSON-ish bytes.
    let mut big = b"{\"host\":\"h\",\"agent\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 17 << 20));
    big.extend(b"\"}");
    let resp = app
        .client
        .post(app.url("/api/v1/samples"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    // The server may answer 413 before reading the whole body and close the connection.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("too large"), "{err}");
    }
    let (_, hosts) = app.get_json("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn unsupported_encoding_is_415() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/api/v1/samples"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    app.stop().await;
}

#[tokio::test]
async fn retried_batch_is_stored_once() {
    let app = spawn_app().await;
    let t = now_ms() - 5_000;
    let b = batch("retry-1", 7, vec![sample(t, "a", 10.0, 1.0), sample(t, "b", 20.0, 2.0)]);
    for _ in 0..3 {
        let (status, body) = app.post_batch(&b).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["seq_gap"], 0);
    }
    let (_, usage) = app.get_json("/api/v1/usage?host=retry-1").await;
    let counts: Vec<u64> =
        usage["rows"].as_array().unwrap().iter().map(|r| r["samples"].as_u64().unwrap()).collect();
    assert_eq!(counts, vec![1, 1]);
    let (_, hosts) = app.get_json("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"][0]["seq_gaps"], 0);
    app.stop().await;
}
