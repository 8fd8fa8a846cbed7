//! Unit tests of the alarm engine (kept apart so `engine.rs` holds the engine alone).

use super::*;

#[test]
fn stale_alarms_expire_and_only_they() {
    let mut e = Engine::new(RuleSet::default());
    let s = |ts, cpu| sample(ts, "p", cpu);
    let hot = [s(1_000, 95.0)];
    let input = |samples| SeriesInput { host: "h", process: "p", samples, interval_ms: 1_000 };
    assert_eq!(e.evaluate(1_000, &[input(&hot)], &[])[0].level, Level::Red);
    // Silent for 3 intervals: STALE, from 4 s (whenever the engine notices).
    let evs = e.evaluate(4_500, &[], &[]);
    assert_eq!((evs.last().unwrap().level, evs.last().unwrap().start), (Level::Stale, 4_000));
    assert!(e.expire_stale(63_999, 60_000).is_empty(), "not stale long enough");
    let gone = e.expire_stale(64_700, 60_000);
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].level, gone[0].end), (Level::Stale, Some(64_000)));
    assert!(e.active().is_empty());
    // A RED series that still reports is never expired.
    e.evaluate(62_000, &[input(&[s(62_000, 95.0)])], &[]);
    assert!(e.expire_stale(10_000_000, 1).is_empty());
    assert_eq!(e.active()[0].level, Level::Red);
}

fn sample(ts: TsMs, process: &str, cpu: f64) -> Sample {
    Sample {
        ts,
        process: process.into(),
        cpu,
        cores: 0.0,
        mem: 1.0,
        rss: 0,
        count: 1,
        extras: None,
    }
}

#[test]
fn an_exited_process_closes_its_alarm_with_the_reason_while_its_host_reports() {
    let mut e = Engine::new(RuleSet::default());
    fn input<'a>(process: &'a str, samples: &'a [Sample]) -> SeriesInput<'a> {
        SeriesInput { host: "h", process, samples, interval_ms: 1_000 }
    }
    let host = |last_seen| [HostSeen { host: "h", last_seen, interval_ms: 1_000, pause: None }];
    e.evaluate(1_000, &[input("hog", &[sample(1_000, "hog", 95.0)])], &host(1_000));
    e.evaluate(2_000, &[input("hog", &[sample(2_000, "hog", 40.0)])], &host(2_000));
    // hog exits; "sh" keeps the host reporting. STALE at 5 s carries 95 (what raised it).
    let mut stale = None;
    for t in 3..=7 {
        let ts = t * 1_000;
        let evs = e.evaluate(ts, &[input("sh", &[sample(ts, "sh", 1.0)])], &host(ts));
        stale = stale.or(evs.into_iter().find(|ev| ev.level == Level::Stale && ev.end.is_none()));
    }
    let stale = stale.expect("went STALE");
    assert_eq!((stale.start, stale.value, stale.previous), (5_000, 95.0, Level::Red));
    assert!(!e.active().is_empty(), "still STALE 2 s later");
    let evs = e.evaluate(8_000, &[input("sh", &[sample(8_000, "sh", 1.0)])], &host(8_000));
    let closed = evs.iter().find(|ev| ev.id == stale.id).expect("closed");
    assert_eq!(closed.end, Some(8_000));
    assert!(closed.reason.as_deref().unwrap().starts_with("process exited"), "{closed:?}");
    assert!(e.active().is_empty());
}

#[test]
fn retiring_a_host_closes_its_alarms_and_records_the_retirement() {
    let mut e = Engine::new(RuleSet::default());
    let hot = [sample(1_000, "p", 95.0)];
    let series = [SeriesInput { host: "h", process: "p", samples: &hot, interval_ms: 1_000 }];
    e.evaluate(1_000, &series, &[]);
    // Silent host "gone" and the series host "h" both have open alarms.
    e.evaluate(
        10_000,
        &[],
        &[HostSeen { host: "gone", last_seen: 0, interval_ms: 1_000, pause: None }],
    );
    assert_eq!(e.active().len(), 2);
    let evs = e.retire_host("h", 20_000, "host retired");
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0].reason.as_deref(), Some("host retired"));
    assert!(evs[0].end.is_some());
    assert_eq!(
        (evs[1].kind, evs[1].level, evs[1].end),
        (AlarmKind::HostRetired, Level::Ok, Some(20_000))
    );
    // Issue 13 item 11: a host the store dropped closes its host_silent alarm.
    let evs = e.forget_unlisted_hosts(&[], 30_000);
    assert_eq!((evs.len(), evs[0].kind, evs[0].end), (1, AlarmKind::HostSilent, Some(30_000)));
    assert!(evs[0].reason.as_deref().unwrap().contains("left the store"));
    assert!(e.active().is_empty());
}

#[test]
fn warmup_counts_sample_time_and_restarts_after_a_gap() {
    // linear over 20 s: 20 s of history needed (the method's warm-up is its window).
    let mut rules = RuleSet::default();
    rules.defaults.method = crate::Method::Linear;
    rules.defaults.window_ms = 20_000;
    let mut e = Engine::new(rules);
    fn input(samples: &[Sample]) -> SeriesInput<'_> {
        SeriesInput { host: "h", process: "p", samples, interval_ms: 1_000 }
    }
    let cpu = |e: &Engine| {
        e.warmups().into_iter().find(|w| w.metric == Metric::Cpu).expect("the cpu series")
    };
    e.evaluate(10_000, &[input(&[sample(10_000, "p", 1.0)])], &[]);
    let w = cpu(&e);
    assert_eq!((w.warmup_ms, w.history_ms, w.ready_in_ms), (20_000, 0, 20_000));
    let more: Vec<Sample> = (11..=25).map(|s| sample(s * 1_000, "p", 1.0)).collect();
    e.evaluate(25_000, &[input(&more)], &[]);
    assert_eq!(cpu(&e).ready_in_ms, 5_000);
    let more: Vec<Sample> = (26..=30).map(|s| sample(s * 1_000, "p", 1.0)).collect();
    e.evaluate(30_000, &[input(&more)], &[]);
    assert_eq!(cpu(&e).ready_in_ms, 0, "ready once 20 s of samples are in");
    // A gap of more than 3 intervals: the forecaster starts over, and so does its warm-up.
    e.evaluate(40_000, &[input(&[sample(40_000, "p", 1.0)])], &[]);
    assert_eq!(cpu(&e).ready_in_ms, 20_000);
}

#[test]
fn a_forgotten_ok_series_read_again_does_not_repeat_its_past() {
    let mut e = Engine::new(RuleSet::default());
    let input = |samples| SeriesInput { host: "h", process: "p", samples, interval_ms: 1_000 };
    let history: Vec<Sample> =
        (1..=10).map(|t| sample(t * 1_000, "p", if t <= 2 { 95.0 } else { 2.0 })).collect();
    let first = e.evaluate(10_000, &[input(&history)], &[]);
    assert!(first.iter().any(|ev| ev.level == Level::Red), "{first:?}");
    assert!(first.iter().any(|ev| ev.level == Level::Ok), "{first:?}");
    // Silent while OK: forgotten.
    e.evaluate(20_000, &[], &[]);
    assert!(e.active().is_empty());
    // An overlapping read window hands the same samples back with a new one: nothing is
    // derived again from the old ones.
    let again = [history.as_slice(), &[sample(21_000, "p", 2.0)]].concat();
    assert!(e.evaluate(21_000, &[input(&again)], &[]).is_empty());
}

#[test]
fn releasing_a_host_forgets_it_without_an_event() {
    let mut e = Engine::new(RuleSet::default());
    let hot = [sample(1_000, "p", 95.0)];
    let input = |host, samples| SeriesInput { host, process: "p", samples, interval_ms: 1_000 };
    e.evaluate(1_000, &[input("h", &hot), input("other", &hot)], &[]);
    assert_eq!(e.active().len(), 2);
    e.release_host("h");
    assert_eq!(e.active().len(), 1);
    assert_eq!(e.active()[0].host, "other");
    assert!(e.last_sample("h", "p").is_none());
}

/// Issue 19: a host paused by directive keeps heartbeating. It goes host-silent only when the
/// heartbeats stop too, its series' alarms close with the reason instead of going STALE, and
/// a resume brings the usual judgement back.
#[test]
fn a_paused_host_is_judged_on_its_heartbeats_and_its_alarms_close_with_the_reason() {
    let mut e = Engine::new(RuleSet::default());
    fn input(samples: &[Sample]) -> SeriesInput<'_> {
        SeriesInput { host: "h", process: "hog", samples, interval_ms: 1_000 }
    }
    let host = |last_seen, pause| [HostSeen { host: "h", last_seen, interval_ms: 1_000, pause }];
    let paused = |heartbeat| Some(Pause { paused: true, heartbeat });
    let red = e.evaluate(1_000, &[input(&[sample(1_000, "hog", 95.0)])], &host(1_000, None));
    let red = red.into_iter().find(|ev| ev.level == Level::Red).expect("RED");
    e.evaluate(2_000, &[input(&[sample(2_000, "hog", 95.0)])], &host(2_000, None));
    // Paused: no sample after 2 s, a heartbeat every second, for 8 s (past the 3 s limit).
    let mut evs = Vec::new();
    for t in 3..=10 {
        evs.extend(e.evaluate(t * 1_000, &[], &host(2_000, paused(t * 1_000))));
    }
    assert!(evs.iter().all(|ev| ev.kind == AlarmKind::Series), "no host silent: {evs:?}");
    assert!(evs.iter().all(|ev| ev.level != Level::Stale), "nothing STALE: {evs:?}");
    let closed: Vec<&AlarmEvent> = evs.iter().filter(|ev| ev.id == red.id).collect();
    assert_eq!(closed.len(), 1, "{evs:?}");
    // Closed when it would have gone STALE (3 intervals after its last sample).
    assert_eq!((closed[0].level, closed[0].end), (Level::Red, Some(5_000)));
    assert_eq!(closed[0].reason.as_deref(), Some(PAUSED_REASON));
    assert!(e.active().is_empty());
    // The heartbeats stop (the machine died): silent 3 intervals after the last one, once.
    assert!(e.evaluate(12_000, &[], &host(2_000, paused(10_000))).is_empty(), "not yet");
    let silent = e.evaluate(13_500, &[], &host(2_000, paused(10_000)));
    assert_eq!(silent.len(), 1, "{silent:?}");
    assert_eq!(
        (silent[0].kind, silent[0].level, silent[0].start, silent[0].value),
        (AlarmKind::HostSilent, Level::Red, 13_000, 3.5)
    );
    assert!(e.evaluate(14_000, &[], &host(2_000, paused(10_000))).is_empty(), "not raised again");
    // A heartbeat again (the agent restarted, still paused): the host is back.
    let back = e.evaluate(15_000, &[], &host(2_000, paused(15_000)));
    let lv: Vec<(Level, Option<i64>)> = back.iter().map(|ev| (ev.level, ev.end)).collect();
    assert_eq!(lv, vec![(Level::Red, Some(15_000)), (Level::Ok, Some(15_000))]);
    // Resumed: samples again, judged from OK (a new RED), and silence is judged on data again.
    let resumed = |last_seen| host(last_seen, Some(Pause { paused: false, heartbeat: 15_000 }));
    let again = e.evaluate(16_000, &[input(&[sample(16_000, "hog", 95.0)])], &resumed(16_000));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        (again[0].level, again[0].previous, again[0].start),
        (Level::Red, Level::Ok, 16_000)
    );
    let quiet = e.evaluate(19_000, &[], &resumed(16_000));
    let kinds: Vec<(AlarmKind, Level)> =
        quiet.iter().filter(|ev| ev.end.is_none()).map(|ev| (ev.kind, ev.level)).collect();
    assert_eq!(kinds, vec![(AlarmKind::Series, Level::Stale), (AlarmKind::HostSilent, Level::Red)]);
}

/// What a quiet process costs the engine is mostly its series' states (issue 16): 104 bytes a
/// state (from 160), a process's states in one allocation (three: 312 bytes, a 320-byte
/// malloc chunk), and one B-tree slot a process of 48 bytes (the key, the states' pointer and
/// length) instead of one a series. A field added or widened past that fails here; see
/// `SeriesState` for how the fields are packed.
#[test]
fn a_process_costs_one_b_tree_slot_and_its_states_104_bytes_each() {
    use std::mem::size_of;
    assert!(size_of::<SeriesState>() <= 104, "{}", size_of::<SeriesState>());
    assert!(size_of::<(ProcessKey, ProcessStates)>() <= 48);
    assert_eq!(malloc_chunk(3 * 104), 320);
}
