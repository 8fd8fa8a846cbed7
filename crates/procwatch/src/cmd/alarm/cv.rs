//! `procwatch alarm backtest --cv`: leave-one-trace-out cross-validation of procwatch's
//! sensitivity knob per family, the held-out table, the operating curve (table and SVG).
//! The procedure is `procwatch_alarm::cv`; the forecasters are built by
//! `procwatch_alarm::Method::forecaster`, as the server's evaluator builds them.

use super::BacktestArgs;
use anyhow::{Context, Result};
use procwatch_alarm::backtest::{Prepared, Protocol};
use procwatch_alarm::cv::{self, Cell, FamilyCv, SENSITIVITY_GRID};
use procwatch_alarm::Method;
use std::fmt::Write as _;

struct FamilyRun<'a> {
    family: cv::Family,
    cv: FamilyCv,
    /// (label, knob or window, pooled cell) of the curve.
    curve: Vec<(String, f64, Cell)>,
    linear: Vec<(String, f64, Cell)>,
    traces: &'a [Prepared],
}

pub(super) fn run(
    args: &BacktestArgs,
    traces: &[Prepared],
    proto: &Protocol,
    window_ms: i64,
) -> Result<String> {
    let horizon_ms = proto.horizon_ms;
    let grid: Vec<Vec<Cell>> = SENSITIVITY_GRID
        .iter()
        .map(|&z| {
            let m = Method::Procwatch { sensitivity: Some(z) };
            cv::cells(traces, proto, &|p| m.forecaster(window_ms, horizon_ms, p.step_ms))
        })
        .collect();
    let linear: Vec<(i64, Vec<Cell>)> = cv::LINEAR_WINDOWS_MIN
        .iter()
        .map(|&w| {
            let cells = cv::cells(traces, proto, &|p| {
                Method::Linear.forecaster(w * 60_000, horizon_ms, p.step_ms)
            });
            (w, cells)
        })
        .collect();
    let linear10 = &linear.iter().find(|(w, _)| *w == 10).expect("W = 10 min is scored").1;
    let criterion: cv::Criterion = args.cv_criterion.parse().map_err(anyhow::Error::msg)?;
    let runs: Vec<FamilyRun<'_>> = cv::families(traces)
        .into_iter()
        .map(|family| {
            let cv = cv::cross_validate(&family, criterion, &grid, linear10);
            let curve = SENSITIVITY_GRID
                .iter()
                .zip(&grid)
                .map(|(&z, row)| (format!("procwatch z={z}"), z, cv::pool(row, &family.members)))
                .collect();
            let linear = linear
                .iter()
                .map(|(w, row)| {
                    (format!("linear W={w}m"), *w as f64, cv::pool(row, &family.members))
                })
                .collect();
            FamilyRun { family, cv, curve, linear, traces }
        })
        .collect();
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
                    "sensitivity": SENSITIVITY_GRID[f.knob],
                    "figures": figures(&name(f.held_out), &f.cell),
                })).collect::<Vec<_>>(),
                "held_out": figures(r.family.name, &r.cv.held_out),
                "default_sensitivity": SENSITIVITY_GRID[r.cv.default_knob],
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
        "families": fams,
    })
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
         knob chosen per fold on the other traces of the family, criterion {}\n",
        args.threshold,
        args.horizon,
        args.debounce,
        match args.cv_criterion.as_str() {
            "budget" =>
                "budget: the best training recall within the false/day budget and at \
                         no more AMBER % than linear W=10m",
            _ => "recall: the lowest knob whose training recall reaches the family's goal",
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
            let label = format!("{} z={}", r.traces[f.held_out].name, SENSITIVITY_GRID[f.knob]);
            out += &(row(&label, &f.cell) + "\n");
        }
        out += &(row("= pooled held-out", &r.cv.held_out) + "\n");
        let _ = writeln!(
            out,
            "default sensitivity (the criterion on all {} traces): {}",
            r.family.members.len(),
            SENSITIVITY_GRID[r.cv.default_knob]
        );
        let _ = writeln!(out, "-- {} operating curve (fixed settings, pooled)", r.family.name);
        out += &head;
        for (label, _, c) in r.curve.iter().chain(&r.linear) {
            out += &(row(label, c) + "\n");
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
         false alarms/day (blue: procwatch by sensitivity; grey: predict_linear by window; red: \
         cross-validated; green box: the goal)</text>\n",
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
