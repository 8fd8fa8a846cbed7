//! Dormancy (issue 16) changes no event: an engine whose quiet series drop their forecasters
//! and rebuild them from stored samples when they rise raises exactly the events, with the
//! same values, forecasts and ETAs, as an engine that keeps every forecaster. Both are fed
//! pass by pass as the server's evaluator feeds them (a short overlapping window of recent
//! samples); the dormant one also gets the history `Engine::history_needed` asks for, as the
//! evaluator reads it from the store.
//!
//! The streams (10 s samples, 8 hours, six processes, cpu and mem apart) move between idle,
//! a wobble across the dormancy ceiling, ramps to a crossing, plateaus above the threshold and
//! back, with gaps long enough to restart a series.

use procwatch_alarm::{Engine, RuleSet, SeriesInput};
use procwatch_model::{AlarmEvent, Level, Sample};

const STEP: i64 = 10_000;
const PROCESSES: usize = 6;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One series' values, one per 10 s; NaN = no sample (a gap).
fn stream(rng: &mut Rng, len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(len);
    let mut level: f64 = 2.0;
    while out.len() < len {
        let n = 30 + (rng.next() * 600.0) as usize;
        let kind = (rng.next() * 6.0) as u32;
        let target = match kind {
            0 | 1 => 1.0 + rng.next() * 3.0, // idle
            2 => 9.0 + rng.next() * 4.0,     // around the ceiling (≈ 11 % for cpu)
            3 => 60.0 + rng.next() * 40.0,   // a ramp towards (or past) the threshold
            4 => 78.0 + rng.next() * 10.0,   // just under / over it
            _ => -1.0,                       // a gap
        };
        for i in 0..n {
            if target < 0.0 {
                // Longer than 3 intervals: the series restarts (and may be forgotten).
                if i < 4 + (rng.next() * 4.0) as usize {
                    out.push(f64::NAN);
                }
                continue;
            }
            level += (target - level) / (n - i) as f64;
            let noise = (rng.next() - 0.5) * if target < 5.0 { 2.0 } else { 4.0 };
            out.push((level + noise).clamp(0.0, 100.0));
        }
    }
    out.truncate(len);
    out
}

struct Fleet {
    names: Vec<String>,
    /// Per process, every stored sample, oldest first.
    samples: Vec<Vec<Sample>>,
}

fn fleet(seed: u64, len: usize) -> Fleet {
    let mut rng = Rng(seed);
    let names: Vec<String> = (0..PROCESSES).map(|i| format!("p{i}")).collect();
    let samples = names
        .iter()
        .map(|name| {
            let (cpu, mem) = (stream(&mut rng, len), stream(&mut rng, len));
            (0..len)
                .filter(|&i| !cpu[i].is_nan() && !mem[i].is_nan())
                .map(|i| Sample {
                    ts: 1_000_000_000 + i as i64 * STEP,
                    process: name.clone(),
                    cpu: cpu[i],
                    cores: cpu[i] / 50.0,
                    mem: mem[i],
                    rss: 0,
                    count: 1,
                    extras: None,
                })
                .collect()
        })
        .collect();
    Fleet { names, samples }
}

struct Run {
    events: Vec<Vec<AlarmEvent>>,
    most_dormant: usize,
    wakes: usize,
}

/// Feeds `fleet` pass by pass (one pass per 10 s) to `engine`; `history` says whether a pass
/// gives the history the engine asks for.
fn run(fleet: &Fleet, mut engine: Engine, history: bool, len: usize) -> Run {
    let mut events = Vec::new();
    let (mut most_dormant, mut wakes) = (0, 0);
    for i in 0..len as i64 {
        let now = 1_000_000_000 + i * STEP;
        let window = |s: &[Sample], from: i64| -> Vec<Sample> {
            s.iter().filter(|x| x.ts >= from && x.ts <= now).cloned().collect()
        };
        let mut inputs: Vec<Vec<Sample>> =
            fleet.samples.iter().map(|s| window(s, now - 4 * STEP)).collect();
        for (p, input) in inputs.iter_mut().enumerate() {
            if let Some(from) = engine.history_needed("h", &fleet.names[p], input) {
                wakes += 1;
                if history {
                    *input = window(&fleet.samples[p], from);
                }
            }
        }
        let series: Vec<SeriesInput<'_>> = inputs
            .iter()
            .zip(&fleet.names)
            .map(|(s, name)| SeriesInput {
                host: "h",
                process: name,
                samples: s,
                interval_ms: STEP,
            })
            .collect();
        events.push(engine.evaluate(now, &series, &[]));
        most_dormant = most_dormant.max(engine.dormant_series());
    }
    Run { events, most_dormant, wakes }
}

fn engines() -> (Engine, Engine) {
    let mut keeping = Engine::new(RuleSet::default());
    keeping.set_dormancy(false);
    (keeping, Engine::new(RuleSet::default()))
}

#[test]
fn dormant_series_raise_exactly_the_events_of_kept_forecasters() {
    let len = 8 * 360;
    let (mut ambers, mut reds, mut wakes) = (0, 0, 0);
    for seed in [1u64, 7, 42, 2026] {
        let fleet = fleet(seed, len);
        let (keeping, dormant) = engines();
        let a = run(&fleet, keeping, true, len);
        let b = run(&fleet, dormant, true, len);
        assert_eq!(a.most_dormant, 0);
        assert!(b.most_dormant > 0, "seed {seed}: some series went dormant");
        for (pass, (ea, eb)) in a.events.iter().zip(&b.events).enumerate() {
            assert_eq!(ea, eb, "seed {seed}, pass {pass}");
        }
        let all = a.events.iter().flatten();
        ambers += all.clone().filter(|e| e.level == Level::Amber && e.end.is_none()).count();
        reds += all.filter(|e| e.level == Level::Red && e.end.is_none()).count();
        wakes += b.wakes;
    }
    // The streams exercise what matters: forecasts that cross right after a wake.
    eprintln!("{ambers} AMBER, {reds} RED, {wakes} wakes");
    assert!(ambers >= 10 && reds >= 10 && wakes >= 50, "{ambers} AMBER, {reds} RED, {wakes} wakes");
}

/// Without the history it asks for, a woken forecaster judges from a few samples and the
/// events differ: the evaluator's read is what keeps dormancy exact.
#[test]
fn without_the_history_asked_for_the_events_differ() {
    let len = 8 * 360;
    let fleet = fleet(42, len);
    let (keeping, dormant) = engines();
    let a = run(&fleet, keeping, true, len);
    let b = run(&fleet, dormant, false, len);
    assert!(b.wakes > 0);
    assert_ne!(a.events, b.events);
}

/// A quiet series holds no forecaster: the engine's estimate drops when its series sleep.
#[test]
fn a_dormant_engine_holds_less() {
    let len = 3 * 360;
    // Idle streams: every series goes dormant and stays so.
    let quiet = Fleet {
        names: vec!["idle".into()],
        samples: vec![(0..len as i64)
            .map(|i| Sample {
                ts: 1_000_000_000 + i * STEP,
                process: "idle".into(),
                cpu: 1.0 + (i % 7) as f64 * 0.3,
                cores: 0.02,
                mem: 2.0 + (i % 5) as f64 * 0.1,
                rss: 0,
                count: 1,
                extras: None,
            })
            .collect()],
    };
    let (keeping, dormant) = engines();
    let mut keeping = keeping;
    let mut dormant = dormant;
    for e in [&mut keeping, &mut dormant] {
        let input = SeriesInput {
            host: "h",
            process: "idle",
            samples: &quiet.samples[0],
            interval_ms: STEP,
        };
        assert!(e.evaluate(1_000_000_000 + len as i64 * STEP, &[input], &[]).is_empty());
    }
    // cpu and mem (procwatch's forecaster), cores (persistence: RED only).
    assert_eq!(dormant.dormant_series(), 3);
    let (k, d) = (keeping.estimated_bytes(), dormant.estimated_bytes());
    assert!(d + 2 * 300 <= k, "dormant {d} bytes, keeping {k}");
    eprintln!("one idle process: dormant {d} bytes, keeping {k}");
}

/// The evaluator feeds a pass host by host (`Engine::feed`, then `Engine::finish` once): the
/// same transitions as one `evaluate` with every host, host silences and returns included.
#[test]
fn feeding_a_pass_in_parts_is_one_evaluate() {
    use procwatch_alarm::HostSeen;
    let len = 3 * 360;
    let hosts = ["h0", "h1", "h2"];
    // Each host its own fleet; h1 is silent for 5 minutes from sample 500 (a host alarm that
    // opens, then closes when it is heard from again).
    let fleets: Vec<Fleet> = (0..3u64)
        .map(|k| {
            let mut f = fleet(100 + k, len);
            if k == 1 {
                let (a, b) = (1_000_000_000 + 500 * STEP, 1_000_000_000 + 530 * STEP);
                f.samples.iter_mut().for_each(|s| s.retain(|x| x.ts < a || x.ts >= b));
            }
            f
        })
        .collect();
    let (mut whole, mut parts) = (Engine::new(RuleSet::default()), Engine::new(RuleSet::default()));
    let mut last_seen = [0i64; 3];
    let mut silences = Vec::new();
    for i in 0..len as i64 {
        let now = 1_000_000_000 + i * STEP;
        let inputs: Vec<Vec<Vec<Sample>>> = fleets
            .iter()
            .map(|f| {
                let w = |s: &Vec<Sample>| -> Vec<Sample> {
                    s.iter().filter(|x| x.ts >= now - 4 * STEP && x.ts <= now).cloned().collect()
                };
                f.samples.iter().map(w).collect()
            })
            .collect();
        for (k, per) in inputs.iter().enumerate() {
            if let Some(t) = per.iter().flatten().map(|s| s.ts).max() {
                last_seen[k] = last_seen[k].max(t);
            }
        }
        let seen: Vec<HostSeen<'_>> = (0..3)
            .filter(|&k| last_seen[k] > 0)
            .map(|k| HostSeen {
                host: hosts[k],
                last_seen: last_seen[k],
                interval_ms: STEP,
                pause: None,
            })
            .collect();
        let series = |k: usize| -> Vec<SeriesInput<'_>> {
            inputs[k]
                .iter()
                .zip(&fleets[k].names)
                .map(|(s, name)| SeriesInput {
                    host: hosts[k],
                    process: name,
                    samples: s,
                    interval_ms: STEP,
                })
                .collect()
        };
        let all: Vec<SeriesInput<'_>> = (0..3).flat_map(series).collect();
        let a = whole.evaluate(now, &all, &seen);
        let mut b = Vec::new();
        for k in 0..3 {
            b.extend(parts.feed(&series(k)));
        }
        b.extend(parts.finish(now, &seen));
        assert_eq!(a, b, "pass {i}");
        let host = a.iter().filter(|e| e.kind == procwatch_model::AlarmKind::HostSilent);
        silences.extend(host.map(|e| (e.host.clone(), e.level, e.end.is_some())));
    }
    // h1's silence opened and was closed by its return (the part `finish` judges from what
    // `feed` saw).
    assert!(silences.contains(&("h1".into(), Level::Red, false)), "{silences:?}");
    assert!(silences.contains(&("h1".into(), Level::Red, true)), "{silences:?}");
}
