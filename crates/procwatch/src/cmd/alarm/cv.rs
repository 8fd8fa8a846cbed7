//! `procwatch alarm backtest --cv`: nested leave-one-trace-out cross-validation of procwatch's
//! forecaster (its shape and its sensitivity knob) per family, the held-out table, the
//! held-out operating curve (table and SVG), and the live default's figures per trace.
//! The procedure is `procwatch_alarm::cv`; the forecaster is `procwatch_alarm::forecast::Robust`,
//! deciding with the function the server's evaluator decides with.

use super::BacktestArgs;
use anyhow::{Context, Result};
use procwatch_alarm::backtest::{Prepared, Protocol};
use procwatch_alarm::cv::{self, Cell, FamilyCv, Grid, SENSITIVITY_GRID};
use procwatch_alarm::forecast::Shape;
use procwatch_alarm::rules::{default_sensitivity, default_shape};
use procwatch_model::Metric;
use std::fmt::Write as _;

/// One trace under the live default, and its own best knob within the budget.
struct TraceDefault {
    trace: usize,
    live: Cell,
    best: Option<(f64, Cell)>,
}

struct FamilyRun<'a> {
    family: cv::Family,
    cv: FamilyCv,
    /// (label, knob, pooled cell) of the held-out curve.
    curve: Vec<(String, f64, Cell)>,
    /// (label, window, pooled cell) of predict_linear.
    linear: Vec<(String, f64, Cell)>,
    /// Per trace: the live default (the metric's default shape at its default knob), and
    /// the trace's own best recall over the knob (that shape) within the family's budget
    /// and at no more AMBER % than predict_linear W=10m on that trace.
    per_trace: Vec<TraceDefault>,
    /// The metric's default shape.
    live_shape: Shape,
    /// The metric's default knob.
    live_z: f64,
    traces: &'a [Prepared],
    grid: &'a Grid,
}

/// The dominance check against one `predict_linear` window, on the held-out curve:
/// some knob with more catches at no more false alarms per day and no higher AMBER %.
struct AgainstLinear {
    /// The window, minutes.
    window: f64,
    /// predict_linear's pooled cell.
    linear: Cell,
    /// Of the knobs with more catches at no more false alarms per day, the one with the
    /// lowest AMBER % (the closest to meeting the AMBER guard): (knob, cell).
    more_catches: Option<(f64, Cell)>,
    /// Of the knobs within both guards (false alarms per day and AMBER %), the one with the
    /// most catches (the closest to meeting on catches): (knob, cell).
    within_guards: Option<(f64, Cell)>,
}

impl AgainstLinear {
    fn new(window: f64, linear: &Cell, curve: &[(String, f64, Cell)]) -> AgainstLinear {
        let l = &linear.score;
        let no_more_false = |c: &Cell| c.score.false_per_day() <= l.false_per_day();
        let mut more_catches: Option<(f64, Cell)> = None;
        let mut within_guards: Option<(f64, Cell)> = None;
        for (_, z, c) in curve {
            let s = &c.score;
            if s.caught > l.caught
                && no_more_false(c)
                && more_catches.as_ref().is_none_or(|m| s.amber_pct() < m.1.score.amber_pct())
            {
                more_catches = Some((*z, c.clone()));
            }
            if no_more_false(c)
                && s.amber_pct() <= l.amber_pct()
                && within_guards.as_ref().is_none_or(|m| s.caught > m.1.score.caught)
            {
                within_guards = Some((*z, c.clone()));
            }
        }
        AgainstLinear { window, linear: linear.clone(), more_catches, within_guards }
    }

    /// Met: a knob with more catches at no more false alarms/day and no higher AMBER %.
    fn met(&self) -> bool {
        self.within_guards.as_ref().is_some_and(|w| w.1.score.beats(&self.linear.score))
    }
}

impl FamilyRun<'_> {
    /// The dominance check against every `predict_linear` window.
    fn against_linear(&self) -> Vec<AgainstLinear> {
        self.linear.iter().map(|(_, w, c)| AgainstLinear::new(*w, c, &self.curve)).collect()
    }

    /// The live default's cells of the family's traces, pooled (in-sample).
    fn live_pooled(&self) -> Cell {
        let mut c = Cell::default();
        for t in &self.per_trace {
            c.add(&t.live);
        }
        c
    }
}

pub(super) fn run(args: &BacktestArgs, traces: &[Prepared], proto: &Protocol) -> Result<String> {
    let grid = Grid::score(traces, proto, cv::shapes());
    let criterion: cv::Criterion = args.cv_criterion.parse().map_err(anyhow::Error::msg)?;
    let runs: Vec<FamilyRun<'_>> = cv::families(traces)
        .into_iter()
        .map(|family| -> Result<FamilyRun<'_>> {
            let cv = cv::cross_validate(&family, criterion, &grid);
            let curve = SENSITIVITY_GRID
                .iter()
                .zip(&cv.curve)
                .map(|(&z, c)| (format!("procwatch z={z}"), z, c.clone()))
                .collect();
            let linear = grid
                .linear
                .iter()
                .map(|(w, row)| {
                    (format!("linear W={w}m"), *w as f64, cv::pool(row, &family.members))
                })
                .collect();
            let metric = if family.name == "mem" { Metric::Mem } else { Metric::Cpu };
            let live_shape = default_shape(metric);
            let live = grid
                .shape_index(&live_shape)
                .with_context(|| format!("the {metric:?} default shape is a candidate"))?;
            let z = default_sensitivity(metric);
            let j = SENSITIVITY_GRID.iter().position(|&k| k == z).unwrap_or(0);
            let linear10 = grid.linear10();
            let per_trace = family
                .members
                .iter()
                .map(|&i| {
                    // The trace's own curve: the best recall within the family's budget at
                    // no more AMBER % than predict_linear W=10m on it (ties: the lower knob).
                    let guard = linear10.get(i).map_or(f64::INFINITY, |c| c.score.amber_pct());
                    let mut own: Option<(f64, Cell)> = None;
                    for (row, &z) in grid.cells[live].iter().zip(SENSITIVITY_GRID) {
                        let c = &row[i];
                        let ok = c.score.false_per_day() <= family.budget_per_day
                            && c.score.amber_pct() <= guard;
                        if ok && own.as_ref().is_none_or(|o| c.score.recall() > o.1.score.recall())
                        {
                            own = Some((z, c.clone()));
                        }
                    }
                    TraceDefault { trace: i, live: grid.cells[live][j][i].clone(), best: own }
                })
                .collect();
            Ok(FamilyRun {
                family,
                cv,
                curve,
                linear,
                per_trace,
                live_shape,
                live_z: z,
                traces,
                grid: &grid,
            })
        })
        .collect::<Result<_>>()?;
    if let Some(path) = &args.curve_svg {
        std::fs::write(path, svg(&runs, proto))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.format == "json" {
        Ok(serde_json::to_string_pretty(&json(&runs, proto, &args.cv_criterion))? + "\n")
    } else {
        Ok(table(&runs, args))
    }
}

fn figures(name: &str, c: &Cell) -> serde_json::Value {
    let mut v = super::figures(name, None, &c.score);
    v["median_lead_minutes"] = c.timing.median_lead_minutes().into();
    v["median_abs_eta_error_minutes"] = c.timing.median_abs_eta_error_minutes().into();
    v["median_eta_error_minutes"] = c.timing.median_eta_error_minutes().into();
    v["eta_announced"] = c.timing.eta_errors_ms.len().into();
    v["no_eta"] = c.timing.no_eta.into();
    v
}

fn json(runs: &[FamilyRun<'_>], proto: &Protocol, criterion: &str) -> serde_json::Value {
    let fams: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let name = |i: usize| r.traces[i].name.clone();
            serde_json::json!({
                "name": r.family.name,
                "budget_per_day": r.family.budget_per_day,
                "goal_recall": r.family.goal_recall,
                "traces": r.family.members.iter().map(|&i| name(i)).collect::<Vec<_>>(),
                "folds": r.cv.folds.iter().map(|f| serde_json::json!({
                    "held_out": name(f.held_out),
                    "trained_on": f.trained_on.iter().map(|&i| name(i)).collect::<Vec<_>>(),
                    "shape": r.grid.shapes[f.pick.shape].to_string(),
                    "sensitivity": SENSITIVITY_GRID[f.pick.knob],
                    "figures": figures(&name(f.held_out), &f.cell),
                })).collect::<Vec<_>>(),
                "held_out": figures(r.family.name, &r.cv.held_out),
                "default_shape": r.grid.shapes[r.cv.default.shape].to_string(),
                "default_sensitivity": SENSITIVITY_GRID[r.cv.default.knob],
                "live_shape": r.live_shape.to_string(),
                "live_sensitivity": r.live_z,
                "live_default_pooled": figures(r.family.name, &r.live_pooled()),
                "live_default": r.per_trace.iter().map(|TraceDefault { trace: i, live: c, best: own }| {
                    let mut v = figures(&name(*i), c);
                    v["goal_side"] = goal_side(&r.family, c).into();
                    v["best_within_budget"] = own.as_ref().map_or(serde_json::Value::Null, |(z, c)| {
                        let mut b = figures(&name(*i), c);
                        b["sensitivity"] = (*z).into();
                        b
                    });
                    v
                }).collect::<Vec<_>>(),
                "curve": r.curve.iter().map(|(l, z, c)| {
                    let mut v = figures(l, c);
                    v["sensitivity"] = (*z).into();
                    v
                }).collect::<Vec<_>>(),
                "linear": r.linear.iter().map(|(l, w, c)| {
                    let mut v = figures(l, c);
                    v["window_minutes"] = (*w).into();
                    v
                }).collect::<Vec<_>>(),
                "against_linear": r.against_linear().iter().map(|a| {
                    let point = |p: &Option<(f64, Cell)>| p.as_ref().map_or(serde_json::Value::Null, |(z, c)| {
                        let mut v = figures(&format!("procwatch z={z}"), c);
                        v["sensitivity"] = (*z).into();
                        v
                    });
                    serde_json::json!({
                        "window_minutes": a.window,
                        "met": a.met(),
                        "linear": figures(&format!("linear W={}m", a.window), &a.linear),
                        "more_catches": point(&a.more_catches),
                        "within_guards": point(&a.within_guards),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "mode": "leave-one-trace-out",
        "criterion": criterion,
        "threshold": proto.threshold,
        "horizon_seconds": proto.horizon_ms / 1000,
        "debounce": proto.debounce,
        "sensitivity_grid": SENSITIVITY_GRID,
        "shapes": runs.first().map_or(0, |r| r.grid.shapes.len()),
        "families": fams,
    })
}

/// Recall at the family's goal within its false-alarm budget.
fn goal_side(f: &cv::Family, c: &Cell) -> bool {
    c.score.recall() >= f.goal_recall && c.score.false_per_day() <= f.budget_per_day
}

fn row(name: &str, c: &Cell) -> String {
    let s = &c.score;
    format!(
        "{name:44} {:>6} {:>6} {:>6.2} {:>6.2} {:>6} {:>7.2} {:>7.2} {:>6.1}m {:>6.1}m",
        s.events,
        s.caught,
        s.recall(),
        s.precision(),
        s.false_episodes,
        s.false_per_day(),
        s.amber_pct(),
        c.timing.median_lead_minutes(),
        c.timing.median_abs_eta_error_minutes(),
    )
}

fn table(runs: &[FamilyRun<'_>], args: &BacktestArgs) -> String {
    let mut out = format!(
        "procwatch alarm backtest --cv: leave-one-trace-out, T={} H={} debounce {}\n\
         shape ({} candidates) and knob chosen per fold on the other traces of the family, \
         criterion {}\n",
        args.threshold,
        args.horizon,
        args.debounce,
        runs.first().map_or(0, |r| r.grid.shapes.len()),
        match args.cv_criterion.as_str() {
            "budget" =>
                "budget: the best training recall within the false/day budget and at \
                         no more AMBER % than linear W=10m",
            _ =>
                "recall: the fewest training false/day among the shapes' lowest knobs reaching \
                  the family's goal recall (within 5 %: the simpler shape)",
        }
    );
    let head = format!(
        "{:44} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7}\n",
        "",
        "events",
        "caught",
        "recall",
        "prec",
        "false",
        "false/d",
        "AMBER%",
        "lead~",
        "|ETAerr|~"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "\n== {} ({} traces, goal recall {} at <= {} false/day): HELD-OUT",
            r.family.name,
            r.family.members.len(),
            r.family.goal_recall,
            r.family.budget_per_day
        );
        out += &head;
        for f in &r.cv.folds {
            let label =
                format!("{} z={}", r.traces[f.held_out].name, SENSITIVITY_GRID[f.pick.knob]);
            out += &(row(&label, &f.cell) + "\n");
            let _ = writeln!(out, "    shape: {}", r.grid.shapes[f.pick.shape]);
        }
        out += &(row("= pooled held-out", &r.cv.held_out) + "\n");
        let _ = writeln!(
            out,
            "the criterion on all {} traces: {} z={}",
            r.family.members.len(),
            r.grid.shapes[r.cv.default.shape],
            SENSITIVITY_GRID[r.cv.default.knob]
        );
        let _ = writeln!(
            out,
            "-- {} live default per trace ({} z={}; in-sample), and the trace's best recall \
             at any knob within {}/day and linear W=10m's AMBER %",
            r.family.name, r.live_shape, r.live_z, r.family.budget_per_day
        );
        out += &head;
        out += &(row("= pooled live default", &r.live_pooled()) + "\n");
        for TraceDefault { trace: i, live: c, best: own } in &r.per_trace {
            let side =
                if goal_side(&r.family, c) { "goal's side" } else { "NOT on the goal's side" };
            out += &(row(&r.traces[*i].name, c) + "  " + side + "\n");
            match own {
                Some((z, c)) => out += &(row(&format!("    best within budget: z={z}"), c) + "\n"),
                None => out += "    best within budget: none (every knob is over it)\n",
            }
        }
        let _ = writeln!(
            out,
            "-- {} operating curve (held out: each trace at its fold's shape; linear: fixed)",
            r.family.name
        );
        out += &head;
        for (label, _, c) in r.curve.iter().chain(&r.linear) {
            out += &(row(label, c) + "\n");
        }
        let _ = writeln!(
            out,
            "-- {} against each predict_linear window (held-out curve): a knob with more catches \
             at no more false/day and no higher AMBER %?",
            r.family.name
        );
        for a in r.against_linear() {
            let l = &a.linear.score;
            let _ = writeln!(
                out,
                "W={}m: {} ({} caught, {:.2} false/day, {:.2} % AMBER)",
                a.window,
                if a.met() { "met" } else { "NOT met" },
                l.caught,
                l.false_per_day(),
                l.amber_pct()
            );
            let point = |(z, c): &(f64, Cell)| {
                format!(
                    "z={z}: {} caught, {:.2} false/day, {:.2} % AMBER",
                    c.score.caught,
                    c.score.false_per_day(),
                    c.score.amber_pct()
                )
            };
            match &a.more_catches {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "    more catches at no more false/day, lowest AMBER %: {}",
                        point(p)
                    );
                }
                None => out += "    more catches at no more false/day: no knob\n",
            }
            match &a.within_guards {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "    within both guards, most catches:                 {}",
                        point(p)
                    );
                }
                None => out += "    within both guards: no knob\n",
            }
        }
    }
    out
}

/// The operating curves: one panel per family, recall against false alarms per day.
fn svg(runs: &[FamilyRun<'_>], proto: &Protocol) -> String {
    let (pw, ph) = (400.0, 330.0);
    let (ml, mr, mt, mb) = (48.0, 40.0, 40.0, 44.0);
    let width = pw * runs.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"8\" y=\"14\" font-size=\"12\">Held-out operating curves, T={} H={} min: recall vs \
         false alarms/day. Blue: procwatch by sensitivity, each trace at the shape chosen without \
         it;</text>\n<text x=\"8\" y=\"29\" font-size=\"12\">grey: predict_linear by window; \
         red: cross-validated (shape and knob per fold); green box: the goal.</text>\n",
        ph + 20.0,
        ph + 20.0,
        proto.threshold,
        proto.horizon_ms / 60_000
    );
    for (k, r) in runs.iter().enumerate() {
        let x0 = pw * k as f64;
        let all = r.curve.iter().chain(&r.linear).map(|(_, _, c)| c.score.false_per_day());
        let xmax = all.fold(r.family.budget_per_day * 2.0, f64::max).ceil().max(1.0);
        let px = |v: f64| x0 + ml + (v / xmax).min(1.0) * (pw - ml - mr);
        let py = |v: f64| 20.0 + mt + (1.0 - v.clamp(0.0, 1.0)) * (ph - mt - mb);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\">{} ({} traces)</text>",
            x0 + ml,
            20.0 + mt - 8.0,
            r.family.name,
            r.family.members.len()
        );
        // The goal region.
        let goal = r.family.goal_recall;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#16a34a\" \
             fill-opacity=\"0.12\" stroke=\"#16a34a\" stroke-dasharray=\"3 2\"/>",
            px(0.0),
            py(1.0),
            px(r.family.budget_per_day) - px(0.0),
            py(goal) - py(1.0)
        );
        // Axes and ticks.
        let _ = writeln!(
            s,
            "<path d=\"M{:.1} {:.1} V{:.1} H{:.1}\" fill=\"none\" stroke=\"#333\"/>",
            px(0.0),
            py(1.0),
            py(0.0),
            px(xmax)
        );
        for i in 0..=5 {
            let v = i as f64 / 5.0;
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
                px(0.0) - 4.0,
                py(v) + 4.0
            );
            let xv = xmax * v;
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{xv:.1}</text>",
                px(xv),
                py(0.0) + 14.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">false alarms / day</text>",
            (px(0.0) + px(xmax)) / 2.0,
            py(0.0) + 30.0
        );
        let _ = writeln!(
            s,
            "<text transform=\"translate({:.1} {:.1}) rotate(-90)\" text-anchor=\"middle\">recall</text>",
            x0 + 12.0,
            (py(0.0) + py(1.0)) / 2.0
        );
        // procwatch's curve.
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|(_, _, c)| {
                format!("{:.1},{:.1}", px(c.score.false_per_day()), py(c.score.recall()))
            })
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#2563eb\" stroke-width=\"1.5\"/>",
            pts.join(" ")
        );
        for (_, z, c) in &r.curve {
            let (x, y) = (px(c.score.false_per_day()), py(c.score.recall()));
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"#2563eb\"><title>z={z}: \
                 recall {:.2}, {:.2} false/day, AMBER {:.2} %</title></circle>",
                c.score.recall(),
                c.score.false_per_day(),
                c.score.amber_pct()
            );
            if (z * 2.0).fract() == 0.0 {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#2563eb\" font-size=\"9\">{z}</text>",
                    x + 4.0,
                    y - 3.0
                );
            }
        }
        for (label, _, c) in &r.linear {
            let (x, y) = (px(c.score.false_per_day()), py(c.score.recall()));
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\" fill=\"#6b7280\"><title>{label}: \
                 recall {:.2}, {:.2} false/day, AMBER {:.2} %</title></rect>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#6b7280\" font-size=\"9\">{}</text>",
                x - 3.0,
                y - 3.0,
                c.score.recall(),
                c.score.false_per_day(),
                c.score.amber_pct(),
                x + 5.0,
                y + 10.0,
                label.trim_start_matches("linear ")
            );
        }
        let h = &r.cv.held_out.score;
        let (x, y) = (px(h.false_per_day()), py(h.recall()));
        let _ = writeln!(
            s,
            "<path d=\"M{x:.1} {:.1} L{:.1} {y:.1} L{x:.1} {:.1} L{:.1} {y:.1} Z\" fill=\"#dc2626\">\
             <title>cross-validated (held-out): recall {:.2}, {:.2} false/day, AMBER {:.2} %</title></path>",
            y - 6.0,
            x + 6.0,
            y + 6.0,
            x - 6.0,
            h.recall(),
            h.false_per_day(),
            h.amber_pct()
        );
    }
    s + "</svg>\n"
}
