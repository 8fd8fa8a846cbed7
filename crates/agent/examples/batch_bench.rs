//! Batch-building benchmark: the cost of turning spooled records into one
//! `POST /api/v1/samples` body, at the replay's shape (360 sweeps × 300 processes, the
//! agent's default merge of one hour at 10 s) and at the live shape (one sweep).
//!
//! Two ways side by side, in the same process:
//! - `build_batch`: what the agent does (the batch envelope serialised from the `model::Batch`
//!   type, the records' already-serialised arrays joined into it, no re-parsing);
//! - `typed` (the peer): each record parsed back into `model` types and the whole
//!   `model::Batch` serialised again.
//!
//! ```text
//! cargo run --release -p procwatch-agent --example batch_bench
//! ```
//! Optional: `--sweeps 360 --procs 300 --reps 30`.

#[path = "shared/sweeps.rs"]
mod sweeps;
use sweeps::sweep;

use std::time::Instant;

use procwatch_agent::{build_batch, decode_payload, encode_sweep};
use procwatch_model::{Batch, HostTotal, Sample};

/// The peer: parse every record back into model types and serialise the whole batch.
fn typed(host: &str, agent: &str, seq: u64, records: &[Vec<u8>]) -> Vec<u8> {
    let mut batch = Batch {
        host: host.to_owned(),
        agent: agent.to_owned(),
        seq,
        interval_ms: 10_000,
        host_totals: Vec::new(),
        samples: Vec::new(),
        dropped_samples: 0,
        report: None,
    };
    for r in records {
        let p = decode_payload(r).expect("payload");
        batch.host_totals.extend(serde_json::from_slice::<Vec<HostTotal>>(p.totals_json).unwrap());
        batch.samples.extend(serde_json::from_slice::<Vec<Sample>>(p.samples_json).unwrap());
    }
    serde_json::to_vec(&batch).unwrap()
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and minimum of `reps` timings of `f` in microseconds, and the body's size.
fn time(reps: usize, mut f: impl FnMut() -> Vec<u8>) -> (f64, f64, usize) {
    let mut t = Vec::with_capacity(reps);
    let mut bytes = 0;
    for _ in 0..reps {
        let start = Instant::now();
        let body = std::hint::black_box(f());
        t.push(start.elapsed().as_secs_f64() * 1e6);
        bytes = body.len();
    }
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0], bytes)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let procs = arg(&args, "--procs", 300);
    let reps = arg(&args, "--reps", 30);
    for sweeps in [arg(&args, "--sweeps", 360), 1] {
        let records: Vec<Vec<u8>> = (0..sweeps)
            .map(|k| {
                encode_sweep(
                    "web-1",
                    10_000,
                    &sweep(1_764_000_000_000 + k as i64 * 10_000, procs, k as u64),
                )
            })
            .collect();
        let (m, lo, bytes) = time(reps, || {
            let parts: Vec<_> = records
                .iter()
                .enumerate()
                .map(|(i, r)| (decode_payload(r).unwrap(), i as u64))
                .collect();
            build_batch("web-1", "procwatch/bench", 7, 0, &parts)
        });
        let (tm, tlo, tbytes) = time(reps, || typed("web-1", "procwatch/bench", 7, &records));
        println!(
            "{sweeps} sweeps × {procs} procs: build_batch {m:.1} µs (min {lo:.1}, {bytes} B) | typed peer {tm:.1} µs (min {tlo:.1}, {tbytes} B)"
        );
    }
}
