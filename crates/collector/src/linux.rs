//! The `/proc` collector: one `/proc/PID/stat` read per process and sweep.

use crate::extras::{Ctx, ExtraState, ExtrasReader};
use crate::parse::{self, CpuTimes, PidStat, COMM_MAX};
use crate::{sys, CollectError, Collector, CollectorOptions, ExtraSet, Grouper, Sweep};
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

/// `<root>/<pid>/<file>` into `path` (reused).
pub(crate) fn pid_path(path: &mut String, root: &str, pid: u32, file: &str) {
    path.clear();
    let _ = write!(path, "{root}/{pid}/{file}");
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
    /// The extra metrics' files and previous counters (empty unless some are enabled).
    extras: ExtraState,
}

/// Descriptors kept back for everything else the agent opens (sockets, spool files).
const FD_RESERVE: u64 = 256;
/// At most this many `/proc/PID/stat` files are kept open; more processes are read with
/// open/read/close.
const MAX_KEPT_OPEN: u64 = 1 << 16;

pub(crate) struct ProcCollector {
    /// Where procfs is mounted: `/proc`, or e.g. `/host/proc` in a container.
    root: String,
    stat_path: String,
    meminfo_path: String,
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
    extras: ExtrasReader,
    /// The sweep's PIDs (reused).
    pids: Vec<u32>,
    /// A chunk's PIDs to query in one batch (reused).
    want: Vec<u32>,
}

/// PIDs per chunk of a sweep (see `sweep`): one taskstats batch at most.
const PREFETCH_CHUNK: usize = sys::MAX_BATCH;

impl ProcCollector {
    pub(crate) fn new(root: &str, opts: CollectorOptions) -> Result<Self, CollectError> {
        let root = root.trim_end_matches('/').to_owned();
        let stat_path = format!("{root}/stat");
        // Fail early, with a clear message, where there is no procfs.
        std::fs::metadata(&stat_path)
            .map_err(|err| CollectError::Io { path: stat_path.clone(), err })?;
        let limit = sys::raise_open_files_limit(MAX_KEPT_OPEN + FD_RESERVE);
        Ok(ProcCollector {
            meminfo_path: format!("{root}/meminfo"),
            stat_path,
            root,
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
            pids: Vec::new(),
            want: Vec::new(),
            extras: match opts.no_taskstats {
                false => ExtrasReader::new(opts.extras),
                true => ExtrasReader::new(opts.extras).files_only(),
            },
        })
    }

    /// Reads `<root>/stat` (`meminfo == false`) or `<root>/meminfo` into the buffer.
    fn read_host(&mut self, meminfo: bool) -> Result<&str, CollectError> {
        let file = if meminfo { &self.meminfo_path } else { &self.stat_path };
        let n = read_proc_file(file, &mut self.buf)
            .map_err(|err| CollectError::Io { path: file.clone(), err })?;
        std::str::from_utf8(&self.buf[..n]).map_err(|_| CollectError::Parse { path: file.clone() })
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
        let cpu = parse::parse_proc_stat_cpu(self.read_host(false)?);
        let mem = parse::parse_meminfo(self.read_host(true)?)
            .ok_or_else(|| CollectError::Parse { path: self.meminfo_path.clone() })?;
        let ncpu = sys::online_cpus() as f64;
        // Ticks per core over the interval; None on the priming sweep.
        let ticks_per_core = self.prev.as_ref().map(|p| (at - p.at).as_secs_f64() * self.clk_tck);
        let mut grouper = Grouper::new(self.opts.per_pid);
        self.generation += 1;
        let generation = self.generation;
        self.extras.begin();
        let secs = ticks_per_core.map(|t| t / self.clk_tck);

        let dir = std::fs::read_dir(&self.root)
            .map_err(|err| CollectError::Io { path: self.root.clone(), err })?;
        // Listed first, then read in chunks: the extras may query a chunk's busy processes
        // in one batch (taskstats) before reading them one by one.
        let mut pids = std::mem::take(&mut self.pids);
        pids.clear();
        pids.extend(dir.filter_map(|e| e.ok().as_ref().and_then(entry_pid)));
        for (i, &pid) in pids.iter().enumerate() {
            if i % PREFETCH_CHUNK == 0 && self.extras.prefetching() {
                let chunk = &pids[i..(i + PREFETCH_CHUNK).min(pids.len())];
                self.want.clear();
                self.want.extend(chunk.iter().copied().filter(|p| {
                    self.tracked.get(p).is_some_and(|t| ExtrasReader::wants_prefetch(&t.extras))
                }));
                self.extras.prefetch(&self.want);
            }
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
                    pid_path(&mut self.path, &self.root, pid, "stat");
                    // Gone or denied between the listing and the read: skipped.
                    let Ok(f) = File::open(&self.path) else { continue };
                    let Ok(len) = pread_all(&f, &mut self.buf) else { continue };
                    let t = self.tracked.entry(pid).or_insert(Tracked {
                        file: None,
                        starttime: u64::MAX,
                        ticks: 0,
                        generation,
                        long_name: None,
                        extras: ExtraState::default(),
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
            let is_new = t.starttime != stat.starttime;
            let delta = if !is_new {
                ticks.saturating_sub(t.ticks)
            } else {
                // Its extras' files and counters belonged to the previous holder of the PID.
                self.kept_open -= t.extras.open_files();
                t.extras = ExtraState::default();
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
            let extras = (!self.extras.set.is_empty()).then(|| {
                let ctx = Ctx {
                    root: &self.root,
                    pid,
                    generation,
                    secs,
                    is_new,
                    threads: stat.num_threads,
                    stat_file: t.file.as_ref(),
                    may_keep: self.kept_open + self.extras.opened < self.max_kept_open,
                };
                let before = t.extras.open_files();
                let x = self.extras.read(&mut t.extras, &ctx);
                // Files it closed (their process is gone) no longer count.
                self.kept_open -= before.saturating_sub(t.extras.open_files());
                x
            });
            let Some(tpc) = ticks_per_core else { continue };
            let name =
                resolve_cached(&mut t.long_name, &mut self.aux, &mut self.path, &self.root, &stat);
            let cores = if tpc > 0.0 { delta as f64 / tpc } else { 0.0 };
            let rss = stat.rss_pages * self.page_size;
            grouper.add(pid, name, cores, rss, ncpu, mem.total, extras);
        }
        self.pids = pids;
        self.kept_open += self.extras.opened;
        let mut closed = 0;
        self.tracked.retain(|_, t| {
            let keep = t.generation == generation;
            if !keep {
                closed += t.file.is_some() as usize + t.extras.open_files();
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
            io_unreadable: self.extras.io_unreadable,
            taskstats: self.extras.source(),
        }))
    }

    fn set_extras(&mut self, extras: ExtraSet) {
        if extras != self.extras.set {
            self.extras.set = extras;
            // Close the files of metrics no longer collected (and start their rates afresh).
            for t in self.tracked.values_mut() {
                self.kept_open -= t.extras.open_files();
                t.extras = ExtraState::default();
            }
        }
    }
}

/// The name of a process: comm, or for a 15-byte comm the longer name of docs/contract.md §1,
/// resolved once per process (and again only if its comm changes, after an exec).
fn resolve_cached<'a>(
    cache: &'a mut Option<(Box<str>, Box<str>)>,
    aux: &mut Vec<u8>,
    path: &mut String,
    root: &str,
    stat: &PidStat<'a>,
) -> &'a str {
    if stat.comm.len() != COMM_MAX {
        return stat.comm;
    }
    if cache.as_ref().is_none_or(|(comm, _)| **comm != *stat.comm) {
        let name = lookup_long_name(aux, path, root, stat.pid, stat.comm);
        *cache = Some((stat.comm.into(), name.into()));
    }
    cache.as_ref().map(|(_, name)| &**name).unwrap_or(stat.comm)
}

/// Reads `/proc/PID/cmdline`, then `/proc/PID/exe`, for a name that continues a truncated comm.
fn lookup_long_name(
    aux: &mut Vec<u8>,
    path: &mut String,
    root: &str,
    pid: u32,
    comm: &str,
) -> String {
    pid_path(path, root, pid, "cmdline");
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
    pid_path(path, root, pid, "exe");
    let exe = std::fs::read_link(&*path).ok();
    let exe_base = exe
        .as_deref()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .map(|s| s.strip_suffix(" (deleted)").unwrap_or(s));
    parse::resolve_name(comm, &[exe_base]).to_owned()
}

#[cfg(test)]
mod tests {
    //! The collector over a fixture procfs in a temp dir: identity, grouping, exclusions and
    //! names, with files rewritten between two sweeps.
    use super::*;
    use crate::Collector;
    use std::path::Path;
    use std::time::Duration;

    #[allow(clippy::too_many_arguments)]
    fn stat_line(
        pid: u32,
        comm: &str,
        state: char,
        flags: u64,
        utime: u64,
        stime: u64,
        start: u64,
        rss: u64,
    ) -> String {
        format!(
            "{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 \
             {start} 1000000 {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        )
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const USER: u64 = 0x0040_0100;
    const KTHREAD: u64 = 0x0020_8040;

    #[test]
    fn fixture_procfs_two_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let long = "procwatch-long-"; // 15 bytes: truncated by the kernel
        write(root, "meminfo", "MemTotal: 1000000 kB\nMemFree: 1 kB\nMemAvailable: 250000 kB\n");
        write(root, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 1 1 1\n");
        write(root, "self/stat", "not a process");
        write(root, "10/stat", &stat_line(10, "app", 'S', USER, 100, 10, 500, 256));
        write(root, "11/stat", &stat_line(11, "app", 'R', USER, 7, 0, 510, 100));
        write(root, "12/stat", &stat_line(12, "kworker/0:1", 'I', KTHREAD, 0, 50, 3, 0));
        write(root, "13/stat", &stat_line(13, "z", 'Z', USER, 5, 5, 520, 0));
        write(root, "14/stat", &stat_line(14, "old", 'S', USER, 1000, 0, 600, 10));
        write(root, "15/stat", &stat_line(15, long, 'S', USER, 1, 1, 700, 20));
        write(root, "15/cmdline", "/usr/bin/procwatch-long-name-x\0--flag\0");
        write(root, "17/stat", &stat_line(17, "gone", 'S', USER, 1, 1, 800, 20));
        std::fs::create_dir_all(root.join("18")).unwrap(); // listed, but no stat: skipped

        let root_s = root.to_str().unwrap();
        let opts =
            CollectorOptions { include_kernel_threads: false, per_pid: true, ..Default::default() };
        let mut c = ProcCollector::new(root_s, opts).unwrap();
        assert!(c.sweep().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(300));

        write(root, "stat", "cpu  200 0 200 1000 0 0 0 0 0 0\n");
        write(root, "10/stat", &stat_line(10, "app", 'S', USER, 104, 12, 500, 256));
        write(root, "11/stat", &stat_line(11, "app", 'R', USER, 10, 0, 510, 100));
        write(root, "12/stat", &stat_line(12, "kworker/0:1", 'I', KTHREAD, 0, 90, 3, 0));
        write(root, "13/stat", &stat_line(13, "z", 'Z', USER, 5, 5, 520, 0));
        // PID 14 reused by another process (new start time): all its 4 ticks count.
        write(root, "14/stat", &stat_line(14, "new", 'S', USER, 3, 1, 900, 10));
        write(root, "15/stat", &stat_line(15, long, 'S', USER, 2, 2, 700, 20));
        // PID 16 started after the first sweep: all its 5 ticks count.
        write(root, "16/stat", &stat_line(16, "fresh", 'R', USER, 5, 0, 950, 30));
        std::fs::remove_dir_all(root.join("17")).unwrap();

        let sweep = c.sweep().unwrap().expect("measures");
        let tpc = sweep.elapsed_ms as f64 / 1000.0 * sys::clk_tck() as f64;
        let ncpu = sys::online_cpus() as f64;
        let page = sys::page_size();
        let near = |a: f64, b: f64| (a - b).abs() <= 0.01 * b.abs() + 1e-12;
        let by = |name: &str| sweep.samples.iter().find(|s| s.process == name).cloned();

        let app = by("app").unwrap();
        assert_eq!(app.count, 2);
        assert!(near(app.cores, 9.0 / tpc), "{} vs {}", app.cores, 9.0 / tpc);
        // At the precision agents send: thousandths of a percent, hundred-thousandths of a
        // core (procwatch_model::precision), so within half a unit of the exact figure.
        use procwatch_model::precision::{round_cores, round_percent};
        assert_eq!((round_percent(app.cpu), round_cores(app.cores)), (app.cpu, app.cores));
        assert!((app.cpu - 100.0 * app.cores / ncpu).abs() <= 5e-4 + 100.0 * 5e-6 / ncpu);
        assert_eq!(app.rss, 356 * page);
        let mem = 100.0 * (356 * page) as f64 / 1_024_000_000.0;
        assert_eq!(app.mem, round_percent(mem));
        assert!(near(by("new").unwrap().cores, 4.0 / tpc));
        assert!(near(by("fresh").unwrap().cores, 5.0 / tpc));
        assert!(near(by("procwatch-long-name-x").unwrap().cores, 2.0 / tpc));
        for absent in ["old", "gone", "z", "kworker/0:1", long] {
            assert!(by(absent).is_none(), "{absent} should not be a group");
        }
        assert_eq!(sweep.samples.len(), 4);
        assert!(sweep.samples.windows(2).all(|w| w[0].cores >= w[1].cores));
        assert_eq!(sweep.processes.len(), 5);

        let h = &sweep.host_total;
        assert_eq!(h.cpu, 50.0);
        assert_eq!(h.mem, 75.0);
        let sum: f64 = sweep.samples.iter().map(|s| s.cpu).sum();
        // The samples' cpu is rounded to thousandths; the unattributed share is not.
        let slack = 5e-4 * sweep.samples.len() as f64 + 1e-9;
        assert!((h.unattributed_cpu.unwrap() - (50.0 - sum).max(0.0)).abs() <= slack);

        // With kernel threads: kworker's 40 ticks appear.
        let opts =
            CollectorOptions { include_kernel_threads: true, per_pid: false, ..Default::default() };
        let mut k = ProcCollector::new(root_s, opts).unwrap();
        assert!(k.sweep().unwrap().is_none());
        write(root, "12/stat", &stat_line(12, "kworker/0:1", 'I', KTHREAD, 0, 95, 3, 0));
        let sweep = k.sweep().unwrap().unwrap();
        let kw = sweep.samples.iter().find(|s| s.process == "kworker/0:1").expect("kthread");
        assert_eq!((kw.count, kw.rss), (1, 0));
        assert!(kw.cores > 0.0);
        assert!(sweep.processes.is_empty());
    }

    #[test]
    fn a_missing_procfs_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ProcCollector::new(dir.path().to_str().unwrap(), CollectorOptions::default())
            .err()
            .expect("no stat file");
        assert!(err.to_string().contains("/stat"), "{err}");
    }
}
