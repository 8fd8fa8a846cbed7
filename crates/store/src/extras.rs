//! The opt-in extra metrics (issue 19) in storage: what a backend stores and the shared
//! arithmetic that turns stored rows into usage statistics and history points.
//!
//! Extras are kept apart from the CPU/memory samples (their own map, table or measurement in
//! each backend), so a batch without extras costs exactly what it did before, and the compact
//! CPU/memory paths do not change. A backend implements two things: store the `extras` of each
//! sample in `write_batch` (same transaction: whole or nothing), and answer
//! [`crate::Storage::extras_window`] (rows in a window, sorted by host, process, ts), dropping
//! rows older than the retention cutoff in `apply_retention`. Usage, history and grouping are
//! computed here from those rows, so every backend gives the same figures.

use std::collections::BTreeMap;

use procwatch_model::extras::{Extras, NUMERIC_EXTRAS};
use procwatch_model::{Batch, TsMs};
use serde::{Deserialize, Serialize};

use crate::agg::{bucket_start, stats};
use crate::Stats;

/// The extras of one series at one sweep, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtrasRecord {
    /// The host.
    pub host: String,
    /// The process name.
    pub process: String,
    /// The sample's timestamp, Unix ms.
    pub ts: TsMs,
    /// The figures.
    pub extras: Extras,
}

/// The extras records of a batch (its samples that carry extras, at or after `floor`).
pub fn records_of(batch: &Batch, floor: TsMs) -> Vec<ExtrasRecord> {
    batch
        .samples
        .iter()
        .filter(|s| s.ts >= floor)
        .filter_map(|s| {
            let x = s.extras.as_deref().filter(|x| !x.is_empty())?;
            Some(ExtrasRecord {
                host: batch.host.clone(),
                process: s.process.clone(),
                ts: s.ts,
                extras: x.clone(),
            })
        })
        .collect()
}

/// Sorts records by (host, process, ts) and keeps the last written of equal keys (a
/// backend that appends may hold replaced rows: pass them in write order).
pub fn sort_dedup(records: &mut Vec<ExtrasRecord>) {
    // Stable sort keeps write order among equal keys; keep the last of each run.
    records.sort_by(|a, b| (&a.host, &a.process, a.ts).cmp(&(&b.host, &b.process, b.ts)));
    let mut out: Vec<ExtrasRecord> = Vec::with_capacity(records.len());
    for r in records.drain(..) {
        match out.last_mut() {
            Some(l) if l.host == r.host && l.process == r.process && l.ts == r.ts => *l = r,
            _ => out.push(r),
        }
    }
    *records = out;
}

/// Joins `records` into the samples of `windows` with the same (host, process, ts) that carry
/// no extras yet (the alarm evaluator, for rules on extra metrics).
pub fn attach(windows: &mut [crate::SeriesWindow], records: Vec<ExtrasRecord>) {
    let mut by: std::collections::HashMap<(String, String), BTreeMap<TsMs, Extras>> =
        std::collections::HashMap::new();
    for r in records {
        by.entry((r.host, r.process)).or_default().insert(r.ts, r.extras);
    }
    for w in windows {
        let Some(xs) = by.get_mut(&(w.host.clone(), w.process.clone())) else { continue };
        for s in w.samples.iter_mut().filter(|s| s.extras.is_none()) {
            if let Some(x) = xs.remove(&s.ts) {
                s.extras = Some(Box::new(x));
            }
        }
    }
}

/// Statistics of the extras of one group over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtrasUsage {
    /// The host, or `None` when merged over hosts.
    pub host: Option<String>,
    /// The process name.
    pub process: String,
    /// The owner at the newest record that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The unit at the newest record that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Per numeric extra present in the window (`fds`, `threads`, ...), its statistics.
    pub metrics: BTreeMap<String, Stats>,
    /// Records in the window.
    pub samples: u64,
}

/// Usage statistics per series (`per_host`) or per process name over the given records
/// (sorted by host, process, ts, as [`crate::Storage::extras_window`] returns them).
pub fn usage(records: &[ExtrasRecord], per_host: bool) -> Vec<ExtrasUsage> {
    let mut groups: BTreeMap<(Option<&str>, &str), Vec<&ExtrasRecord>> = BTreeMap::new();
    for r in records {
        let host = per_host.then_some(r.host.as_str());
        groups.entry((host, r.process.as_str())).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((host, process), mut rs)| {
            rs.sort_by_key(|r| r.ts);
            let mut u = ExtrasUsage {
                host: host.map(str::to_owned),
                process: process.to_owned(),
                samples: rs.len() as u64,
                ..Default::default()
            };
            for r in &rs {
                if let Some(o) = &r.extras.owner {
                    u.owner = Some(o.clone());
                }
                if let Some(unit) = &r.extras.unit {
                    u.unit = Some(unit.clone());
                }
            }
            for name in NUMERIC_EXTRAS {
                let mut v: Vec<f64> = rs.iter().filter_map(|r| r.extras.get(name)).collect();
                if !v.is_empty() {
                    u.metrics.insert(name.to_owned(), stats(&mut v));
                }
            }
            u
        })
        .collect()
}

/// One step of an extras history: the mean of each numeric extra over `[ts, ts + step)`
/// (counts rounded), and the newest owner and unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtrasPoint {
    /// Start of the step, Unix ms (raw: the record's own `ts`).
    pub ts: TsMs,
    /// The figures.
    #[serde(flatten)]
    pub extras: Extras,
}

/// History points of one series' records (oldest first) at `step_ms` (`<= 0`: raw).
pub fn history(records: &[ExtrasRecord], step_ms: i64) -> Vec<ExtrasPoint> {
    let mut buckets: BTreeMap<TsMs, Vec<&ExtrasRecord>> = BTreeMap::new();
    for r in records {
        let b = if step_ms > 0 { bucket_start(r.ts, step_ms) } else { r.ts };
        buckets.entry(b).or_default().push(r);
    }
    buckets
        .into_iter()
        .map(|(ts, rs)| {
            let mut x = Extras::default();
            for name in NUMERIC_EXTRAS {
                let v: Vec<f64> = rs.iter().filter_map(|r| r.extras.get(name)).collect();
                if !v.is_empty() {
                    x.set(name, v.iter().sum::<f64>() / v.len() as f64);
                }
            }
            x.owner = rs.iter().rev().find_map(|r| r.extras.owner.clone());
            x.unit = rs.iter().rev().find_map(|r| r.extras.unit.clone());
            ExtrasPoint { ts, extras: x }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(host: &str, process: &str, ts: TsMs, fds: u64, unit: Option<&str>) -> ExtrasRecord {
        let extras = Extras { fds: Some(fds), unit: unit.map(str::to_owned), ..Default::default() };
        ExtrasRecord { host: host.into(), process: process.into(), ts, extras }
    }

    #[test]
    fn usage_and_history_from_records() {
        let mut rs = vec![
            rec("b", "p", 0, 10, None),
            rec("a", "p", 1000, 4, Some("p.service")),
            rec("a", "p", 0, 2, None),
            rec("a", "p", 1000, 6, Some("p.service")), // replaces the one before
        ];
        sort_dedup(&mut rs);
        assert_eq!(rs.len(), 3);
        let u = usage(&rs, true);
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].host.as_deref(), u[0].samples), (Some("a"), 2));
        assert_eq!(u[0].metrics["fds"].mean, 4.0);
        assert_eq!(u[0].metrics["fds"].last, 6.0);
        assert_eq!(u[0].unit.as_deref(), Some("p.service"));
        let merged = usage(&rs, false);
        assert_eq!((merged.len(), merged[0].metrics["fds"].max), (1, 10.0));
        let h = history(&rs[..2], 60_000);
        assert_eq!((h.len(), h[0].ts, h[0].extras.fds), (1, 0, Some(4)));
        assert_eq!(h[0].extras.unit.as_deref(), Some("p.service"));
        assert_eq!(history(&rs[..2], 0).len(), 2);
    }

    #[test]
    fn attach_joins_records_to_samples_of_the_same_key() {
        let s = |ts| procwatch_model::Sample {
            ts,
            process: "p".into(),
            cpu: 1.0,
            cores: 0.0,
            mem: 1.0,
            rss: 0,
            count: 1,
            extras: None,
        };
        let mut w = vec![crate::SeriesWindow {
            host: "a".into(),
            process: "p".into(),
            samples: vec![s(0), s(1000)],
        }];
        attach(&mut w, vec![rec("a", "p", 1000, 7, None), rec("b", "p", 0, 9, None)]);
        assert!(w[0].samples[0].extras.is_none());
        assert_eq!(w[0].samples[1].extras.as_ref().unwrap().fds, Some(7));
    }
}
