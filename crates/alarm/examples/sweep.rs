//! Research harness behind BENCHMARKS.md "Forecaster", its in-sample part about the previous
//! default (not part of the product): scores the previous default forecaster (`Analog`) and
//! its neighbours against the baselines on the whole traces and on each half of every trace
//! (the split check). Today's figures come from `procwatch alarm backtest --cv`.
//!
//! `cargo run --release -p procwatch-alarm --example sweep`

use procwatch_alarm::backtest::{forecast_flags, prepare_dir, score, Prepared, Protocol, Score};
use procwatch_alarm::forecast::{Analog, AnalogParams, Forecaster, Holt, Linear};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn traces() -> Vec<Prepared> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces");
    prepare_dir(&dir, 80.0).expect("traces")
}

/// The first or second half of a trace, scored as a trace of its own.
fn half(p: &Prepared, second: bool) -> Prepared {
    let m = p.y.len() / 2;
    let r = if second { m..p.y.len() } else { 0..m };
    Prepared { ts: p.ts[r.clone()].to_vec(), y: p.y[r].to_vec(), ..p.clone() }
}

fn run(set: &[Prepared], make: &dyn Fn() -> Box<dyn Forecaster>) -> BTreeMap<String, Score> {
    let proto = Protocol::default();
    let mut pool: BTreeMap<String, Score> = BTreeMap::new();
    for p in set {
        let flags = forecast_flags(p, &proto, &mut *make());
        pool.entry(p.group.clone()).or_default().add(&score(p, &proto, &flags));
    }
    pool
}

fn line(name: &str, pool: &BTreeMap<String, Score>) -> String {
    let mut s = format!("{name:30}");
    for (g, v) in pool {
        s += &format!(
            " | {g} {:3}/{:3} false {:4} {:5.2}/d amber {:5.2}%",
            v.caught,
            v.events,
            v.false_episodes,
            v.false_per_day(),
            v.amber_pct()
        );
    }
    s
}

/// The full figures of one method, one row per group (the BENCHMARKS table).
fn table(name: &str, pool: &BTreeMap<String, Score>) {
    for (g, v) in pool {
        println!(
            "| {g} | {name} | {} | {} | {:.2} | {:.1} m | {:.2} | {} | {:.2} | {:.2} | {:.1} |",
            v.events,
            v.caught,
            v.recall(),
            v.lead_minutes(),
            v.precision(),
            v.false_episodes,
            v.false_per_day(),
            v.amber_pct(),
            v.false_amber_minutes_per_day()
        );
    }
}

fn main() {
    let all = traces();
    let sets = [
        ("all", all.clone()),
        ("1st half", all.iter().map(|p| half(p, false)).collect::<Vec<_>>()),
        ("2nd half", all.iter().map(|p| half(p, true)).collect::<Vec<_>>()),
    ];
    let base = AnalogParams::for_horizon(600_000);
    let linear = || Box::new(Linear::new(3)) as Box<dyn Forecaster>;
    let holt = || Box::new(Holt::new(0.8, 0.4, 300_000)) as Box<dyn Forecaster>;
    println!("== full table (all traces)");
    table("**procwatch**", &run(&all, &move || Box::new(Analog::new(base))));
    table("linear W=10m", &run(&all, &linear));
    table("holt 0.8/0.4", &run(&all, &holt));
    let min = 60_000;
    let variants: Vec<(String, AnalogParams)> = vec![
        ("procwatch default".into(), base),
        ("hold-off 20 min".into(), AnalogParams { holdoff_ms: 20 * min, ..base }),
        ("hold-off 30 min".into(), AnalogParams { holdoff_ms: 30 * min, ..base }),
        ("near 0.5".into(), AnalogParams { near: Some(0.5), ..base }),
        ("near 1.5".into(), AnalogParams { near: Some(1.5), ..base }),
        ("exit 2 (latch)".into(), AnalogParams { near_exit: Some(2.0), ..base }),
        ("exit 3 (latch)".into(), AnalogParams { near_exit: Some(3.0), ..base }),
        ("no latch".into(), AnalogParams { near_exit: None, ..base }),
        ("no near term".into(), AnalogParams { near: None, ..base }),
        ("no hold-off".into(), AnalogParams { holdoff_ms: 0, ..base }),
        (
            "previous default".into(),
            AnalogParams { holdoff_ms: 0, near: None, near_exit: None, ..base },
        ),
        ("eps 2".into(), AnalogParams { eps: 2.0, ..base }),
        ("p 0.7".into(), AnalogParams { p: 0.7, ..base }),
        ("p 0.9".into(), AnalogParams { p: 0.9, ..base }),
        ("gate 5".into(), AnalogParams { gate: 5.0, ..base }),
        ("beta 0.7".into(), AnalogParams { beta: 0.7, ..base }),
        ("beta 0.8".into(), AnalogParams { beta: 0.8, ..base }),
        ("history 12 h".into(), AnalogParams { history: 144, ..base }),
        ("analog only".into(), AnalogParams { beta: 0.0, near: None, ..base }),
        ("trend only".into(), AnalogParams { p: 2.0, near: None, ..base }),
        ("near term only".into(), AnalogParams { p: 2.0, beta: 0.0, ..base }),
    ];
    for (set_name, set) in &sets {
        println!("== {set_name}");
        println!("{}", line("linear W=10m", &run(set, &linear)));
        println!("{}", line("holt 0.8 0.4", &run(set, &holt)));
        for (name, params) in &variants {
            let params = *params;
            println!("{}", line(name, &run(set, &move || Box::new(Analog::new(params)))));
        }
    }
}
