//! The collector cost benchmark without the `procwatch` binary (same code as
//! `procwatch agent --bench N`):
//! `cargo run --release -p procwatch-collector --example bench -- [SWEEPS] [MIN_PROCS]`.
use procwatch_collector::bench::{format_table, run, BenchOptions};
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let sweeps = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let min_procs = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let opts = BenchOptions { sweeps, min_procs, gap: Duration::from_millis(200) };
    let rows = run(&opts, &mut std::io::stderr())?;
    println!(
        "{sweeps} sweeps per reader, median CPU time (user+system) per sweep, {} online CPUs\n",
        procwatch_collector::sys::online_cpus()
    );
    print!("{}", format_table(&rows));
    Ok(())
}
