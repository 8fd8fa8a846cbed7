//! The RowBinary row types of the tables (see `schema`) and their conversions.

use clickhouse::Row;
use procwatch_model::{HostTotal, Sample, TsMs};
use serde::{Deserialize, Serialize};

/// One row of `samples`. Field order = column order (RowBinary is positional).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct SampleRow {
    pub host: String,
    pub process: String,
    pub ts: i64,
    pub cpu: f64,
    pub cores: f64,
    pub mem: f64,
    pub rss: u64,
    pub count: u32,
    pub version: u64,
}

impl SampleRow {
    pub fn new(host: &str, s: &Sample, version: u64) -> Self {
        SampleRow {
            host: host.to_string(),
            process: s.process.clone(),
            ts: s.ts,
            cpu: s.cpu,
            cores: s.cores,
            mem: s.mem,
            rss: s.rss,
            count: s.count,
            version,
        }
    }
}

/// A queried sample: the columns of `samples` without `version`.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct SampleOut {
    pub host: String,
    pub process: String,
    pub ts: i64,
    pub cpu: f64,
    pub cores: f64,
    pub mem: f64,
    pub rss: u64,
    pub count: u32,
}

impl SampleOut {
    pub fn sample(&self) -> Sample {
        Sample {
            ts: self.ts,
            process: self.process.clone(),
            cpu: self.cpu,
            cores: self.cores,
            mem: self.mem,
            rss: self.rss,
            count: self.count,
        }
    }
}

/// One row of `host_totals` (`unattributed_cpu` is an `Option` as a value + flag, so the table
/// needs no `Nullable`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct TotalRow {
    pub host: String,
    pub ts: i64,
    pub cpu: f64,
    pub mem: f64,
    pub unattributed_cpu: f64,
    pub has_unattributed: u8,
    pub version: u64,
}

impl TotalRow {
    pub fn new(host: &str, t: &HostTotal, version: u64) -> Self {
        TotalRow {
            host: host.to_string(),
            ts: t.ts,
            cpu: t.cpu,
            mem: t.mem,
            unattributed_cpu: t.unattributed_cpu.unwrap_or(0.0),
            has_unattributed: u8::from(t.unattributed_cpu.is_some()),
            version,
        }
    }

    pub fn total(&self) -> HostTotal {
        HostTotal {
            ts: self.ts,
            cpu: self.cpu,
            mem: self.mem,
            unattributed_cpu: (self.has_unattributed != 0).then_some(self.unattributed_cpu),
        }
    }
}

/// One row of `hosts`: the host's bookkeeping as JSON (see `hosts::HostState`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct HostRow {
    pub host: String,
    pub state: String,
    pub version: u64,
}

/// One row of `alarm_events`: the event as JSON plus the columns the queries filter on.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct AlarmRow {
    pub id: String,
    pub host: String,
    pub start: i64,
    pub open: u8,
    pub event: String,
    pub version: u64,
}

/// One row of `meta` (key → value, e.g. the retention floor).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct MetaRow {
    pub key: String,
    pub value: TsMs,
    pub version: u64,
}
