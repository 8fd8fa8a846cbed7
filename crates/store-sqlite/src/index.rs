//! The in-memory recent window: per host, per process, the samples with `ts >= floor` in
//! columns (`Ring`), plus the fast statistics the usage queries need.

use std::collections::BTreeMap;

use procwatch_model::TsMs;
use procwatch_store::{Stats, UsageRow};

use crate::codec::Columns;

/// Samples of one series with `ts >= floor` of its host, sorted by `ts`, unique `ts`.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    pub c: Columns,
}

impl Ring {
    /// Inserts or replaces the sample at `s.ts`.
    pub fn upsert(&mut self, ts: TsMs, cpu: f64, cores: f64, mem: f64, rss: u64, count: u32) {
        let c = &mut self.c;
        if c.ts.last().is_none_or(|&l| ts > l) {
            c.push(ts, cpu, cores, mem, rss, count);
            return;
        }
        match c.ts.binary_search(&ts) {
            Ok(i) => {
                c.cpu[i] = cpu;
                c.cores[i] = cores;
                c.mem[i] = mem;
                c.rss[i] = rss;
                c.count[i] = count;
            }
            Err(i) => {
                c.ts.insert(i, ts);
                c.cpu.insert(i, cpu);
                c.cores.insert(i, cores);
                c.mem.insert(i, mem);
                c.rss.insert(i, rss);
                c.count.insert(i, count);
            }
        }
    }

    /// Drops samples with `ts < floor`.
    pub fn evict(&mut self, floor: TsMs) {
        let k = self.c.ts.partition_point(|&t| t < floor);
        if k > 0 {
            let c = &mut self.c;
            c.ts.drain(..k);
            c.cpu.drain(..k);
            c.cores.drain(..k);
            c.mem.drain(..k);
            c.rss.drain(..k);
            c.count.drain(..k);
        }
    }

    /// Index range of `from <= ts < to`.
    pub fn range(&self, from: TsMs, to: TsMs) -> std::ops::Range<usize> {
        let a = self.c.ts.partition_point(|&t| t < from);
        let b = self.c.ts.partition_point(|&t| t < to).max(a);
        a..b
    }
}

/// The recent samples of one host.
#[derive(Debug, Default)]
pub struct HostIndex {
    /// Every sample of this host with `ts >= floor` is here (and only those).
    pub floor: TsMs,
    pub series: BTreeMap<String, Ring>,
}

impl HostIndex {
    pub fn evict(&mut self, floor: TsMs) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        self.series.retain(|_, r| {
            r.evict(floor);
            !r.c.is_empty()
        });
    }
}

/// Streaming statistics: one pass for mean/min/max/last, p95 through a small top-k buffer
/// when the rank is near the top (the usual case), else `select_nth_unstable`.
#[derive(Debug, Default)]
pub struct StatAcc {
    vals: Vec<f64>,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ts: TsMs,
}

impl StatAcc {
    pub fn clear(&mut self) {
        self.vals.clear();
        self.sum = 0.0;
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    /// Adds a run of values whose last one is at `last_ts`; `last` moves to this run's last
    /// value when `last_ts` is not older than the current one (ties: the later run wins).
    pub fn extend(&mut self, vals: &[f64], last_ts: TsMs) {
        let Some(&lastv) = vals.last() else { return };
        if self.vals.is_empty() {
            self.min = f64::INFINITY;
            self.max = f64::NEG_INFINITY;
            self.last_ts = TsMs::MIN;
        }
        for &v in vals {
            self.sum += v;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.vals.extend_from_slice(vals);
        if last_ts >= self.last_ts {
            self.last_ts = last_ts;
            self.last = lastv;
        }
    }

    pub fn finish(&mut self) -> Stats {
        let n = self.vals.len();
        if n == 0 {
            return Stats::default();
        }
        Stats {
            mean: self.sum / n as f64,
            min: self.min,
            max: self.max,
            last: self.last,
            p95: p95(&mut self.vals),
        }
    }
}

/// numpy's linear 95th percentile of `v` (non-empty); reorders `v`.
pub fn p95(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 1 {
        return v[0];
    }
    let rank = 0.95 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    let k = n - lo; // sorted[lo] is the k-th largest
    let (a, b) = if k <= 16 {
        // Top-k, descending.
        let mut top = [f64::NEG_INFINITY; 16];
        let mut len = 0usize;
        for &x in v.iter() {
            if len < k {
                let mut i = len;
                while i > 0 && top[i - 1].total_cmp(&x).is_lt() {
                    top[i] = top[i - 1];
                    i -= 1;
                }
                top[i] = x;
                len += 1;
            } else if top[k - 1].total_cmp(&x).is_lt() {
                let mut i = k - 1;
                while i > 0 && top[i - 1].total_cmp(&x).is_lt() {
                    top[i] = top[i - 1];
                    i -= 1;
                }
                top[i] = x;
            }
        }
        let a = top[k - 1];
        let b = if hi == lo { a } else { top[k - 2] };
        (a, b)
    } else {
        let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
        let a = *a;
        let b = if hi == lo { a } else { rest.iter().copied().min_by(f64::total_cmp).unwrap_or(a) };
        (a, b)
    };
    a + (b - a) * frac
}

/// Accumulates the four metrics of one usage row.
#[derive(Debug, Default)]
pub struct RowAcc {
    pub cpu: StatAcc,
    pub cores: StatAcc,
    pub mem: StatAcc,
    pub rss: StatAcc,
    rss_buf: Vec<f64>,
    pub count: u32,
    pub last_ts: TsMs,
}

impl RowAcc {
    pub fn clear(&mut self) {
        self.cpu.clear();
        self.cores.clear();
        self.mem.clear();
        self.rss.clear();
        self.count = 0;
        self.last_ts = TsMs::MIN;
    }

    /// Adds `c[r]`.
    pub fn add(&mut self, c: &Columns, r: std::ops::Range<usize>) {
        if r.is_empty() {
            return;
        }
        let last_ts = c.ts[r.end - 1];
        self.cpu.extend(&c.cpu[r.clone()], last_ts);
        self.cores.extend(&c.cores[r.clone()], last_ts);
        self.mem.extend(&c.mem[r.clone()], last_ts);
        self.rss_buf.clear();
        self.rss_buf.extend(c.rss[r.clone()].iter().map(|&x| x as f64));
        self.rss.extend(&self.rss_buf, last_ts);
        if self.cpu.len() == r.len() || last_ts >= self.last_ts {
            self.last_ts = last_ts;
            self.count = c.count[r.end - 1];
        }
    }

    pub fn finish(&mut self, host: Option<String>, process: String) -> UsageRow {
        UsageRow {
            host,
            process,
            samples: self.cpu.len() as u64,
            cpu: self.cpu.finish(),
            cores: self.cores.finish(),
            mem: self.mem.finish(),
            rss: self.rss.finish(),
            count: self.count,
            last_ts: self.last_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn p95_matches_the_reference(v in proptest::collection::vec(-1e6f64..1e6, 1..500)) {
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want = procwatch_store::agg::percentile_sorted(&sorted, 0.95);
            let mut w = v.clone();
            prop_assert_eq!(p95(&mut w), want);
        }
    }

    #[test]
    fn ring_upsert_keeps_order_and_replaces() {
        let mut r = Ring::default();
        for ts in [30, 10, 20, 40, 20] {
            r.upsert(ts, ts as f64, 0.0, 0.0, 0, 1);
        }
        assert_eq!(r.c.ts, vec![10, 20, 30, 40]);
        r.evict(25);
        assert_eq!(r.c.ts, vec![30, 40]);
        assert_eq!(r.range(31, 100), 1..2);
    }
}
