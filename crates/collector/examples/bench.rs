//! The collector cost benchmark without the `procwatch` binary (same code as
//! `procwatch agent --bench N`):
//! `cargo run --release -p procwatch-collector --example bench -- [--active[=MS]] [--no-taskstats] [SWEEPS] [MIN_PROCS]`.
//!
//! `--no-taskstats`: the extras read `io` and `ctxsw` from `/proc/PID/io` and `status` even
//! where taskstats answers (root).
//!
//! `--active`: the processes spawned to reach MIN_PROCS wake every MS milliseconds (default
//! 50) instead of sleeping, so that every one has run between two sweeps.
use procwatch_collector::bench::{format_table, run_with, BenchOptions, Children};
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let (flags, mut args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let mut children = Children::Sleeping;
    let mut no_taskstats = false;
    for f in &flags {
        if f == "--no-taskstats" {
            no_taskstats = true;
            continue;
        }
        match f.strip_prefix("--active") {
            Some(rest) => {
                let ms = rest.strip_prefix('=').map_or(Ok(50), str::parse).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{f}: {e}"))
                })?;
                children = Children::Active { tick: Duration::from_millis(ms) };
            }
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("unknown flag {f} (usage: bench [--active[=MS]] [--no-taskstats] [SWEEPS] [MIN_PROCS])"),
                ))
            }
        }
    }
    args.reverse();
    let sweeps = args.pop().and_then(|a| a.parse().ok()).unwrap_or(15);
    let min_procs = args.pop().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let opts = BenchOptions { sweeps, min_procs, gap: Duration::from_millis(200), no_taskstats };
    let rows = run_with(&opts, children, &mut std::io::stderr())?;
    let mode = match children {
        Children::Sleeping => "sleeping children".to_string(),
        Children::Active { tick } => format!("active children waking every {tick:?}"),
    };
    println!(
        "{sweeps} sweeps per reader, median CPU time (user+system) per sweep, {} online CPUs, {mode}\n",
        procwatch_collector::sys::online_cpus()
    );
    print!("{}", format_table(&rows));
    Ok(())
}
