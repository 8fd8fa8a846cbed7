//! The RowBinary row types of the tables (see `schema`) and their conversions.

use std::collections::BTreeMap;

use clickhouse::Row;
use procwatch_model::{Batch, HostTotal, Sample, TsMs};
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

    /// The sample, without its name (the caller holds it: see `SeriesWindow::samples`).
    pub fn sample(&self) -> Sample {
        Sample {
            ts: self.ts,
            process: String::new(),
            cpu: self.cpu,
            cores: self.cores,
            mem: self.mem,
            rss: self.rss,
            count: self.count,
            extras: None,
        }
    }
}

/// The batch as deterministic rows of `samples`: its host totals first (one per `ts`), then
/// one row per `(process, ts)` (the last one given wins, as a rewrite would), sorted,
/// versioned by `seq`. The same batch always gives the same bytes.
pub fn sample_rows(batch: &Batch) -> Vec<SampleRow> {
    let mut totals: BTreeMap<TsMs, &HostTotal> = BTreeMap::new();
    for t in &batch.host_totals {
        totals.insert(t.ts, t);
    }
    let mut by_key: BTreeMap<(&str, TsMs), &Sample> = BTreeMap::new();
    for s in &batch.samples {
        by_key.insert((s.process.as_str(), s.ts), s);
    }
    let mut rows = Vec::with_capacity(totals.len() + by_key.len());
    rows.extend(totals.values().map(|t| SampleRow::host_total(&batch.host, t, batch.seq)));
    rows.extend(by_key.values().map(|s| SampleRow::new(&batch.host, s, batch.seq)));
    rows
}

/// The `process` of a host-total row in `samples`: the empty name, which no batch can carry
/// (`procwatch_model::validate::process_problem` refuses it), so every sample query excludes it
/// with `process != ''` and the host-total query selects it.
pub const HOST_TOTAL_PROCESS: &str = "";

impl SampleRow {
    /// A host total as a row of `samples`, so that a batch costs the cluster one replicated
    /// INSERT, not one for its samples and one for its host total: process `''`
    /// ([`HOST_TOTAL_PROCESS`]), `cpu` and `mem` as they are, `cores` the CPU no sampled process
    /// accounts for and `count` 1 when the agent sent that figure (0 when not), `rss` 0.
    pub fn host_total(host: &str, t: &HostTotal, version: u64) -> Self {
        SampleRow {
            host: host.to_string(),
            process: HOST_TOTAL_PROCESS.to_string(),
            ts: t.ts,
            cpu: t.cpu,
            cores: t.unattributed_cpu.unwrap_or(0.0),
            mem: t.mem,
            rss: 0,
            count: u32::from(t.unattributed_cpu.is_some()),
            version,
        }
    }
}

/// A host total as the host-total query reads it (`sql::host_totals`), from `samples` (rows of
/// [`SampleRow::host_total`]) and from `host_totals`, where builds before host totals moved
/// into `samples` wrote them (`unattributed_cpu` is an `Option` as a value + flag, so neither
/// table needs `Nullable`).
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

/// One row of `directives`: a directive change of the control channel, as JSON.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct DirectiveRow {
    pub directive: u64,
    pub at: i64,
    pub record: String,
    pub version: u64,
}

/// One row of `meta` (key → value, e.g. the retention floor).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct MetaRow {
    pub key: String,
    pub value: TsMs,
    pub version: u64,
}

/// One row of `sql::usage`: the five statistics of each metric in the order it selects them.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct UsageOut {
    pub host: String,
    pub process: String,
    pub samples: u64,
    pub last_ts: i64,
    pub count: u32,
    pub cpu_mean: f64,
    pub cpu_min: f64,
    pub cpu_max: f64,
    pub cpu_last: f64,
    pub cpu_p95: f64,
    pub cores_mean: f64,
    pub cores_min: f64,
    pub cores_max: f64,
    pub cores_last: f64,
    pub cores_p95: f64,
    pub mem_mean: f64,
    pub mem_min: f64,
    pub mem_max: f64,
    pub mem_last: f64,
    pub mem_p95: f64,
    pub rss_mean: f64,
    pub rss_min: f64,
    pub rss_max: f64,
    pub rss_last: f64,
    pub rss_p95: f64,
}

impl UsageOut {
    pub fn row(self, per_host: bool) -> procwatch_store::UsageRow {
        use procwatch_store::Stats;
        let st = |mean, min, max, last, p95| Stats { mean, min, max, last, p95 };
        procwatch_store::UsageRow {
            host: per_host.then_some(self.host),
            process: self.process,
            cpu: st(self.cpu_mean, self.cpu_min, self.cpu_max, self.cpu_last, self.cpu_p95),
            cores: st(
                self.cores_mean,
                self.cores_min,
                self.cores_max,
                self.cores_last,
                self.cores_p95,
            ),
            mem: st(self.mem_mean, self.mem_min, self.mem_max, self.mem_last, self.mem_p95),
            rss: st(self.rss_mean, self.rss_min, self.rss_max, self.rss_last, self.rss_p95),
            count: self.count,
            samples: self.samples,
            last_ts: self.last_ts,
        }
    }
}
