//! The standard Prometheus `process_*` self-metrics of the running process (what the official
//! client libraries export): `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`. The server's and the
//! agent's `/metrics` append [`text`] to their own output, so the usual Grafana panels and
//! alert rules for a process work unchanged. Linux only (read from `/proc/self`); elsewhere
//! [`text`] is empty.

/// What is exported; pure data, rendered by [`render`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfMetrics {
    /// CPU time used, user + system, seconds (`process_cpu_seconds_total`).
    pub cpu_seconds: f64,
    /// Resident set size, bytes (`process_resident_memory_bytes`).
    pub resident_bytes: u64,
    /// Open file descriptors, when readable.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors, when readable.
    pub max_fds: Option<u64>,
    /// Process start, Unix seconds, when readable.
    pub start_time_seconds: Option<f64>,
}

/// `btime` of `/proc/stat`: boot time, seconds since the epoch.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/self/limits` (`None` when unlimited).
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The text exposition (version 0.0.4) of `m`.
pub fn render(m: &SelfMetrics) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    one(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        format!("{}", m.cpu_seconds),
    );
    one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        m.resident_bytes.to_string(),
    );
    if let Some(n) = m.open_fds {
        one("process_open_fds", "gauge", "Number of open file descriptors.", n.to_string());
    }
    if let Some(n) = m.max_fds {
        one("process_max_fds", "gauge", "Maximum number of open file descriptors.", n.to_string());
    }
    if let Some(t) = m.start_time_seconds {
        one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{t:.2}"),
        );
    }
    out
}

/// This process's figures, read now.
#[cfg(target_os = "linux")]
pub fn read() -> Option<SelfMetrics> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let stat = crate::parse::parse_pid_stat(&text)?;
    let tck = crate::sys::clk_tck().max(1) as f64;
    let start_time_seconds = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_btime(&s))
        .map(|btime| btime as f64 + stat.starttime as f64 / tck);
    Some(SelfMetrics {
        cpu_seconds: stat.ticks() as f64 / tck,
        resident_bytes: stat.rss_pages.saturating_mul(crate::sys::page_size()),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| parse_max_open_files(&l)),
        start_time_seconds,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn read() -> Option<SelfMetrics> {
    None
}

/// The `process_*` block for this process, or nothing where it cannot be read.
pub fn text() -> String {
    read().map(|m| render(&m)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_btime_and_limits() {
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1764806400\nprocesses 9\n"), Some(1_764_806_400));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(parse_max_open_files("Max open files unlimited unlimited files\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let m = read().expect("linux");
        assert!(m.resident_bytes > 0 && m.open_fds.unwrap() >= 3, "{m:?}");
        let text = render(&m);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
    }
}
