//! Research harness behind BENCHMARKS.md "Forecaster", "Where the memory AMBER % goes" (not
//! part of the product): on the memory traces, held out as `procwatch alarm backtest --cv`
//! holds them out (each trace at the shape its fold chose on the other trace), it sorts every
//! AMBER sample of procwatch's forecaster (at several knob values) and of `predict_linear`
//! (W = 5, 10 min) by what it was: how far below T the value stood, whether it could catch an
//! event (in `[c−h, c−1]`), whether a crossing followed within H, how long after the last
//! sample above T it came, how long its episode was, and, for procwatch, which term of
//! `y + φ·h·b + z·σ·√h > T` raised it.
//!
//! Run from the workspace root:
//!
//! ```text
//! cargo run --release -p procwatch-alarm --example amber_anatomy               # the anatomy
//! cargo run --release -p procwatch-alarm --example amber_anatomy -- --who      # who catches what
//! cargo run --release -p procwatch-alarm --example amber_anatomy -- --in-sample
//! ```
//!
//! `--who`: which events predict_linear W = 10 min and procwatch catch, apart and together,
//! and where predict_linear's AMBER samples fall; `--in-sample`: the memory points with
//! recall ≥ 0.70 at ≤ 2 false/day, in-sample. (The two experiments this analysis led to, an
//! AMBER expiry and a 10-minute trend, were not adopted: BENCHMARKS.md says what they
//! measured; their `--forced-expiry` and `--folds` modes are in this file at commit 437269b.)

use procwatch_alarm::backtest::{
    amber_samples, events, flags_of, forecasts, prepare_dir, Prepared, Protocol,
};
use procwatch_alarm::cv::{self, assessments, decide_all, Criterion, Grid, SENSITIVITY_GRID};
use procwatch_alarm::forecast::{Assessment, Linear};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn load(dir: &str) -> Vec<Prepared> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    prepare_dir(&dir, 80.0).expect("traces")
}

/// Counts per category label.
#[derive(Default)]
struct Tally(BTreeMap<String, BTreeMap<String, usize>>);

impl Tally {
    fn add(&mut self, axis: &str, label: &str) {
        *self.0.entry(axis.into()).or_default().entry(label.into()).or_default() += 1;
    }
    fn print(&self, total: usize) {
        for (axis, m) in &self.0 {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| match axis.as_str() {
                    // Counts events, not AMBER samples.
                    "caught by" => format!("{k} {v} events"),
                    _ => format!("{k} {v} ({:.0} %)", 100.0 * *v as f64 / total as f64),
                })
                .collect();
            println!("    {axis:12} {}", parts.join(", "));
        }
    }
}

fn dist_bin(d: f64) -> &'static str {
    match d {
        d if d < 0.5 => "a:<0.5",
        d if d < 1.0 => "b:0.5-1",
        d if d < 2.0 => "c:1-2",
        d if d < 3.0 => "d:2-3",
        d if d < 5.0 => "e:3-5",
        _ => "f:>=5",
    }
}

/// Per sample, procwatch's (trend part `φ·h·b`, margin `z·σ·√h`, σ floor binding).
type Terms = Option<(f64, f64, bool)>;

/// Sorts the AMBER samples of one trace; `terms[i]` = (level+trend, margin) of procwatch at
/// sample i, when it is procwatch.
fn anatomy(
    p: &Prepared,
    proto: &Protocol,
    amber: &[bool],
    terms: Option<&[Terms]>,
    t: &mut Tally,
) -> (usize, usize) {
    let th = proto.threshold;
    let h = 2usize;
    let n = p.y.len();
    let ev = events(&p.y, th);
    let mut catching = vec![false; n];
    for &c in &ev {
        catching[c.saturating_sub(h)..c].fill(true);
    }
    // Episode length per sample.
    let mut ep_len = vec![0usize; n];
    let mut i = 0;
    while i < n {
        if !amber[i] {
            i += 1;
            continue;
        }
        let s = i;
        while i + 1 < n && amber[i + 1] {
            i += 1;
        }
        for l in ep_len.iter_mut().take(i + 1).skip(s) {
            *l = i + 1 - s;
        }
        i += 1;
    }
    // Position (1 = first) of each sample in its episode.
    let mut pos = vec![0usize; n];
    for i in 0..n {
        if amber[i] {
            pos[i] = if i > 0 && amber[i - 1] { pos[i - 1] + 1 } else { 1 };
        }
    }
    for &c in &ev {
        // The catching samples' positions: caught only by samples past the first h of
        // their episode (an exit after H would lose it)?
        let ks: Vec<usize> = (c.saturating_sub(h)..c).filter(|&k| amber[k]).collect();
        if ks.is_empty() {
            continue;
        }
        let label = if ks.iter().any(|&k| pos[k] <= h) {
            "within the first H of its episode"
        } else {
            "only past the first H of its episode"
        };
        t.add("caught by", label);
    }
    let mut last_above: Option<usize> = None;
    let (mut total, mut eligible) = (0, 0);
    for i in 0..n {
        if p.y[i] > th {
            last_above = Some(i);
        }
        if i >= 12 && p.y[i] <= th {
            eligible += 1;
        }
        if !amber[i] {
            continue;
        }
        total += 1;
        let followed = p.y[i + 1..(i + h + 1).min(n)].iter().any(|&v| v > th);
        t.add("useful", if catching[i] { "catching" } else { "not catching" });
        t.add("followed", if followed { "crossing within H" } else { "no crossing (false)" });
        t.add("T - y", dist_bin(th - p.y[i]));
        let since = last_above.map(|k| (p.ts[i] - p.ts[k]) / 60_000);
        t.add(
            "since above",
            match since {
                Some(m) if m <= 30 => "a:<=30m",
                Some(m) if m <= 60 => "b:30m-1h",
                Some(m) if m <= 180 => "c:1h-3h",
                _ => "d:>3h or never",
            },
        );
        t.add(
            "position",
            match pos[i] {
                1 => "a:1st",
                2 => "b:2nd",
                _ => "c:3rd+",
            },
        );
        if pos[i] > h && !followed {
            t.add("3rd+ false", if catching[i] { "catching" } else { "not catching" });
        }
        t.add(
            "episode len",
            match ep_len[i] {
                1 => "a:1",
                2 => "b:2",
                3..=5 => "c:3-5",
                6..=11 => "d:6-11",
                _ => "e:>=12",
            },
        );
        if let Some(terms) = terms {
            if let Some((trend_part, margin, floored)) = terms[i] {
                let y = p.y[i];
                let label = if y + trend_part > th {
                    "trend alone"
                } else if trend_part <= 0.0 {
                    "margin alone (flat/falling trend)"
                } else {
                    "margin + rising trend"
                };
                t.add("raised by", label);
                t.add("sigma floor", if floored { "floor binds" } else { "measured sigma" });
                t.add(
                    "margin z.s.sqrt(h)",
                    match margin {
                        m if m < 0.5 => "a:<0.5",
                        m if m < 1.0 => "b:0.5-1",
                        m if m < 2.0 => "c:1-2",
                        _ => "d:>=2",
                    },
                );
            }
        }
    }
    (total, eligible)
}

fn main() {
    let proto = Protocol::default();
    let mut traces = load("traces");
    traces.extend(load("traces-extra"));
    let grid = Grid::score(&traces, &proto, cv::shapes());
    let fam = cv::families(&traces).into_iter().find(|f| f.name == "mem").expect("mem");
    let mem = cv::cross_validate(&fam, Criterion::RecallTarget, &grid);
    if std::env::args().any(|a| a == "--in-sample") {
        // Every (shape, knob) pooled over both memory traces (in-sample): the points with
        // recall >= 0.70 at <= 2 false/day (the bound BENCHMARKS.md states).
        for (si, knobs) in grid.cells.iter().enumerate() {
            for (j, row) in knobs.iter().enumerate() {
                let c = cv::pool(row, &fam.members);
                let s = &c.score;
                if s.recall() >= 0.70 && s.false_per_day() <= 2.0 {
                    println!(
                        "{} z={}: recall {:.2} {:.2}/d precision {:.2} lead {} AMBER {:.2} %",
                        grid.shapes[si],
                        SENSITIVITY_GRID[j],
                        s.recall(),
                        s.false_per_day(),
                        s.precision(),
                        c.timing.median_lead_minutes(),
                        s.amber_pct()
                    );
                }
            }
        }
        return;
    }
    if std::env::args().any(|a| a == "--who") {
        who_catches_what(&traces, &grid, &mem);
        return;
    }
    for &z in &[0.5, 0.75, 1.0] {
        let j = SENSITIVITY_GRID.iter().position(|&k| k == z).expect("grid");
        let mut tally = Tally::default();
        let (mut total, mut eligible) = (0, 0);
        for f in &mem.folds {
            let p = &traces[f.held_out];
            let shape = grid.shapes[f.pick.shape];
            let params = shape.params(proto.horizon_ms, SENSITIVITY_GRID[j]);
            let a: Vec<Option<Assessment>> = assessments(p, &proto, &shape);
            let fc = decide_all(&a, &params, proto.threshold);
            let amber = amber_samples(p, &proto, &flags_of(&fc));
            let terms: Vec<Terms> = a
                .iter()
                .map(|a| {
                    a.map(|a| {
                        let s = a.sigma.max(params.min_sigma);
                        (
                            a.h * params.damping * a.slope,
                            params.sensitivity * s * a.h.sqrt(),
                            a.sigma < params.min_sigma,
                        )
                    })
                })
                .collect();
            let (tt, e) = anatomy(p, &proto, &amber, Some(&terms), &mut tally);
            total += tt;
            eligible += e;
        }
        println!(
            "procwatch z={z} (held out): {total} AMBER samples of {eligible} ({:.2} %)",
            100.0 * total as f64 / eligible as f64
        );
        tally.print(total);
    }
    for w in [5i64, 10] {
        let mut tally = Tally::default();
        let (mut total, mut eligible) = (0, 0);
        for &i in &fam.members {
            let p = &traces[i];
            let n = Linear::samples_for(w * 60_000, p.step_ms);
            let fc = forecasts(p, &proto, &mut Linear::new(n));
            let amber = amber_samples(p, &proto, &flags_of(&fc));
            let (tt, e) = anatomy(p, &proto, &amber, None, &mut tally);
            total += tt;
            eligible += e;
        }
        println!(
            "linear W={w}m: {total} AMBER samples of {eligible} ({:.2} %)",
            100.0 * total as f64 / eligible as f64
        );
        tally.print(total);
    }
}

/// Which memory events predict_linear W = 10 min and procwatch (held out, z = 0.75 and 1)
/// catch, apart and together, and what the 10 and 30 minutes before the event's window
/// looked like; and predict_linear's AMBER samples outside the 30 minutes after a crossing.
fn who_catches_what(traces: &[Prepared], grid: &Grid, mem: &cv::FamilyCv) {
    let proto = Protocol::default();
    for &z in &[0.75, 1.0] {
        let j = SENSITIVITY_GRID.iter().position(|&k| k == z).expect("grid");
        let (mut both, mut lin_only, mut pw_only, mut neither) = (0, 0, 0, 0);
        let mut rise_lin_only = Vec::new();
        let mut rise_pw_only = Vec::new();
        let mut rise_both = Vec::new();
        let (mut lin_after, mut lin_elsewhere, mut lin_elsewhere_catching) = (0, 0, 0);
        for f in &mem.folds {
            let p = &traces[f.held_out];
            let shape = grid.shapes[f.pick.shape];
            let a = assessments(p, &proto, &shape);
            let fc = decide_all(&a, &shape.params(proto.horizon_ms, SENSITIVITY_GRID[j]), 80.0);
            let pw = amber_samples(p, &proto, &flags_of(&fc));
            let n = Linear::samples_for(600_000, p.step_ms);
            let lf = forecasts(p, &proto, &mut Linear::new(n));
            let lin = amber_samples(p, &proto, &flags_of(&lf));
            let ev = events(&p.y, 80.0);
            for &c in &ev {
                let by = |a: &[bool]| (c - 2..c).any(|k| a[k]);
                // The rise into the window's first sample: over 10 min and 30 min.
                let r10 = p.y[c - 2] - p.y[c - 4];
                let r30 = p.y[c - 2] - p.y[c - 8];
                match (by(&lin), by(&pw)) {
                    (true, true) => {
                        both += 1;
                        rise_both.push((r10, r30, 80.0 - p.y[c - 2]));
                    }
                    (true, false) => {
                        lin_only += 1;
                        rise_lin_only.push((r10, r30, 80.0 - p.y[c - 2]));
                    }
                    (false, true) => {
                        pw_only += 1;
                        rise_pw_only.push((r10, r30, 80.0 - p.y[c - 2]));
                    }
                    (false, false) => neither += 1,
                }
            }
            let mut last_above: Option<usize> = None;
            let mut catching = vec![false; p.y.len()];
            for &c in &ev {
                catching[c - 2] = true;
                catching[c - 1] = true;
            }
            for i in 0..p.y.len() {
                if p.y[i] > 80.0 {
                    last_above = Some(i);
                }
                if lin[i] {
                    if last_above.is_some_and(|k| p.ts[i] - p.ts[k] <= 30 * 60_000) {
                        lin_after += 1;
                    } else {
                        lin_elsewhere += 1;
                        lin_elsewhere_catching += usize::from(catching[i]);
                    }
                }
            }
        }
        let med = |v: &mut Vec<(f64, f64, f64)>, k: usize| {
            let mut x: Vec<f64> = v.iter().map(|t| [t.0, t.1, t.2][k]).collect();
            x.sort_by(f64::total_cmp);
            if x.is_empty() {
                f64::NAN
            } else {
                x[x.len() / 2]
            }
        };
        println!(
            "z={z}: both {both}, linear W=10m only {lin_only}, procwatch only {pw_only}, neither {neither}"
        );
        for (name, v) in [
            ("both", &mut rise_both),
            ("linear only", &mut rise_lin_only),
            ("procwatch only", &mut rise_pw_only),
        ] {
            println!(
                "  {name:15} median rise over the 10 min before c-2: {:.2}, over 30 min: {:.2}, T - y[c-2]: {:.2}",
                med(v, 0),
                med(v, 1),
                med(v, 2)
            );
        }
        println!(
            "  linear W=10m AMBER samples: {lin_after} within 30 min after a sample above T, {lin_elsewhere} elsewhere ({lin_elsewhere_catching} of them in an event's window)"
        );
    }
}
