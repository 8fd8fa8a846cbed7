//! 5-minute roll-ups: the bucket every backend keeps (or computes) for long history, the
//! rule that picks raw or roll-up resolution for a history query, and the arithmetic that
//! turns buckets into history points. Shared so every backend answers the same way.
//!
//! A bucket holds, over the samples of one series with `ts` in `[start, start + ROLLUP_MS)`:
//! the sample count, min/sum/max of cpu and mem, and the sums of cores, rss and count. Sums
//! (not means) make buckets mergeable: a history step of `k × 5 min` is the merge of `k`
//! buckets, its mean `Σ sum / Σ n`, exact up to the order of floating-point additions.

use procwatch_model::{Sample, TsMs};

use crate::agg::bucket_start;
use crate::{HistoryPoint, HistoryQuery, Resolution, ROLLUP_MS};

/// The roll-up of one series over one 5-minute bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Bucket start, a multiple of `ROLLUP_MS`.
    pub start: TsMs,
    /// Samples in the bucket (0 = empty).
    pub n: u64,
    /// Lowest cpu in the bucket, percent (0–100; 0 while empty).
    pub cpu_min: f64,
    /// Sum of cpu over the bucket's samples (mean = `cpu_sum / n`).
    pub cpu_sum: f64,
    /// Highest cpu in the bucket, percent (0–100; 0 while empty).
    pub cpu_max: f64,
    /// Lowest mem in the bucket, percent (0–100; 0 while empty).
    pub mem_min: f64,
    /// Sum of mem over the bucket's samples (mean = `mem_sum / n`).
    pub mem_sum: f64,
    /// Highest mem in the bucket, percent (0–100; 0 while empty).
    pub mem_max: f64,
    /// Sum of cores over the bucket's samples.
    pub cores_sum: f64,
    /// Sum of rss over the bucket's samples, bytes.
    pub rss_sum: f64,
    /// Sum of the samples' process counts.
    pub count_sum: f64,
}

impl Bucket {
    /// An empty bucket starting at `start`.
    pub fn new(start: TsMs) -> Bucket {
        Bucket { start, ..Default::default() }
    }

    /// Adds one sample's values (samples in time order give the same sums as raw history).
    #[allow(clippy::too_many_arguments)]
    pub fn push(&mut self, cpu: f64, cores: f64, mem: f64, rss: u64, count: u32) {
        if self.n == 0 {
            (self.cpu_min, self.cpu_max, self.mem_min, self.mem_max) = (cpu, cpu, mem, mem);
        } else {
            self.cpu_min = self.cpu_min.min(cpu);
            self.cpu_max = self.cpu_max.max(cpu);
            self.mem_min = self.mem_min.min(mem);
            self.mem_max = self.mem_max.max(mem);
        }
        self.n += 1;
        self.cpu_sum += cpu;
        self.mem_sum += mem;
        self.cores_sum += cores;
        self.rss_sum += rss as f64;
        self.count_sum += f64::from(count);
    }

    /// Folds another bucket (of the same series, any start) into this one.
    pub fn merge(&mut self, o: &Bucket) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            let start = self.start;
            *self = *o;
            self.start = start;
            return;
        }
        self.cpu_min = self.cpu_min.min(o.cpu_min);
        self.cpu_max = self.cpu_max.max(o.cpu_max);
        self.mem_min = self.mem_min.min(o.mem_min);
        self.mem_max = self.mem_max.max(o.mem_max);
        self.n += o.n;
        self.cpu_sum += o.cpu_sum;
        self.mem_sum += o.mem_sum;
        self.cores_sum += o.cores_sum;
        self.rss_sum += o.rss_sum;
        self.count_sum += o.count_sum;
    }

    /// The history point of this bucket (means = sums / n). `n` must be > 0.
    pub fn point(&self) -> HistoryPoint {
        let n = self.n as f64;
        HistoryPoint {
            ts: self.start,
            cpu: self.cpu_sum / n,
            cpu_min: self.cpu_min,
            cpu_max: self.cpu_max,
            cores: self.cores_sum / n,
            mem: self.mem_sum / n,
            mem_min: self.mem_min,
            mem_max: self.mem_max,
            rss: self.rss_sum / n,
            count: self.count_sum / n,
        }
    }
}

/// 5-minute buckets of samples given oldest first; empty buckets are omitted.
pub fn buckets_of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for s in samples {
        let b = bucket_start(s.ts, ROLLUP_MS);
        if out.last().is_none_or(|l| l.start != b) {
            out.push(Bucket::new(b));
        }
        out.last_mut().expect("pushed").push(s.cpu, s.cores, s.mem, s.rss, s.count);
    }
    out
}

/// History points at `step_ms` (a multiple of `ROLLUP_MS`) from 5-minute buckets sorted by
/// start: each point merges the buckets of its step.
pub fn points_from_buckets(buckets: &[Bucket], step_ms: i64) -> Vec<HistoryPoint> {
    let mut out = Vec::new();
    let mut cur: Option<Bucket> = None;
    for b in buckets.iter().filter(|b| b.n > 0) {
        let s = bucket_start(b.start, step_ms);
        match &mut cur {
            Some(c) if c.start == s => c.merge(b),
            _ => {
                if let Some(c) = cur.take() {
                    out.push(c.point());
                }
                let mut c = Bucket::new(s);
                c.merge(b);
                cur = Some(c);
            }
        }
    }
    out.extend(cur.map(|c| c.point()));
    out
}

/// The resolution and step a history query is answered at, given the oldest timestamp raw
/// samples are kept for (`raw_horizon`, "now − raw retention"):
/// - roll-ups (`Rollup5m`) when the range starts before `raw_horizon` (raw samples there are
///   gone) or the step is a whole multiple of 5 minutes (the roll-ups answer it exactly and
///   far cheaper); the step is then the query's rounded up to a multiple of `ROLLUP_MS`
///   (at least one bucket);
/// - raw samples otherwise, at the query's step.
///
/// At `Rollup5m` a point covers its whole step, so the range is widened to whole steps:
/// `[bucket_start(from, step), to rounded up to a step)` (see `rollup_range`).
pub fn pick_resolution(q: &HistoryQuery, raw_horizon: TsMs) -> (Resolution, i64) {
    let multiple = q.step_ms >= ROLLUP_MS && q.step_ms % ROLLUP_MS == 0;
    if q.from < raw_horizon || multiple {
        let step = (q.step_ms.max(ROLLUP_MS) + ROLLUP_MS - 1) / ROLLUP_MS * ROLLUP_MS;
        (Resolution::Rollup5m, step)
    } else {
        (Resolution::Raw, q.step_ms)
    }
}

/// The range a roll-up answer covers: `[from, to)` widened to whole steps of `step_ms`
/// (empty when `[from, to)` is).
pub fn rollup_range(from: TsMs, to: TsMs, step_ms: i64) -> (TsMs, TsMs) {
    let a = bucket_start(from, step_ms);
    if to <= from {
        return (a, a);
    }
    let b = bucket_start(to, step_ms);
    (a, if b < to { b.saturating_add(step_ms) } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::history_points;

    fn s(ts: TsMs, cpu: f64) -> Sample {
        Sample {
            ts,
            process: "p".into(),
            cpu,
            cores: cpu / 10.0,
            mem: cpu * 2.0,
            rss: 7,
            count: 1,
            extras: None,
        }
    }

    #[test]
    fn buckets_give_the_raw_history_at_whole_multiples() {
        let v: Vec<Sample> = (0..200).map(|i| s(i * 7_000, (i % 13) as f64 * 1.5)).collect();
        let b = buckets_of(&v);
        for step in [ROLLUP_MS, 3 * ROLLUP_MS] {
            let want = history_points(&v, step);
            let got = points_from_buckets(&b, step);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (g.ts, g.cpu_min, g.cpu_max, g.mem_min, g.mem_max),
                    (w.ts, w.cpu_min, w.cpu_max, w.mem_min, w.mem_max)
                );
                assert!((g.cpu - w.cpu).abs() <= 1e-9 * w.cpu.abs().max(1.0));
            }
        }
    }

    #[test]
    fn resolution_rule() {
        let q = |from, step_ms| HistoryQuery {
            host: "h".into(),
            process: "p".into(),
            from,
            to: 10 * 86_400_000,
            step_ms,
        };
        let horizon = 8 * 86_400_000;
        assert_eq!(pick_resolution(&q(9 * 86_400_000, 0), horizon), (Resolution::Raw, 0));
        assert_eq!(pick_resolution(&q(9 * 86_400_000, 60_000), horizon), (Resolution::Raw, 60_000));
        assert_eq!(
            pick_resolution(&q(9 * 86_400_000, 420_000), horizon),
            (Resolution::Raw, 420_000)
        );
        assert_eq!(
            pick_resolution(&q(9 * 86_400_000, 600_000), horizon),
            (Resolution::Rollup5m, 600_000)
        );
        assert_eq!(pick_resolution(&q(0, 0), horizon), (Resolution::Rollup5m, ROLLUP_MS));
        assert_eq!(pick_resolution(&q(0, 420_000), horizon), (Resolution::Rollup5m, 600_000));
        assert_eq!(rollup_range(1, 600_001, ROLLUP_MS), (0, 900_000));
        assert_eq!(rollup_range(0, 600_000, ROLLUP_MS), (0, 600_000));
        assert_eq!(rollup_range(600_000, 600_000, ROLLUP_MS), (600_000, 600_000));
    }
}
