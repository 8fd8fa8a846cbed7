//! The JSON shape of one `GET /api/v1/usage` row: [`RowView`] writes a [`UsageRow`] with only
//! the metrics and statistics the query asked for (`metrics=`, `stats=`), and reads such a row
//! back (what `procwatch status` does), so the shape is stated once, here.

use procwatch_store::{Stats, UsageNeeds, UsageRow};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The metrics of a row, in JSON order; bit i of `Fields::metrics`.
const METRICS: [&str; 4] = ["cpu", "cores", "mem", "rss"];
/// The statistics of a metric, in JSON order; bit i of `Fields::stats`.
const STATS: [&str; 5] = ["mean", "min", "max", "last", "p95"];

/// Which metrics and statistics a usage answer carries (bit i = `METRICS[i]` / `STATS[i]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    metrics: u8,
    stats: u8,
    /// Extra metrics (issue 19): bit i = `EXTRA_FIELDS[i]`.
    extras: u16,
}

/// The extra metrics a `metrics=` list may name: the numeric ones, then `owner` and `unit`.
/// `io` stands for read_bps and write_bps, `ctxsw` for ctxsw_vol and ctxsw_invol.
const EXTRA_FIELDS: [&str; 9] = [
    "read_bps",
    "write_bps",
    "fds",
    "fds_pct",
    "threads",
    "ctxsw_vol",
    "ctxsw_invol",
    "owner",
    "unit",
];

fn extra_bits(item: &str) -> u16 {
    match item {
        "io" => 0b11,
        "ctxsw" => 0b110_0000,
        _ => EXTRA_FIELDS.iter().position(|n| *n == item).map_or(0, |i| 1 << i),
    }
}

impl Fields {
    /// Every metric and every statistic.
    pub const ALL: Fields = Fields { metrics: 0b1111, stats: 0b11111, extras: 0 };

    /// Whether the answer asks for any extra metric (the store's extras must be read).
    pub fn wants_extras(&self) -> bool {
        self.extras != 0
    }

    /// What the store must compute for these fields: the asked metrics, their spread when
    /// min, max or p95 is asked, `last` (also the row's `count` and `last_ts`, which every
    /// row carries) and `samples`.
    pub fn needs(&self) -> UsageNeeds {
        let spread = self.stats & 0b10110 != 0;
        UsageNeeds {
            metrics: std::array::from_fn(|i| self.metrics & (1 << i) != 0),
            spread,
            last: true,
            samples: true,
        }
    }

    /// Parses the comma lists of `metrics=` and `stats=` (absent: all).
    pub fn parse(metrics: Option<&str>, stats: Option<&str>) -> Result<Fields, ApiError> {
        fn mask(
            list: Option<&str>,
            names: &[&str],
            param: &str,
            extras: Option<&mut u16>,
        ) -> Result<u8, ApiError> {
            let Some(list) = list.filter(|l| !l.is_empty()) else {
                return Ok((1u8 << names.len()) - 1);
            };
            let (mut m, mut x) = (0, 0);
            for item in list.split(',').take(64) {
                let item = item.trim();
                if let Some(i) = names.iter().position(|n| *n == item) {
                    m |= 1 << i;
                } else if extras.is_some() && extra_bits(item) != 0 {
                    x |= extra_bits(item);
                } else {
                    let known = if extras.is_some() {
                        format!("{}, io, ctxsw, {}", names.join(", "), EXTRA_FIELDS.join(", "))
                    } else {
                        names.join(", ")
                    };
                    let shown: String = item.chars().take(40).collect();
                    return Err(ApiError::bad_param(param, format!("{shown:?}: one of {known}")));
                }
            }
            if let Some(e) = extras {
                *e = x;
            }
            Ok(m)
        }
        let mut extras = 0;
        Ok(Fields {
            metrics: mask(metrics, &METRICS, "metrics", Some(&mut extras))?,
            stats: mask(stats, &STATS, "stats", None)?,
            extras,
        })
    }
}

/// A `UsageRow` with only the requested metrics and statistics.
#[derive(Debug)]
pub struct RowView {
    /// The row: statistics of every metric.
    pub row: UsageRow,
    /// Which of them the JSON carries.
    pub fields: Fields,
    /// The row's extra metrics (issue 19), when the query asked for some and the store has
    /// them.
    pub extras: Option<Box<procwatch_store::extras::ExtrasUsage>>,
}

struct StatsView<'a>(&'a Stats, u8);

impl Serialize for StatsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let v = [self.0.mean, self.0.min, self.0.max, self.0.last, self.0.p95];
        let mut m = s.serialize_map(Some(self.1.count_ones() as usize))?;
        for (i, name) in STATS.iter().enumerate() {
            if self.1 & (1 << i) != 0 {
                m.serialize_entry(name, &v[i])?;
            }
        }
        m.end()
    }
}

impl Serialize for RowView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = &self.row;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("host", &r.host)?;
        m.serialize_entry("process", &r.process)?;
        for (i, (name, st)) in METRICS.iter().zip([&r.cpu, &r.cores, &r.mem, &r.rss]).enumerate() {
            if self.fields.metrics & (1 << i) != 0 {
                m.serialize_entry(name, &StatsView(st, self.fields.stats))?;
            }
        }
        if let Some(x) = self.extras.as_deref().filter(|_| self.fields.extras != 0) {
            let mut figures = std::collections::BTreeMap::new();
            for (i, name) in EXTRA_FIELDS[..7].iter().enumerate() {
                if let (true, Some(st)) = (self.fields.extras & (1 << i) != 0, x.metrics.get(*name))
                {
                    figures.insert(*name, StatsView(st, self.fields.stats));
                }
            }
            m.serialize_entry("extras", &figures)?;
            if self.fields.extras & (1 << 7) != 0 {
                m.serialize_entry("owner", &x.owner)?;
            }
            if self.fields.extras & (1 << 8) != 0 {
                m.serialize_entry("unit", &x.unit)?;
            }
        }
        m.serialize_entry("count", &r.count)?;
        m.serialize_entry("samples", &r.samples)?;
        m.serialize_entry("last_ts", &r.last_ts)?;
        if r.process == crate::governor::OTHER {
            // The governor's folded tail: `count` is the processes folded.
            m.serialize_entry("other", &true)?;
        }
        m.end()
    }
}

/// One metric of a row as it arrives: only the statistics asked for are present.
#[derive(Deserialize)]
struct StatsIn {
    mean: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    last: Option<f64>,
    p95: Option<f64>,
}

impl StatsIn {
    /// The statistics present (bit i = `STATS[i]`), and their values (0 where absent).
    fn split(&self) -> (u8, Stats) {
        let v = [self.mean, self.min, self.max, self.last, self.p95];
        let mask = v.iter().enumerate().fold(0, |m, (i, x)| m | (u8::from(x.is_some()) << i));
        let [mean, min, max, last, p95] = v.map(|x| x.unwrap_or(0.0));
        (mask, Stats { mean, min, max, last, p95 })
    }
}

/// A row as it arrives: the metrics not asked for are absent.
#[derive(Deserialize)]
struct RowIn {
    host: Option<String>,
    process: String,
    cpu: Option<StatsIn>,
    cores: Option<StatsIn>,
    mem: Option<StatsIn>,
    rss: Option<StatsIn>,
    count: u32,
    samples: u64,
    last_ts: i64,
}

/// Reads what [`RowView`]'s `Serialize` writes: `fields` says which metrics and statistics
/// were present, and an absent figure reads as 0.
impl<'de> Deserialize<'de> for RowView {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RowIn::deserialize(d)?;
        let mut fields = Fields { metrics: 0, stats: 0, extras: 0 };
        let mut figure = |i: usize, s: Option<StatsIn>| match s {
            Some(s) => {
                let (mask, st) = s.split();
                fields.metrics |= 1 << i;
                fields.stats |= mask;
                st
            }
            None => Stats::default(),
        };
        let (cpu, cores) = (figure(0, r.cpu), figure(1, r.cores));
        let (mem, rss) = (figure(2, r.mem), figure(3, r.rss));
        let row = UsageRow {
            host: r.host,
            process: r.process,
            cpu,
            cores,
            mem,
            rss,
            count: r.count,
            samples: r.samples,
            last_ts: r.last_ts,
        };
        Ok(RowView { row, fields, extras: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Process `p` (of `host`), every figure the same stats.
    fn row(host: Option<&str>) -> UsageRow {
        let st = Stats { mean: 1.0, min: 0.5, max: 2.0, last: 1.5, p95: 1.9 };
        UsageRow {
            host: host.map(str::to_owned),
            process: "p".into(),
            cpu: st,
            cores: st,
            mem: st,
            rss: st,
            count: 2,
            samples: 3,
            last_ts: 7,
        }
    }

    #[test]
    fn row_view_keeps_only_the_asked_fields() {
        let row = row(Some("h"));
        let all =
            serde_json::to_value(RowView { row: row.clone(), fields: Fields::ALL, extras: None })
                .unwrap();
        assert_eq!(all, serde_json::to_value(&row).unwrap());
        let fields = Fields::parse(Some("cpu,mem"), Some("mean")).unwrap();
        let some = serde_json::to_value(RowView { row, fields, extras: None }).unwrap();
        assert_eq!(
            some,
            serde_json::json!({"host": "h", "process": "p", "cpu": {"mean": 1.0},
                "mem": {"mean": 1.0}, "count": 2, "samples": 3, "last_ts": 7})
        );
        assert!(Fields::parse(Some("disk"), None).is_err());
        assert!(Fields::parse(None, Some("median")).is_err());
    }

    #[test]
    fn a_row_reads_back_as_it_was_written() {
        let row = row(None);
        for fields in [Fields::ALL, Fields::parse(Some("cpu,rss"), Some("mean,last")).unwrap()] {
            let json =
                serde_json::to_value(RowView { row: row.clone(), fields, extras: None }).unwrap();
            let back: RowView = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back.fields, fields);
            assert_eq!(serde_json::to_value(&back).unwrap(), json);
        }
    }
}
