//! State-machine tests as tables: each case is a rule, a series, and the transitions it must
//! produce, through the one `check` helper.

use procwatch_alarm::forecast::Shape;
use procwatch_alarm::{Engine, HostSeen, Method, Rule, RuleSet, SeriesInput};
use procwatch_model::{AlarmEvent, AlarmKind, Level, Sample};

const MIN: i64 = 60_000;

fn sample(ts: i64, cpu: f64) -> Sample {
    Sample { ts, process: "p".into(), cpu, cores: 0.0, mem: 1.0, rss: 0, count: 1, extras: None }
}

/// One line per returned event: `i previous->level v=.. [eta=..]`; closed events as
/// `i close LEVEL`.
fn render(i: usize, ev: &AlarmEvent) -> String {
    if ev.end.is_some() && ev.level != Level::Ok {
        return format!("{i} close {}", ev.level);
    }
    let mut s = format!("{i} {}->{} v={:.1}", ev.previous, ev.level, ev.value);
    if let Some(eta) = ev.eta_seconds {
        s += &format!(" eta={:.0}m", eta / 60.0);
    }
    s
}

/// Feeds `values` (one a minute; NaN = no sample that minute) to an engine with `rule`,
/// evaluating every minute, and compares the transitions with `expect` (one per line).
fn check(rule: Rule, values: &[f64], expect: &str) {
    let mut engine = Engine::new(RuleSet { defaults: rule, rules: vec![] });
    let mut got = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let now = i as i64 * MIN;
        if !v.is_nan() {
            samples.push(sample(now, v));
        }
        // The server hands over a window; overlapping windows must not double count.
        let window = &samples[samples.len().saturating_sub(5)..];
        let input = SeriesInput { host: "h", process: "p", samples: window, interval_ms: MIN };
        for ev in engine.evaluate(now, &[input], &[]) {
            if ev.metric == procwatch_model::Metric::Cpu {
                got.push(render(i, &ev));
            }
        }
    }
    let want: Vec<&str> = expect.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(got, want, "\nvalues: {values:?}");
}

/// procwatch's forecaster at the memory default's shape (the cpu series of these tests
/// otherwise get the cpu default's).
const MEMORY_SHAPE: Method = Method::Procwatch { sensitivity: None, shape: Some(Shape::MEMORY) };

fn ramp(from: f64, step: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| from + step * i as f64).collect()
}

/// Deterministic noise in [-a, a].
fn noisy(level: f64, a: f64, n: usize) -> Vec<f64> {
    let mut x: u64 = 42;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            level + a * (((x >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0)
        })
        .collect()
}

fn with(values: &[&[f64]]) -> Vec<f64> {
    values.concat()
}

#[test]
fn steady_ramp_raises_amber_before_red_with_a_sensible_eta() {
    // +0.5 %/min from 40: crosses 80 at minute 81. AMBER ahead of it (predict_linear and
    // procwatch's cpu default, an undamped trend, about 10 min; the memory default's trend
    // damped to half 5 min), with an ETA of about the remaining time; then RED, then OK once
    // it falls back.
    let up = ramp(40.0, 0.5, 90);
    let down = [50.0; 4];
    let values = with(&[&up, &down]);
    for (method, expect) in [
        (
            Method::PROCWATCH,
            "71 OK->AMBER v=75.5 eta=9m
             81 close AMBER
             81 AMBER->RED v=80.5
             91 close RED
             91 RED->OK v=50.0",
        ),
        (
            MEMORY_SHAPE,
            "76 OK->AMBER v=78.0 eta=4m
             81 close AMBER
             81 AMBER->RED v=80.5
             91 close RED
             91 RED->OK v=50.0",
        ),
        (
            Method::Linear,
            "72 OK->AMBER v=76.0 eta=8m
             81 close AMBER
             81 AMBER->RED v=80.5
             91 close RED
             91 RED->OK v=50.0",
        ),
    ] {
        check(Rule { method, ..Rule::default() }, &values, expect);
    }
}

#[test]
fn table_of_series() {
    let flat = [40.0; 40];
    let spike = with(&[&flat, &[95.0], &flat[..6]]);
    // After a spike the value wobbles around T: RED holds (hysteresis), no flapping.
    let wobble = with(&[&flat, &[95.0, 79.0, 81.0, 78.0, 82.0, 77.0, 76.0, 70.0, 60.0, 60.0]]);
    let cases: Vec<(&str, Rule, Vec<f64>, &str)> = vec![
        (
            "single spike: RED, clears after 2 samples below 75",
            Rule::default(),
            spike,
            "40 OK->RED v=95.0
             42 close RED
             42 RED->OK v=40.0",
        ),
        (
            "spike then wobble around T: one RED, no flapping",
            Rule::default(),
            wobble,
            "40 OK->RED v=95.0
             48 close RED
             48 RED->OK v=60.0",
        ),
        (
            "noisy flat 70 ± 6 for 400 min, memory's shape: no AMBER at all (T is more than \
             one noise width of the 5-minute medians away)",
            Rule { method: MEMORY_SHAPE, ..Rule::default() },
            noisy(70.0, 6.0, 400),
            "",
        ),
        (
            "the same at the cpu default: one 2-minute AMBER (its 30-minute undamped trend \
             reads a slope into the noise once in 400 min)",
            Rule::default(),
            noisy(70.0, 6.0, 400),
            "244 OK->AMBER v=76.0 eta=10m
             246 close AMBER
             246 AMBER->OK v=74.1",
        ),
        ("noisy flat 70 ± 3: nothing at all", Rule::default(), noisy(70.0, 3.0, 400), ""),
        (
            "predict_linear on 70 ± 3: nothing either",
            Rule { method: Method::Linear, ..Rule::default() },
            noisy(70.0, 3.0, 400),
            "",
        ),
        (
            "too few samples: a steep start never raises AMBER",
            Rule::default(),
            vec![60.0, 66.0, 72.0, 78.0],
            "",
        ),
        (
            "too few samples for linear either",
            Rule { method: Method::Linear, ..Rule::default() },
            vec![60.0, 66.0, 72.0, 78.0],
            "",
        ),
        (
            "persistence never raises AMBER",
            Rule { method: Method::Persistence, ..Rule::default() },
            ramp(45.0, 1.0, 40),
            "36 OK->RED v=81.0",
        ),
    ];
    for (name, rule, values, expect) in cases {
        eprintln!("case: {name}");
        check(rule, &values, expect);
    }
}

#[test]
fn a_gap_makes_an_alarm_stale_not_resolved() {
    let nan = f64::NAN;
    // RED, then silence: stale after 3 intervals; data returns low: STALE -> OK.
    let values = with(&[&[40.0; 20], &[90.0, 91.0], &[nan; 5], &[40.0, 40.0]]);
    check(
        Rule::default(),
        &values,
        "20 OK->RED v=90.0
         24 close RED
         24 RED->STALE v=90.0
         27 close STALE
         27 STALE->OK v=40.0",
    );
    // An OK series that goes silent is forgotten without an event.
    check(Rule::default(), &with(&[&[40.0; 20], &[nan; 10]]), "");
}

#[test]
fn silent_host_raises_its_own_alarm_and_clears() {
    let mut engine = Engine::new(RuleSet::default());
    let seen =
        |last_seen| [HostSeen { host: "web-1", last_seen, interval_ms: 10_000, pause: None }];
    assert!(engine.evaluate(20_000, &[], &seen(0)).is_empty(), "2 intervals: not yet");
    let ev = engine.evaluate(30_000, &[], &seen(0));
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].kind, ev[0].level, ev[0].host.as_str(), ev[0].value),
        (AlarmKind::HostSilent, Level::Red, "web-1", 30.0)
    );
    assert!(engine.evaluate(40_000, &[], &seen(0)).is_empty(), "no repeat while silent");
    assert_eq!(engine.active().len(), 1);
    let back = engine.evaluate(50_000, &[], &seen(45_000));
    let lv: Vec<(Level, Option<i64>)> = back.iter().map(|e| (e.level, e.end)).collect();
    // Back when it was heard again (no sample in the input: its last_seen), not at `now`.
    assert_eq!(lv, vec![(Level::Red, Some(45_000)), (Level::Ok, Some(45_000))]);
    assert_eq!(back[0].id, ev[0].id, "the closed event keeps its id");
    assert!(engine.active().is_empty());
}

#[test]
fn restore_continues_open_alarms_without_raising_them_again() {
    let samples: Vec<Sample> = (0..3).map(|i| sample(i * MIN, 95.0)).collect();
    fn input(s: &[Sample]) -> SeriesInput<'_> {
        SeriesInput { host: "h", process: "p", samples: s, interval_ms: MIN }
    }
    let mut first = Engine::new(RuleSet::default());
    let opened = first.evaluate(0, &[input(&samples[..1])], &[]);
    assert_eq!(opened.len(), 1);
    let mut second = Engine::new(RuleSet::default());
    second.restore(&first.active());
    assert!(second.evaluate(2 * MIN, &[input(&samples)], &[]).is_empty());
    let low: Vec<Sample> = (3..5).map(|i| sample(i * MIN, 10.0)).collect();
    let closed = second.evaluate(4 * MIN, &[input(&low)], &[]);
    assert_eq!(closed[0].id, opened[0].id);
    assert_eq!((closed[0].end, closed[0].peak), (Some(4 * MIN), 95.0));
    assert_eq!(closed[1].level, Level::Ok);
}

#[test]
fn event_ids_are_stable_and_distinct() {
    use procwatch_alarm::event_id;
    use procwatch_model::Metric;
    let a = event_id(AlarmKind::Series, "h", "p", Metric::Cpu, 1);
    assert_eq!(a, event_id(AlarmKind::Series, "h", "p", Metric::Cpu, 1));
    for other in [
        event_id(AlarmKind::Series, "h", "p", Metric::Mem, 1),
        event_id(AlarmKind::Series, "h", "p", Metric::Cpu, 2),
        event_id(AlarmKind::Series, "hp", "", Metric::Cpu, 1),
        event_id(AlarmKind::HostSilent, "h", "p", Metric::Cpu, 1),
    ] {
        assert_ne!(a, other);
    }
}

#[test]
fn rules_pick_thresholds_by_glob_and_enable_cores() {
    use procwatch_alarm::RuleSpec;
    let java = RuleSpec {
        process: Some(procwatch_alarm::Glob::new("java*")),
        threshold: Some(50.0),
        ..Default::default()
    };
    let cores = RuleSpec {
        process: Some(procwatch_alarm::Glob::new("java*")),
        metric: Some(procwatch_model::Metric::Cores),
        threshold: Some(2.0),
        ..Default::default()
    };
    let rules = RuleSet::from_specs(&RuleSpec::default(), &[cores, java]).unwrap();
    let mut engine = Engine::new(rules);
    let s = |process: &str| Sample {
        ts: 0,
        process: process.into(),
        cpu: 60.0,
        cores: 3.0,
        mem: 1.0,
        rss: 0,
        count: 1,
        extras: None,
    };
    let (javad, nginx) = ([s("javad")], [s("nginx")]);
    let inputs = [
        SeriesInput { host: "h", process: "javad", samples: &javad, interval_ms: MIN },
        SeriesInput { host: "h", process: "nginx", samples: &nginx, interval_ms: MIN },
    ];
    let got: Vec<(String, String, Level, f64)> = engine
        .evaluate(0, &inputs, &[])
        .into_iter()
        .map(|e| (e.process, e.metric.to_string(), e.level, e.threshold))
        .collect();
    assert_eq!(
        got,
        vec![
            ("javad".into(), "cpu".into(), Level::Red, 50.0),
            ("javad".into(), "cores".into(), Level::Red, 2.0),
            // nginx at 3 cores: the built-in rule (a process saturating a core) fires.
            ("nginx".into(), "cores".into(), Level::Red, 0.9),
        ]
    );
}

#[test]
fn a_cores_rule_at_half_a_core_clears() {
    // Issue 15: with a fixed 5-point hysteresis a rule at 0.5 cores never cleared.
    let rule = procwatch_alarm::RuleSpec {
        metric: Some(procwatch_model::Metric::Cores),
        threshold: Some(0.5),
        ..Default::default()
    };
    let mut engine = Engine::new(RuleSet::from_specs(&Default::default(), &[rule]).unwrap());
    let s = |ts, cores| Sample {
        ts,
        process: "p".into(),
        cpu: 1.0,
        cores,
        mem: 1.0,
        rss: 0,
        count: 1,
        extras: None,
    };
    let mut levels = Vec::new();
    for (i, cores) in [1.0, 1.0, 0.0, 0.0, 0.0].into_iter().enumerate() {
        let ts = i as i64 * MIN;
        let samples = [s(ts, cores)];
        let input = [SeriesInput { host: "h", process: "p", samples: &samples, interval_ms: MIN }];
        levels.extend(
            engine
                .evaluate(ts, &input, &[])
                .into_iter()
                .filter(|e| e.end.is_none() || e.level == Level::Ok)
                .map(|e| e.level),
        );
    }
    assert_eq!(levels, vec![Level::Red, Level::Ok]);
}

#[test]
fn default_forecaster_works_at_live_ten_second_sampling() {
    // +0.5 %/min from 40, sampled every 10 s: crosses 80 after 80 min.
    let mut engine = Engine::new(RuleSet::default());
    let samples: Vec<Sample> =
        (0..600).map(|i| sample(i * 10_000, 40.0 + 0.5 * i as f64 / 6.0)).collect();
    let mut events = Vec::new();
    for i in 0..samples.len() {
        let input =
            SeriesInput { host: "h", process: "p", samples: &samples[i..=i], interval_ms: 10_000 };
        events.extend(engine.evaluate(i as i64 * 10_000, &[input], &[]));
    }
    let opened: Vec<(Level, i64, Option<f64>)> = events
        .iter()
        .filter(|e| e.end.is_none() && e.metric == procwatch_model::Metric::Cpu)
        .map(|e| (e.level, e.start, e.eta_seconds))
        .collect();
    assert_eq!(opened.len(), 2, "{opened:?}");
    let (amber, red) = (opened[0], opened[1]);
    assert_eq!((amber.0, red.0), (Level::Amber, Level::Red));
    let lead_s = (red.1 - amber.1) / 1000;
    assert!((300..=660).contains(&lead_s), "AMBER {lead_s} s before RED");
    let eta = amber.2.expect("eta");
    assert!((eta - lead_s as f64).abs() <= 120.0, "eta {eta} s vs actual {lead_s} s");
}

/// `(id, level, previous, start, end)` of each event, for comparing two engines.
fn key(evs: &[AlarmEvent]) -> Vec<(String, Level, Level, i64, Option<i64>)> {
    evs.iter().map(|e| (e.id.clone(), e.level, e.previous, e.start, e.end)).collect()
}

fn input(samples: &[Sample]) -> SeriesInput<'_> {
    SeriesInput { host: "h", process: "p", samples, interval_ms: MIN }
}

/// Two replicas on one store run one engine each, at their own evaluation times: a series
/// that goes silent and comes back gives both the same events, with the same ids. The STALE
/// event starts 3 intervals after the last sample (not when an engine happened to look), and
/// an engine that only sees the return (it did not evaluate during the gap) still records the
/// STALE period.
#[test]
fn stale_events_come_from_the_data_not_from_the_evaluation_time() {
    let hot: Vec<Sample> = [20, 21, 30, 31].iter().map(|&m| sample(m * MIN, 95.0)).collect();
    let cpu = |evs: Vec<AlarmEvent>| -> Vec<AlarmEvent> {
        evs.into_iter().filter(|e| e.metric == procwatch_model::Metric::Cpu).collect()
    };
    // A evaluates every minute, 7 s after the minute.
    let mut a = Engine::new(RuleSet::default());
    let mut from_a = Vec::new();
    for m in 20..=31 {
        let now = m * MIN + 7_000;
        let window: Vec<Sample> = hot.iter().filter(|s| s.ts <= now).cloned().collect();
        from_a.extend(cpu(a.evaluate(now, &[input(&window)], &[])));
    }
    // B evaluates at 21:30, then only at 31:30 (a long pause, or its read was slow).
    let mut b = Engine::new(RuleSet::default());
    let mut from_b = cpu(b.evaluate(21 * MIN + 30_000, &[input(&hot[..2])], &[]));
    from_b.extend(cpu(b.evaluate(31 * MIN + 30_000, &[input(&hot)], &[])));
    assert_eq!(key(&from_a), key(&from_b));
    let levels: Vec<(Level, i64, Option<i64>)> =
        from_a.iter().map(|e| (e.level, e.start, e.end)).collect();
    assert_eq!(
        levels,
        [
            (Level::Red, 20 * MIN, None),
            (Level::Red, 20 * MIN, Some(24 * MIN)),
            (Level::Stale, 24 * MIN, None),
            (Level::Stale, 24 * MIN, Some(30 * MIN)),
            (Level::Red, 30 * MIN, None),
        ]
    );
    assert_eq!(from_a[4].previous, Level::Stale);
    assert_eq!(key(&a.active()), key(&b.active()));
    assert_eq!(a.active().len(), 1, "one open event: {:?}", a.active());
}

/// A batch that arrives late (its samples are older than the moment the engine judged the
/// series stale) withdraws the premature STALE: it is closed where it started, and the RED it
/// replaced is open again under its own id, as on a replica that saw the batch in time. Never
/// two open events for one series.
#[test]
fn a_late_batch_withdraws_a_premature_stale() {
    let hot: Vec<Sample> = (20..=23).map(|m| sample(m * MIN, 95.0)).collect();
    let mut a = Engine::new(RuleSet::default());
    let first = a.evaluate(21 * MIN, &[input(&hot[..2])], &[]);
    // Minute 24: nothing since 21 in the store (22 and 23 are still in an agent's spool).
    let stale = a.evaluate(24 * MIN, &[input(&hot[..2])], &[]);
    assert!(stale.iter().any(|e| e.level == Level::Stale && e.end.is_none()), "{stale:?}");
    // The late batch lands.
    let back = a.evaluate(25 * MIN, &[input(&hot)], &[]);
    let stale_closed: Vec<&AlarmEvent> = back.iter().filter(|e| e.level == Level::Stale).collect();
    assert!(stale_closed.iter().all(|e| e.end == Some(e.start)), "{back:?}");
    let mut b = Engine::new(RuleSet::default());
    b.evaluate(21 * MIN, &[input(&hot[..2])], &[]);
    b.evaluate(25 * MIN, &[input(&hot)], &[]);
    assert_eq!(key(&a.active()), key(&b.active()));
    let red_cpu = first.iter().find(|e| e.metric == procwatch_model::Metric::Cpu).unwrap();
    assert!(a.active().iter().any(|e| e.id == red_cpu.id && e.end.is_none()));
    let mut keys: Vec<_> = a.active().iter().map(|e| (e.process.clone(), e.metric)).collect();
    keys.dedup();
    assert_eq!(keys.len(), a.active().len(), "two open events for one series");
}

/// Two replicas judge a silent host at different moments: the host-silent event starts when
/// the host became silent (last heard + 3 intervals), so both store it under one id, and the
/// recovery starts at the first sample heard again.
#[test]
fn host_silent_events_do_not_depend_on_the_evaluation_time() {
    let seen =
        |last_seen| [HostSeen { host: "web-1", last_seen, interval_ms: 10_000, pause: None }];
    let mut a = Engine::new(RuleSet::default());
    let mut b = Engine::new(RuleSet::default());
    let ea = a.evaluate(31_000, &[], &seen(0));
    let eb = b.evaluate(38_500, &[], &seen(0));
    assert_eq!(key(&ea), key(&eb));
    assert_eq!((ea[0].start, ea[0].level), (30_000, Level::Red));
    // Heard again at 41 s (a sample), evaluated at different moments.
    let back = [Sample { ts: 41_000, ..sample(0, 1.0) }];
    let inp = [SeriesInput { host: "web-1", process: "p", samples: &back, interval_ms: 10_000 }];
    let ra = a.evaluate(42_000, &inp, &seen(41_000));
    let rb = b.evaluate(49_000, &inp, &seen(41_000));
    let host = |v: Vec<AlarmEvent>| -> Vec<AlarmEvent> {
        v.into_iter().filter(|e| e.kind == AlarmKind::HostSilent).collect()
    };
    let (ra, rb) = (host(ra), host(rb));
    assert_eq!(key(&ra), key(&rb));
    let lv: Vec<(Level, i64, Option<i64>)> = ra.iter().map(|e| (e.level, e.start, e.end)).collect();
    assert_eq!(lv, [(Level::Red, 30_000, Some(41_000)), (Level::Ok, 41_000, Some(41_000))]);
    // A restored host alarm keeps its start (and so its id) too.
    let mut c = Engine::new(RuleSet::default());
    c.restore(&ea);
    assert!(c.evaluate(60_000, &[], &seen(0)).is_empty());
    assert_eq!(key(&c.active()), key(&ea));
}

/// After a restart the server hands the engine its whole read-back window, samples from
/// before the restored alarm opened included: they prime the forecaster but are not
/// re-judged (a restored RED is not cleared by the low samples that preceded it).
#[test]
fn restore_does_not_judge_the_samples_before_the_open_alarm_again() {
    let values: Vec<Sample> =
        (0..12).map(|m| sample(m * MIN, if m < 10 { 40.0 } else { 95.0 })).collect();
    let mut first = Engine::new(RuleSet::default());
    for m in 0..11 {
        first.evaluate(m as i64 * MIN, &[input(&values[..=m])], &[]);
    }
    let open = first.active();
    assert_eq!(open.len(), 1);
    let mut second = Engine::new(RuleSet::default());
    second.restore(&open);
    assert!(second.evaluate(11 * MIN, &[input(&values)], &[]).is_empty());
    assert!(first.evaluate(11 * MIN, &[input(&values)], &[]).is_empty());
    assert_eq!(key(&second.active()), key(&first.active()));
}
