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

/// A short page sorted by one figure is chosen on that figure alone and then read whole: each
/// of its rows must be exactly the row of the whole listing (every metric and statistic),
/// in the listing's order under the same sort, across a cursor, per host and merged, with
/// `metrics=`/`stats=` narrowing both alike. Checked on the SQLite and the memory store.
#[tokio::test]
async fn a_sorted_page_shows_the_rows_of_the_whole_listing() {
    for app in [spawn_app().await, spawn_memory_app().await] {
        let t = now_ms() - 90_000;
        for h in 0..4u32 {
            let mut samples = Vec::new();
            for p in 0..12u32 {
                for i in 0..6u32 {
                    let v = f64::from((p * 7 + h * 3 + i * 5) % 23) + 0.5;
                    let mut s = sample(t + i64::from(i) * 10_000, &format!("p{p:02}"), v, v / 4.0);
                    s.rss = u64::from(1 + (p + i) % 5) << 20;
                    s.count = 1 + (h + p) % 3;
                    samples.push(s);
                }
            }
            assert_eq!(app.post_batch(&batch(&format!("h{h}"), 1, samples)).await.0, 200);
        }
        let key = |r: &Value| (r["host"].clone(), r["process"].clone());
        for per_host in [true, false] {
            for fields in ["", "&metrics=cpu,mem&stats=mean,p95"] {
                let base = format!("/api/v1/usage?per_host={per_host}{fields}");
                let (status, all) = app.get_json(&base).await;
                assert_eq!(status, 200, "{all}");
                let all = all["rows"].as_array().unwrap().clone();
                assert_eq!(all.len(), if per_host { 48 } else { 12 });
                for (spec, order) in [
                    ("cpu.mean", ""),
                    ("cpu.p95", ""),
                    ("mem.max", "&order=asc"),
                    ("rss.last", ""),
                    ("cores.min", ""),
                    ("count", ""),
                    ("samples", ""),
                    ("process", "&order=desc"),
                    ("host", ""),
                ] {
                    let figure = |r: &Value| -> Value {
                        match spec.split_once('.') {
                            Some((m, s)) => r[m][s].clone(),
                            None => r[spec].clone(),
                        }
                    };
                    if figure(&all[0]).is_null() && spec.contains('.') {
                        continue; // not among this listing's fields
                    }
                    let asc = match order {
                        "&order=asc" => true,
                        "&order=desc" => false,
                        _ => matches!(spec, "process" | "host"),
                    };
                    let cmp = |a: &Value, b: &Value| -> std::cmp::Ordering {
                        let (x, y) = (figure(a), figure(b));
                        let o = match (x.as_f64(), y.as_f64()) {
                            (Some(x), Some(y)) => x.total_cmp(&y),
                            _ => x.as_str().unwrap_or("").cmp(y.as_str().unwrap_or("")),
                        };
                        if asc {
                            o
                        } else {
                            o.reverse()
                        }
                    };
                    let mut want = all.clone();
                    want.sort_by(cmp); // stable: ties keep the listing's order, as the server
                    let url = format!("{base}&sort={spec}{order}&limit=5");
                    let (status, p1) = app.get_json(&url).await;
                    assert_eq!(status, 200, "{url}: {p1}");
                    let next = p1["next"].as_str().expect("a second page").to_owned();
                    let (status, p2) = app.get_json(&format!("{url}&cursor={next}")).await;
                    assert_eq!(status, 200, "{url}: {p2}");
                    let got: Vec<Value> = [p1, p2]
                        .iter()
                        .flat_map(|p| p["rows"].as_array().unwrap().clone())
                        .collect();
                    assert_eq!(got.len(), 10, "{url}");
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(figure(g), figure(w), "{url}: order");
                        let whole = all.iter().find(|r| key(r) == key(g)).expect("in the listing");
                        assert_eq!(g, whole, "{url}: the page row is the listing's row");
                    }
                }
            }
        }
        app.stop().await;
    }
}
