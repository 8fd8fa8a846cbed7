//! `procwatch alarm backtest` end to end: the real binary on the shared traces (the copy in
//! crates/alarm/tests/data/traces), JSON output, pooled counts of the contract's cross-checks.

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

/// `--cv` end to end: nested leave-one-trace-out over the shared traces and traces-extra
/// (shape and knob chosen per fold), held-out figures per family, folds that never tune on
/// the trace they score, the default the procedure picks, the live default per trace, and
/// the operating-curve picture.
#[test]
fn cross_validation_prints_held_out_figures_and_draws_the_curve() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curve.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(["alarm", "backtest", "--cv", "--format", "json", "--trace"])
        .arg(traces())
        .arg(traces().join("../traces-extra"))
        .arg("--curve-svg")
        .arg(&svg)
        .output()
        .expect("run procwatch");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["criterion"], "recall");
    let fams = v["families"].as_array().unwrap();
    let names: Vec<&str> = fams.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mem", "cpu", "cpu_no_asg"]);
    for f in fams {
        for fold in f["folds"].as_array().unwrap() {
            let held = &fold["held_out"];
            let trained = fold["trained_on"].as_array().unwrap();
            assert!(!trained.contains(held), "{held} tuned on itself");
            assert_eq!(trained.len() + 1, f["traces"].as_array().unwrap().len());
            assert!(fold["shape"].as_str().unwrap().starts_with("trend "), "{fold}");
        }
        let live = f["live_default"].as_array().unwrap();
        assert_eq!(live.len(), f["traces"].as_array().unwrap().len(), "every trace");
        assert_eq!(f["curve"].as_array().unwrap().len(), 13, "the knob grid");
        assert_eq!(f["linear"].as_array().unwrap().len(), 4, "W = 5, 10, 20, 30 min");
    }
    let held = |i: usize, k: &str| fams[i]["held_out"][k].as_u64().unwrap();
    assert_eq!(v["shapes"], 72);
    // The dominance check per predict_linear window: memory and CPU with asg fail at W = 5
    // and 10 min (on the AMBER % guard), CPU without asg is met at every window.
    let met = |i: usize| -> Vec<bool> {
        fams[i]["against_linear"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["met"].as_bool().unwrap())
            .collect()
    };
    assert_eq!(met(0), [false, false, true, true]);
    assert_eq!(met(1), [false, false, true, true]);
    assert_eq!(met(2), [true, true, true, true]);
    let w10 = &fams[0]["against_linear"][1];
    assert_eq!(w10["window_minutes"], 10.0);
    assert_eq!(w10["more_catches"]["sensitivity"], 1.0);
    assert_eq!(w10["within_guards"]["sensitivity"], 0.75);
    assert_eq!(w10["within_guards"]["caught"], 54);
    assert_eq!((held(0, "events"), held(0, "caught"), held(0, "false_episodes")), (83, 62, 97));
    assert_eq!((held(2, "events"), held(2, "caught"), held(2, "false_episodes")), (352, 228, 591));
    // The live defaults are the criterion's picks: memory's on the memory traces, CPU's on
    // the CPU traces without asg.
    for i in [0, 2] {
        assert_eq!(fams[i]["default_sensitivity"], fams[i]["live_sensitivity"], "{}", fams[i]);
        assert_eq!(fams[i]["default_shape"], fams[i]["live_shape"], "{}", fams[i]["name"]);
    }
    assert_eq!(fams[0]["default_sensitivity"], 1.0);
    assert_eq!(fams[2]["default_sensitivity"], 1.0);
    assert_eq!(fams[0]["held_out"]["median_lead_minutes"], 10.0);
    // The live default per memory trace: azure on the goal's side, alibaba not.
    let sides: Vec<bool> = fams[0]["live_default"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["goal_side"].as_bool().unwrap())
        .collect();
    assert_eq!(sides, [false, true]);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    assert_eq!(picture.matches("<polyline").count(), 3, "one curve per family");

    // --curve-svg needs --cv; a bad criterion is refused.
    let bad = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(["alarm", "backtest", "--curve-svg", "x.svg", "--trace"])
        .arg(traces())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
