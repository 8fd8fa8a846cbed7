//! The deterministic workload shared by `durability_writer` (the child process) and
//! `tests/durability.rs` (which recomputes what the child acknowledged).
// Each includer uses a part of it.
#![allow(dead_code)]

use procwatch_model::{Batch, Sample, TsMs};

/// Deterministic, irregular values for (series k, step i).
pub fn sample(k: usize, i: i64, ts: TsMs) -> Sample {
    let x = ((k as i64 * 7919 + i * 104_729) % 1000) as f64 / 10.0;
    Sample {
        ts,
        process: format!("proc-{k}"),
        cpu: if k.is_multiple_of(3) { 0.0 } else { x },
        cores: x / 50.0,
        mem: 1.0 + (k as f64) / 7.0 + if i % 5 == 0 { 0.25 } else { 0.0 },
        rss: 1_000_000 + (k as u64) * 4096 + (i as u64 % 5) * 4096,
        count: 1 + (i % 3) as u32,
        extras: None,
    }
}

/// A batch of `samples` from `host`.
pub fn batch(host: &str, seq: u64, samples: Vec<Sample>) -> Batch {
    Batch {
        host: host.into(),
        agent: "test".into(),
        seq,
        interval_ms: 10_000,
        host_totals: vec![],
        samples,
        dropped_samples: 0,
        report: None,
    }
}

/// Three hours of `host` from `t0`: 1,080 sweeps 10 s apart (jittered by a few ms), each a
/// batch of `series` samples.
pub fn three_hours(host: &str, series: usize, t0: TsMs) -> impl Iterator<Item = Batch> + '_ {
    (0..1080).map(move |i| {
        let ts = t0 + i * 10_000 + (i % 7) * 3;
        batch(host, i as u64 + 1, (0..series).map(|k| sample(k, i, ts)).collect())
    })
}

/// Series per batch of the writer.
pub const SERIES: usize = 40;

/// Distinct timestamps the `late` mode cycles through (so later batches rewrite them).
pub const LATE_SLOTS: i64 = 150;

/// Timestamp of batch `seq` in the `late` mode: a spool replay hours old, 10 s apart over
/// `LATE_SLOTS` slots from `t0`, irregular so consecutive batches hit different buckets.
pub fn late_ts(t0: TsMs, seq: u64) -> TsMs {
    t0 + ((seq as i64 * 37) % LATE_SLOTS) * 10_000
}
