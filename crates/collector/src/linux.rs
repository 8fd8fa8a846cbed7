//! The `/proc` collector: one `/proc/PID/stat` read per process and sweep.

use crate::parse::{self, CpuTimes, PidStat, COMM_MAX};
use crate::{sys, CollectError, Collector, CollectorOptions, Grouper, Sweep};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::time::Instant;

/// Reads a whole `/proc` file into `buf` (reused; grown when a file does not fit) and returns
/// its length. One `open`, usually one `read`, one `close`: `/proc` files are produced by
/// `seq_file`, which fills the user buffer as far as the file goes, so a short read is the end.
pub(crate) fn read_proc_file(path: &str, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.len() < 1024 {
        buf.resize(4096, 0);
    }
    let mut f = File::open(path)?;
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            return Ok(len);
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
    }
}

/// `/proc/<pid>/<file>` into `path` (reused).
pub(crate) fn pid_path(path: &mut String, pid: u32, file: &str) {
    path.clear();
    let _ = write!(path, "/proc/{pid}/{file}");
}

/// The PID of a `/proc` directory entry, `None` for the non-process entries.
pub(crate) fn entry_pid(entry: &std::fs::DirEntry) -> Option<u32> {
    let name = entry.file_name();
    let name = name.to_str()?;
    if !name.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    name.parse().ok()
}

struct Prev {
    at: Instant,
    cpu: Option<CpuTimes>,
}

struct CachedName {
    comm: Box<str>,
    name: Box<str>,
    generation: u64,
}

pub(crate) struct ProcCollector {
    opts: CollectorOptions,
    clk_tck: f64,
    page_size: u64,
    prev: Option<Prev>,
    /// pid → (starttime, utime+stime) at the previous sweep.
    prev_ticks: HashMap<u32, (u64, u64)>,
    next_ticks: HashMap<u32, (u64, u64)>,
    /// (pid, starttime) → resolved name, for comms of exactly 15 bytes only.
    names: HashMap<(u32, u64), CachedName>,
    generation: u64,
    buf: Vec<u8>,
    aux: Vec<u8>,
    path: String,
}

impl ProcCollector {
    pub(crate) fn new(opts: CollectorOptions) -> Result<Self, CollectError> {
        // Fail early, with a clear message, where there is no /proc.
        std::fs::metadata("/proc/stat")
            .map_err(|source| CollectError::Io { path: "/proc/stat".into(), source })?;
        Ok(ProcCollector {
            opts,
            clk_tck: sys::clk_tck() as f64,
            page_size: sys::page_size(),
            prev: None,
            prev_ticks: HashMap::new(),
            next_ticks: HashMap::new(),
            names: HashMap::new(),
            generation: 0,
            buf: vec![0; 4096],
            aux: vec![0; 4096],
            path: String::with_capacity(64),
        })
    }

    fn read_host(&mut self, file: &str) -> Result<&str, CollectError> {
        let n = read_proc_file(file, &mut self.buf)
            .map_err(|source| CollectError::Io { path: file.into(), source })?;
        std::str::from_utf8(&self.buf[..n]).map_err(|_| CollectError::Parse { path: file.into() })
    }
}

impl Collector for ProcCollector {
    fn sweep(&mut self) -> Result<Option<Sweep>, CollectError> {
        let at = Instant::now();
        let ts = crate::now_ms();
        let cpu = parse::parse_proc_stat_cpu(self.read_host("/proc/stat")?);
        let mem = parse::parse_meminfo(self.read_host("/proc/meminfo")?)
            .ok_or_else(|| CollectError::Parse { path: "/proc/meminfo".into() })?;
        let ncpu = sys::online_cpus() as f64;
        // Ticks per core over the interval; None on the priming sweep.
        let ticks_per_core = self.prev.as_ref().map(|p| (at - p.at).as_secs_f64() * self.clk_tck);
        let mut grouper = Grouper::new(self.opts.per_pid);
        self.generation += 1;

        let dir = std::fs::read_dir("/proc")
            .map_err(|source| CollectError::Io { path: "/proc".into(), source })?;
        for entry in dir {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry_pid(&entry) else { continue };
            pid_path(&mut self.path, pid, "stat");
            // Gone or denied between the listing and the read: skipped.
            let Ok(n) = read_proc_file(&self.path, &mut self.buf) else { continue };
            let text = String::from_utf8_lossy(&self.buf[..n]);
            let Some(stat) = parse::parse_pid_stat(&text) else { continue };
            if stat.is_dead() || (stat.is_kernel_thread() && !self.opts.include_kernel_threads) {
                continue;
            }
            let ticks = stat.ticks();
            let delta = match self.prev_ticks.get(&pid) {
                Some(&(start, before)) if start == stat.starttime => ticks.saturating_sub(before),
                // New since the previous sweep (or a reused PID): all its ticks are in the interval.
                _ => ticks,
            };
            self.next_ticks.insert(pid, (stat.starttime, ticks));
            let Some(tpc) = ticks_per_core else { continue };
            let name = resolve_cached(
                &mut self.names,
                &mut self.aux,
                &mut self.path,
                &stat,
                self.generation,
            );
            let cores = if tpc > 0.0 { delta as f64 / tpc } else { 0.0 };
            grouper.add(pid, name, cores, stat.rss_pages * self.page_size, ncpu, mem.total);
        }
        std::mem::swap(&mut self.prev_ticks, &mut self.next_ticks);
        self.next_ticks.clear();
        let generation = self.generation;
        self.names.retain(|_, c| c.generation == generation);

        let prev = self.prev.replace(Prev { at, cpu });
        let Some(prev) = prev else { return Ok(None) };
        let host_cpu = match (cpu, prev.cpu) {
            (Some(now), Some(before)) => now.busy_percent_since(&before).unwrap_or(0.0),
            _ => 0.0,
        };
        let host_total = crate::host_total(ts, host_cpu, mem.used_percent(), grouper.cpu_sum());
        let (samples, processes) = grouper.finish(ts, ncpu, mem.total);
        Ok(Some(Sweep {
            ts,
            elapsed_ms: (at - prev.at).as_millis() as u64,
            host_total,
            samples,
            processes,
        }))
    }
}

/// The name of a process: comm, or for a 15-byte comm the longer name of SPEC section 1,
/// resolved once per (pid, starttime, comm) and cached.
fn resolve_cached<'a>(
    names: &'a mut HashMap<(u32, u64), CachedName>,
    aux: &mut Vec<u8>,
    path: &mut String,
    stat: &PidStat<'a>,
    generation: u64,
) -> &'a str {
    if stat.comm.len() != COMM_MAX {
        return stat.comm;
    }
    let key = (stat.pid, stat.starttime);
    let fresh = match names.get(&key) {
        Some(c) => *c.comm != *stat.comm,
        None => true,
    };
    if fresh {
        let name = lookup_long_name(aux, path, stat.pid, stat.comm);
        names.insert(key, CachedName { comm: stat.comm.into(), name: name.into(), generation });
    }
    let cached = names.get_mut(&key).expect("inserted above");
    cached.generation = generation;
    &cached.name
}

/// Reads `/proc/PID/cmdline`, then `/proc/PID/exe`, for a name that continues a truncated comm.
fn lookup_long_name(aux: &mut Vec<u8>, path: &mut String, pid: u32, comm: &str) -> String {
    pid_path(path, pid, "cmdline");
    let argv0 = match read_proc_file(path, aux) {
        Ok(n) => parse::argv0_basename(&aux[..n]).map(str::to_owned),
        Err(_) => None,
    };
    if let Some(a) = argv0.as_deref() {
        let name = parse::resolve_name(comm, &[Some(a)]);
        if name.len() > comm.len() {
            return name.to_owned();
        }
    }
    pid_path(path, pid, "exe");
    let exe = std::fs::read_link(&*path).ok();
    let exe_base = exe
        .as_deref()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .map(|s| s.strip_suffix(" (deleted)").unwrap_or(s));
    parse::resolve_name(comm, &[exe_base]).to_owned()
}
