//! The backtest scores the live path, not a copy: a recorded stream (the Azure memory and CPU
//! traces of `tests/data/traces-extra`, 30 days at 5 min, scaled by the contract's rule) fed
//! sample by sample through the server's evaluator (`Engine::evaluate`) and through the
//! backtest (`forecast_flags` + `amber_samples`) gives AMBER on exactly the same samples, for
//! each metric at its own default shape and knob.
//!
//! The rule is set to what the scoring protocol means: T = 80, no debounce, no hysteresis,
//! AMBER clears on the first sample without the signal, and W = 60 min so the engine's
//! warm-up (W/interval + 1 = 13 samples) ends where the protocol's does (sample 12).

use procwatch_alarm::backtest::{amber_samples, forecast_flags, parse_trace, prepare, Protocol};
use procwatch_alarm::{Engine, Method, Rule, RuleSet, SeriesInput};
use procwatch_model::{Level, Metric, Sample};
use std::path::PathBuf;

#[test]
fn engine_and_backtest_raise_the_same_ambers() {
    same_ambers("azure2019_assigned_mem_relative_300s.csv", Metric::Mem);
}

#[test]
fn engine_and_backtest_raise_the_same_ambers_on_cpu() {
    same_ambers("azure2019_cpu_usage_relative_300s.csv", Metric::Cpu);
}

fn same_ambers(file: &str, metric: Metric) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces-extra").join(file);
    let trace = parse_trace(file, &std::fs::read_to_string(path).unwrap()).unwrap();
    let p = prepare(&trace, procwatch_alarm::backtest::Scale::Auto, 80.0);
    let interval = p.step_ms;
    let rule = Rule {
        metric: Some(metric),
        threshold: 80.0,
        hysteresis: 0.0,
        clear_for: 1,
        debounce: 1,
        horizon_ms: 600_000,
        window_ms: 60 * 60_000,
        method: Method::PROCWATCH,
        ..Rule::default()
    };

    // The backtest path: the forecaster the engine builds for this rule and metric.
    let proto = Protocol { threshold: 80.0, horizon_ms: rule.horizon_ms, debounce: 1 };
    let mut f =
        rule.method.for_metric(metric).forecaster(rule.window_ms, rule.horizon_ms, interval);
    let backtest = amber_samples(&p, &proto, &forecast_flags(&p, &proto, &mut *f));

    // The live path: one evaluation per sample, as the server does every interval.
    let mut engine = Engine::new(RuleSet { defaults: rule, rules: vec![] });
    let mut live = Vec::with_capacity(p.y.len());
    for (&ts, &y) in p.ts.iter().zip(&p.y) {
        let (cpu, mem) = if metric == Metric::Mem { (0.0, y) } else { (y, 0.0) };
        let s = Sample {
            ts,
            process: "vm".into(),
            cpu,
            cores: 0.0,
            mem,
            rss: 0,
            count: 1,
            extras: None,
        };
        let input = SeriesInput {
            host: "h",
            process: "vm",
            samples: std::slice::from_ref(&s),
            interval_ms: interval,
        };
        engine.evaluate(ts, &[input], &[]);
        let level = engine.active().iter().find(|e| e.metric == metric).map(|e| e.level);
        live.push(level == Some(Level::Amber));
    }

    let ambers = backtest.iter().filter(|&&a| a).count();
    assert!(ambers > 100, "{file}: a stream with AMBERs to compare ({ambers})");
    let differ: Vec<usize> = (0..live.len()).filter(|&i| live[i] != backtest[i]).collect();
    assert!(
        differ.is_empty(),
        "{file}: {} of {} samples differ, first at {:?}",
        differ.len(),
        live.len(),
        differ.first()
    );
}
