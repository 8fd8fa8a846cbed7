//! `Engine::replay`, the history feed of the server's first pass and of a take-over: it judges
//! nothing silent and keeps the returns from silence that the pass's own feeds recorded.

use procwatch_alarm::{Engine, HostSeen, RuleSet, SeriesInput};
use procwatch_model::{AlarmEvent, AlarmKind, Level, Sample};

const STEP: i64 = 10_000;
const T0: i64 = 1_000_000_000;

fn samples(process: &str, steps: std::ops::Range<i64>) -> Vec<Sample> {
    steps
        .map(|i| Sample {
            ts: T0 + i * STEP,
            process: process.to_owned(),
            cpu: 5.0 + (i % 3) as f64,
            cores: 0.1,
            mem: 3.0,
            rss: 1 << 20,
            count: 1,
            extras: None,
        })
        .collect()
}

fn input<'a>(host: &'a str, process: &'a str, s: &'a [Sample]) -> SeriesInput<'a> {
    SeriesInput { host, process, samples: s, interval_ms: STEP }
}

fn seen(host: &str, last_step: i64) -> HostSeen<'_> {
    HostSeen { host, last_seen: T0 + last_step * STEP, interval_ms: STEP, pause: None }
}

/// How the last pass of the scenario feeds: h1's window, then h2's history.
enum Last {
    FeedThenReplay,
    ReplayThenFeed,
    /// What the server did before `replay`: an `evaluate` at time 0 for the history.
    FeedThenEvaluateAtZero,
}

/// h1 reports for 10 steps, falls silent (a host alarm opens at step 30) and is heard from
/// again from step 40; the pass at step 45 also takes over h2 with its history. Returns that
/// pass's events of h1.
fn scenario(last: Last) -> Vec<AlarmEvent> {
    let mut engine = Engine::new(RuleSet::default());
    let first = samples("p", 0..10);
    drop(engine.evaluate(T0 + 9 * STEP, &[input("h1", "p", &first)], &[seen("h1", 9)]));
    let silent = engine.evaluate(T0 + 30 * STEP, &[], &[seen("h1", 9)]);
    assert!(
        silent.iter().any(|e| e.kind == AlarmKind::HostSilent && e.level == Level::Red),
        "{silent:?}"
    );
    let back = samples("p", 40..46);
    let history = samples("q", 0..46);
    let (h1, h2) = ([input("h1", "p", &back)], [input("h2", "q", &history)]);
    let mut out = Vec::new();
    match last {
        Last::FeedThenReplay => {
            out.extend(engine.feed(&h1));
            out.extend(engine.replay(&h2));
        }
        Last::ReplayThenFeed => {
            out.extend(engine.replay(&h2));
            out.extend(engine.feed(&h1));
        }
        Last::FeedThenEvaluateAtZero => {
            out.extend(engine.feed(&h1));
            out.extend(engine.evaluate(0, &h2, &[]));
        }
    }
    out.extend(engine.finish(T0 + 45 * STEP, &[seen("h1", 45), seen("h2", 45)]));
    out.retain(|e| e.host == "h1");
    out
}

#[test]
fn a_replay_keeps_the_return_from_silence_that_the_pass_recorded() {
    let returned = |events: &[AlarmEvent]| -> Option<i64> {
        events
            .iter()
            .find(|e| e.kind == AlarmKind::HostSilent && e.level == Level::Ok)
            .map(|e| e.start)
    };
    let a = scenario(Last::FeedThenReplay);
    // h1 is back at its first sample after the silence, whichever order the pass feeds in.
    assert_eq!(returned(&a), Some(T0 + 40 * STEP), "{a:?}");
    assert_eq!(a, scenario(Last::ReplayThenFeed));
    // An `evaluate` at time 0 dropped the record: the return was dated at the host's last
    // sample instead (what the take-over did before `replay`).
    let old = scenario(Last::FeedThenEvaluateAtZero);
    assert_eq!(returned(&old), Some(T0 + 45 * STEP), "{old:?}");
}

#[test]
fn a_replay_before_a_pass_is_an_evaluate_at_time_zero() {
    // The first pass's history (no host silent): the pass that follows raises the same.
    let run = |replay: bool| -> Vec<AlarmEvent> {
        let mut engine = Engine::new(RuleSet::default());
        let mut hot = samples("p", 0..40);
        for (i, s) in hot.iter_mut().enumerate() {
            s.cpu = 70.0 + i as f64 * 0.5;
        }
        let mut out = match replay {
            true => engine.replay(&[input("h1", "p", &hot)]),
            false => engine.evaluate(0, &[input("h1", "p", &hot)], &[]),
        };
        let recent = samples("p", 38..42);
        let pass = [input("h1", "p", &recent)];
        out.extend(engine.evaluate(T0 + 41 * STEP, &pass, &[seen("h1", 41)]));
        out
    };
    let replayed = run(true);
    assert!(replayed.iter().any(|e| e.level == Level::Red), "{replayed:?}");
    assert_eq!(replayed, run(false));
}
