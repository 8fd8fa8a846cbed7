//! Issue 18: procwatch's forecaster scored on traces it was not tuned on. Nested
//! leave-one-trace-out over the shared traces and `traces-extra` (copied with their README
//! into `tests/data/`), per family: each fold chooses the forecaster's shape and its knob on
//! the other traces. These are the held-out figures BENCHMARKS.md reports (section
//! Forecaster), so a change to the forecaster or the procedure that moves them fails here.

use procwatch_alarm::backtest::{prepare_dir, Prepared, Protocol, Score};
use procwatch_alarm::cv::{self, Criterion, FamilyCv, Grid, SENSITIVITY_GRID};
use procwatch_alarm::forecast::RobustParams;
use procwatch_alarm::Method;
use procwatch_model::Metric;
use std::path::PathBuf;

fn load(dir: &str) -> Vec<Prepared> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    prepare_dir(&dir, 80.0).unwrap_or_else(|e| panic!("{e}"))
}

struct Run {
    traces: Vec<Prepared>,
    families: Vec<cv::Family>,
    grid: Grid,
}

/// Everything scored once (shared by the tests), as `procwatch alarm backtest --cv` does.
fn run() -> &'static Run {
    static RUN: std::sync::OnceLock<Run> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let mut traces = load("traces");
        traces.extend(load("traces-extra"));
        assert_eq!(traces.len(), 11, "nine shared traces and two extra");
        let grid = Grid::score(&traces, &Protocol::default(), cv::shapes());
        Run { families: cv::families(&traces), traces, grid }
    })
}

impl Run {
    fn family(&self, name: &str) -> &cv::Family {
        self.families.iter().find(|f| f.name == name).unwrap()
    }
    fn cv(&self, name: &str, criterion: Criterion) -> FamilyCv {
        cv::cross_validate(self.family(name), criterion, &self.grid)
    }
    fn shape(&self, i: usize) -> String {
        self.grid.shapes[i].to_string()
    }
    /// `predict_linear`'s cells at window `w` minutes, a cell per trace.
    fn linear(&self, w: i64) -> &[cv::Cell] {
        &self.grid.linear.iter().find(|(x, _)| *x == w).unwrap().1
    }
}

/// (events, caught, false episodes, AMBER samples) of a score.
fn counts(s: &Score) -> (usize, usize, usize, usize) {
    (s.events, s.caught, s.false_episodes, s.amber_samples)
}

/// The forecaster parameters of the pick the criterion makes on all of a family's traces.
fn picked(r: &Run, cv: &FamilyCv) -> RobustParams {
    let h = Protocol::default().horizon_ms;
    r.grid.shapes[cv.default.shape].params(h, SENSITIVITY_GRID[cv.default.knob])
}

/// The parameters the live default builds its forecaster with for `metric` (the engine, the
/// backtest and the dashboard all build it through `Method::for_metric` and
/// `Method::forecaster`, whose parameters these are).
fn live(metric: Metric) -> RobustParams {
    let h = Protocol::default().horizon_ms;
    Method::PROCWATCH.for_metric(metric).robust_params(h).expect("procwatch's forecaster")
}

fn knobs(cv: &FamilyCv) -> Vec<f64> {
    cv.folds.iter().map(|f| SENSITIVITY_GRID[f.pick.knob]).collect()
}

#[test]
fn held_out_figures_and_the_blind_default() {
    let r = run();
    let names: Vec<&str> = r.families.iter().map(|f| f.name).collect();
    assert_eq!(names, ["mem", "cpu", "cpu_no_asg"]);
    assert_eq!(r.family("mem").members.len(), 2);
    assert_eq!(r.family("cpu_no_asg").members.len(), 8);

    // Memory: each trace scored at the shape and knob chosen on the other one.
    let mem = r.cv("mem", Criterion::RecallTarget);
    assert_eq!(knobs(&mem), [1.0, 1.25]);
    assert_eq!(
        r.shape(mem.folds[0].pick.shape),
        "trend 60m noise 60m floor 0.1 damping 1 holdoff 30m"
    );
    assert_eq!(
        r.shape(mem.folds[1].pick.shape),
        "trend 30m noise 60m floor 0.1 damping 1 holdoff 30m"
    );
    let s = &mem.held_out.score;
    assert_eq!(counts(s), MEM_HELD_OUT);
    // The memory goal: recall ≥ 0.70 at ≤ 2 false/day, precision ≥ 0.5, median
    // lead ≥ 10 min. Held out with the shape chosen blind: recall and lead met, false
    // alarms (2.57/day) and precision (0.39) not.
    assert!(s.recall() >= 0.70 && s.false_per_day() > 2.0 && s.precision() < 0.5, "{s:?}");
    assert_eq!(mem.held_out.timing.median_lead_minutes(), 10.0);
    // The live memory default, shape and knob, is what the criterion picks on all memory
    // traces.
    assert_eq!(live(Metric::Mem), picked(r, &mem), "{}", r.shape(mem.default.shape));

    // CPU without the auto-scaling-group trace: recall above the goal, but at 4.6 false/day,
    // not 1 (the curve shows 1/day is out of reach here).
    let cpu = r.cv("cpu_no_asg", Criterion::RecallTarget);
    assert_eq!(counts(&cpu.held_out.score), CPU_HELD_OUT);
    assert!(cpu.held_out.score.recall() >= 0.55 && cpu.held_out.score.false_per_day() > 1.0);
    // The live CPU default, shape and knob, is what the criterion picks on all of them (the
    // figures BENCHMARKS.md reports: a 30-minute undamped trend at z = 1).
    assert_eq!(live(Metric::Cpu), picked(r, &cpu), "{}", r.shape(cpu.default.shape));
    assert_eq!(SENSITIVITY_GRID[cpu.default.knob], 1.0);
    assert_eq!(r.shape(cpu.default.shape), "trend 30m noise 120m floor 0.1 damping 1 holdoff 30m");

    // With the asg trace: its 686 events pull every training pool under the goal, so the
    // criterion falls back to the highest recall.
    let all_cpu = r.cv("cpu", Criterion::RecallTarget);
    assert_eq!(counts(&all_cpu.held_out.score).1, ALL_CPU_CAUGHT);

    // The bounds: no point of any candidate shape and knob reaches the memory goal (recall,
    // false alarms, precision and lead together) or the CPU goal, even chosen in-sample on
    // the very traces scored.
    for (name, goal) in [("mem", mem_goal as fn(&cv::Cell) -> bool), ("cpu_no_asg", cpu_goal)] {
        let members = &r.family(name).members;
        for (s, knobs) in r.grid.cells.iter().enumerate() {
            for (j, row) in knobs.iter().enumerate() {
                let c = cv::pool(row, members);
                assert!(!goal(&c), "{name}: {} z={} meets it", r.shape(s), SENSITIVITY_GRID[j]);
            }
        }
    }
}

fn mem_goal(c: &cv::Cell) -> bool {
    let s = &c.score;
    s.recall() >= 0.70
        && s.false_per_day() <= 2.0
        && s.precision() >= 0.5
        && c.timing.median_lead_minutes() >= 10.0
}

fn cpu_goal(c: &cv::Cell) -> bool {
    c.score.recall() >= 0.55 && c.score.false_per_day() <= 1.0
}

#[test]
fn no_fold_tunes_on_the_trace_it_scores() {
    let r = run();
    for family in &r.families {
        let honest = r.cv(family.name, Criterion::RecallTarget);
        for fold in &honest.folds {
            assert!(!fold.trained_on.contains(&fold.held_out), "{}", r.traces[fold.held_out].name);
            let mut expect = family.members.clone();
            expect.retain(|&i| i != fold.held_out);
            assert_eq!(fold.trained_on, expect);
            // Poison the left-out trace: at every shape and knob it now looks perfect (every
            // event caught, no false alarm). A fold that peeked at it would pick the first
            // shape's lowest knob; the honest fold's pick must not move.
            let mut grid = r.grid.clone();
            for row in grid.cells.iter_mut().flatten() {
                let s = &mut row[fold.held_out].score;
                s.events = 100_000;
                s.caught = 100_000;
                s.false_episodes = 0;
            }
            let poisoned = cv::cross_validate(family, Criterion::RecallTarget, &grid);
            let same = poisoned.folds.iter().find(|f| f.held_out == fold.held_out).unwrap();
            assert_eq!(same.pick, fold.pick, "{}: the fold saw its own trace", family.name);
        }
        let scored: Vec<usize> = honest.folds.iter().map(|f| f.held_out).collect();
        assert_eq!(scored, family.members, "each trace scored exactly once");
    }
}

/// The dominance check on the held-out curve (each trace at the shape chosen without
/// it): for a predict_linear window, some knob catches more at no more false alarms per day
/// and no higher AMBER %, pooled per family (`procwatch alarm backtest --cv` prints it per
/// window, `against_linear` in JSON). It holds for CPU without the asg trace at every window,
/// and for the long windows (20, 30 min) everywhere; it fails for memory and for CPU with
/// asg against W = 5 and 10 min, on the AMBER % guard: memory's z = 1 catches 61 vs 58
/// (W=5m) and 55 (W=10m) at 2.25 false/day vs 4.48 and 2.86, but at 6.40 % AMBER vs 6.24 and
/// 5.02 %; within both guards the most is z = 0.75's 54 catches. This is the known state,
/// not the goal.
#[test]
fn the_held_out_curve_against_predict_linear() {
    let r = run();
    let mut beaten_by_nothing = Vec::new();
    for family in &r.families {
        let held = r.cv(family.name, Criterion::RecallTarget);
        for (w, cells) in &r.grid.linear {
            let l = cv::pool(cells, &family.members).score;
            let better = held.curve.iter().any(|c| c.score.beats(&l));
            if !better {
                beaten_by_nothing.push(format!("{} W={w}m", family.name));
            }
        }
    }
    assert_eq!(beaten_by_nothing, ["mem W=5m", "mem W=10m", "cpu W=5m", "cpu W=10m"]);
    let mem = r.cv("mem", Criterion::RecallTarget);
    let at = |z: f64| &mem.curve[SENSITIVITY_GRID.iter().position(|&k| k == z).unwrap()].score;
    let (z75, z1) = (at(0.75), at(1.0));
    assert_eq!((z1.caught, z1.false_episodes), (61, 85));
    assert!((z1.amber_pct() - 6.40).abs() < 0.01, "{}", z1.amber_pct());
    assert_eq!((z75.caught, z75.false_episodes), (54, 77));
    assert!((z75.amber_pct() - 4.92).abs() < 0.01, "{}", z75.amber_pct());
    let linear = |w: i64| cv::pool(r.linear(w), &r.family("mem").members).score;
    let (w5, w10) = (linear(5), linear(10));
    assert_eq!((w5.caught, w10.caught), (58, 55));
    // z = 1: more catches at fewer false alarms, above the AMBER guard of both.
    assert!(z1.amber_pct() > w5.amber_pct() && z1.amber_pct() > w10.amber_pct());
    // z = 0.75: within both guards of both, one catch short of W = 10 min.
    assert!(z75.amber_pct() <= w10.amber_pct() && z75.false_per_day() <= w10.false_per_day());
}

/// In-sample reach of the goals not met held out: every cell scored on the very traces it is
/// judged on, so these are bounds on the 72 shapes × 13 knobs, not figures to report as the
/// forecaster's. (1) The `predict_linear` check: some cell beats every window in every family
/// in-sample (the live memory default beats W = 5 and 10 min), so where it fails held out, it
/// fails because the choice does not carry over between traces, not for want of a candidate.
/// (2) The default on the goal's side on every trace: on seven of the nine CPU traces no cell
/// reaches the goal recall within 1 false alarm a day, even chosen on that trace alone; on
/// alibaba memory 112 cells do, none of them at no more AMBER % than `predict_linear` W = 10 min.
#[test]
fn what_the_candidates_reach_in_sample() {
    let r = run();
    let cells = || r.grid.cells.iter().flatten();
    let mut unbeaten = Vec::new();
    for family in &r.families {
        for (w, linear) in &r.grid.linear {
            let l = cv::pool(linear, &family.members).score;
            let beats = cells().any(|row| cv::pool(row, &family.members).score.beats(&l));
            if !beats {
                unbeaten.push(format!("{} W={w}m", family.name));
            }
        }
    }
    assert_eq!(unbeaten, Vec::<String>::new(), "in-sample, some cell beats every window");
    let mem = r.family("mem");
    let pick = r.cv("mem", Criterion::RecallTarget).default;
    let live = cv::pool(&r.grid.cells[pick.shape][pick.knob], &mem.members).score;
    assert_eq!(counts(&live).1, 62);
    for w in [5, 10] {
        let l = cv::pool(r.linear(w), &mem.members).score;
        assert!(live.beats(&l), "W={w}m: {live:?} against {l:?}");
    }
    let w10 = r.linear(10);
    let mut out_of_reach = Vec::new();
    for family in r.families.iter().filter(|f| f.name != "cpu_no_asg") {
        for &i in &family.members {
            let on_side: Vec<&Score> = cells()
                .map(|row| &row[i].score)
                .filter(|s| {
                    s.recall() >= family.goal_recall && s.false_per_day() <= family.budget_per_day
                })
                .collect();
            if on_side.iter().all(|s| s.amber_pct() > w10[i].score.amber_pct()) {
                let name = r.traces[i].name.trim_end_matches(".csv").to_string();
                out_of_reach.push((name, on_side.len()));
            }
        }
    }
    let expect = [
        ("alibaba2018_mem_util_percent_300s", 112),
        ("cpu_utilization_asg_misconfiguration", 0),
        ("ec2_cpu_utilization_24ae8d", 0),
        ("ec2_cpu_utilization_5f5533", 0),
        ("ec2_cpu_utilization_825cc2", 0),
        ("ec2_cpu_utilization_ac20cd", 0),
        ("ec2_cpu_utilization_fe7f93", 0),
        ("azure2019_cpu_usage_relative_300s", 0),
    ];
    let expect: Vec<(String, usize)> = expect.iter().map(|(n, k)| (n.to_string(), *k)).collect();
    assert_eq!(out_of_reach, expect, "(trace, cells on the goal's side without the AMBER guard)");
}

const MEM_HELD_OUT: (usize, usize, usize, usize) = (83, 62, 97, 429);
const CPU_HELD_OUT: (usize, usize, usize, usize) = (352, 228, 591, 3155);
const ALL_CPU_CAUGHT: usize = 309;
