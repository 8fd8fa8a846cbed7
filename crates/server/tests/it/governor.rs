//! The cardinality governor through the real server over HTTP: the tail folded into one
//! `(other)` row with exact totals, an alarming tail process kept at full resolution, the
//! folded count in `/api/v1/hosts` and `/metrics`, hysteresis at the K boundary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procwatch_model::{Sample, TsMs};
use procwatch_server::governor::{GovernorConfig, OTHER};
use procwatch_server::ServerConfig;
use procwatch_store::memory::MemoryStore;

use crate::util::*;

fn governed(top_k: usize, near: f64, margin: usize) -> ServerConfig {
    ServerConfig {
        governor: GovernorConfig { near, margin, ..GovernorConfig::new(top_k, Vec::new()) },
        interval: Duration::from_millis(50),
        ingest_rate: 0.0,
        ..ServerConfig::default()
    }
}

fn proc_sample(ts: TsMs, process: &str, cpu: f64, rss: u64, count: u32) -> Sample {
    Sample {
        ts,
        process: process.into(),
        cpu,
        cores: cpu / 200.0,
        mem: cpu / 4.0,
        rss,
        count,
        extras: None,
    }
}

/// The rows of one host's usage, by process.
async fn rows(app: &TestApp, host: &str) -> Vec<serde_json::Value> {
    let (status, body) = app.get_json(&format!("/api/v1/usage?host={host}&window=10m")).await;
    assert_eq!(status, 200, "{body}");
    body["rows"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_folds_into_one_other_row_and_host_totals_stay_exact() {
    let app = spawn_app_with(Arc::new(MemoryStore::new()), governed(3, 0.5, 2)).await;
    let ts = now_ms();
    let sent: Vec<Sample> = (0..40u32)
        .map(|i| {
            proc_sample(
                ts,
                &format!("worker-{i:02}"),
                f64::from(i) / 2.0,
                1000 + u64::from(i),
                1 + i % 3,
            )
        })
        .collect();
    let (status, body) = app.post_batch(&batch("web-1", 1, sent.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["received"], 40, "the agent's count is what it sent: {body}");

    let rows = rows(&app, "web-1").await;
    let names: Vec<&str> = rows.iter().map(|r| r["process"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 4, "the top 3 and (other): {names:?}");
    for top in ["worker-37", "worker-38", "worker-39"] {
        assert!(names.contains(&top), "{top} kept: {names:?}");
    }
    let other = rows.iter().find(|r| r["process"] == OTHER).expect("an (other) row");
    assert_eq!(other["other"], true);
    let folded: u32 = sent[..37].iter().map(|s| s.count).sum();
    assert_eq!(other["count"], folded, "count is the processes folded");

    // Σ kept + (other) = Σ sent, for every figure.
    let total = |f: &dyn Fn(&serde_json::Value) -> f64| rows.iter().map(f).sum::<f64>();
    let want = |f: &dyn Fn(&Sample) -> f64| sent.iter().map(f).sum::<f64>();
    assert_close(total(&|r| r["cpu"]["last"].as_f64().unwrap()), want(&|s| s.cpu), "cpu");
    assert_close(total(&|r| r["cores"]["last"].as_f64().unwrap()), want(&|s| s.cores), "cores");
    assert_close(total(&|r| r["mem"]["last"].as_f64().unwrap()), want(&|s| s.mem), "mem");
    assert_close(total(&|r| r["rss"]["last"].as_f64().unwrap()), want(&|s| s.rss as f64), "rss");
    assert_close(total(&|r| r["count"].as_f64().unwrap()), want(&|s| f64::from(s.count)), "count");

    let (_, hosts) = app.get_json("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"][0]["folded"], folded, "{hosts}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(&format!("procwatch_governor_folded_processes {folded}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("procwatch_governor_folded_samples_total 37\n"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarming_tail_process_keeps_full_resolution() {
    // K = 1 without hysteresis margin, "near" only at the threshold itself: below it, "hot"
    // is kept only because its alarm is open.
    let app = spawn_app_with(Arc::new(MemoryStore::new()), governed(1, 1.0, 0)).await;
    let t0 = now_ms() - 60_000;
    let hot: Vec<Sample> = (0..6)
        .flat_map(|i| {
            let ts = t0 + i * 10_000;
            [proc_sample(ts, "hot", 95.0, 1, 1), proc_sample(ts, "big", 50.0, 1, 1)]
        })
        .collect();
    let (status, body) = app.post_batch(&batch("web-2", 1, hot)).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, alarms) = app.get_json("/ressources-usage/query-alarm/?host=web-2").await;
        if alarms["hot"] == "RED" {
            break;
        }
        assert!(Instant::now() < deadline, "hot never went RED: {alarms}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now "hot" is quiet, below "big" (rank 2 of K = 1) and far below its threshold: kept
    // because it is alarming; the two quiet ones fold.
    let ts = t0 + 60_000;
    let sweep = vec![
        proc_sample(ts, "big", 50.0, 1, 1),
        proc_sample(ts, "hot", 5.0, 1, 1),
        proc_sample(ts, "idle-a", 1.0, 1, 1),
        proc_sample(ts, "idle-b", 1.0, 1, 1),
    ];
    let (status, body) = app.post_batch(&batch("web-2", 2, sweep)).await;
    assert_eq!(status, 200, "{body}");
    let (status, hist) =
        app.get_json(&format!("/api/v1/hosts/web-2/processes/hot/history?from={}", t0 - 1)).await;
    assert_eq!(status, 200, "{hist}");
    let last = hist["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ts"], ts, "the quiet sample of hot is stored as sent: {hist}");
    let rows = rows(&app, "web-2").await;
    let other = rows.iter().find(|r| r["process"] == OTHER).expect("(other)");
    assert_eq!(other["count"], 2, "idle-a and idle-b folded: {rows:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_near_the_boundary_does_not_flap() {
    // K = 2 (margin 2): "edge" enters at rank 2 and stays while it wobbles between ranks 3
    // and 4; it leaves at rank 5.
    let app = spawn_app_with(Arc::new(MemoryStore::new()), governed(2, 0.5, 2)).await;
    let t0 = now_ms() - 60_000;
    let kept_at = |ts: TsMs, rows: &[serde_json::Value]| {
        rows.iter().any(|r| r["process"] == "edge" && r["last_ts"] == ts)
    };
    for (i, (edge, kept)) in
        [(4.5, true), (3.5, true), (2.5, true), (3.5, true), (1.0, false), (3.5, false)]
            .into_iter()
            .enumerate()
    {
        let ts = t0 + i as i64 * 10_000;
        let mut sweep: Vec<Sample> = [5.0, 4.0, 3.0, 2.0]
            .iter()
            .enumerate()
            .map(|(k, c)| proc_sample(ts, &format!("p{k}"), *c, 1, 1))
            .collect();
        sweep.push(proc_sample(ts, "edge", edge, 1, 1));
        let (status, body) = app.post_batch(&batch("web-3", i as u64 + 1, sweep)).await;
        assert_eq!(status, 200, "{body}");
        let rows = rows(&app, "web-3").await;
        assert_eq!(kept_at(ts, &rows), kept, "sweep {i}, edge at {edge}: {rows:?}");
    }
    app.stop().await;
}
