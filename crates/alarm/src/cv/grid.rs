//! The cross-validation's score table: every trace scored once at every (shape, knob) of the
//! declared candidate set and by `predict_linear` at every window. Nothing in it is tuned:
//! each cell is one fixed setting on one trace; the folds choose among the cells.
//!
//! The forecaster runs once per trace and pair of windows ([`Robust::assess`]: the trend and
//! the noise); every shape with those windows and every knob value is then applied with
//! [`Assessment::decide`], the very function the live forecaster decides with, so the cache
//! changes the cost, never the answer (tested against the forecaster itself).

use super::Cell;
use crate::backtest::{flags_of, forecasts, score, timing, Prepared, Protocol};
use crate::forecast::{Assessment, Forecast, Linear, Robust, RobustParams, Shape};

/// The knob values scored (noise widths of margin).
pub const SENSITIVITY_GRID: &[f64] =
    &[-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0];
/// The `predict_linear` windows scored, minutes.
pub const LINEAR_WINDOWS_MIN: &[i64] = &[5, 10, 20, 30];

/// The declared candidate shapes, declared before any scoring, in order of preference (a
/// tie goes to the earlier one): undamped before damped, then no hold-off before 20 min (the
/// contract's 30-min continuation window minus H = 10 min: the longest hold-off that can
/// never hide the first sample of an event's window) before 30 min, then the shorter trend,
/// the longer noise window, the lower σ floor. The full product of
///
/// - trend window: 30 min, 1 h, 2 h;
/// - noise window: 2 h, 1 h;
/// - σ floor: 0.1, 0.25 points;
/// - damping: 1, ½;
/// - hold-off: 0, 20 min, 30 min.
///
/// Nothing is added here after seeing held-out scores: an AMBER expiry and a 10-minute trend
/// were tried that way and withdrawn (BENCHMARKS.md, Forecaster, says what they measured).
pub fn shapes() -> Vec<Shape> {
    let min = 60_000;
    let mut out = Vec::new();
    for damping in [1.0, 0.5] {
        for holdoff in [0, 20, 30] {
            for trend in [30, 60, 120] {
                for noise in [120, 60] {
                    for min_sigma in [0.1, 0.25] {
                        out.push(Shape {
                            trend_ms: trend * min,
                            noise_ms: noise * min,
                            min_sigma,
                            holdoff_ms: holdoff * min,
                            damping,
                        });
                    }
                }
            }
        }
    }
    out
}

/// (trend, noise) windows, ms: what one forecaster pass depends on.
type Windows = (i64, i64);

/// The score table.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// The candidate shapes, in order of preference.
    pub shapes: Vec<Shape>,
    /// `cells[s][j][i]`: trace i at shape s and knob `SENSITIVITY_GRID[j]`.
    pub cells: Vec<Vec<Vec<Cell>>>,
    /// (window minutes, per-trace cells) of `predict_linear`.
    pub linear: Vec<(i64, Vec<Cell>)>,
}

/// Per-sample assessments (for `t_i + H`) of procwatch's forecaster with `shape`'s windows,
/// fed the trace row by row as [`forecasts`] feeds any forecaster.
pub fn assessments(p: &Prepared, proto: &Protocol, shape: &Shape) -> Vec<Option<Assessment>> {
    let mut f = Robust::new(shape.params(proto.horizon_ms, 0.0));
    p.ts.iter()
        .zip(&p.y)
        .map(|(&t, &y)| {
            crate::forecast::Forecaster::push(&mut f, t, y);
            f.assess(t + proto.horizon_ms, proto.threshold)
        })
        .collect()
}

/// The forecasts of the assessed forecaster with `params` (the windows' assessments).
pub fn decide_all(
    a: &[Option<Assessment>],
    params: &RobustParams,
    threshold: f64,
) -> Vec<Option<Forecast>> {
    a.iter().map(|a| a.map(|a| a.decide(params, threshold))).collect()
}

/// One trace's cell for a run of forecasts.
pub fn cell(p: &Prepared, proto: &Protocol, fc: &[Option<Forecast>]) -> Cell {
    Cell { score: score(p, proto, &flags_of(fc)), timing: timing(p, proto, fc) }
}

impl Grid {
    /// Scores every trace at every shape and knob, and `predict_linear` at every window.
    pub fn score(traces: &[Prepared], proto: &Protocol, shapes: Vec<Shape>) -> Grid {
        let h = proto.horizon_ms;
        // [shape][trace][knob], one forecaster pass per trace and pair of windows.
        let mut by_shape: Vec<Vec<Vec<Cell>>> = vec![Vec::new(); shapes.len()];
        for p in traces {
            let mut done: Vec<(Windows, Vec<Option<Assessment>>)> = Vec::new();
            for (s, shape) in shapes.iter().enumerate() {
                let key = (shape.trend_ms, shape.noise_ms);
                let a = match done.iter().position(|(k, _)| *k == key) {
                    Some(i) => &done[i].1,
                    None => {
                        done.push((key, assessments(p, proto, shape)));
                        &done[done.len() - 1].1
                    }
                };
                let row = SENSITIVITY_GRID
                    .iter()
                    .map(|&z| cell(p, proto, &decide_all(a, &shape.params(h, z), proto.threshold)))
                    .collect();
                by_shape[s].push(row);
            }
        }
        // [shape][trace][knob] → [shape][knob][trace]
        let cells = by_shape
            .into_iter()
            .map(|per_trace| {
                (0..SENSITIVITY_GRID.len())
                    .map(|j| per_trace.iter().map(|row| row[j].clone()).collect())
                    .collect()
            })
            .collect();
        let linear = LINEAR_WINDOWS_MIN
            .iter()
            .map(|&w| {
                let cells = traces
                    .iter()
                    .map(|p| {
                        let n = Linear::samples_for(w * 60_000, p.step_ms);
                        cell(p, proto, &forecasts(p, proto, &mut Linear::new(n)))
                    })
                    .collect();
                (w, cells)
            })
            .collect();
        Grid { shapes, cells, linear }
    }

    /// `predict_linear` W = 10 min, per trace (the budget criterion's AMBER guard).
    pub fn linear10(&self) -> &[Cell] {
        self.linear.iter().find(|(w, _)| *w == 10).map_or(&[], |(_, c)| c)
    }

    /// The index of `shape` in the candidate set.
    pub fn shape_index(&self, shape: &Shape) -> Option<usize> {
        self.shapes.iter().position(|s| s == shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Method;

    /// A synthetic trace at 5-minute steps with ramps, noise and crossings.
    fn trace() -> Prepared {
        let y: Vec<f64> = (0..600)
            .map(|i| {
                let i = i as f64;
                60.0 + 15.0 * (i / 40.0).sin() + 6.0 * (i / 7.0).sin() + (i * 1.7).sin()
            })
            .collect();
        Prepared {
            name: "t".into(),
            ts: (0..y.len() as i64).map(|i| i * 300_000).collect(),
            y,
            scaled: false,
            group: "cpu_native".into(),
            step_ms: 300_000,
        }
    }

    #[test]
    fn the_cache_decides_as_the_live_forecaster_does() {
        let p = trace();
        let proto = Protocol::default();
        for shape in [Shape::MEMORY, Shape::CPU] {
            let a = assessments(&p, &proto, &shape);
            let mut ambers = 0;
            for z in [-0.5, 0.0, 1.0, 2.5] {
                let m = Method::Procwatch { sensitivity: Some(z), shape: Some(shape) };
                let mut live = m.forecaster(600_000, proto.horizon_ms, p.step_ms);
                let direct = forecasts(&p, &proto, &mut *live);
                let cached = decide_all(&a, &shape.params(proto.horizon_ms, z), proto.threshold);
                assert_eq!(direct, cached, "{shape} z = {z}");
                ambers += direct.iter().flatten().filter(|f| f.above).count();
            }
            assert!(ambers > 10, "a trace with AMBER to compare ({ambers})");
        }
    }

    #[test]
    fn the_declared_shapes_hold_the_defaults_and_put_the_plain_model_first() {
        let s = shapes();
        assert_eq!(s.len(), 72);
        assert!(s.contains(&Shape::MEMORY) && s.contains(&Shape::CPU));
        assert_eq!((s[0].damping, s[0].holdoff_ms), (1.0, 0));
        let unique: std::collections::BTreeSet<String> = s.iter().map(|x| x.to_string()).collect();
        assert_eq!(unique.len(), s.len());
    }
}
