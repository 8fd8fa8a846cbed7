//! Query routes over HTTP: seed routes, hosts, usage, history, totals, parameters.

use serde_json::{json, Value};

use crate::util::*;

#[tokio::test]
async fn get_all_detailed_per_host_and_merged() {
    let app = spawn_app().await;
    let t = now_ms() - 120_000;
    let a = vec![sample(t, "java", 10.0, 1.0), sample(t + 10_000, "java", 20.0, 2.0)];
    let b = vec![sample(t, "java", 30.0, 3.0), sample(t + 20_000, "java", 50.0, 5.0)];
    assert_eq!(app.post_batch(&batch("a", 1, a)).await.0, 200);
    assert_eq!(app.post_batch(&batch("b", 1, b)).await.0, 200);
    // Old samples outside the 5-minute window are not part of any seed answer.
    let old = vec![sample(t - 600_000, "java", 99.0, 99.0)];
    assert_eq!(app.post_batch(&batch("a", 2, old)).await.0, 200);

    let (_, mem_a) = app.get_json("/ressources-usage/get-all-detailed?host=a").await;
    assert_eq!(mem_a, json!({"java": [1.0, 2.0]}));
    let (_, cpu_a) = app.get_json("/ressources-usage/get-all-detailed?metric=cpu&host=a").await;
    assert_eq!(cpu_a, json!({"java": [10.0, 20.0]}));
    // Merged by timestamp, mean per timestamp: t → (10+30)/2, t+10s → 20, t+20s → 50.
    let (_, cpu) = app.get_json("/ressources-usage/get-all-detailed?metric=cpu").await;
    assert_eq!(cpu, json!({"java": [20.0, 20.0, 50.0]}));
    // get-all without host: the mean over every host's samples.
    let (_, all) = app.get_json("/ressources-usage/get-all").await;
    assert_close(all["java"][1].as_f64().unwrap(), mean(&[10.0, 20.0, 30.0, 50.0]), "cpu");
    assert_close(all["java"][0].as_f64().unwrap(), mean(&[1.0, 2.0, 3.0, 5.0]), "mem");
    // Unknown host on a seed route: empty, as the seed did.
    assert_eq!(app.get_json("/ressources-usage/get-all?host=nope").await, (200, json!({})));
    let (status, err) = app.get_json("/ressources-usage/get-all-detailed?metric=disk").await;
    assert_eq!(status, 400);
    assert_eq!(err["problems"][0]["field"], "metric");
    app.stop().await;
}

#[tokio::test]
async fn hosts_show_last_seen_stale_and_gaps() {
    let app = spawn_app().await;
    let now = now_ms();
    assert_eq!(
        app.post_batch(&batch("fresh", 1, vec![sample(now - 1_000, "a", 1.0, 1.0)])).await.0,
        200
    );
    assert_eq!(app.post_batch(&batch("fresh", 4, vec![sample(now, "a", 1.0, 1.0)])).await.0, 200);
    // 10 s interval, last sample 40 s ago: stale.
    assert_eq!(
        app.post_batch(&batch("silent", 1, vec![sample(now - 40_000, "a", 1.0, 1.0)])).await.0,
        200
    );
    let (status, body) = app.get_json("/api/v1/hosts").await;
    assert_eq!(status, 200);
    let hosts = body["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["fresh", "silent"]);
    assert_eq!(hosts[0]["stale"], false);
    assert_eq!(hosts[0]["last_seen"], now);
    assert_eq!(hosts[0]["seq_gaps"], 2);
    assert_eq!(hosts[0]["latest"]["cpu"], 40.0);
    assert_eq!(hosts[1]["stale"], true);
    app.stop().await;
}

#[tokio::test]
async fn usage_filters_sort_and_limit() {
    let app = spawn_app().await;
    let t = now_ms() - 30_000;
    let procs = [("postgres", 40.0), ("nginx", 5.0), ("java", 70.0), ("postfix", 1.0)];
    for (host, scale) in [("web-1", 1.0), ("web-2", 0.5), ("db-1", 0.25)] {
        let samples = procs.iter().map(|(p, c)| sample(t, p, c * scale, 2.0)).collect();
        assert_eq!(app.post_batch(&batch(host, 1, samples)).await.0, 200);
    }
    let rows = |v: &Value| -> Vec<(String, String, f64)> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let host = r["host"].as_str().unwrap_or("*").to_owned();
                (
                    host,
                    r["process"].as_str().unwrap().to_owned(),
                    r["cpu"]["mean"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (_, top) = app.get_json("/api/v1/usage?sort=cpu.mean&limit=2").await;
    assert_eq!(
        rows(&top),
        vec![("web-1".into(), "java".into(), 70.0), ("web-1".into(), "postgres".into(), 40.0)]
    );
    let (_, asc) = app.get_json("/api/v1/usage?host=web-2&sort=cpu.max&order=asc&limit=1").await;
    assert_eq!(rows(&asc), vec![("web-2".into(), "postfix".into(), 0.5)]);
    let (_, glob) = app.get_json("/api/v1/usage?host=web-*&process=post*&sort=process").await;
    assert_eq!(rows(&glob).len(), 4);
    assert!(rows(&glob).iter().all(|r| r.0.starts_with("web-") && r.1.starts_with("post")));
    let (_, merged) = app.get_json("/api/v1/usage?per_host=false&process=java").await;
    assert_eq!(rows(&merged).len(), 1);
    assert_close(rows(&merged)[0].2, mean(&[70.0, 35.0, 17.5]), "java over hosts");
    assert_eq!(merged["rows"][0]["host"], Value::Null);
    let (_, window) = app.get_json("/api/v1/usage?window=10s").await;
    assert_eq!(window["rows"], json!([]), "30 s old samples are outside a 10 s window");
    let (status, _) = app.get_json("/api/v1/usage?host=nope").await;
    assert_eq!(status, 404);
    for bad in [
        "sort=disk.mean",
        "order=up",
        "window=soon",
        "from=-1h&window=5m",
        "bogus=1",
        "limit=-1",
        "from=now&to=-1h",
    ] {
        let (status, err) = app.get_json(&format!("/api/v1/usage?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(err["error"].is_string());
    }
    app.stop().await;
}

#[tokio::test]
async fn history_steps_and_404() {
    let app = spawn_app().await;
    let step = 60_000;
    let base = (now_ms() - 3_600_000) / step * step;
    let samples: Vec<_> =
        (0..12).map(|i| sample(base + i * 10_000, "java", i as f64, 1.0)).collect();
    assert_eq!(app.post_batch(&batch("h", 1, samples)).await.0, 200);
    let (status, body) = app
        .get_json(&format!(
            "/api/v1/hosts/h/processes/java/history?from={}&to={}&step=1m",
            base,
            base + 120_000
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["step_ms"], 60_000);
    let pts = body["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[0]["ts"], base);
    assert_close(
        pts[0]["cpu"].as_f64().unwrap(),
        mean(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
        "bucket 0",
    );
    assert_eq!(pts[1]["cpu_max"], 11.0);
    let (_, raw) =
        app.get_json(&format!("/api/v1/hosts/h/processes/java/history?from={base}")).await;
    assert_eq!(raw["points"].as_array().unwrap().len(), 12);
    assert_eq!(body["resolution"], "raw");
    // 30 days reach past the raw retention: 5-minute roll-ups, and the answer says so.
    let (status, long) = app.get_json("/api/v1/hosts/h/processes/java/history?from=-30d").await;
    assert_eq!(status, 200, "{long}");
    assert_eq!((&long["resolution"], &long["step_ms"]), (&"5m".into(), &300_000.into()));
    let pts = long["points"].as_array().unwrap();
    let in_first = (base + 300_000 - base % 300_000 - base).min(120_000) / 10_000;
    assert_eq!(pts[0]["cpu_min"], 0.0);
    assert_eq!(pts[0]["cpu_max"], (in_first - 1) as f64, "{long}");
    for path in [
        "/api/v1/hosts/h/processes/nope/history",
        "/api/v1/hosts/nope/processes/java/history",
        "/api/v1/hosts/nope/totals",
    ] {
        let (status, err) = app.get_json(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(err["error"].as_str().unwrap().contains("nope"), "{err}");
    }
    let (status, _) = app.get_json("/api/v1/hosts/h/processes/java/history?step=fast").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn process_names_with_slashes_and_spaces_round_trip() {
    let app = spawn_app().await;
    let name = "kworker/0:1 x";
    assert_eq!(app.post_batch(&batch("h", 1, vec![sample(now_ms(), name, 5.0, 1.0)])).await.0, 200);
    let (status, body) =
        app.get_json("/api/v1/hosts/h/processes/kworker%2F0%3A1%20x/history?from=-1m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["process"], name);
    assert_eq!(body["points"].as_array().unwrap().len(), 1);
    app.stop().await;
}
