//! Aggregation helpers shared by the backends, so every backend computes the same figures
//! the same way (the reference semantics of `Stats` and `HistoryPoint`).

use crate::{HistoryPoint, Stats};
use procwatch_model::{Sample, TsMs};

/// Percentile `q` in [0, 1] of `sorted` (ascending, non-empty), by linear interpolation between
/// the closest ranks: numpy's default (`method="linear"`).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let rank = q * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Statistics of `values` given in time order (the last one is `last`). `values` is sorted in
/// place. Empty input gives all zeros.
pub fn stats(values: &mut [f64]) -> Stats {
    if values.is_empty() {
        return Stats::default();
    }
    let last = values[values.len() - 1];
    let sum: f64 = values.iter().sum();
    let mean = sum / values.len() as f64;
    values.sort_by(f64::total_cmp);
    Stats {
        mean,
        min: values[0],
        max: values[values.len() - 1],
        last,
        p95: percentile_sorted(values, 0.95),
    }
}

/// Accumulates the four metric columns of samples in time order and turns them into
/// `Stats` (see `UsageRow`).
#[derive(Debug, Default, Clone)]
pub struct UsageAcc {
    /// cpu of each sample pushed, in push order (percent, 0–100).
    pub cpu: Vec<f64>,
    /// cores of each sample pushed, in push order.
    pub cores: Vec<f64>,
    /// mem of each sample pushed, in push order (percent, 0–100).
    pub mem: Vec<f64>,
    /// rss of each sample pushed, in push order (bytes, as `f64`).
    pub rss: Vec<f64>,
    /// `ts` of the newest sample pushed, Unix ms (0 before the first push).
    pub last_ts: TsMs,
    /// Process count of the newest sample pushed (0 before the first push).
    pub count: u32,
}

impl UsageAcc {
    /// Adds one sample. Samples must be pushed oldest first (ties: the later push is "last").
    pub fn push(&mut self, s: &Sample) {
        self.cpu.push(s.cpu);
        self.cores.push(s.cores);
        self.mem.push(s.mem);
        self.rss.push(s.rss as f64);
        if self.cpu.len() == 1 || s.ts >= self.last_ts {
            self.last_ts = s.ts;
            self.count = s.count;
        }
    }

    /// Number of samples pushed.
    pub fn len(&self) -> usize {
        self.cpu.len()
    }

    /// Whether no sample was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_empty()
    }

    /// Finishes into a row.
    pub fn finish(mut self, host: Option<String>, process: String) -> crate::UsageRow {
        crate::UsageRow {
            host,
            process,
            cpu: stats(&mut self.cpu),
            cores: stats(&mut self.cores),
            mem: stats(&mut self.mem),
            rss: stats(&mut self.rss),
            count: self.count,
            samples: self.cpu.len() as u64,
            last_ts: self.last_ts,
        }
    }
}

/// Merges per-host sample lists (each oldest first) into one list ordered by `ts`, ties broken
/// by the order of `lists` (so the list given last wins "last" on a tie).
pub fn merge_by_ts<'a>(lists: &[&'a [Sample]]) -> Vec<&'a Sample> {
    let mut all: Vec<(usize, &Sample)> =
        lists.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |s| (i, s))).collect();
    all.sort_by_key(|(i, s)| (s.ts, *i));
    all.into_iter().map(|(_, s)| s).collect()
}

/// Start of the step bucket holding `ts`: buckets are aligned to multiples of `step_ms`.
pub fn bucket_start(ts: TsMs, step_ms: i64) -> TsMs {
    if step_ms <= 0 {
        ts
    } else {
        ts - ts.rem_euclid(step_ms)
    }
}

/// Downsamples samples (oldest first, all inside the queried range) into history points.
/// `step_ms <= 0` returns one point per sample. Empty buckets produce no point.
pub fn history_points<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    step_ms: i64,
) -> Vec<HistoryPoint> {
    let mut out: Vec<HistoryPoint> = Vec::new();
    let mut cur: Option<(TsMs, HistAcc)> = None;
    for s in samples {
        let b = bucket_start(s.ts, step_ms);
        match &mut cur {
            Some((cb, acc)) if *cb == b => acc.push(s),
            _ => {
                if let Some((cb, acc)) = cur.take() {
                    out.push(acc.finish(cb));
                }
                let mut acc = HistAcc::default();
                acc.push(s);
                cur = Some((b, acc));
            }
        }
    }
    if let Some((cb, acc)) = cur {
        out.push(acc.finish(cb));
    }
    out
}

#[derive(Default)]
struct HistAcc {
    n: f64,
    cpu: f64,
    cpu_min: f64,
    cpu_max: f64,
    cores: f64,
    mem: f64,
    mem_min: f64,
    mem_max: f64,
    rss: f64,
    count: f64,
}

impl HistAcc {
    fn push(&mut self, s: &Sample) {
        if self.n == 0.0 {
            (self.cpu_min, self.cpu_max) = (s.cpu, s.cpu);
            (self.mem_min, self.mem_max) = (s.mem, s.mem);
        } else {
            self.cpu_min = self.cpu_min.min(s.cpu);
            self.cpu_max = self.cpu_max.max(s.cpu);
            self.mem_min = self.mem_min.min(s.mem);
            self.mem_max = self.mem_max.max(s.mem);
        }
        self.n += 1.0;
        self.cpu += s.cpu;
        self.cores += s.cores;
        self.mem += s.mem;
        self.rss += s.rss as f64;
        self.count += f64::from(s.count);
    }

    fn finish(self, ts: TsMs) -> HistoryPoint {
        HistoryPoint {
            ts,
            cpu: self.cpu / self.n,
            cpu_min: self.cpu_min,
            cpu_max: self.cpu_max,
            cores: self.cores / self.n,
            mem: self.mem / self.n,
            mem_min: self.mem_min,
            mem_max: self.mem_max,
            rss: self.rss / self.n,
            count: self.count / self.n,
        }
    }
}

/// How far a `seq` may move from the highest seen and still count as the same sequence
/// ([`seq_update`]). An agent's `seq` numbers its requests (one in flight at a time), so a real
/// gap is a few refused requests, never thousands.
pub const SEQ_WINDOW: u64 = 1_000;

/// Seq bookkeeping of one host, shared by the backends: returns the updated
/// `(last_seq, seq_gaps, gap_of_this_batch, batch_is_new)`.
///
/// Rules: the first batch of a host opens no gap. A batch whose `seq` is above the highest
/// seen by at most [`SEQ_WINDOW`] opens a gap of `seq - last_seq - 1`. A batch at or below the
/// highest seen by at most [`SEQ_WINDOW`] (a retry, or a late batch) opens none and changes
/// nothing; gaps are never closed by late arrivals. Any other `seq` — more than
/// [`SEQ_WINDOW`] ahead (a forged or corrupt `seq`) or behind (an agent whose spool, and so its
/// `seq`, restarted) — is a **reset**: it opens no gap, becomes the new baseline, and counts
/// as new. So one batch with an absurd `seq` cannot poison the host's counters: it adds no
/// gap, and the real agent's next batch, now far behind, is a reset back to the real
/// sequence, not an "old" batch whose data and drop counts are ignored.
/// `batch_is_new` tells whether the batch's `dropped_samples` should be added (not on retries).
pub fn seq_update(prev: Option<(u64, u64)>, seq: u64) -> (u64, u64, u64, bool) {
    match prev {
        None => (seq, 0, 0, true),
        Some((last, gaps)) if seq > last && seq - last <= SEQ_WINDOW => {
            let gap = seq - last - 1;
            (seq, gaps + gap, gap, true)
        }
        Some((last, gaps)) if seq <= last && last - seq <= SEQ_WINDOW => (last, gaps, 0, false),
        // A reset (see above).
        Some((_, gaps)) => (seq, gaps, 0, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_far_seq_is_a_reset_not_a_poison() {
        // Normal: gaps, retries.
        assert_eq!(seq_update(None, 5), (5, 0, 0, true));
        assert_eq!(seq_update(Some((5, 0)), 8), (8, 2, 2, true));
        assert_eq!(seq_update(Some((8, 2)), 8), (8, 2, 0, false));
        // A forged 1,000,000: no gap, and the real agent's next batch (9) resets back and is
        // new; the sequence then goes on with gaps counted again.
        let forged = seq_update(Some((8, 2)), 1_000_000);
        assert_eq!(forged, (1_000_000, 2, 0, true));
        let back = seq_update(Some((forged.0, forged.1)), 9);
        assert_eq!(back, (9, 2, 0, true));
        assert_eq!(seq_update(Some((back.0, back.1)), 11), (11, 3, 1, true));
        // An agent that lost its spool restarts at 0 after a long run: a reset, counted new.
        assert_eq!(seq_update(Some((50_000, 1)), 0), (0, 1, 0, true));
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 95) == 3.85
        assert!((percentile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.95) - 3.85).abs() < 1e-12);
        // numpy.percentile(range(1, 21), 95) == 19.05
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert!((percentile_sorted(&v, 0.95) - 19.05).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn stats_keeps_last_in_time_order() {
        let mut v = vec![5.0, 1.0, 3.0];
        let s = stats(&mut v);
        assert_eq!((s.min, s.max, s.last, s.mean), (1.0, 5.0, 3.0, 3.0));
    }

    #[test]
    fn buckets_align_to_multiples_of_step() {
        assert_eq!(bucket_start(12_345, 1000), 12_000);
        assert_eq!(bucket_start(-1, 1000), -1000);
        assert_eq!(bucket_start(77, 0), 77);
    }

    #[test]
    fn seq_rules() {
        assert_eq!(seq_update(None, 5), (5, 0, 0, true));
        assert_eq!(seq_update(Some((5, 0)), 6), (6, 0, 0, true));
        assert_eq!(seq_update(Some((6, 0)), 9), (9, 2, 2, true));
        assert_eq!(seq_update(Some((9, 2)), 9), (9, 2, 0, false));
        assert_eq!(seq_update(Some((9, 2)), 7), (9, 2, 0, false));
    }
}
