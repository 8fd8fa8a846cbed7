//! What a `/metrics` scrape reads from the store: hosts, active alarms and each host's
//! usage rows, capped per host ([`cap_rows`]).

use procwatch_model::{AlarmEvent, HostTotal, Level, Metric, TsMs};
use procwatch_store::{AlarmQuery, HostInfo, UsageQuery, UsageRow};

use crate::AppState;

/// One exported (host, process) row.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    /// The host.
    pub host: String,
    /// The process name.
    pub process: String,
    /// CPU percent of the host's capacity, 0–100.
    pub cpu: f64,
    /// CPU in cores (1.0 = one core fully busy).
    pub cores: f64,
    /// Resident memory, percent of the host's `MemTotal`.
    pub mem: f64,
    /// Resident set size, bytes.
    pub rss: u64,
    /// How many processes of that name the group holds.
    pub count: u32,
    /// The open alarm level of the cpu metric (`OK` when none).
    pub cpu_level: Level,
    /// The open alarm level of the mem metric (`OK` when none).
    pub mem_level: Level,
}

#[derive(Debug)]
pub(super) struct HostRow {
    pub(super) host: String,
    pub(super) last_seen: TsMs,
    pub(super) stale: bool,
    pub(super) latest: Option<HostTotal>,
    pub(super) capped: usize,
}

#[derive(Debug, Default)]
pub(super) struct Collected {
    pub(super) up: bool,
    pub(super) hosts: Vec<HostRow>,
    pub(super) series: usize,
    pub(super) processes: Vec<ProcessRow>,
    pub(super) alarm_counts: Vec<(&'static str, i64)>,
}

/// The worst active level per (host, process, metric); `Cores` alarms count as cpu.
pub(super) fn active_levels(
    events: &[AlarmEvent],
) -> std::collections::HashMap<(String, String, &'static str), Level> {
    let mut m = std::collections::HashMap::new();
    for e in events.iter().filter(|e| e.end.is_none()) {
        let metric = match e.metric {
            Metric::Cpu | Metric::Cores => "cpu",
            m => m.as_str(),
        };
        let slot = m.entry((e.host.clone(), e.process.clone(), metric)).or_insert(Level::Ok);
        *slot = (*slot).max(e.level);
    }
    m
}

/// Applies the cardinality cap: per host, the top `cap` rows by newest cpu (ties by name),
/// plus every row with an active alarm. Returns the kept rows (sorted by host, process) and
/// how many were left out per host.
pub fn cap_rows(
    rows: Vec<ProcessRow>,
    cap: usize,
) -> (Vec<ProcessRow>, std::collections::BTreeMap<String, usize>) {
    let mut by_host: std::collections::BTreeMap<String, Vec<ProcessRow>> = Default::default();
    for r in rows {
        by_host.entry(r.host.clone()).or_default().push(r);
    }
    let mut kept = Vec::new();
    let mut capped = std::collections::BTreeMap::new();
    for (host, mut rows) in by_host {
        rows.sort_by(|a, b| {
            b.cpu
                .partial_cmp(&a.cpu)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.process.cmp(&b.process))
        });
        let mut left_out = 0;
        let mut host_kept: Vec<ProcessRow> = Vec::new();
        for (i, r) in rows.into_iter().enumerate() {
            let alarmed = r.cpu_level > Level::Ok || r.mem_level > Level::Ok;
            if i < cap || alarmed {
                host_kept.push(r);
            } else {
                left_out += 1;
            }
        }
        host_kept.sort_by(|a, b| a.process.cmp(&b.process));
        kept.extend(host_kept);
        capped.insert(host, left_out);
    }
    (kept, capped)
}

pub(super) async fn collect(st: &AppState, cap: usize) -> Collected {
    let mut c = Collected { up: st.store.health().await.is_ok(), ..Default::default() };
    let now = st.config.clock.now_ms();
    let hosts = st.store.hosts().await.unwrap_or_default();
    let events = st
        .store
        .alarm_events(&AlarmQuery { active_only: true, ..Default::default() })
        .await
        .unwrap_or_default();
    for level in [Level::Red, Level::Amber, Level::Stale] {
        let n = events.iter().filter(|e| e.end.is_none() && e.level == level).count();
        c.alarm_counts.push((level.as_str(), n as i64));
    }
    let levels = active_levels(&events);
    let window = st.config.query_window.as_millis() as i64;
    let q = UsageQuery {
        from: now - window,
        to: now + procwatch_model::validate::MAX_FUTURE_MS + 1,
        host: None,
        process: None,
        per_host: true,
    };
    let level = |h: &str, p: &str, m: &'static str| {
        levels.get(&(h.to_owned(), p.to_owned(), m)).copied().unwrap_or(Level::Ok)
    };
    let process_rows = |rows: Vec<UsageRow>| -> Vec<ProcessRow> {
        rows.into_iter()
            .map(|r: UsageRow| {
                let host = r.host.unwrap_or_default();
                ProcessRow {
                    cpu_level: level(&host, &r.process, "cpu"),
                    mem_level: level(&host, &r.process, "mem"),
                    cpu: r.cpu.last,
                    cores: r.cores.last,
                    mem: r.mem.last,
                    rss: r.rss.last.max(0.0) as u64,
                    count: r.count,
                    host,
                    process: r.process,
                }
            })
            .collect()
    };
    // The embedded store answers host by host from memory, and only each host's capped rows
    // are kept: one read of every series held ≈ 0.1 GB for the length of a scrape at 300,000
    // series (heaptrack, BENCHMARKS.md "Session 12"). A remote store is asked once.
    let mut capped = std::collections::BTreeMap::new();
    if st.store.series_usage_is_local() {
        for h in &hosts {
            let q = UsageQuery { host: Some(h.host.clone()), ..q.clone() };
            let rows = st.store.usage(&q).await.unwrap_or_default();
            c.series += rows.len();
            let (kept, left_out) = cap_rows(process_rows(rows), cap);
            c.processes.extend(kept);
            capped.extend(left_out);
        }
    } else {
        let rows = st.store.usage(&q).await.unwrap_or_default();
        c.series = rows.len();
        let (kept, left_out) = cap_rows(process_rows(rows), cap);
        c.processes = kept;
        capped = left_out;
    }
    let default_interval = st.config.interval.as_millis() as i64;
    c.hosts = hosts
        .into_iter()
        .map(|h: HostInfo| {
            let interval = procwatch_model::trusted_interval_ms(h.interval_ms, default_interval);
            HostRow {
                stale: procwatch_model::is_stale(now, h.last_seen, interval),
                capped: capped.get(&h.host).copied().unwrap_or(0),
                host: h.host,
                last_seen: h.last_seen,
                latest: h.latest,
            }
        })
        .collect();
    c
}
