//! Wire types shared by every procwatch crate.
//!
//! These are the only types that cross a process boundary (agent → server, server → alarm
//! service, server → dashboard). They do no I/O. The contract they implement is
//! `SPEC.md` section 2 (ingestion) and section 4 (alarm events).
//!
//! Units, everywhere:
//! - `ts`: Unix time in milliseconds (UTC).
//! - `cpu`: percent of the host's total CPU capacity over the last interval, 0–100.
//! - `cores`: the same CPU time in cores (1.0 = one core fully busy), ≥ 0.
//! - `mem`: resident set size over `MemTotal`, percent, 0–100.
//! - `rss`: resident set size, bytes.

pub mod clock;
pub mod duration;
pub mod retry;
pub mod schedule;
mod stale;
pub mod validate;

pub use stale::{is_stale, stale_after_ms, STALE_INTERVALS};

use serde::{Deserialize, Serialize};

/// Unix milliseconds.
pub type TsMs = i64;

/// One agent batch: `POST /api/v1/samples`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub host: String,
    #[serde(default)]
    pub agent: String,
    /// Counts the agent's batches (from 0 or 1, monotonically) so the server can tell a gap.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub interval_ms: u64,
    #[serde(default)]
    pub host_totals: Vec<HostTotal>,
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Samples the agent had to drop (a spool cap was hit) since its previous accepted batch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_samples: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Host-wide totals of one sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostTotal {
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
    pub ts: TsMs,
    pub process: String,
    pub cpu: f64,
    #[serde(default)]
    pub cores: f64,
    pub mem: f64,
    #[serde(default)]
    pub rss: u64,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The seed system's collector payload: `PUT /ressources-usage/save-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyPayload {
    pub ipaddress: String,
    pub data: Vec<LegacyPoint>,
}

/// One legacy point. `timestamp` is Unix seconds as a float; `value` is psutil's percent
/// (per-core for cpu, so it may exceed 100 on multi-core hosts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyPoint {
    pub timestamp: f64,
    pub value: f64,
    pub process_name: String,
    pub type_data: String,
}

/// Which figure a rule or alarm applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cpu,
    Cores,
    Mem,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Cores => "cores",
            Metric::Mem => "mem",
        }
    }

    /// The metric's value in a sample.
    pub fn of(self, s: &Sample) -> f64 {
        match self {
            Metric::Cpu => s.cpu,
            Metric::Cores => s.cores,
            Metric::Mem => s.mem,
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Metric::Cpu),
            "cores" => Ok(Metric::Cores),
            "mem" => Ok(Metric::Mem),
            other => Err(format!("unknown metric {other:?}: expected cpu, cores or mem")),
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
    Ok,
    Stale,
    Amber,
    Red,
}

impl Level {
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

/// One alarm transition, kept in the store and notified (SPEC section 4).
///
/// An event is opened when a series leaves OK (`end` is `None` while it is active) and closed
/// when it returns to OK or changes level. A host alarm (dead man's switch) has
/// `process == ""` and `kind == AlarmKind::HostSilent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// Stable id: unique per (host, process, metric, start).
    pub id: String,
    #[serde(default)]
    pub kind: AlarmKind,
    pub host: String,
    pub process: String,
    pub metric: Metric,
    pub level: Level,
    /// The level before this transition.
    pub previous: Level,
    pub start: TsMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<TsMs>,
    /// The value that caused the transition.
    pub value: f64,
    /// The highest value seen while the event was active.
    pub peak: f64,
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    Series,
    HostSilent,
    /// A host was retired (`POST /api/v1/hosts/{host}/retire`): level OK, `start == end`,
    /// `reason` says by whom; its open alarms were closed with the same reason.
    HostRetired,
}
