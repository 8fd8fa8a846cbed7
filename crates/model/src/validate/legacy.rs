//! The seed system's legacy payload (`PUT /ressources-usage/save-all`): its points checked and
//! joined into one [`Batch`].

use std::collections::BTreeMap;

use crate::{Batch, LegacyPayload, Sample, TsMs};

use super::{
    host_problem, percent_problem, process_problem, validate_batch, Limits, Problems, Rejection,
    LEGACY_MAX_CPU,
};

/// The cpu and mem values of one legacy (process, timestamp).
type Joined = (Option<f64>, Option<f64>);

/// Checks a legacy payload and joins it into one batch.
///
/// - host = `ipaddress` (the host rules apply); `seq` 0, no host totals.
/// - `timestamp` is Unix seconds (float) and becomes ms, rounded to the nearest.
/// - `type_data` is `"cpu"` or `"mem"`. cpu `value` is psutil's per-core percent, accepted in
///   [0, 102,400], stored as `cores = value / 100` and `cpu = min(value, 100)`; mem `value` is in
///   [0, 100].
/// - Points of one (process, timestamp) join into one sample; if a type appears twice there, the
///   later point wins.
/// - A (process, timestamp) with only one of the two types takes the other metric from the
///   nearest point in time of the same process and type in the same payload (the earlier on a
///   tie), or 0 when the payload has none. The seed's client always sends both at each
///   timestamp, so this only matters for other clients; it keeps each metric's mean that of the
///   values actually sent when a process's points are interleaved, and never invents data
///   from other requests.
/// - `rss` is unknown (0) and `count` is 1.
pub fn legacy_to_batch(payload: &LegacyPayload, limits: &Limits) -> Result<Batch, Rejection> {
    let mut p = Problems::default();
    if let Some(r) = host_problem(&payload.ipaddress) {
        p.push(None, "ipaddress", r);
    }
    if payload.data.len() > limits.max_samples * 2 {
        p.push(
            None,
            "data",
            format!("{} points, at most {} a request", payload.data.len(), limits.max_samples * 2),
        );
        return Err(p.reject());
    }
    // (process, ts) -> (cpu value, mem value)
    let mut joined: BTreeMap<(&str, TsMs), Joined> = BTreeMap::new();
    for (i, pt) in payload.data.iter().enumerate() {
        let mut ok = true;
        let ts = if pt.timestamp.is_finite() {
            let ts = (pt.timestamp * 1000.0).round() as TsMs;
            if let Some(r) = limits.check_ts(ts) {
                p.push(Some(i), "timestamp", r);
                ok = false;
            }
            ts
        } else {
            p.push(Some(i), "timestamp", "not finite");
            ok = false;
            0
        };
        if let Some(r) = process_problem(&pt.process_name) {
            p.push(Some(i), "process_name", r);
            ok = false;
        }
        let is_cpu = match pt.type_data.as_str() {
            "cpu" => true,
            "mem" => false,
            other => {
                p.push(Some(i), "type_data", format!("{other:?} is neither \"cpu\" nor \"mem\""));
                continue;
            }
        };
        let max = if is_cpu { LEGACY_MAX_CPU } else { 100.0 };
        if let Some(r) = percent_problem(pt.value, max) {
            p.push(Some(i), "value", r);
            ok = false;
        }
        if ok {
            let slot = joined.entry((pt.process_name.as_str(), ts)).or_default();
            if is_cpu {
                slot.0 = Some(pt.value);
            } else {
                slot.1 = Some(pt.value);
            }
        }
    }
    p.finish()?;
    let mut samples = Vec::with_capacity(joined.len());
    // Keys are sorted by (process, ts): fill gaps from the nearest point of the same process.
    let keys: Vec<(&str, TsMs)> = joined.keys().copied().collect();
    let mut start = 0;
    while start < keys.len() {
        let process = keys[start].0;
        let end = start + keys[start..].iter().take_while(|k| k.0 == process).count();
        let rows: Vec<(TsMs, Option<f64>, Option<f64>)> = keys[start..end]
            .iter()
            .map(|k| {
                let (c, m) = joined[k];
                (k.1, c, m)
            })
            .collect();
        for (j, &(ts, cpu, mem)) in rows.iter().enumerate() {
            let cpu_v = cpu.or_else(|| nearest(&rows, j, |r| r.1)).unwrap_or(0.0);
            let mem_v = mem.or_else(|| nearest(&rows, j, |r| r.2)).unwrap_or(0.0);
            samples.push(Sample {
                ts,
                process: process.to_owned(),
                cpu: cpu_v.min(100.0),
                cores: cpu_v / 100.0,
                mem: mem_v,
                rss: 0,
                count: 1,
                extras: None,
            });
        }
        start = end;
    }
    let batch = Batch {
        host: payload.ipaddress.clone(),
        agent: "legacy".into(),
        seq: 0,
        interval_ms: 0,
        host_totals: Vec::new(),
        samples,
        dropped_samples: 0,
        report: None,
    };
    validate_batch(&batch, limits)?;
    Ok(batch)
}

/// The value of `get` at the row nearest in time to `rows[j]` that has one (earlier on a tie).
fn nearest<T>(
    rows: &[(TsMs, T, T)],
    j: usize,
    get: impl Fn(&(TsMs, T, T)) -> Option<f64>,
) -> Option<f64> {
    let ts = rows[j].0;
    let before = rows[..j].iter().rev().find_map(|r| get(r).map(|v| (ts - r.0, v)));
    let after = rows[j + 1..].iter().find_map(|r| get(r).map(|v| (r.0 - ts, v)));
    match (before, after) {
        (Some(b), Some(a)) => Some(if a.0 < b.0 { a.1 } else { b.1 }),
        (Some(b), None) => Some(b.1),
        (None, Some(a)) => Some(a.1),
        (None, None) => None,
    }
}
