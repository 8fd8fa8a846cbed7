//! Child writer process of the kill -9 tests in `tests/durability.rs` (a test helper, not a
//! product binary): opens the store in `<dir>`, writes batches forever and prints
//! `ACK <seq> <ts>` after each `Ok`, until the parent kills it with SIGKILL.
//!
//! `durability_writer ack <dir>`: mostly current timestamps, every 7th batch an hour old,
//! with a 2 s memory window and a 100 ms maintenance thread, so folds and merges run (and
//! are killed) while batches are written.
//!
//! `durability_writer late <dir> <t0>`: a spool replay: every batch hours old (`late_ts`),
//! rewriting earlier timestamps with new values, with a 20 ms maintenance thread, so late
//! rows are folded and their roll-up buckets recomputed all the time, packed buckets too
//! (packing runs at every maintenance pass).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use procwatch_store::Storage;
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

#[path = "workload.rs"]
mod workload;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: durability_writer (ack <dir> | late <dir> <t0>)";
    let (mode, dir) = match (args.get(1), args.get(2)) {
        (Some(m), Some(d)) => (m.as_str(), Path::new(d)),
        _ => panic!("{usage}"),
    };
    let clock = procwatch_model::clock::system();
    let maintenance = if mode == "late" { 20 } else { 100 };
    let store = SqliteStore::open(
        dir,
        SqliteOptions {
            memory_window_ms: 2_000,
            fold_step_ms: 500,
            block_ms: 60_000,
            // Pack closed roll-up buckets at every maintenance pass (default: hourly).
            rollup_pack_ms: 0,
            maintenance_interval: Duration::from_millis(maintenance),
            ..Default::default()
        },
    )
    .expect("open the store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = match mode {
        "ack" => clock.now_ms() - 3_600_000,
        "late" => args.get(3).and_then(|t| t.parse().ok()).expect(usage),
        _ => panic!("{usage}"),
    };
    let mut out = std::io::stdout().lock();
    for seq in 1u64.. {
        let i = seq as i64;
        let ts = match mode {
            "ack" if seq.is_multiple_of(7) => t0 + i,
            "ack" => clock.now_ms(),
            _ => workload::late_ts(t0, seq),
        };
        let samples = (0..workload::SERIES).map(|k| workload::sample(k, i, ts)).collect();
        rt.block_on(store.write_batch(&workload::batch("kill9", seq, samples)))
            .expect("write a batch");
        writeln!(out, "ACK {seq} {ts}").and_then(|()| out.flush()).expect("stdout");
    }
}
