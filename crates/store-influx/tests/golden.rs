//! Golden corpus of awkward process names: the exact line protocol written for them (checked
//! against `tests/golden/proc_names.lp`), and a round trip through a real influxd (written,
//! then read back by `SHOW TAG VALUES` and by every query of the store).
//!
//! To regenerate the golden file after a deliberate format change:
//! `UPDATE_GOLDEN=1 cargo test -p procwatch-store-influx --test golden`, then review the diff.

use std::collections::BTreeSet;

use procwatch_model::{AlarmEvent, AlarmKind, Batch, Level, Metric, Sample};
use procwatch_store::{AlarmQuery, HistoryQuery, Storage, UsageQuery};
use procwatch_store_influx::line::{decode_tag_value, encode_tag_value, sample_point};
use procwatch_store_influx::testing::Influxd;
use procwatch_store_influx::InfluxStore;

/// Process names that stress every escaping rule of the line protocol and of InfluxQL.
fn corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "postgres",
        "chrome.exe",
        "Web Content",
        "a,b",
        "k=v",
        "a b,c=d e",
        "it's",
        "say \"hi\"",
        "\"quoted\"",
        r"C:\Program Files\app.exe",
        r"trailing\",
        r"back\ space",
        r"comma\,after",
        r"double\\",
        r"\",
        r#"a\"b"#,
        "ünïcödé-进程",
        "🚀 rocket 🦀",
        " leading space",
        "trailing space ",
        "#comment-like",
        "=starts-with-equals",
        ",starts-with-comma",
        "'; DROP SERIES FROM proc; --",
        "/regex.*[chars]$/",
        "{braces}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(255));
    v
}

fn sample(i: usize, name: &str, ts: i64) -> Sample {
    Sample {
        ts,
        process: name.to_string(),
        cpu: 1.5 + i as f64,
        cores: 0.03 * i as f64,
        mem: 0.25,
        rss: 1_000_000 + i as u64,
        count: 1 + i as u32 % 3,
        extras: None,
    }
}

#[test]
fn line_protocol_matches_the_golden_file() {
    let mut got = String::new();
    for (i, name) in corpus().iter().enumerate() {
        sample_point(&mut got, "golden-1", &sample(i, name, 1_764_070_000_000));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/proc_names.lp");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(path).expect("golden file");
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {i} ({:?})", corpus()[i]);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names_round_trip_through_influxd() {
    let Some(influxd) = Influxd::start_or_skip("awkward_names_round_trip_through_influxd") else {
        return;
    };
    let store = InfluxStore::connect(influxd.config("golden")).await.expect("connect");
    let t0 = procwatch_store::conformance::base_ts();
    let names = corpus();
    let samples: Vec<Sample> =
        names.iter().enumerate().map(|(i, n)| sample(i, n, t0 + i as i64)).collect();
    let batch = Batch {
        host: "golden-1".into(),
        agent: "golden".into(),
        seq: 1,
        interval_ms: 10_000,
        host_totals: vec![],
        samples: samples.clone(),
        dropped_samples: 0,
        report: None,
    };
    store.write_batch(&batch).await.expect("write");

    // What influxd itself stored, read with its own SHOW TAG VALUES.
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(format!("{}/query", influxd.url()))
        .query(&[("db", "golden")])
        .form(&[("q", r#"SHOW TAG VALUES FROM "proc" WITH KEY = "process""#)])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let raw: BTreeSet<String> = body["results"][0]["series"][0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|kv| kv[1].as_str().expect("value").to_string())
        .collect();
    assert_eq!(raw.len(), names.len(), "{raw:?}");
    for name in &names {
        let enc = encode_tag_value(name);
        assert!(raw.contains(enc.as_ref()), "{name:?} stored as something else: {raw:?}");
        if enc == name.as_str() {
            assert!(raw.contains(name), "{name:?} must be stored verbatim");
        }
    }
    let decoded: BTreeSet<String> = raw.iter().map(|r| decode_tag_value(r).into_owned()).collect();
    assert_eq!(decoded, names.iter().cloned().collect::<BTreeSet<_>>());

    // Every name is found by an exact-match query (InfluxQL string quoting) and reads back.
    for (i, name) in names.iter().enumerate() {
        let q = UsageQuery {
            from: t0 - 1000,
            to: t0 + 1000,
            host: Some("golden-1".into()),
            process: Some(name.clone()),
            per_host: true,
        };
        let w = store.window(&q).await.expect("window");
        assert_eq!(w.len(), 1, "{name:?}: {w:?}");
        assert_eq!(w[0].process, *name);
        assert_eq!(w[0].named_samples(), vec![samples[i].clone()]);
        let u = store.usage(&q).await.expect("usage");
        assert_eq!(u.len(), 1, "{name:?}");
        assert_eq!(u[0].process, *name);
        assert_eq!(u[0].cpu.p95, samples[i].cpu);
        let h = store
            .history(&HistoryQuery {
                host: "golden-1".into(),
                process: name.clone(),
                from: t0 - 60_000,
                to: t0 + 60_000,
                step_ms: 60_000,
            })
            .await
            .expect("history");
        assert_eq!(h.len(), 1, "{name:?}");
    }
    let merged = store
        .usage(&UsageQuery {
            from: t0 - 1000,
            to: t0 + 1000,
            host: None,
            process: None,
            per_host: false,
        })
        .await
        .expect("usage");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(merged.iter().map(|r| r.process.clone()).collect::<Vec<_>>(), sorted);

    // Alarm events carry the names in a tag (id) and in string fields (process, JSON).
    for (i, name) in names.iter().enumerate() {
        let e = AlarmEvent {
            id: format!("id {name}"),
            kind: AlarmKind::Series,
            host: "golden-1".into(),
            process: name.clone(),
            metric: Metric::Mem,
            level: Level::Red,
            previous: Level::Ok,
            start: t0 + i as i64,
            end: None,
            value: 90.0,
            peak: 91.0,
            threshold: 80.0,
            forecast: None,
            eta_seconds: None,
            reason: None,
        };
        store.put_alarm_event(&e).await.expect("put");
        let got = store
            .alarm_events(&AlarmQuery { process: Some(name.clone()), ..Default::default() })
            .await
            .expect("events");
        assert_eq!(got, vec![e], "{name:?}");
    }
}
