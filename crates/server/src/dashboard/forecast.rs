//! The forecast line of a chart: the series' alarm rule's forecaster fed the raw samples.

use procwatch_alarm::forecast::{Forecaster, Linear};
use procwatch_alarm::Method;
use procwatch_model::TsMs;
use procwatch_store::HistoryPoint;

use super::chart::ChartMetric;

/// How far back the chart reads raw samples for `method`'s forecast: the forecast window for
/// `predict_linear`; procwatch's forecaster needs its trend and noise history (2 h at
/// H = 10 min, 12 × H) before it says anything.
pub fn forecast_history_ms(method: Method, window_ms: i64, horizon_ms: i64) -> i64 {
    match method {
        Method::Linear => window_ms,
        _ => window_ms.max(13 * horizon_ms),
    }
}

/// The forecast the chart draws: `method` (the series' alarm rule's, as the alarm engine
/// builds it) fed the raw samples, read at `last + horizon`.
pub fn forecast(
    raw: &[HistoryPoint],
    metric: ChartMetric,
    method: Method,
    window_ms: i64,
    interval_ms: i64,
    horizon_ms: i64,
    threshold: f64,
) -> Option<((TsMs, f64), TsMs, f64)> {
    let last = raw.last()?;
    // A trend from a few seconds of data read 10 minutes ahead is noise: wait until the
    // samples cover half the window (procwatch's forecaster has its own warm-up).
    let first = raw.first()?;
    if method == Method::Linear && (raw.len() < 3 || last.ts - first.ts < window_ms / 2) {
        return None;
    }
    let mut f = match method {
        Method::Linear => {
            Box::new(Linear::new(Linear::samples_for(window_ms, interval_ms).min(raw.len())))
                as Box<dyn Forecaster>
        }
        m => m.forecaster(window_ms, horizon_ms, interval_ms),
    };
    for p in raw {
        f.push(p.ts, metric.of(p));
    }
    let at = last.ts + horizon_ms;
    let out = f.forecast(at, threshold)?;
    let value =
        if metric == ChartMetric::Cores { out.value.max(0.0) } else { out.value.clamp(0.0, 100.0) };
    Some(((last.ts, metric.of(last)), at, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: TsMs, cpu: f64) -> HistoryPoint {
        HistoryPoint {
            ts,
            cpu,
            cpu_max: cpu,
            cores: cpu / 50.0,
            mem: 1.0,
            mem_max: 1.0,
            rss: 1.0,
            count: 1.0,
            ..HistoryPoint::default()
        }
    }

    #[test]
    fn forecast_follows_the_trend() {
        // +1 per 10 s: 10 minutes ahead is +60.
        let raw: Vec<HistoryPoint> = (0..5).map(|i| point(i * 10_000, 10.0 + i as f64)).collect();
        let ((ts, v), at, f) =
            forecast(&raw, ChartMetric::Cpu, Method::Linear, 20_000, 10_000, 600_000, 80.0)
                .unwrap();
        assert_eq!((ts, v), (40_000, 14.0));
        assert_eq!(at, 640_000);
        assert!((f - 74.0).abs() < 1e-6, "{f}");
        let lin = Method::Linear;
        assert!(forecast(&raw[..1], ChartMetric::Cpu, lin, 20_000, 10_000, 600_000, 80.0).is_none());
        assert!(forecast(&[], ChartMetric::Cpu, lin, 20_000, 10_000, 600_000, 80.0).is_none());
        // Three samples over 4 s do not make a trend of a 20 s window.
        let short: Vec<HistoryPoint> = (0..3).map(|i| point(i * 2_000, 10.0 + i as f64)).collect();
        assert!(forecast(&short, ChartMetric::Cpu, lin, 20_000, 2_000, 600_000, 80.0).is_none());
    }

    #[test]
    fn forecast_is_the_rules_forecaster() {
        // 2 h of a steady ramp, +0.5 per minute at 10 s sampling, ending at 70.
        let raw: Vec<HistoryPoint> =
            (0..720).map(|i| point(i * 10_000, 10.0 + 0.5 * i as f64 / 6.0)).collect();
        let last = 10.0 + 0.5 * 719.0 / 6.0;
        let at = |m: Method| {
            forecast(&raw, ChartMetric::Cpu, m, 600_000, 10_000, 600_000, 80.0).unwrap().2
        };
        // predict_linear reads the line on: +5 in 10 minutes.
        assert!((at(Method::Linear) - (last + 5.0)).abs() < 1e-6);
        // procwatch's forecaster, at each metric's default shape: undamped for cpu (+5),
        // its trend damped to half for mem (+2.5).
        let ours = |m| at(Method::PROCWATCH.for_metric(m));
        let cpu = ours(procwatch_model::Metric::Cpu);
        assert!((cpu - (last + 5.0)).abs() < 0.1, "{cpu} vs {}", last + 5.0);
        let mem = ours(procwatch_model::Metric::Mem);
        assert!((mem - (last + 2.5)).abs() < 0.1, "{mem} vs {}", last + 2.5);
        // It reads 2 h back at H = 10 min, predict_linear its window.
        assert_eq!(forecast_history_ms(Method::PROCWATCH, 600_000, 600_000), 7_800_000);
        assert_eq!(forecast_history_ms(Method::Linear, 600_000, 600_000), 600_000);
    }
}
