//! The opt-in extra metrics of the `/proc` collector (issue 19): what is read per process, kept
//! between sweeps, and summed per group. Each file is read only when its metric is enabled:
//!
//! | metric | read per process and sweep | cached |
//! | --- | --- | --- |
//! | `threads` | nothing: field 20 of the `stat` line already read | – |
//! | `io` | one taskstats query (shared with `ctxsw`) for a single-threaded process when the agent may query taskstats (root); otherwise `/proc/PID/io`, kept open, `pread` | – |
//! | `ctxsw` | one taskstats query when the agent may (root); otherwise `/proc/PID/status`, kept open, `pread` | – |
//! | `fds` | `fstat` of `/proc/PID/fd`, kept open (its size is the count of open descriptors since Linux 6.2; older kernels: the directory is listed) | soft limit from `/proc/PID/limits`, per process, refreshed every [`REFRESH_SWEEPS`] sweeps |
//! | `owner` | `fstat` of the kept-open `stat` file (its uid is the process's) | uid → name from `/etc/passwd`, re-read at most every [`REFRESH_SWEEPS`] sweeps when a uid is unknown |
//! | `unit` | nothing | `/proc/PID/cgroup` per process, refreshed every [`REFRESH_SWEEPS`] sweeps |
//!
//! The quiet-process shortcut: with `io`, `ctxsw` or `fds` on, `/proc/PID/schedstat` (three
//! numbers, kept open) is read first. A single-threaded process that was not switched in since
//! the previous sweep (its third field, the switch-in count, is unchanged) cannot have done
//! I/O, switched, or opened or closed a descriptor: its rates are 0 and its fds count is
//! carried over, without reading `io`, `status` or `fd`. (Exception: a descriptor table shared
//! with another process by `clone(CLONE_FILES)` without threads; and a task switched out just
//! after the previous reading counts that one switch in the next interval it runs.) Every
//! process is read in full at least every [`FULL_READ_SWEEPS`] sweeps regardless (each PID in
//! its own phase, so these reads spread evenly over the sweeps). A multi-threaded process is
//! not probed, and a busy one only on two sweeps in nine ([`BUSY_PROBES`]). Most
//! processes of a host sleep through most sweeps, so this is where the cost goes down.
//!
//! **Taskstats** (`taskstats.rs`): where the agent may query the kernel's per-task accounting
//! (`CAP_NET_ADMIN`, the real `/proc` of its own namespaces), one query per process replaces
//! the `status` and `io` reads, at about a third of their cost. Its numbers are the files'
//! numbers, with one difference: the main thread's switches (exactly what `status` prints)
//! and, for a single-threaded process, its own storage bytes. `io` also counts other and
//! exited threads (so a multi-threaded process's `io` is still read from the file) and the
//! I/O of the children the process has reaped, which taskstats leaves in the child's own row
//! (like CPU). A process whose `io` source changes between two sweeps (it started or ended
//! threads) gives no `io` rate for that sweep rather than a difference of two different
//! counters.
//!
//! Rates (`io`, `ctxsw`) are the difference between two sweeps over the measured interval; a
//! process new since the previous sweep counts all its counters (as for cpu); a process seen
//! before the metric was enabled gives no rate until its second reading.
//! `/proc/PID/io` needs ptrace-read access (root, or the same user): a process whose `io` is
//! unreadable has no io figure and is counted in [`crate::Sweep::io_unreadable`]; it is tried
//! again only every [`REFRESH_SWEEPS`] sweeps.

use crate::group_extras::ProcExtras;
use crate::linux::{pid_path, read_proc_file};
use crate::parse_extras as px;
use crate::taskstats::{Counters, Taskstats};
use procwatch_model::extras::{ExtraMetric, ExtraSet, Extras};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

/// Sweeps between two reads of the cached files (`cgroup`, `limits`, `/etc/passwd`), and
/// between two attempts at an unreadable `io`.
pub(crate) const REFRESH_SWEEPS: u64 = 64;
/// A process is read in full (no quiet-process shortcut) at least this often, in sweeps.
pub(crate) const FULL_READ_SWEEPS: u64 = 16;

/// A process found switched in by this many probes in a row is not probed for the next
/// [`BUSY_SKIP`] sweeps (it is read in full, as the probe would most likely have decided); the
/// last sweep of that window probes again only to record the count the next one compares
/// with. On a host whose processes are all busy this saves most `schedstat` reads; a process
/// that fell quiet meanwhile pays at most [`BUSY_SKIP`] full reads, which are exact anyway.
pub(crate) const BUSY_PROBES: u8 = 2;
/// See [`BUSY_PROBES`].
pub(crate) const BUSY_SKIP: u8 = 8;

/// What the collector keeps per process for its extras.
#[derive(Debug, Default)]
pub(crate) struct ExtraState {
    io: Option<File>,
    status: Option<File>,
    fd_dir: Option<File>,
    schedstat: Option<File>,
    /// Switch-ins at the last full read.
    pcount: Option<u64>,
    /// Consecutive sweeps whose probe found the process switched in (saturating).
    busy: u8,
    /// Sweeps left without a `schedstat` probe (a busy process: see [`BUSY_SKIP`]).
    skip_probes: u8,
    prev_fds: Option<(u64, Option<f64>)>,
    prev_io: Option<(u64, u64)>,
    /// `prev_io` came from taskstats (not from `/proc/PID/io`).
    prev_io_ts: bool,
    /// The previous sweep queried taskstats for this process (it was read in full): it is
    /// likely to be again, so the next sweep queries it in a batch ([`ExtrasReader::prefetch`]).
    queried: bool,
    prev_ctx: Option<(u64, u64)>,
    /// Soft `RLIMIT_NOFILE` (`None` inside: unlimited) and the generation it was read at.
    limit: Option<(Option<u64>, u64)>,
    unit: Option<(Option<Arc<str>>, u64)>,
    io_denied_at: Option<u64>,
}

impl ExtraState {
    /// Descriptors this state keeps open.
    pub(crate) fn open_files(&self) -> usize {
        self.io.is_some() as usize
            + self.status.is_some() as usize
            + self.fd_dir.is_some() as usize
            + self.schedstat.is_some() as usize
    }
}

/// The per-sweep context of the extras reader.
pub(crate) struct Ctx<'a> {
    pub(crate) root: &'a str,
    pub(crate) pid: u32,
    pub(crate) generation: u64,
    /// Seconds since the previous sweep; `None` on the priming sweep.
    pub(crate) secs: Option<f64>,
    /// The process was not seen by the previous sweep: its counters all fall in the interval.
    pub(crate) is_new: bool,
    pub(crate) threads: u64,
    /// The kept-open `stat` file, for the owner's uid.
    pub(crate) stat_file: Option<&'a File>,
    /// Whether another descriptor may be kept open.
    pub(crate) may_keep: bool,
}

/// Reads the extras of every process of a sweep: the enabled set, the user table, buffers.
#[derive(Debug, Default)]
pub(crate) struct ExtrasReader {
    pub(crate) set: ExtraSet,
    users: HashMap<u32, Arc<str>>,
    users_read_at: Option<u64>,
    buf: Vec<u8>,
    path: String,
    /// Processes whose `io` could not be read in the current sweep.
    pub(crate) io_unreadable: u32,
    /// Descriptors opened by the current sweep (kept open).
    pub(crate) opened: usize,
    taskstats: TaskstatsSlot,
    /// The counters [`ExtrasReader::prefetch`] fetched for the processes about to be read.
    prefetched: Vec<(u32, Counters)>,
}

/// Whether taskstats is used: tried once, on the first process that needs it.
#[derive(Debug, Default)]
enum TaskstatsSlot {
    #[default]
    Untried,
    /// Not permitted or not available here, or turned off: the files are read.
    Absent,
    Open(Taskstats),
}

/// Reads a kept-open file from offset 0, or opens it (keeping it when allowed).
fn read_kept(
    slot: &mut Option<File>,
    path: &str,
    buf: &mut Vec<u8>,
    keep: bool,
    opened: &mut usize,
) -> std::io::Result<usize> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    if let Some(f) = slot {
        return pread_whole(f, buf);
    }
    let f = File::open(path)?;
    let n = pread_whole(&f, buf)?;
    if keep {
        *slot = Some(f);
        *opened += 1;
    }
    Ok(n)
}

fn pread_whole(f: &File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut len = 0;
    loop {
        let n = f.read_at(&mut buf[len..], len as u64)?;
        len += n;
        // A /proc file bigger than 64 KiB is not one of ours: cut (hostile or broken).
        if n == 0 || len < buf.len() || buf.len() >= 1 << 16 {
            return Ok(len);
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
    }
}

fn rate(now: u64, prev: Option<u64>, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| now.saturating_sub(prev.unwrap_or(0)) as f64 / secs)
}

/// The rates of a pair of counters since the previous reading (`None` on the first reading
/// of an old process); `now` replaces `prev`.
fn rates(prev: &mut Option<(u64, u64)>, (a, b): (u64, u64), c: &Ctx) -> (Option<f64>, Option<f64>) {
    let before = prev.replace((a, b));
    match (c.secs, before.is_some() || c.is_new) {
        (Some(secs), true) => {
            (rate(a, before.map(|p| p.0), secs), rate(b, before.map(|p| p.1), secs))
        }
        _ => (None, None),
    }
}

impl ExtrasReader {
    pub(crate) fn new(set: ExtraSet) -> Self {
        ExtrasReader { set, ..Default::default() }
    }

    /// Never uses taskstats: `io` and `ctxsw` come from the files (for comparisons).
    pub(crate) fn files_only(mut self) -> Self {
        self.taskstats = TaskstatsSlot::Absent;
        self
    }

    /// Whether `io` or `ctxsw`, the metrics taskstats can answer, is on.
    fn wants_counters(&self) -> bool {
        self.set.has(ExtraMetric::Io) || self.set.has(ExtraMetric::Ctxsw)
    }

    /// Where `io` and `ctxsw` come from (see [`crate::Sweep::taskstats`]); `None` when
    /// neither is on, or before the first process needed them.
    pub(crate) fn source(&self) -> Option<bool> {
        if !self.wants_counters() {
            return None;
        }
        match self.taskstats {
            TaskstatsSlot::Untried => None,
            TaskstatsSlot::Absent => Some(false),
            TaskstatsSlot::Open(_) => Some(true),
        }
    }

    /// Whether [`ExtrasReader::prefetch`] would query anything: taskstats answers and `io`
    /// or `ctxsw` is on.
    pub(crate) fn prefetching(&self) -> bool {
        matches!(self.taskstats, TaskstatsSlot::Open(_)) && self.wants_counters()
    }

    /// Whether the next sweep should query this process in a batch: the previous one read it
    /// in full from taskstats (a busy or multi-threaded process; a quiet one is not queried).
    pub(crate) fn wants_prefetch(st: &ExtraState) -> bool {
        st.queried
    }

    /// Queries taskstats for `pids` (at most 32) in one batch, replacing the previous batch's
    /// counters: the next [`ExtrasReader::read`] of each of them takes its counters from here
    /// instead of a query of its own. Two system calls for the batch instead of two per
    /// process; a process found quiet after all has cost one wasted answer. A failed batch
    /// (refused answers are left out of it, so a lost permission shows in the single query
    /// that follows) leaves its processes to their own queries.
    pub(crate) fn prefetch(&mut self, pids: &[u32]) {
        self.prefetched.clear();
        if let TaskstatsSlot::Open(t) = &mut self.taskstats {
            let _ = t.query_many(pids, &mut self.prefetched);
        }
    }

    /// The counters of process `c.pid` from taskstats, when this reader may use it.
    fn task_counters(&mut self, c: &Ctx) -> Option<Counters> {
        if let Some(&(_, k)) = self.prefetched.iter().find(|(p, _)| *p == c.pid) {
            return Some(k);
        }
        if let TaskstatsSlot::Untried = self.taskstats {
            self.taskstats = match (c.root == "/proc").then(Taskstats::open).flatten() {
                Some(t) => TaskstatsSlot::Open(t),
                None => TaskstatsSlot::Absent,
            };
        }
        let TaskstatsSlot::Open(t) = &mut self.taskstats else { return None };
        match t.query(c.pid) {
            Ok(k) => Some(k),
            // Permission dropped since: the files from now on.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.taskstats = TaskstatsSlot::Absent;
                None
            }
            // Gone (ESRCH) or a transient failure: the files, for this process and sweep.
            Err(_) => None,
        }
    }

    /// Starts a sweep.
    pub(crate) fn begin(&mut self) {
        self.io_unreadable = 0;
        self.opened = 0;
        self.prefetched.clear();
    }

    /// Reads one process's enabled extras.
    pub(crate) fn read(&mut self, st: &mut ExtraState, c: &Ctx) -> ProcExtras {
        let set = self.set;
        let mut x = Extras::default();
        let stale = |at: u64| c.generation >= at + REFRESH_SWEEPS;
        if set.has(ExtraMetric::Threads) {
            x.threads = Some(c.threads);
        }
        if (set.has(ExtraMetric::Io) || set.has(ExtraMetric::Ctxsw) || set.has(ExtraMetric::Fds))
            && self.quiet(st, c, &mut x)
        {
            st.queried = false;
            return self.read_cached(st, c, x);
        }
        let counters = self.wants_counters().then(|| self.task_counters(c)).flatten();
        st.queried = counters.is_some();
        let io_ts = counters.filter(|_| c.threads == 1);
        if set.has(ExtraMetric::Io) && st.prev_io_ts != io_ts.is_some() {
            // Another source: its counters are not the previous reading's.
            (st.prev_io, st.prev_io_ts) = (None, io_ts.is_some());
        }
        if let (true, Some(k)) = (set.has(ExtraMetric::Io), io_ts) {
            st.io_denied_at = None;
            (x.read_bps, x.write_bps) = rates(&mut st.prev_io, (k.read_bytes, k.write_bytes), c);
        } else if set.has(ExtraMetric::Io) && st.io_denied_at.is_none_or(stale) {
            let files = (&mut st.io, &mut st.prev_io);
            match self.read_rates(files, "io", px::parse_io, c) {
                Ok(r) => {
                    st.io_denied_at = None;
                    (x.read_bps, x.write_bps) = r;
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    st.io_denied_at = Some(c.generation);
                    st.prev_io = None;
                    self.io_unreadable += 1;
                }
                Err(_) => st.io = None,
            }
        } else if set.has(ExtraMetric::Io) {
            self.io_unreadable += 1;
        }
        if let (true, Some(k)) = (set.has(ExtraMetric::Ctxsw), counters) {
            // The same numbers as `status` prints: no change of source to track.
            (x.ctxsw_vol, x.ctxsw_invol) = rates(&mut st.prev_ctx, (k.nvcsw, k.nivcsw), c);
        } else if set.has(ExtraMetric::Ctxsw) {
            let files = (&mut st.status, &mut st.prev_ctx);
            match self.read_rates(files, "status", px::parse_ctxsw, c) {
                Ok(r) => (x.ctxsw_vol, x.ctxsw_invol) = r,
                Err(_) => st.status = None,
            }
        }
        if set.has(ExtraMetric::Fds) {
            self.read_fds(st, c, &mut x);
        }
        self.read_cached(st, c, x)
    }

    /// Reads a pair of counters from a kept-open `/proc/PID/<file>` and returns their rates
    /// since the previous reading (`None` on the first reading of an old process, or when the
    /// text does not parse); the new counters replace `prev`.
    fn read_rates(
        &mut self,
        (slot, prev): (&mut Option<File>, &mut Option<(u64, u64)>),
        file: &str,
        parse: fn(&str) -> Option<(u64, u64)>,
        c: &Ctx,
    ) -> std::io::Result<(Option<f64>, Option<f64>)> {
        pid_path(&mut self.path, c.root, c.pid, file);
        let n = read_kept(slot, &self.path, &mut self.buf, c.may_keep, &mut self.opened)?;
        let Some(now) = std::str::from_utf8(&self.buf[..n]).ok().and_then(parse) else {
            return Ok((None, None));
        };
        Ok(rates(prev, now, c))
    }

    /// The quiet-process shortcut (module documentation): when it applies, fills the rates
    /// with 0 and fds with the previous count, and returns `true`.
    fn quiet(&mut self, st: &mut ExtraState, c: &Ctx, x: &mut Extras) -> bool {
        // The shortcut never applies to a multi-threaded process: no probe.
        if c.threads != 1 {
            (st.pcount, st.busy, st.skip_probes) = (None, 0, 0);
            return false;
        }
        if st.skip_probes > 1 {
            st.skip_probes -= 1;
            return false;
        }
        // The last sweep of a skip window only records the count (`pcount` is stale).
        let recording = st.skip_probes == 1;
        st.skip_probes = 0;
        pid_path(&mut self.path, c.root, c.pid, "schedstat");
        let keep = c.may_keep;
        let pcount =
            match read_kept(&mut st.schedstat, &self.path, &mut self.buf, keep, &mut self.opened) {
                Ok(n) => {
                    std::str::from_utf8(&self.buf[..n]).ok().and_then(px::parse_schedstat_pcount)
                }
                Err(_) => {
                    st.schedstat = None;
                    None
                }
            };
        let Some(pcount) = pcount else {
            st.pcount = None;
            return false;
        };
        if recording {
            st.pcount = Some(pcount);
            return false;
        }
        if st.pcount.is_some_and(|p| p != pcount) {
            st.busy = st.busy.saturating_add(1);
            if st.busy >= BUSY_PROBES {
                // One more busy probe after the window starts the next one.
                st.busy = BUSY_PROBES - 1;
                st.skip_probes = BUSY_SKIP;
            }
        } else {
            st.busy = 0;
        }
        let set = self.set;
        let quiet = c.threads == 1
            && c.secs.is_some()
            && st.pcount == Some(pcount)
            // Each process has its own phase, so the full reads spread evenly over sweeps.
            && !(c.generation + u64::from(c.pid)).is_multiple_of(FULL_READ_SWEEPS)
            && (!set.has(ExtraMetric::Io) || st.prev_io.is_some() || st.io_denied_at.is_some())
            && (!set.has(ExtraMetric::Ctxsw) || st.prev_ctx.is_some())
            && (!set.has(ExtraMetric::Fds) || st.prev_fds.is_some());
        if !quiet {
            st.pcount = Some(pcount);
            return false;
        }
        if set.has(ExtraMetric::Io) {
            if st.io_denied_at.is_some() {
                self.io_unreadable += 1;
            } else {
                (x.read_bps, x.write_bps) = (Some(0.0), Some(0.0));
            }
        }
        if set.has(ExtraMetric::Ctxsw) {
            (x.ctxsw_vol, x.ctxsw_invol) = (Some(0.0), Some(0.0));
        }
        if let (true, Some((fds, pct))) = (set.has(ExtraMetric::Fds), st.prev_fds) {
            (x.fds, x.fds_pct) = (Some(fds), pct);
        }
        true
    }

    /// Adds the extras read from caches, owner and unit, to `x`.
    fn read_cached(&mut self, st: &mut ExtraState, c: &Ctx, x: Extras) -> ProcExtras {
        let set = self.set;
        let mut p = ProcExtras { x, owner: None, unit: None };
        let stale = |at: u64| c.generation >= at + REFRESH_SWEEPS;
        if set.has(ExtraMetric::Owner) {
            let uid = match c.stat_file {
                Some(f) => f.metadata().map(|m| m.uid()),
                None => {
                    pid_path(&mut self.path, c.root, c.pid, "");
                    std::fs::metadata(&self.path).map(|m| m.uid())
                }
            };
            if let Ok(uid) = uid {
                p.owner = Some(self.user_name(uid, c.generation));
            }
        }
        if set.has(ExtraMetric::Unit) {
            if st.unit.as_ref().is_none_or(|(_, at)| stale(*at)) {
                pid_path(&mut self.path, c.root, c.pid, "cgroup");
                let unit = read_proc_file(&self.path, &mut self.buf)
                    .ok()
                    .and_then(|n| px::parse_cgroup_unit(&String::from_utf8_lossy(&self.buf[..n])))
                    .map(Arc::from);
                st.unit = Some((unit, c.generation));
            }
            p.unit = st.unit.as_ref().and_then(|(u, _)| u.clone());
        }
        p
    }

    fn read_fds(&mut self, st: &mut ExtraState, c: &Ctx, x: &mut Extras) {
        pid_path(&mut self.path, c.root, c.pid, "fd");
        let size = match &st.fd_dir {
            Some(f) => f.metadata(),
            None => match File::open(&self.path) {
                Ok(f) => {
                    let m = f.metadata();
                    if c.may_keep {
                        st.fd_dir = Some(f);
                        self.opened += 1;
                    }
                    m
                }
                Err(e) => Err(e),
            },
        };
        let count = match size {
            Ok(m) if m.size() > 0 => Some(m.size()),
            // Before Linux 6.2 the size is 0: list the directory.
            Ok(_) => std::fs::read_dir(&self.path).ok().map(|d| d.count() as u64),
            Err(_) => {
                st.fd_dir = None;
                None
            }
        };
        let Some(count) = count else { return };
        x.fds = Some(count);
        if st.limit.is_none_or(|(_, at)| c.generation >= at + REFRESH_SWEEPS) {
            pid_path(&mut self.path, c.root, c.pid, "limits");
            let limit = read_proc_file(&self.path, &mut self.buf).ok().and_then(|n| {
                std::str::from_utf8(&self.buf[..n]).ok().and_then(px::parse_nofile_limit)
            });
            st.limit = Some((limit, c.generation));
        }
        if let Some((Some(limit), _)) = st.limit {
            if limit > 0 {
                x.fds_pct = Some((100.0 * count as f64 / limit as f64).min(100.0));
            }
        }
        st.prev_fds = Some((count, x.fds_pct));
    }

    /// The user name of `uid` (the uid in decimal when `/etc/passwd` has no such user).
    fn user_name(&mut self, uid: u32, generation: u64) -> Arc<str> {
        if let Some(n) = self.users.get(&uid) {
            return n.clone();
        }
        if self.users_read_at.is_none_or(|at| generation >= at + REFRESH_SWEEPS) {
            self.users_read_at = Some(generation);
            if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
                self.users =
                    px::parse_passwd(&text).into_iter().map(|(k, v)| (k, Arc::from(v))).collect();
            }
            if let Some(n) = self.users.get(&uid) {
                return n.clone();
            }
        }
        let n: Arc<str> = Arc::from(uid.to_string());
        if self.users.len() < px::MAX_USERS {
            self.users.insert(uid, n.clone());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `quiet` for sweeps `gens` of PID 1 under `root`, writing `count(gen)` as the
    /// switch-in count before each; returns, per sweep, whether `schedstat` was read (the
    /// count changes every sweep in these tests, so a read changes `pcount`) and `quiet`'s
    /// answer.
    fn sweeps(
        root: &std::path::Path,
        st: &mut ExtraState,
        threads: u64,
        gens: std::ops::Range<u64>,
        count: impl Fn(u64) -> u64,
    ) -> Vec<(bool, bool)> {
        let mut r = ExtrasReader::new(ExtraSet::NONE.with(ExtraMetric::Ctxsw));
        let root = root.to_str().unwrap();
        gens.map(|g| {
            std::fs::write(format!("{root}/1/schedstat"), format!("10 20 {}\n", count(g))).unwrap();
            let c = Ctx {
                root,
                pid: 1,
                generation: g,
                secs: Some(1.0),
                is_new: false,
                threads,
                stat_file: None,
                may_keep: true,
            };
            let before = st.pcount;
            let q = r.quiet(st, &c, &mut Extras::default());
            (st.pcount != before, q)
        })
        .collect()
    }

    #[test]
    fn a_busy_process_is_probed_twice_per_window_and_a_quiet_one_found_after() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("1")).unwrap();
        let mut st = ExtraState { prev_ctx: Some((0, 0)), ..Default::default() };
        // Switched in at every sweep: probed at sweeps 1, 2, 3 (two busy probes in a row),
        // not for 7 sweeps, 11 (recording), 12 (busy again: the next window), and never
        // quiet.
        let got = sweeps(dir.path(), &mut st, 1, 1..21, |g| 100 + g);
        let probed: Vec<u64> = (1..21).zip(&got).filter(|(_, p)| p.0).map(|(g, _)| g).collect();
        assert_eq!(probed, [1, 2, 3, 11, 12, 20]);
        assert!(got.iter().all(|(_, q)| !q));
        // Then it falls quiet: sweep 21 still sees the switch-ins since sweep 20 (a new
        // window), 29 records, and 30 finds it quiet.
        let got = sweeps(dir.path(), &mut st, 1, 21..31, |_| 500);
        assert_eq!(got.iter().filter(|(_, q)| *q).count(), 1);
        assert!(got[9].1, "quiet at sweep 30: {got:?}");
    }

    #[test]
    fn a_multi_threaded_process_is_never_probed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("1")).unwrap();
        let mut st = ExtraState { prev_ctx: Some((0, 0)), ..Default::default() };
        let got = sweeps(dir.path(), &mut st, 3, 1..5, |_| 7);
        assert!(got.iter().all(|&(p, q)| !p && !q), "{got:?}");
        assert!(st.schedstat.is_none());
    }
}
