//! Synthetic sweeps for the agent's benchmarks (included with `#[path]`, not an example).

use procwatch_agent::SweepData;
use procwatch_model::{HostTotal, Sample};

/// Sweep number `k` at `ts`: `procs` process groups with varied, deterministic figures.
pub fn sweep(ts: i64, procs: usize, k: u64) -> SweepData {
    SweepData {
        ts,
        host_totals: vec![HostTotal { ts, cpu: 37.5, mem: 61.2, unattributed_cpu: Some(1.25) }],
        samples: (0..procs)
            .map(|i| {
                let x = ((i as u64 * 7919 + k * 104_729) % 10_000) as f64 / 100.0;
                Sample {
                    ts,
                    process: format!("process-{i:03}"),
                    cpu: x / 4.0,
                    cores: x / 200.0,
                    mem: x / 10.0,
                    rss: 1_000_000 + i as u64 * 4096,
                    count: 1 + (i % 3) as u32,
                    extras: None,
                }
            })
            .collect(),
    }
}
