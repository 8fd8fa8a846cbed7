//! `procwatch alarm backtest` end to end: the real binary on the shared traces (the copy in
//! crates/alarm/tests/data/traces), JSON output, pooled counts of the SPEC's cross-checks.

use std::path::PathBuf;
use std::process::Command;

fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../alarm/tests/data/traces")
}

fn backtest(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(["alarm", "backtest", "--format", "json", "--trace"])
        .arg(traces())
        .args(extra)
        .output()
        .expect("run procwatch");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// (group, events, caught, false episodes) per group.
fn groups(v: &serde_json::Value) -> Vec<(String, u64, u64, u64)> {
    v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let n = |k: &str| g[k].as_u64().expect(k);
            (
                g["name"].as_str().expect("name").to_owned(),
                n("events"),
                n("caught"),
                n("false_episodes"),
            )
        })
        .collect()
}

#[test]
fn predict_linear_pooled_counts_match_the_spec() {
    let v = backtest(&[
        "--method",
        "linear",
        "--window",
        "10m",
        "--horizon",
        "10m",
        "--threshold",
        "80",
    ]);
    assert_eq!(v["method"], "linear window=10m");
    assert_eq!(
        groups(&v),
        vec![
            ("cpu_native".into(), 691, 31, 892),
            ("cpu_scaled".into(), 285, 75, 1281),
            ("mem_scaled".into(), 32, 17, 52)
        ]
    );
    let days: Vec<String> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| format!("{:.2}", g["days"].as_f64().unwrap()))
        .collect();
    assert_eq!(days, ["104.52", "55.82", "7.74"]);
    assert_eq!(v["traces"].as_array().unwrap().len(), 9);
}

#[test]
fn oracle_and_holt_match_and_bad_input_fails() {
    let oracle = backtest(&["--method", "oracle"]);
    assert_eq!(
        groups(&oracle),
        vec![
            ("cpu_native".into(), 691, 691, 0),
            ("cpu_scaled".into(), 285, 285, 0),
            ("mem_scaled".into(), 32, 32, 0)
        ]
    );
    let holt = backtest(&["--method", "holt", "--alpha", "0.8", "--beta", "0.4"]);
    let caught: Vec<u64> = groups(&holt).iter().map(|g| g.2).collect();
    assert_eq!(caught, [20, 10, 11]);
    let out = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(["alarm", "backtest", "--method", "magic", "--trace"])
        .arg(traces())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown forecast method"));
}
