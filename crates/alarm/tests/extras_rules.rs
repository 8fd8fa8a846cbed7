//! Issue 19: RED thresholds on the opt-in extra metrics. A rule naming `fds` (an absolute
//! count) or `fds_pct` ("near the limit") fires on the samples that carry it, clears below
//! its hysteresis, and no rule means no evaluation of an extra.

use procwatch_alarm::{Engine, RuleSet, RuleSpec, SeriesInput};
use procwatch_model::extras::Extras;
use procwatch_model::{Level, Metric, Sample};

const MIN: i64 = 60_000;

fn sample(ts: i64, fds: Option<u64>, fds_pct: f64) -> Sample {
    Sample {
        ts,
        process: "p".into(),
        cpu: 1.0,
        cores: 0.01,
        mem: 1.0,
        rss: 0,
        count: 1,
        extras: fds.map(|fds| {
            Box::new(Extras { fds: Some(fds), fds_pct: Some(fds_pct), ..Default::default() })
        }),
    }
}

fn engine(specs: &[RuleSpec]) -> Engine {
    Engine::new(RuleSet::from_specs(&Default::default(), specs).unwrap())
}

/// (metric, level) of the events of one pass over `samples`.
fn run(e: &mut Engine, samples: &[Sample]) -> Vec<(Metric, Level)> {
    let mut out = Vec::new();
    for s in samples {
        let input = SeriesInput {
            host: "h",
            process: "p",
            samples: std::slice::from_ref(s),
            interval_ms: MIN,
        };
        out.extend(e.evaluate(s.ts, &[input], &[]).into_iter().map(|ev| (ev.metric, ev.level)));
    }
    out
}

#[test]
fn an_fds_rule_fires_on_the_count_and_clears() {
    let rule =
        RuleSpec { metric: Some(Metric::Fds), threshold: Some(1000.0), ..Default::default() };
    let mut e = engine(&[rule]);
    assert!(e.needs_extras());
    let samples: Vec<Sample> = [500, 1200, 1300, 900, 800, 700]
        .iter()
        .enumerate()
        .map(|(i, &fds)| sample(i as i64 * MIN, Some(fds), 1.0))
        .collect();
    let evs = run(&mut e, &samples);
    assert!(evs.contains(&(Metric::Fds, Level::Red)), "{evs:?}");
    assert!(evs.iter().all(|(m, _)| *m == Metric::Fds), "cpu and mem stay quiet: {evs:?}");
    assert_eq!(evs.last(), Some(&(Metric::Fds, Level::Ok)), "cleared: {evs:?}");
}

#[test]
fn near_the_limit_is_fds_pct_and_samples_without_extras_are_no_reading() {
    let rule =
        RuleSpec { metric: Some(Metric::FdsPct), threshold: Some(90.0), ..Default::default() };
    let mut e = engine(&[rule]);
    let samples = [sample(0, None, 0.0), sample(MIN, Some(10), 95.0), sample(2 * MIN, None, 0.0)];
    let evs = run(&mut e, &samples);
    assert_eq!(evs, [(Metric::FdsPct, Level::Red)], "only the sample that carries it");
}

#[test]
fn without_a_rule_no_extra_is_evaluated() {
    let mut e = engine(&[]);
    assert!(!e.needs_extras());
    let evs =
        run(&mut e, &[sample(0, Some(1_000_000), 100.0), sample(MIN, Some(1_000_000), 100.0)]);
    assert!(evs.is_empty(), "{evs:?}");
    assert_eq!("fds_pct".parse::<Metric>(), Ok(Metric::FdsPct));
    assert!("fds%".parse::<Metric>().unwrap_err().contains("fds_pct"));
}
