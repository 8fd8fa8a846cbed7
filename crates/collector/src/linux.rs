//! The `/proc` collector: one `/proc/PID/stat` read per process and sweep.

use crate::parse::{self, CpuTimes, PidStat, COMM_MAX};
use crate::{sys, CollectError, Collector, CollectorOptions, Grouper, Sweep};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
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

/// What the collector keeps about one PID between sweeps.
struct Tracked {
    /// `/proc/PID/stat`, kept open and re-read with `pread` at offset 0: one system call per
    /// process and sweep instead of three. It is bound to the process, not to the number: once
    /// the process is gone it reads `ESRCH`, even if the PID has been reused.
    file: Option<File>,
    starttime: u64,
    ticks: u64,
    /// The sweep that last saw it; entries not seen in a sweep are dropped (and their file closed).
    generation: u64,
    /// For a 15-byte comm: (comm, resolved name), resolved once.
    long_name: Option<(Box<str>, Box<str>)>,
}

/// Descriptors kept back for everything else the agent opens (sockets, spool files).
const FD_RESERVE: u64 = 256;
/// At most this many `/proc/PID/stat` files are kept open; more processes are read with
/// open/read/close.
const MAX_KEPT_OPEN: u64 = 1 << 16;

pub(crate) struct ProcCollector {
    opts: CollectorOptions,
    clk_tck: f64,
    page_size: u64,
    prev: Option<Prev>,
    tracked: HashMap<u32, Tracked>,
    kept_open: usize,
    max_kept_open: usize,
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
        let limit = sys::raise_open_files_limit(MAX_KEPT_OPEN + FD_RESERVE);
        Ok(ProcCollector {
            opts,
            clk_tck: sys::clk_tck() as f64,
            page_size: sys::page_size(),
            prev: None,
            tracked: HashMap::new(),
            kept_open: 0,
            max_kept_open: limit.saturating_sub(FD_RESERVE).min(MAX_KEPT_OPEN) as usize,
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

/// Re-reads a kept-open `/proc` file from offset 0 into `buf`.
fn pread_all(file: &File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], len as u64)?;
        len += n;
        if n == 0 || len < buf.len() {
            return Ok(len);
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
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
        let generation = self.generation;

        let dir = std::fs::read_dir("/proc")
            .map_err(|source| CollectError::Io { path: "/proc".into(), source })?;
        for entry in dir {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry_pid(&entry) else { continue };
            let tracked = self.tracked.get_mut(&pid);
            // Re-read the kept file; if its process is gone (the PID may be reused already),
            // fall through to a fresh open.
            let mut n = None;
            if let Some(t) = tracked {
                if let Some(f) = &t.file {
                    match pread_all(f, &mut self.buf) {
                        Ok(len) => n = Some(len),
                        Err(_) => {
                            t.file = None;
                            self.kept_open -= 1;
                        }
                    }
                }
            }
            let n = match n {
                Some(n) => n,
                None => {
                    pid_path(&mut self.path, pid, "stat");
                    // Gone or denied between the listing and the read: skipped.
                    let Ok(f) = File::open(&self.path) else { continue };
                    let Ok(len) = pread_all(&f, &mut self.buf) else { continue };
                    let t = self.tracked.entry(pid).or_insert(Tracked {
                        file: None,
                        starttime: u64::MAX,
                        ticks: 0,
                        generation,
                        long_name: None,
                    });
                    if t.file.is_none() && self.kept_open < self.max_kept_open {
                        t.file = Some(f);
                        self.kept_open += 1;
                    }
                    len
                }
            };
            // comm may hold any bytes; valid UTF-8 (the rule) is checked on the fast path.
            let text = match std::str::from_utf8(&self.buf[..n]) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => String::from_utf8_lossy(&self.buf[..n]),
            };
            let Some(stat) = parse::parse_pid_stat(&text) else { continue };
            let Some(t) = self.tracked.get_mut(&pid) else { continue };
            t.generation = generation;
            let ticks = stat.ticks();
            let delta = if t.starttime == stat.starttime {
                ticks.saturating_sub(t.ticks)
            } else {
                // New since the previous sweep (or a reused PID): all its ticks are in the
                // interval, and whatever name was cached belonged to another process.
                t.starttime = stat.starttime;
                t.long_name = None;
                ticks
            };
            t.ticks = ticks;
            if stat.is_dead() || (stat.is_kernel_thread() && !self.opts.include_kernel_threads) {
                continue;
            }
            let Some(tpc) = ticks_per_core else { continue };
            let name = resolve_cached(&mut t.long_name, &mut self.aux, &mut self.path, &stat);
            let cores = if tpc > 0.0 { delta as f64 / tpc } else { 0.0 };
            grouper.add(pid, name, cores, stat.rss_pages * self.page_size, ncpu, mem.total);
        }
        let mut closed = 0;
        self.tracked.retain(|_, t| {
            let keep = t.generation == generation;
            if !keep && t.file.is_some() {
                closed += 1;
            }
            keep
        });
        self.kept_open -= closed;

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
/// resolved once per process (and again only if its comm changes, after an exec).
fn resolve_cached<'a>(
    cache: &'a mut Option<(Box<str>, Box<str>)>,
    aux: &mut Vec<u8>,
    path: &mut String,
    stat: &PidStat<'a>,
) -> &'a str {
    if stat.comm.len() != COMM_MAX {
        return stat.comm;
    }
    if cache.as_ref().is_none_or(|(comm, _)| **comm != *stat.comm) {
        let name = lookup_long_name(aux, path, stat.pid, stat.comm);
        *cache = Some((stat.comm.into(), name.into()));
    }
    cache.as_ref().map(|(_, name)| &**name).unwrap_or(stat.comm)
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
