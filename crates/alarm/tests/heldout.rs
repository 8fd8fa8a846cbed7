//! Issue 18: procwatch's forecaster scored on traces it was not tuned on. Leave-one-trace-out
//! over the shared traces and `traces-extra` (copied with their README into `tests/data/`),
//! per family; these are the held-out figures BENCHMARKS.md reports (section Forecaster), so
//! a change to the forecaster or the procedure that moves them fails here.

use procwatch_alarm::backtest::{parse_trace, prepare, Prepared, Protocol, Score};
use procwatch_alarm::cv::{self, Cell, Criterion, FamilyCv, SENSITIVITY_GRID};
use procwatch_alarm::rules::{DEFAULT_SENSITIVITY_CPU, DEFAULT_SENSITIVITY_MEM};
use procwatch_alarm::Method;
use std::path::PathBuf;

fn load(dir: &str) -> Vec<Prepared> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let trace = parse_trace(&name, &std::fs::read_to_string(f).unwrap()).unwrap();
            prepare(&trace, procwatch_alarm::backtest::Scale::Auto, 80.0)
        })
        .collect()
}

struct Run {
    traces: Vec<Prepared>,
    families: Vec<cv::Family>,
    grid: Vec<Vec<Cell>>,
    /// (window minutes, cells)
    linear: Vec<(i64, Vec<Cell>)>,
}

/// Everything scored once (shared by the tests), as `procwatch alarm backtest --cv` does (the
/// same forecasters, built by `Method::forecaster` as the live engine builds them).
fn run() -> &'static Run {
    static RUN: std::sync::OnceLock<Run> = std::sync::OnceLock::new();
    RUN.get_or_init(score_everything)
}

fn score_everything() -> Run {
    let mut traces = load("traces");
    traces.extend(load("traces-extra"));
    assert_eq!(traces.len(), 11, "nine shared traces and two extra");
    let proto = Protocol::default();
    let grid = SENSITIVITY_GRID
        .iter()
        .map(|&z| {
            let m = Method::Procwatch { sensitivity: Some(z) };
            cv::cells(&traces, &proto, &|p| m.forecaster(600_000, proto.horizon_ms, p.step_ms))
        })
        .collect();
    let linear = cv::LINEAR_WINDOWS_MIN
        .iter()
        .map(|&w| {
            let cells = cv::cells(&traces, &proto, &|p| {
                Method::Linear.forecaster(w * 60_000, proto.horizon_ms, p.step_ms)
            });
            (w, cells)
        })
        .collect();
    Run { families: cv::families(&traces), traces, grid, linear }
}

impl Run {
    fn linear10(&self) -> &[Cell] {
        &self.linear.iter().find(|(w, _)| *w == 10).unwrap().1
    }
    fn family(&self, name: &str) -> &cv::Family {
        self.families.iter().find(|f| f.name == name).unwrap()
    }
    fn cv(&self, name: &str, criterion: Criterion) -> FamilyCv {
        cv::cross_validate(self.family(name), criterion, &self.grid, self.linear10())
    }
}

/// (events, caught, false episodes, AMBER samples) of a score.
fn counts(s: &Score) -> (usize, usize, usize, usize) {
    (s.events, s.caught, s.false_episodes, s.amber_samples)
}

fn knobs(cv: &FamilyCv) -> Vec<f64> {
    cv.folds.iter().map(|f| SENSITIVITY_GRID[f.knob]).collect()
}

#[test]
fn held_out_figures_and_the_blind_default() {
    let r = run();
    let names: Vec<&str> = r.families.iter().map(|f| f.name).collect();
    assert_eq!(names, ["mem", "cpu", "cpu_no_asg"]);
    assert_eq!(r.family("mem").members.len(), 2);
    assert_eq!(r.family("cpu_no_asg").members.len(), 8);

    // Memory: each trace scored at the knob chosen on the other one.
    let mem = r.cv("mem", Criterion::RecallTarget);
    assert_eq!(knobs(&mem), [1.0, 1.0]);
    let s = &mem.held_out.score;
    assert_eq!(counts(s), (83, 62, 67, 279));
    // The memory goal: recall ≥ 0.70 at ≤ 2 false/day, median lead ≥ 10 min,
    // precision ≥ 0.5. Met: recall and false/day. Not met: precision 0.48, lead 7.5 min.
    assert!(s.recall() >= 0.70 && s.false_per_day() <= 2.0, "{s:?}");
    assert!((s.precision() - 0.481).abs() < 0.001, "precision {}", s.precision());
    assert_eq!(mem.held_out.timing.median_lead_minutes(), 7.5);
    assert_eq!(mem.held_out.timing.median_abs_eta_error_minutes(), 5.0);
    assert_eq!(SENSITIVITY_GRID[mem.default_knob], DEFAULT_SENSITIVITY_MEM);

    // CPU without the auto-scaling-group trace: recall above the goal, but at 3.8 false/day,
    // not 1 (the curve shows 1/day is out of reach here).
    let cpu = r.cv("cpu_no_asg", Criterion::RecallTarget);
    assert_eq!(knobs(&cpu), [1.0, 1.0, 1.25, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(counts(&cpu.held_out.score), (352, 231, 488, 3125));
    assert!(cpu.held_out.score.recall() >= 0.55);
    assert_eq!(SENSITIVITY_GRID[cpu.default_knob], DEFAULT_SENSITIVITY_CPU);

    // With the asg trace: its 686 events pull every training pool under the goal, so the
    // criterion falls back to the highest recall (z = 3).
    let all_cpu = r.cv("cpu", Criterion::RecallTarget);
    assert_eq!(counts(&all_cpu.held_out.score), (1038, 311, 546, 5063));
    assert_eq!(SENSITIVITY_GRID[all_cpu.default_knob], 3.0);

    // The budget criterion, tuned on a single memory trace, does not carry over.
    let mem_budget = r.cv("mem", Criterion::Budget);
    assert_eq!(knobs(&mem_budget), [0.75, 0.25]);
    assert_eq!(counts(&mem_budget.held_out.score).1, 33);
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
            // Poison the left-out trace: at every knob it now looks perfect (every event
            // caught) from the lowest knob up. A fold that peeked at it would pick the lowest
            // knob; the honest fold's pick must not move.
            let mut grid = r.grid.clone();
            for row in &mut grid {
                let s = &mut row[fold.held_out].score;
                s.events = 100_000;
                s.caught = 100_000;
                s.false_episodes = 0;
            }
            let poisoned = cv::cross_validate(family, Criterion::RecallTarget, &grid, r.linear10());
            let same = poisoned.folds.iter().find(|f| f.held_out == fold.held_out).unwrap();
            assert_eq!(same.knob, fold.knob, "{}: the fold saw its own trace", family.name);
        }
        let scored: Vec<usize> = honest.folds.iter().map(|f| f.held_out).collect();
        assert_eq!(scored, family.members, "each trace scored exactly once");
    }
}

/// For every predict_linear window, some knob value catches more at no more false alarms
/// per day and no higher AMBER %, pooled per family.
#[test]
fn the_curve_beats_predict_linear_at_every_window() {
    let r = run();
    for family in &r.families {
        for (w, cells) in &r.linear {
            let l = cv::pool(cells, &family.members).score;
            let better = r.grid.iter().zip(SENSITIVITY_GRID).find(|(row, _)| {
                let s = cv::pool(row, &family.members).score;
                s.caught > l.caught
                    && s.false_per_day() <= l.false_per_day()
                    && s.amber_pct() <= l.amber_pct()
            });
            assert!(better.is_some(), "{}: nothing beats linear W={w}m", family.name);
        }
    }
}
