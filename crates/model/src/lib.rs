//! Wire types shared by every procwatch crate.
//!
//! These are the only types that cross a process boundary (agent → server, server → alarm
//! service, server → dashboard). They do no I/O. The contract they implement is
//! `docs/contract.md` §2 (ingestion) and §4 (alarm events).
//!
//! Units, everywhere:
//! - `ts`: Unix time in milliseconds (UTC).
//! - `cpu`: percent of the host's total CPU capacity over the last interval, 0–100.
//! - `cores`: the same CPU time in cores (1.0 = one core fully busy), ≥ 0.
//! - `mem`: resident set size over `MemTotal`, percent, 0–100.
//! - `rss`: resident set size, bytes.

#![deny(missing_docs)]

pub mod clock;
pub mod directive;
pub mod duration;
pub mod extras;
pub mod glob;
pub mod precision;
pub mod retry;
pub mod schedule;
mod stale;
pub mod text;
pub mod validate;

pub use stale::{is_stale, stale_after_ms, trusted_interval_ms, STALE_INTERVALS};

use serde::{Deserialize, Serialize};

/// Unix milliseconds.
pub type TsMs = i64;

/// One agent batch: `POST /api/v1/samples`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The host the batch is about (1–253 bytes of `[A-Za-z0-9._:-]`).
    pub host: String,
    #[serde(default)]
    /// The sending agent's name and version, e.g. `procwatch/0.1.0` (informational).
    pub agent: String,
    /// Counts the agent's batches (from 0 or 1, monotonically) so the server can tell a gap.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    /// The agent's sweep interval, ms (how stale is judged for this host); 0 if unknown.
    pub interval_ms: u64,
    #[serde(default)]
    /// Host-wide totals, one per sweep in the batch.
    pub host_totals: Vec<HostTotal>,
    #[serde(default)]
    /// Per-process samples, one per (process name, sweep).
    pub samples: Vec<Sample>,
    /// Samples the agent had to drop (a spool cap was hit) since its previous accepted batch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_samples: u64,
    /// The agent's own state (directive version, interval, spool backlog, a refused
    /// directive); absent from older agents and legacy clients. See [`directive`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<directive::AgentReport>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Host-wide totals of one sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostTotal {
    /// When the sweep was taken, Unix ms.
    pub ts: TsMs,
    /// Host CPU busy percent from `/proc/stat`, 0–100.
    pub cpu: f64,
    /// `(MemTotal − MemAvailable) / MemTotal`, percent.
    pub mem: f64,
    /// Host cpu − Σ process cpu, clamped at 0: CPU no sampled process accounts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unattributed_cpu: Option<f64>,
}

/// One process group (host, process name) at one sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the sweep was taken, Unix ms.
    pub ts: TsMs,
    /// The process name (all processes of that name on the host are one group).
    pub process: String,
    /// CPU percent of the host's total capacity over the last interval, 0–100.
    pub cpu: f64,
    #[serde(default)]
    /// The same CPU time in cores (1.0 = one core fully busy), ≥ 0.
    pub cores: f64,
    /// Resident set size over `MemTotal`, percent, 0–100.
    pub mem: f64,
    #[serde(default)]
    /// Resident set size, bytes.
    pub rss: u64,
    #[serde(default = "one")]
    /// How many processes of that name the group holds (at least 1).
    pub count: u32,
    /// The opt-in extra metrics ([`extras`]), absent unless the agent collects some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Box<extras::Extras>>,
}

fn one() -> u32 {
    1
}

/// The seed system's collector payload: `PUT /ressources-usage/save-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyPayload {
    /// The reporting host (the seed called it by its IP address).
    pub ipaddress: String,
    /// The points, cpu and mem interleaved.
    pub data: Vec<LegacyPoint>,
}

/// One legacy point. `timestamp` is Unix seconds as a float; `value` is psutil's percent
/// (per-core for cpu, so it may exceed 100 on multi-core hosts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyPoint {
    /// Unix seconds, as a float.
    pub timestamp: f64,
    /// psutil's percent (per-core for cpu).
    pub value: f64,
    /// The process name.
    pub process_name: String,
    /// `"cpu"` or `"mem"`.
    pub type_data: String,
}

/// Which figure a rule or alarm applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// CPU, percent of the host.
    Cpu,
    /// CPU in cores (the built-in "saturates a core" rule).
    Cores,
    /// Resident memory, percent of the host.
    Mem,
    /// Open file descriptors (opt-in extra, [`extras`]); evaluated only where a rule names it.
    Fds,
    /// Highest share of the open-files limit, percent (opt-in extra); only where a rule names it.
    #[serde(rename = "fds_pct")]
    FdsPct,
    /// Threads (opt-in extra); only where a rule names it.
    Threads,
    /// Disk bytes read per second (opt-in extra); only where a rule names it.
    #[serde(rename = "read_bps")]
    ReadBps,
    /// Disk bytes written per second (opt-in extra); only where a rule names it.
    #[serde(rename = "write_bps")]
    WriteBps,
    /// Voluntary context switches per second (opt-in extra); only where a rule names it.
    #[serde(rename = "ctxsw_vol")]
    CtxswVol,
    /// Involuntary context switches per second (opt-in extra); only where a rule names it.
    #[serde(rename = "ctxsw_invol")]
    CtxswInvol,
}

impl Metric {
    /// The opt-in extra metrics a rule may name (issue 19).
    pub const EXTRAS: [Metric; 7] = [
        Metric::Fds,
        Metric::FdsPct,
        Metric::Threads,
        Metric::ReadBps,
        Metric::WriteBps,
        Metric::CtxswVol,
        Metric::CtxswInvol,
    ];

    /// The wire name: `cpu`, `cores`, `mem`, or an extra's (`fds`, `fds_pct`, `threads`,
    /// `read_bps`, `write_bps`, `ctxsw_vol`, `ctxsw_invol`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Cores => "cores",
            Metric::Mem => "mem",
            Metric::Fds => "fds",
            Metric::FdsPct => "fds_pct",
            Metric::Threads => "threads",
            Metric::ReadBps => "read_bps",
            Metric::WriteBps => "write_bps",
            Metric::CtxswVol => "ctxsw_vol",
            Metric::CtxswInvol => "ctxsw_invol",
        }
    }

    /// Whether the metric is evaluated only for series a rule names it for (cores and the
    /// extras), not by the default rule.
    pub fn needs_rule(self) -> bool {
        !matches!(self, Metric::Cpu | Metric::Mem)
    }

    /// The metric's value in a sample; an extra the sample does not carry is `None`.
    pub fn value(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::Cpu => Some(s.cpu),
            Metric::Cores => Some(s.cores),
            Metric::Mem => Some(s.mem),
            m => s.extras.as_deref().and_then(|x| x.get(m.as_str())),
        }
    }

    /// The metric's value in a sample (NaN for an extra the sample does not carry).
    pub fn of(self, s: &Sample) -> f64 {
        self.value(s).unwrap_or(f64::NAN)
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Metric::Cpu),
            "cores" => Ok(Metric::Cores),
            "mem" => Ok(Metric::Mem),
            other => Metric::EXTRAS.into_iter().find(|m| m.as_str() == other).ok_or_else(|| {
                let other: String = other.chars().take(40).collect();
                format!(
                    "unknown metric {other:?}: expected cpu, cores, mem, or an extra: fds, \
                     fds_pct, threads, read_bps, write_bps, ctxsw_vol, ctxsw_invol"
                )
            }),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Alarm level of a series. Ordered by severity so `max` gives the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Below the thresholds (or recovered).
    Ok,
    /// No sample for 3 intervals (see [`STALE_INTERVALS`]).
    Stale,
    /// Forecast to cross the threshold within the rule's horizon.
    Amber,
    /// Over the threshold now.
    Red,
}

impl Level {
    /// The wire name: `OK`, `STALE`, `AMBER` or `RED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Stale => "STALE",
            Level::Amber => "AMBER",
            Level::Red => "RED",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alarm transition, kept in the store and notified (docs/contract.md §4).
///
/// An event is opened when a series leaves OK (`end` is `None` while it is active) and closed
/// when it returns to OK or changes level. A host alarm (dead man's switch) has
/// `process == ""` and `kind == AlarmKind::HostSilent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// Stable id: unique per (host, process, metric, start).
    pub id: String,
    #[serde(default)]
    /// What the alarm is about (a series, a silent host, a retired host).
    pub kind: AlarmKind,
    /// The host.
    pub host: String,
    /// The process name; `""` for a host alarm.
    pub process: String,
    /// The metric the rule watches.
    pub metric: Metric,
    /// The level this transition enters.
    pub level: Level,
    /// The level before this transition.
    pub previous: Level,
    /// When the level was entered, Unix ms (a time from the data, not the evaluator's clock).
    pub start: TsMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// When the level was left, Unix ms; `None` while it is active.
    pub end: Option<TsMs>,
    /// The value that caused the transition.
    pub value: f64,
    /// The highest value seen while the event was active.
    pub peak: f64,
    /// The rule's threshold.
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The forecast value at the horizon (AMBER only).
    pub forecast: Option<f64>,
    /// Estimated seconds until the threshold is crossed (AMBER only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// Why an event was closed without a recovery, or what a `host_retired` event records
    /// (e.g. "process exited: …", "host retired", "host left the store").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an alarm is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    #[default]
    /// A (host, process, metric) series crossed or is forecast to cross its threshold.
    Series,
    /// A host sent nothing for 3 intervals (the dead man's switch).
    HostSilent,
    /// A host was retired (`POST /api/v1/hosts/{host}/retire`): level OK, `start == end`,
    /// `reason` says by whom; its open alarms were closed with the same reason.
    HostRetired,
}
