//! Pure parsers over the text of `/proc` files. No I/O here: every function takes the file's
//! content and is tested with fixture strings. Field numbers and units are those of `proc(5)`.

/// `PF_KTHREAD` in the `flags` field of `/proc/PID/stat` (`include/linux/sched.h`).
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of `/proc/PID/stat` the collector needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat<'a> {
    /// (1) pid.
    pub pid: u32,
    /// (2) comm, without the parentheses: at most 15 bytes, may hold spaces and `)`.
    pub comm: &'a str,
    /// (3) state: `R`, `S`, `D`, `Z`, `X`, ...
    pub state: u8,
    /// (9) flags, `PF_*` bits.
    pub flags: u64,
    /// (14) utime, clock ticks.
    pub utime: u64,
    /// (15) stime, clock ticks.
    pub stime: u64,
    /// (20) num_threads.
    pub num_threads: u64,
    /// (22) starttime, clock ticks since boot.
    pub starttime: u64,
    /// (24) rss, pages.
    pub rss_pages: u64,
}

impl PidStat<'_> {
    /// A kernel thread (`PF_KTHREAD`): no user space, no memory of its own.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// A zombie or dead task: exited, waiting to be reaped.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }

    /// utime + stime, clock ticks.
    pub fn ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Parses `/proc/PID/stat`. comm is everything between the first `(` and the LAST `)`, since
/// comm itself may hold `)` and spaces. `None` when the text is not a stat line.
pub fn parse_pid_stat(text: &str) -> Option<PidStat<'_>> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = &text[open + 1..close];
    // After ") ": field 3 (state) is index 0.
    let mut rest = text[close + 1..].split_ascii_whitespace();
    let state = *rest.next()?.as_bytes().first()?;
    // Fields 4..=8 (ppid, pgrp, session, tty_nr, tpgid), then 9 flags.
    let flags = rest.nth(5)?.parse().ok()?;
    // 10..=13 (minflt, cminflt, majflt, cmajflt), then 14 utime, 15 stime.
    let utime = rest.nth(4)?.parse().ok()?;
    let stime = rest.next()?.parse().ok()?;
    // 16..=19 (cutime, cstime, priority, nice), 20 num_threads, 21 itrealvalue, 22 starttime.
    let num_threads = rest.nth(4)?.parse().ok()?;
    let starttime = rest.nth(1)?.parse().ok()?;
    // 23 vsize, 24 rss.
    let rss_pages = rest.nth(1)?.parse().ok()?;
    Some(PidStat { pid, comm, state, flags, utime, stime, num_threads, starttime, rss_pages })
}

/// The aggregate `cpu` line of `/proc/stat`, clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks in any state (user, nice, system, idle, iowait, irq, softirq, steal). guest and
    /// guest_nice are already inside user and nice, so they are not added again.
    pub total: u64,
    /// Ticks not idle and not waiting for I/O.
    pub busy: u64,
}

impl CpuTimes {
    /// Host CPU busy percent between two readings, 0–100. `None` when no tick elapsed.
    pub fn busy_percent_since(&self, prev: &CpuTimes) -> Option<f64> {
        let total = self.total.saturating_sub(prev.total);
        if total == 0 {
            return None;
        }
        let busy = self.busy.saturating_sub(prev.busy).min(total);
        Some(100.0 * busy as f64 / total as f64)
    }
}

/// Parses the first (`cpu `) line of `/proc/stat`.
pub fn parse_proc_stat_cpu(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    if n < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    // A sum past u64 ticks is no reading (found by fuzzing); then busy ≤ total holds.
    let total = [user, nice, system, idle, iowait, irq, softirq, steal]
        .iter()
        .try_fold(0u64, |acc, x| acc.checked_add(*x))?;
    Some(CpuTimes { total, busy: total - idle - iowait })
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`, bytes.
    pub total: u64,
    /// `MemAvailable`, bytes.
    pub available: u64,
}

impl MemInfo {
    /// `(MemTotal − MemAvailable) / MemTotal`, percent.
    pub fn used_percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        100.0 * self.total.saturating_sub(self.available) as f64 / self.total as f64
    }
}

/// Parses `/proc/meminfo`. Kernels before 3.14 have no `MemAvailable`; then
/// `MemFree + Buffers + Cached` stands in for it.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let (mut total, mut available) = (None, None);
    let (mut free, mut buffers, mut cached) = (0, 0, 0);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let kib = || -> Option<u64> {
            let mut it = value.split_ascii_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            n.checked_mul(1024) // a value past u64 bytes is no value (found by fuzzing)
        };
        match key {
            "MemTotal" => total = kib(),
            "MemAvailable" => available = kib(),
            "MemFree" => free = kib().unwrap_or(0),
            "Buffers" => buffers = kib().unwrap_or(0),
            "Cached" => cached = kib().unwrap_or(0),
            _ => {}
        }
        if total.is_some() && available.is_some() {
            break;
        }
    }
    let total = total?;
    let available =
        available.unwrap_or(free.saturating_add(buffers).saturating_add(cached)).min(total);
    Some(MemInfo { total, available })
}

/// The kernel keeps `TASK_COMM_LEN - 1` = 15 bytes of a program's name in comm.
pub const COMM_MAX: usize = 15;

/// The basename of `argv[0]` from the raw bytes of `/proc/PID/cmdline` (NUL-separated).
/// `None` when `argv[0]` is empty, ends in `/` or is not UTF-8.
pub fn argv0_basename(cmdline: &[u8]) -> Option<&str> {
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    let argv0 = std::str::from_utf8(argv0).ok()?;
    let base = argv0.rsplit('/').next()?;
    (!base.is_empty()).then_some(base)
}

/// The process name of docs/contract.md §1: comm, unless comm is exactly 15 bytes (the kernel
/// truncated it) and a candidate (the basename of `argv[0]` or of the executable) is longer and
/// starts with it; then that candidate.
pub fn resolve_name<'a>(comm: &'a str, candidates: &[Option<&'a str>]) -> &'a str {
    if comm.len() != COMM_MAX {
        return comm;
    }
    candidates
        .iter()
        .flatten()
        .find(|c| c.len() > comm.len() && c.starts_with(comm))
        .copied()
        .unwrap_or(comm)
}

/// A process name the server accepts (docs/contract.md §2: 1–255 bytes of UTF-8, no control
/// characters). comm may hold any byte (`prctl(PR_SET_NAME)`): control characters become `?`,
/// an empty name becomes `?`, and a name is cut at 255 bytes on a character boundary. Names
/// that need nothing are borrowed.
pub fn sanitize_name(name: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 255;
    if !name.is_empty() && name.len() <= MAX && !name.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = clean_capped(name, MAX);
    if out.is_empty() {
        out.push('?');
    }
    std::borrow::Cow::Owned(out)
}

/// `s` with control characters as `?`, cut at `max` bytes on a character boundary.
pub fn clean_capped(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_CAT: &str = "7423 (cat) R 7417 7417 6060 0 -1 4194304 100 0 0 0 3 5 0 0 20 0 1 0 36464 3133440 406 18446744073709551615 94592480444416 94592480464297 140730184321104 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94592480480304 94592480481920 94593514405888 140730184329881 140730184329901 140730184329901 140730184331243 0\n";

    #[test]
    fn parses_a_plain_stat_line() {
        let s = parse_pid_stat(STAT_CAT).unwrap();
        assert_eq!(s.pid, 7423);
        assert_eq!(s.comm, "cat");
        assert_eq!(s.state, b'R');
        assert_eq!(s.flags, 4194304);
        assert_eq!((s.utime, s.stime, s.ticks()), (3, 5, 8));
        assert_eq!(s.starttime, 36464);
        assert_eq!(s.num_threads, 1);
        assert_eq!(s.rss_pages, 406);
        assert!(!s.is_kernel_thread());
        assert!(!s.is_dead());
    }

    #[test]
    fn comm_with_spaces_and_parens_is_read_up_to_the_last_paren() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 700 11 0 0 20 0 3 0 999 100 25 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_pid_stat(line).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.state, b'S');
        assert_eq!((s.utime, s.stime), (700, 11));
        assert_eq!(s.starttime, 999);
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.rss_pages, 25);
    }

    #[test]
    fn kernel_threads_and_zombies_are_recognised() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 20 0 1 0 2 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert!(parse_pid_stat(kthread).unwrap().is_kernel_thread());
        let zombie = "77 (sh) Z 1 77 77 0 -1 4227084 0 0 0 0 4 2 0 0 20 0 1 0 500 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let z = parse_pid_stat(zombie).unwrap();
        assert!(z.is_dead());
        assert_eq!(z.ticks(), 6);
    }

    #[test]
    fn truncated_or_garbage_stat_is_none() {
        assert!(parse_pid_stat("").is_none());
        assert!(parse_pid_stat("12 (x) S 1 2 3").is_none());
        assert!(parse_pid_stat(
            "12 )x( S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"
        )
        .is_none());
        assert!(parse_pid_stat(&STAT_CAT[..60]).is_none());
    }

    #[test]
    fn proc_stat_cpu_line() {
        let text = "cpu  10389 0 2563 59352 251 0 43 14 0 0\ncpu0 5048 0 1223 29964 63 0 9 5 0 0\n";
        let t = parse_proc_stat_cpu(text).unwrap();
        assert_eq!(t.total, 10389 + 2563 + 59352 + 251 + 43 + 14);
        assert_eq!(t.busy, 10389 + 2563 + 43 + 14);
        let later = CpuTimes { total: t.total + 200, busy: t.busy + 50 };
        assert_eq!(later.busy_percent_since(&t), Some(25.0));
        assert_eq!(t.busy_percent_since(&t), None);
        // Old kernels print only four fields.
        let old = parse_proc_stat_cpu("cpu 1 2 3 4\n").unwrap();
        assert_eq!((old.total, old.busy), (10, 6));
        assert!(parse_proc_stat_cpu("cpu0 1 2 3 4\n").is_none());
        assert!(parse_proc_stat_cpu("cpu 1 x 3 4\n").is_none());
        // /proc/stat counters summing past u64 (found by fuzzing): no reading, no panic.
        assert!(parse_proc_stat_cpu("cpu 18446744073709551615 1 0 0\n").is_none());
    }

    #[test]
    fn meminfo_total_and_available() {
        let text = "MemTotal:       24684084 kB\nMemFree:        22834416 kB\nMemAvailable:   24319148 kB\nBuffers:          1 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total, 24684084 * 1024);
        assert_eq!(m.available, 24319148 * 1024);
        let expected = 100.0 * (24684084.0 - 24319148.0) / 24684084.0;
        assert!((m.used_percent() - expected).abs() < 1e-9);
        // Pre-3.14 kernels: MemFree + Buffers + Cached.
        let old =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
                .unwrap();
        assert_eq!(old.available, 400 * 1024);
        assert!(parse_meminfo("MemFree: 1 kB\n").is_none());
        // Values past u64 bytes (found by fuzzing): no overflow panic, the line counts as absent.
        let huge = "MemTotal: 18446744073709551615 kB\nMemFree: 18446744073709551615 kB\n";
        assert!(parse_meminfo(huge).is_none());
        let m = parse_meminfo(
            "MemTotal: 1000 kB\nMemFree: 18014398509481983 kB\nBuffers: 18014398509481983 kB\n",
        )
        .unwrap();
        assert_eq!(m.available, m.total);
    }

    #[test]
    fn argv0_basename_cases() {
        assert_eq!(argv0_basename(b"/usr/bin/python3\0-c\0x\0"), Some("python3"));
        assert_eq!(
            argv0_basename(b"postgres: writer process   \0"),
            Some("postgres: writer process   ")
        );
        assert_eq!(argv0_basename(b"./a/very-long-program-name\0"), Some("very-long-program-name"));
        assert_eq!(argv0_basename(b""), None);
        assert_eq!(argv0_basename(b"/trailing/\0"), None);
    }

    #[test]
    fn resolve_name_only_lengthens_a_truncated_comm() {
        // Not truncated: comm as it is, whatever argv says.
        assert_eq!(resolve_name("bash", &[Some("bash-wrapper")]), "bash");
        // Truncated and argv[0] continues it.
        let comm = "procwatch-test-";
        assert_eq!(comm.len(), COMM_MAX);
        assert_eq!(
            resolve_name(comm, &[Some("procwatch-test-burn-1234"), None]),
            "procwatch-test-burn-1234"
        );
        // argv[0] was rewritten; the executable's basename still continues it.
        assert_eq!(
            resolve_name(comm, &[Some("worker"), Some("procwatch-test-exe")]),
            "procwatch-test-exe"
        );
        // Nothing continues it: comm.
        assert_eq!(resolve_name(comm, &[Some("other"), None]), comm);
        assert_eq!(resolve_name(comm, &[None, None]), comm);
    }

    #[test]
    fn names_are_made_acceptable_to_the_server() {
        assert!(matches!(sanitize_name("nginx"), std::borrow::Cow::Borrowed("nginx")));
        assert_eq!(sanitize_name("a\tb\nc"), "a?b?c");
        assert_eq!(sanitize_name(""), "?");
        assert_eq!(sanitize_name("\u{1b}[31m"), "?[31m");
        let long = "é".repeat(200); // 400 bytes
        let cut = sanitize_name(&long);
        assert!(cut.len() <= 255 && cut.len() >= 254);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
