//! The procwatch collector: one sweep over every process of the host, grouped by process name,
//! with the figures of docs/contract.md §1.
//!
//! # API
//!
//! ```no_run
//! use procwatch_collector::{new_collector, CollectorKind, CollectorOptions};
//! let mut c = new_collector(CollectorKind::default(), CollectorOptions::default()).unwrap();
//! assert!(c.sweep().unwrap().is_none()); // the first call only primes the counters
//! std::thread::sleep(std::time::Duration::from_secs(1));
//! let sweep = c.sweep().unwrap().expect("second call measures");
//! for s in &sweep.samples { println!("{} {:.1}% {:.2} cores", s.process, s.cpu, s.cores); }
//! ```
//!
//! [`Collector::sweep`] returns `Ok(None)` on its first call (it has no previous reading to
//! take a difference from) and `Ok(Some(Sweep))` on every later call; the figures cover the
//! time since the previous call, measured on a monotonic clock. A collector is `Send`; it holds
//! the previous reading, so keep one per agent.
//!
//! # What is measured (`CollectorKind::Proc`, Linux)
//!
//! - **cpu** = `100 × Δ(utime+stime) / (Δt × CLK_TCK × online CPUs)`, percent of the host's
//!   capacity (a single-threaded busy loop on a 2-CPU host is 50); **cores** = the same ticks
//!   in cores. Δt is the monotonic time between the two sweeps' starts.
//! - A process is identified by (PID, start time): a reused PID is a new process. A process not
//!   in the previous sweep counts all its ticks (they all fell inside the interval).
//! - **rss** = `/proc/PID/stat` field 24 × page size; **mem** = `100 × rss / MemTotal`.
//! - **name** = comm; when comm is exactly 15 bytes (truncated by the kernel), the basename of
//!   `argv[0]` (`/proc/PID/cmdline`) or else of `/proc/PID/exe`, if it is longer and starts with
//!   comm. The resolved name is cached per (PID, start time, comm), so `cmdline` is read once
//!   per process lifetime (again only if the process execs and its comm changes).
//! - **groups**: one [`procwatch_model::Sample`] per process name: cpu, cores, rss and mem
//!   summed over the live processes of that name, `count` of them. Samples are sorted by cpu,
//!   highest first. With [`CollectorOptions::per_pid`] the per-process rows are kept too, in
//!   [`Sweep::processes`].
//! - **host**: cpu from the first line of `/proc/stat` (busy = all − idle − iowait), mem =
//!   `(MemTotal − MemAvailable) / MemTotal`, and `unattributed_cpu` = max(0, host cpu − Σ
//!   process cpu): CPU used by processes that lived and died between two sweeps, by excluded
//!   kernel threads, and by interrupts.
//! - Kernel threads (`PF_KTHREAD`) are left out unless
//!   [`CollectorOptions::include_kernel_threads`]. Zombies are left out (they hold no memory
//!   and can use no more CPU).
//! - Names are made acceptable to the server: control characters (comm may hold any byte)
//!   become `?`, and names are cut at 255 bytes.
//! - A process that vanishes or denies access between the directory listing and the read is
//!   skipped without error. cpu and mem are clamped to [0, 100], so a batch is never refused
//!   for a rounding overshoot.
//!
//! Cost: the only file read per process and sweep is `/proc/PID/stat` (it holds comm, flags,
//! utime, stime, starttime and rss). Each one is kept open and re-read with `pread` at offset 0,
//! one system call per process and sweep; an open `/proc/PID/stat` is bound to its process, so
//! once that exits the read fails (`ESRCH`) even if the PID was reused, and the file is
//! reopened. Files of processes no longer listed are closed at the end of the sweep. Trade-off:
//! one descriptor per process (the collector raises its soft `RLIMIT_NOFILE` towards the hard
//! limit, keeps 256 spare, keeps at most 65,536 open and reads the rest with open/read/close)
//! and about a page of kernel memory per open file. We hand-parse rather than use the `procfs`
//! crate, by measurement: the `procfs` crate doing the same work (read `stat`, Δticks by PID
//! and start time, sum per comm) costs 1.6× as much CPU per sweep
//! (`cargo run --release -p procwatch-collector --example procfs_compare`), because it opens
//! the PID directory and then the file on every read; the parse itself is forty lines without
//! allocation. Measured
//! at 0.6× the cost of reading `stat` + `statm` and 6–7× cheaper than psutil; see
//! `BENCHMARKS.md`, "Collector cost", and `procwatch agent --bench N`.
//!
//! # Extra metrics (opt-in, `/proc` collector)
//!
//! [`CollectorOptions::extras`] (the agent's `--metrics`) adds per-group `io`, `fds`,
//! `threads`, `ctxsw`, `owner` and `unit` figures in [`procwatch_model::Sample::extras`]; each
//! file is read only when its metric is on (see `extras.rs` for what is read, cached and
//! skipped, and BENCHMARKS.md "Collector cost: the extra metrics" for the cost).
//! [`Sweep::io_unreadable`] counts processes whose `/proc/PID/io` was denied. With no extra
//! on, nothing more is read than above.
//!
//! # The portable fallback (`CollectorKind::Sysinfo`)
//!
//! On the `sysinfo` crate (0.34), for macOS and Windows, selectable on Linux with
//! `--collector sysinfo`. Same shapes and the same formula: Δ of each process's accumulated
//! CPU time (sysinfo's, in ms) by (PID, start time), over the monotonic time between sweeps; a
//! new process counts all its CPU time. Differences: the start time that identifies a process
//! is in whole seconds; host cpu is sysinfo's global usage; names longer than 15 bytes are
//! resolved the same way from sysinfo's `cmd`/`exe`; threads that sysinfo lists as processes
//! are skipped. It costs about 3× the `/proc` collector (it reads several files per process).

#![deny(missing_docs)]

#[cfg(target_os = "linux")]
mod extras;
mod group_extras;
#[cfg(target_os = "linux")]
mod linux;
pub mod parse;
pub mod parse_extras;
mod portable;
pub mod selfmetrics;
pub mod sys;
#[cfg(target_os = "linux")]
mod taskstats;

#[cfg(target_os = "linux")]
pub mod bench;
#[cfg(target_os = "linux")]
pub mod floor;

use group_extras::{ExtrasAcc, ProcExtras};
pub use procwatch_model::extras::{ExtraMetric, ExtraSet};
use procwatch_model::precision::{round_cores, round_percent};
use procwatch_model::{HostTotal, Sample, TsMs};
use std::collections::HashMap;

/// One measurement of the host: every process group over the interval since the previous sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// When the sweep was taken, Unix ms. Every sample of the sweep carries this `ts`.
    pub ts: TsMs,
    /// The measured interval since the previous sweep, ms (monotonic clock).
    pub elapsed_ms: u64,
    /// Host-wide totals of the sweep.
    pub host_total: HostTotal,
    /// One per process name, sorted by cpu, highest first.
    pub samples: Vec<Sample>,
    /// One per process, sorted by cpu, only with [`CollectorOptions::per_pid`].
    pub processes: Vec<ProcessSample>,
    /// Processes whose `/proc/PID/io` could not be read in this sweep (the `io` extra is on but
    /// the agent lacks the privilege: not root and another user's process). 0 otherwise.
    pub io_unreadable: u32,
    /// Where `io` and `ctxsw` came from, when one of them is on: `Some(true)` the kernel's
    /// taskstats (the agent may query it: `CAP_NET_ADMIN`), `Some(false)` the files
    /// (`/proc/PID/io`, `/proc/PID/status`, at about three times the cost on a busy host).
    /// `None` when neither is on.
    pub taskstats: Option<bool>,
}

/// One process of a sweep (per-PID detail).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    /// The process id.
    pub pid: u32,
    /// The process name (`comm`).
    pub name: String,
    /// CPU percent of the host's capacity over the interval.
    pub cpu: f64,
    /// The same CPU time in cores.
    pub cores: f64,
    /// Resident memory, percent of `MemTotal`.
    pub mem: f64,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// Which implementation reads the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorKind {
    /// Reads `/proc` directly (Linux only).
    Proc,
    /// The portable `sysinfo` crate (macOS, Windows, and Linux on request).
    Sysinfo,
}

impl Default for CollectorKind {
    /// `Proc` on Linux, `Sysinfo` elsewhere.
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            CollectorKind::Proc
        } else {
            CollectorKind::Sysinfo
        }
    }
}

impl std::str::FromStr for CollectorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "proc" => Ok(CollectorKind::Proc),
            "sysinfo" => Ok(CollectorKind::Sysinfo),
            other => Err(format!("unknown collector {other:?}: expected proc or sysinfo")),
        }
    }
}

/// What a collector reports besides the default per-name groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectorOptions {
    /// Count kernel threads (`PF_KTHREAD`) as processes. Off by default.
    pub include_kernel_threads: bool,
    /// Keep per-process rows in [`Sweep::processes`]. Off by default.
    pub per_pid: bool,
    /// The opt-in extra metrics to collect (issue 19; `/proc` collector only). None by default.
    pub extras: ExtraSet,
    /// Read `io` and `ctxsw` from the files even where taskstats may be queried (the
    /// `/proc` collector uses taskstats when it can: same numbers, a third of the cost). For
    /// comparisons; off by default.
    pub no_taskstats: bool,
}

/// Why a sweep failed. Per-process failures never surface here: those processes are skipped.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The cause is in the message (not a `source`), so one line says it all in logs.
    #[error("cannot read {path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        err: std::io::Error,
    },
    /// A file had an unexpected format.
    #[error("cannot parse {path}")]
    Parse {
        /// The file.
        path: String,
    },
    #[error("the {0:?} collector is not available on this system")]
    /// This collector does not exist on this operating system.
    Unsupported(CollectorKind),
}

/// Samples every process of the host.
pub trait Collector {
    /// Takes one reading. The first call primes and returns `Ok(None)`; every later call
    /// returns the figures over the time since the previous call.
    fn sweep(&mut self) -> Result<Option<Sweep>, CollectError>;

    /// Changes which extra metrics later sweeps collect (e.g. on a directive). Collectors
    /// that collect no extras ignore it.
    fn set_extras(&mut self, extras: ExtraSet) {
        let _ = extras;
    }
}

/// Builds a collector of the given kind.
pub fn new_collector(
    kind: CollectorKind,
    opts: CollectorOptions,
) -> Result<Box<dyn Collector + Send>, CollectError> {
    match kind {
        #[cfg(target_os = "linux")]
        CollectorKind::Proc => Ok(Box::new(linux::ProcCollector::new("/proc", opts)?)),
        #[cfg(not(target_os = "linux"))]
        CollectorKind::Proc => Err(CollectError::Unsupported(kind)),
        CollectorKind::Sysinfo => Ok(Box::new(portable::SysinfoCollector::new(opts))),
    }
}

/// The machine's host name (the agent's default `--host`), `None` when it cannot be read.
pub fn hostname() -> Option<String> {
    sysinfo::System::host_name().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty())
}

/// A `/proc` collector reading procfs mounted at `root` instead of `/proc`: for an agent in a
/// container that sees the host's processes under e.g. `/host/proc`, and for tests over
/// fixture directories. (CPU counts, clock ticks and page size are still this system's.)
#[cfg(target_os = "linux")]
pub fn new_proc_collector_at(
    root: &str,
    opts: CollectorOptions,
) -> Result<Box<dyn Collector + Send>, CollectError> {
    Ok(Box::new(linux::ProcCollector::new(root, opts)?))
}

/// Unix milliseconds now: a sweep's timestamp, from the one real clock
/// ([`procwatch_model::clock::SystemClock`]). It must be the real time of the read, as the
/// kernel's counters are: a driven clock would stamp a reading with a time it was not taken.
pub(crate) fn now_ms() -> TsMs {
    use procwatch_model::clock::{Clock, SystemClock};
    SystemClock.now_ms()
}

fn clamp_pct(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Sums per-process figures into per-name groups. Shared by both collectors so that grouping,
/// sorting and clamping are the same.
#[derive(Debug, Default)]
pub(crate) struct Grouper {
    groups: HashMap<String, Group>,
    processes: Vec<ProcessSample>,
    per_pid: bool,
    cpu_sum: f64,
}

#[derive(Debug, Default)]
struct Group {
    cores: f64,
    rss: u64,
    count: u32,
    extras: Option<ExtrasAcc>,
}

impl Grouper {
    pub(crate) fn new(per_pid: bool) -> Self {
        Grouper { per_pid, ..Default::default() }
    }

    /// Adds one process: `cores` used over the interval, `rss` bytes, and its extra metrics
    /// if any were collected.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        pid: u32,
        name: &str,
        cores: f64,
        rss: u64,
        ncpu: f64,
        mem_total: u64,
        extras: Option<ProcExtras>,
    ) {
        let cores = if cores.is_finite() { cores.max(0.0) } else { 0.0 };
        self.cpu_sum += 100.0 * cores / ncpu;
        let name = parse::sanitize_name(name);
        let name = name.as_ref();
        let g = match self.groups.get_mut(name) {
            Some(g) => {
                g.cores += cores;
                g.rss += rss;
                g.count += 1;
                g
            }
            None => self.groups.entry(name.to_owned()).or_insert(Group {
                cores,
                rss,
                count: 1,
                extras: None,
            }),
        };
        if let Some(x) = extras {
            g.extras.get_or_insert_with(ExtrasAcc::default).add(pid, x);
        }
        if self.per_pid {
            self.processes.push(ProcessSample {
                pid,
                name: name.to_owned(),
                cpu: clamp_pct(100.0 * cores / ncpu),
                cores,
                mem: mem_pct(rss, mem_total),
                rss,
            });
        }
    }

    /// Σ process cpu so far, percent of the host.
    pub(crate) fn cpu_sum(&self) -> f64 {
        self.cpu_sum
    }

    pub(crate) fn finish(
        self,
        ts: TsMs,
        ncpu: f64,
        mem_total: u64,
    ) -> (Vec<Sample>, Vec<ProcessSample>) {
        let mut samples: Vec<Sample> = self
            .groups
            .into_iter()
            .map(|(process, g)| Sample {
                ts,
                process,
                // At the precision agents send (`procwatch_model::precision`).
                cpu: round_percent(clamp_pct(100.0 * g.cores / ncpu)),
                cores: round_cores(g.cores),
                mem: round_percent(mem_pct(g.rss, mem_total)),
                rss: g.rss,
                count: g.count,
                extras: g.extras.and_then(ExtrasAcc::finish),
            })
            .collect();
        samples.sort_by(|a, b| b.cores.total_cmp(&a.cores).then_with(|| a.process.cmp(&b.process)));
        let mut processes = self.processes;
        processes.sort_by(|a, b| b.cores.total_cmp(&a.cores).then_with(|| a.pid.cmp(&b.pid)));
        (samples, processes)
    }
}

fn mem_pct(rss: u64, mem_total: u64) -> f64 {
    if mem_total == 0 {
        return 0.0;
    }
    clamp_pct(100.0 * rss as f64 / mem_total as f64)
}

/// The host total of a sweep, with the unattributed CPU.
pub(crate) fn host_total(
    ts: TsMs,
    host_cpu: f64,
    host_mem: f64,
    process_cpu_sum: f64,
) -> HostTotal {
    let cpu = clamp_pct(host_cpu);
    HostTotal {
        ts,
        cpu,
        mem: clamp_pct(host_mem),
        unattributed_cpu: Some(clamp_pct(cpu - process_cpu_sum)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouper_sums_per_name_and_sorts_by_cpu() {
        let mut g = Grouper::new(true);
        let mem_total = 1000;
        g.add(1, "a", 0.5, 100, 2.0, mem_total, None);
        g.add(2, "b", 1.0, 10, 2.0, mem_total, None);
        g.add(3, "a", 0.25, 50, 2.0, mem_total, None);
        g.add(4, "a", f64::NAN, 0, 2.0, mem_total, None);
        assert_eq!(g.cpu_sum(), 87.5);
        let (samples, procs) = g.finish(7, 2.0, mem_total);
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].process, "b");
        assert_eq!((samples[0].cpu, samples[0].cores, samples[0].count), (50.0, 1.0, 1));
        let a = &samples[1];
        assert_eq!((a.process.as_str(), a.cores, a.cpu, a.rss, a.count), ("a", 0.75, 37.5, 150, 3));
        assert_eq!(a.mem, 15.0);
        assert_eq!(a.ts, 7);
        assert_eq!(procs.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![2, 1, 3, 4]);
    }

    #[test]
    fn grouper_cleans_names_the_server_would_refuse() {
        let mut g = Grouper::new(true);
        g.add(1, "evil\nname", 0.0, 1, 1.0, 100, None);
        g.add(2, "evil\tname", 0.0, 1, 1.0, 100, None);
        let (samples, procs) = g.finish(0, 1.0, 100);
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].process.as_str(), samples[0].count), ("evil?name", 2));
        assert!(procs.iter().all(|p| p.name == "evil?name"));
    }

    #[test]
    fn host_total_clamps_unattributed_at_zero() {
        let h = host_total(1, 40.0, 55.0, 50.0);
        assert_eq!(h.unattributed_cpu, Some(0.0));
        let h = host_total(1, 40.0, 55.0, 10.0);
        assert_eq!((h.cpu, h.mem, h.unattributed_cpu), (40.0, 55.0, Some(30.0)));
        assert_eq!(host_total(1, 100.5, f64::NAN, 0.0).cpu, 100.0);
    }

    #[test]
    fn collector_kind_parses() {
        assert_eq!("proc".parse::<CollectorKind>(), Ok(CollectorKind::Proc));
        assert_eq!("sysinfo".parse::<CollectorKind>(), Ok(CollectorKind::Sysinfo));
        assert!("x".parse::<CollectorKind>().is_err());
    }
}
