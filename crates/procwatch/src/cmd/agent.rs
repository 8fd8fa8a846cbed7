//! `procwatch agent`: samples every process on a fixed cadence.
//!
//! - `--once`: takes two readings `--interval` apart, prints one sweep (sorted by cpu) as a
//!   table (default) or as the JSON batch of docs/contract.md §2 (`--format json`), and exits.
//! - otherwise: runs forever. The first reading primes the counters; then one batch per
//!   interval, each deadline = previous deadline + interval (no drift; a sweep that overruns
//!   skips the deadlines it missed rather than bunching up). Without `--server`, each batch is
//!   written to stdout as one JSON line (`--format json`, the default without `--once`) or as
//!   a table.
//! - `--proc-root DIR`: read procfs at DIR instead of `/proc` (an agent in a container watching
//!   its host through a bind mount of the host's `/proc`).
//! - `--server URL`: every sweep is spooled on disk, then shipped (see `ship` and the
//!   `procwatch_agent` crate docs); with `--once`, one sweep is taken, shipped, and the agent
//!   exits.
//! - `--bench N`: the collector's cost beside its peers (see `procwatch_collector::bench`).

mod metrics;
pub mod ship;
pub mod sweep;

use anyhow::{bail, Context, Result};
use procwatch_collector::{new_collector, Collector, CollectorKind, CollectorOptions, Sweep};
use procwatch_model::schedule::Schedule;
use procwatch_model::Batch;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `agent` field of every batch.
pub const AGENT_ID: &str = concat!("procwatch/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Server base URL to ship batches to. Same rule as every client command (--server, else
    /// PROCWATCH_SERVER, else `server` in the config file) except the last step: without a
    /// server the agent does not guess one, it prints its batches on stdout (`--once`: a table).
    #[arg(long, env = "PROCWATCH_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Time between two sweeps (humantime: 10s, 500ms, 1m).
    #[arg(long, env = "PROCWATCH_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Host name put on every batch [default: this machine's hostname].
    #[arg(long, env = "PROCWATCH_HOST", value_name = "NAME")]
    pub host: Option<String>,

    /// Directory where batches wait while the server is unreachable.
    #[arg(long, env = "PROCWATCH_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    #[command(flatten)]
    pub token: super::token::WriteToken,

    /// Take one sweep (two readings one --interval apart: 10 s by default, said on stderr),
    /// print it (or ship it with --server) and exit.
    #[arg(long, env = "PROCWATCH_ONCE")]
    pub once: bool,

    /// Output format [default: table with --once, json (one batch per line) otherwise].
    #[arg(long, env = "PROCWATCH_FORMAT")]
    pub format: Option<Format>,

    /// Which collector reads the processes: proc (Linux /proc) or sysinfo (portable).
    #[arg(long, env = "PROCWATCH_COLLECTOR", default_value = default_collector())]
    pub collector: CollectorKindArg,

    /// Count kernel threads as processes.
    #[arg(long, env = "PROCWATCH_INCLUDE_KERNEL_THREADS")]
    pub include_kernel_threads: bool,

    /// Where procfs is mounted (proc collector), e.g. /host/proc for an agent in a container
    /// that watches its host.
    #[arg(long, env = "PROCWATCH_PROC_ROOT", default_value = "/proc", value_name = "DIR")]
    pub proc_root: String,

    /// Opt-in extra metrics per process, comma-separated: io (disk bytes/s; needs root for
    /// other users' processes), fds (open descriptors and % of the limit), threads, ctxsw
    /// (context switches/s), owner (user name), unit (systemd unit or container id); `all`;
    /// default none. proc collector only.
    #[arg(long, env = "PROCWATCH_METRICS", default_value = "none", value_name = "LIST")]
    pub metrics: procwatch_collector::ExtraSet,

    /// Also print one row per process (table format only; batches stay per process name).
    #[arg(long, env = "PROCWATCH_PER_PID")]
    pub per_pid: bool,

    /// Benchmark the collector's own CPU cost over N sweeps and exit (Linux).
    #[arg(long, env = "PROCWATCH_BENCH", value_name = "SWEEPS")]
    pub bench: Option<u32>,

    /// With --bench: spawn sleeping processes until at least this many exist.
    #[arg(long, env = "PROCWATCH_BENCH_PROCS", default_value_t = 1000, value_name = "N")]
    pub bench_procs: usize,

    #[command(flatten)]
    pub delivery: ship::DeliveryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectorKindArg {
    Proc,
    Sysinfo,
}

impl From<CollectorKindArg> for CollectorKind {
    fn from(k: CollectorKindArg) -> Self {
        match k {
            CollectorKindArg::Proc => CollectorKind::Proc,
            CollectorKindArg::Sysinfo => CollectorKind::Sysinfo,
        }
    }
}

fn default_collector() -> &'static str {
    match CollectorKind::default() {
        CollectorKind::Proc => "proc",
        CollectorKind::Sysinfo => "sysinfo",
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = procwatch_model::duration::parse(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) {
        return Err("interval must be at least 10ms".into());
    }
    Ok(d)
}

impl AgentArgs {
    /// The host name to put on batches: `--host`, else the machine's hostname.
    pub fn host_name(&self) -> Result<String> {
        match &self.host {
            Some(h) => Ok(h.clone()),
            None => procwatch_collector::hostname()
                .context("cannot read this machine's hostname; pass --host NAME"),
        }
    }

    /// The collector these flags ask for.
    pub fn build_collector(&self) -> Result<Box<dyn Collector + Send>> {
        let opts = CollectorOptions {
            include_kernel_threads: self.include_kernel_threads,
            per_pid: self.per_pid,
            extras: self.metrics,
            ..Default::default()
        };
        if self.collector == CollectorKindArg::Sysinfo && !self.metrics.is_empty() {
            bail!(
                "--metrics {} needs the proc collector (Linux /proc); the sysinfo collector collects no extra metrics",
                self.metrics
            );
        }
        #[cfg(target_os = "linux")]
        if self.collector == CollectorKindArg::Proc && self.proc_root != "/proc" {
            return procwatch_collector::new_proc_collector_at(&self.proc_root, opts)
                .context("cannot start the collector");
        }
        new_collector(self.collector.into(), opts).context("cannot start the collector")
    }
}

/// The batch of docs/contract.md §2 for one sweep: one host total, one sample per process name.
pub fn build_batch(host: &str, seq: u64, interval: Duration, sweep: &Sweep) -> Batch {
    Batch {
        host: host.to_owned(),
        agent: AGENT_ID.to_owned(),
        seq,
        interval_ms: interval.as_millis() as u64,
        host_totals: vec![sweep.host_total.clone()],
        samples: sweep.samples.clone(),
        dropped_samples: 0,
        report: None,
    }
}

pub fn run(args: AgentArgs) -> Result<()> {
    if let Some(n) = args.bench {
        return bench(&args, n);
    }
    let host = args.host_name()?;
    let mut collector = args.build_collector()?;
    let stdout = std::io::stdout();
    if args.once && args.server.is_none() {
        let format = args.format.unwrap_or(Format::Table);
        // cpu is a difference of two readings: say how long the quick look takes.
        eprintln!(
            "procwatch: two readings {} apart (--interval; e.g. --interval 1s for a quicker look)...",
            humantime::format_duration(args.interval)
        );
        let start = Instant::now();
        collector.sweep().context("sweep failed")?;
        sleep_until(start + args.interval);
        let Some(sweep) = collector.sweep().context("sweep failed")? else {
            bail!("the collector returned no sweep after priming");
        };
        let mut out = stdout.lock();
        return ignore_broken_pipe(emit(&mut out, format, &host, 1, args.interval, &sweep));
    }
    if let Some(server) = &args.server {
        return ship::run(&args, server, host, collector);
    }
    let format = args.format.unwrap_or(Format::Json);
    let mut schedule = Schedule::new(Instant::now(), args.interval);
    collector.sweep().context("sweep failed")?;
    let mut seq = 0;
    let mut notes = ExtrasNotes::default();
    loop {
        schedule.advance(Instant::now());
        sleep_until(schedule.deadline());
        let sweep = match collector.sweep() {
            Ok(Some(s)) => {
                notes.observe(&s);
                s
            }
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(message = "Sweep failed.", %error);
                continue;
            }
        };
        seq += 1;
        let mut out = stdout.lock();
        if let Err(e) = emit(&mut out, format, &host, seq, args.interval, &sweep) {
            return ignore_broken_pipe(Err(e));
        }
    }
}

/// Says once (not every sweep) that `--metrics io` cannot read some processes' I/O, and
/// where `io` and `ctxsw` come from whenever that changes (taskstats or the files).
#[derive(Debug, Default)]
pub struct ExtrasNotes {
    io_warned: bool,
    source: Option<bool>,
}

impl ExtrasNotes {
    /// Logs what `sweep` tells for the first time.
    pub fn observe(&mut self, sweep: &Sweep) {
        if sweep.io_unreadable > 0 && !self.io_warned {
            self.io_warned = true;
            tracing::warn!(
                message = "--metrics io: /proc/PID/io is unreadable for some processes (it needs root or the same user); their io is left out (said once).",
                processes = sweep.io_unreadable,
            );
        }
        if sweep.taskstats.is_some() && sweep.taskstats != self.source {
            self.source = sweep.taskstats;
            match sweep.taskstats {
                Some(true) => tracing::info!(
                    message = "Extra metrics io and ctxsw are read through the kernel's taskstats."
                ),
                _ => tracing::info!(
                    message = "Extra metrics io and ctxsw are read from /proc/PID/io and status; with CAP_NET_ADMIN the agent would use taskstats, about a third of the cost on a busy host (guide: Extra metrics)."
                ),
            }
        }
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

fn ignore_broken_pipe(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

fn emit(
    out: &mut impl Write,
    format: Format,
    host: &str,
    seq: u64,
    interval: Duration,
    sweep: &Sweep,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let batch = build_batch(host, seq, interval, sweep);
            serde_json::to_writer(&mut *out, &batch)?;
            writeln!(out)?;
        }
        Format::Table => write_table(out, host, sweep)?,
    }
    out.flush()
}

fn write_table(out: &mut impl Write, host: &str, sweep: &Sweep) -> std::io::Result<()> {
    let h = &sweep.host_total;
    writeln!(
        out,
        "host {host}  over {:.2}s  cpu {:.1}%  mem {:.1}%  unattributed cpu {:.1}%",
        sweep.elapsed_ms as f64 / 1000.0,
        h.cpu,
        h.mem,
        h.unattributed_cpu.unwrap_or(0.0)
    )?;
    writeln!(
        out,
        "{:>7} {:>6} {:>6} {:>10} {:>5}  PROCESS",
        "CPU%", "CORES", "MEM%", "RSS", "COUNT"
    )?;
    for s in &sweep.samples {
        writeln!(
            out,
            "{:>7.2} {:>6.2} {:>6.2} {:>10} {:>5}  {}",
            s.cpu,
            s.cores,
            s.mem,
            human_bytes(s.rss),
            s.count,
            s.process
        )?;
    }
    if !sweep.processes.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:>7} {:>6} {:>6} {:>10} {:>7}  PROCESS",
            "CPU%", "CORES", "MEM%", "RSS", "PID"
        )?;
        for p in &sweep.processes {
            writeln!(
                out,
                "{:>7.2} {:>6.2} {:>6.2} {:>10} {:>7}  {}",
                p.cpu,
                p.cores,
                p.mem,
                human_bytes(p.rss),
                p.pid,
                p.name
            )?;
        }
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(target_os = "linux")]
fn bench(args: &AgentArgs, sweeps: u32) -> Result<()> {
    use procwatch_collector::bench;
    let opts = bench::BenchOptions {
        sweeps,
        min_procs: args.bench_procs,
        gap: Duration::from_millis(200).min(args.interval),
        no_taskstats: false,
    };
    let mut err = std::io::stderr();
    let rows = bench::run(&opts, &mut err).context("benchmark failed")?;
    println!(
        "{} sweeps per reader, median CPU time (user+system) per sweep, {} online CPUs\n",
        sweeps,
        procwatch_collector::sys::online_cpus()
    );
    print!("{}", bench::format_table(&rows));
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn bench(_args: &AgentArgs, _sweeps: u32) -> Result<()> {
    bail!("--bench needs Linux (/proc)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::{HostTotal, Sample};

    #[test]
    fn batch_carries_the_sweep() {
        let sweep = Sweep {
            ts: 1_764_070_000_000,
            elapsed_ms: 10_000,
            host_total: HostTotal {
                ts: 1_764_070_000_000,
                cpu: 41.5,
                mem: 55.0,
                unattributed_cpu: Some(1.0),
            },
            samples: vec![Sample {
                ts: 1_764_070_000_000,
                process: "postgres".into(),
                cpu: 12.5,
                cores: 0.25,
                mem: 3.2,
                rss: 268_435_456,
                count: 7,
                extras: None,
            }],
            processes: vec![],
            io_unreadable: 0,
            taskstats: None,
        };
        let b = build_batch("web-1", 42, Duration::from_secs(10), &sweep);
        assert_eq!((b.host.as_str(), b.seq, b.interval_ms), ("web-1", 42, 10_000));
        assert_eq!(b.agent, AGENT_ID);
        assert_eq!(b.host_totals, vec![sweep.host_total.clone()]);
        assert_eq!(b.samples, sweep.samples);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(268_435_456), "256.0 MiB");
    }
}
