//! The opt-in extra metrics of a sample (issue 19): disk I/O, open file descriptors, threads,
//! context switches, owner and service unit.
//!
//! An agent collects none of them unless asked (`--metrics io,fds,threads,ctxsw,owner,unit`,
//! the same names as the control channel's `metrics` directive). On the wire they travel in a
//! sample's `extras` object, absent when no extra was collected, so a batch without extras is byte
//! for byte what older agents send, and older servers ignore the unknown key.
//!
//! Per group (all processes of one name on one host), figures are summed over the group's
//! processes, except `fds_pct` (the highest share of its own soft limit any one process uses,
//! so a rule can say "near the limit") and `owner`/`unit` (those of the group's process with
//! the lowest PID, usually the parent).

use serde::{Deserialize, Serialize};

/// One opt-in extra metric, by the name used in `--metrics` and in directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtraMetric {
    /// Disk read/write bytes per second (taskstats or `/proc/PID/io`).
    Io,
    /// Open file descriptors (`/proc/PID/fd`) and their share of the soft limit.
    Fds,
    /// Threads (`/proc/PID/stat` field 20).
    Threads,
    /// Voluntary and involuntary context switches per second (`/proc/PID/status`).
    Ctxsw,
    /// The user name owning the process.
    Owner,
    /// The systemd unit or container id (`/proc/PID/cgroup`).
    Unit,
}

impl ExtraMetric {
    /// Every extra metric, in the order of their bits.
    pub const ALL: [ExtraMetric; 6] = [
        ExtraMetric::Io,
        ExtraMetric::Fds,
        ExtraMetric::Threads,
        ExtraMetric::Ctxsw,
        ExtraMetric::Owner,
        ExtraMetric::Unit,
    ];

    /// The name: `io`, `fds`, `threads`, `ctxsw`, `owner` or `unit`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraMetric::Io => "io",
            ExtraMetric::Fds => "fds",
            ExtraMetric::Threads => "threads",
            ExtraMetric::Ctxsw => "ctxsw",
            ExtraMetric::Owner => "owner",
            ExtraMetric::Unit => "unit",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::str::FromStr for ExtraMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ExtraMetric::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            format!(
                "unknown extra metric {:?}: expected some of io, fds, threads, ctxsw, owner, unit",
                s.chars().take(40).collect::<String>()
            )
        })
    }
}

/// A set of extra metrics (the agent's `--metrics` setting). Empty by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtraSet(u8);

impl ExtraSet {
    /// No extra metric.
    pub const NONE: ExtraSet = ExtraSet(0);

    /// Every extra metric.
    pub fn all() -> Self {
        ExtraMetric::ALL.into_iter().fold(ExtraSet::NONE, ExtraSet::with)
    }

    /// This set plus `m`.
    pub fn with(self, m: ExtraMetric) -> Self {
        ExtraSet(self.0 | m.bit())
    }

    /// Whether `m` is in the set.
    pub fn has(self, m: ExtraMetric) -> bool {
        self.0 & m.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The metrics in the set, in [`ExtraMetric::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = ExtraMetric> {
        ExtraMetric::ALL.into_iter().filter(move |m| self.has(*m))
    }
}

impl std::str::FromStr for ExtraSet {
    type Err = String;
    /// A comma-separated list (`io,fds`); empty, `none` = no extra; `all` = every one.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "" | "none" => return Ok(ExtraSet::NONE),
            "all" => return Ok(ExtraSet::all()),
            _ => {}
        }
        s.split(',')
            .map(|p| p.trim().parse::<ExtraMetric>())
            .try_fold(ExtraSet::NONE, |acc, m| m.map(|m| acc.with(m)))
    }
}

impl std::fmt::Display for ExtraSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(ExtraMetric::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// The extra figures of one sample (one process group at one sweep). Each is `None` when it
/// was not collected (not enabled, or unreadable, e.g. `/proc/PID/io` of another user's
/// process without privileges).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Extras {
    /// Bytes read from storage per second over the interval (`read_bytes` of taskstats or
    /// `/proc/PID/io`: what reached the block layer, not what the page cache answered).
    pub read_bps: Option<f64>,
    /// Bytes written to storage per second over the interval (`write_bytes`).
    pub write_bps: Option<f64>,
    /// Open file descriptors, summed over the group.
    pub fds: Option<u64>,
    /// The highest share of its own soft `RLIMIT_NOFILE` any process of the group has open,
    /// percent (0–100): "near the limit".
    pub fds_pct: Option<f64>,
    /// Threads, summed over the group.
    pub threads: Option<u64>,
    /// Voluntary context switches per second (the task waited), of each process's main
    /// thread, summed over the group.
    pub ctxsw_vol: Option<f64>,
    /// Involuntary context switches per second (the task was preempted).
    pub ctxsw_invol: Option<f64>,
    /// The owning user's name (the uid in decimal when `/etc/passwd` has no such user), of the
    /// group's lowest PID.
    pub owner: Option<String>,
    /// The systemd unit (`nginx.service`), container id, or cgroup path it belongs to.
    pub unit: Option<String>,
}

/// The numeric extras, by the names used in queries (`/api/v1/usage?metrics=`) and history.
pub const NUMERIC_EXTRAS: [&str; 7] =
    ["read_bps", "write_bps", "fds", "fds_pct", "threads", "ctxsw_vol", "ctxsw_invol"];

/// Longest `owner` accepted, bytes.
pub const MAX_OWNER_BYTES: usize = 64;
/// Longest `unit` accepted, bytes.
pub const MAX_UNIT_BYTES: usize = 255;
/// Largest count (`fds`, `threads`) accepted: past any kernel limit.
pub const MAX_COUNT: u64 = 1 << 40;
/// Largest rate (bytes or switches per second) accepted: 1 PB/s.
pub const MAX_RATE: f64 = 1e15;

/// Absent figures are left out; counts are integers.
impl Serialize for Extras {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for name in NUMERIC_EXTRAS {
            match (name, self.get(name)) {
                (_, None) => {}
                ("fds" | "threads", Some(v)) => m.serialize_entry(name, &(v as u64))?,
                (_, Some(v)) => m.serialize_entry(name, &v)?,
            }
        }
        for (name, v) in [("owner", &self.owner), ("unit", &self.unit)] {
            if let Some(v) = v {
                m.serialize_entry(name, v)?;
            }
        }
        m.end()
    }
}

impl Extras {
    /// Whether no figure is set.
    pub fn is_empty(&self) -> bool {
        self == &Extras::default()
    }

    /// A numeric extra by name ([`NUMERIC_EXTRAS`]), `None` when absent or unknown.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "read_bps" => self.read_bps,
            "write_bps" => self.write_bps,
            "fds" => self.fds.map(|v| v as f64),
            "fds_pct" => self.fds_pct,
            "threads" => self.threads.map(|v| v as f64),
            "ctxsw_vol" => self.ctxsw_vol,
            "ctxsw_invol" => self.ctxsw_invol,
            _ => None,
        }
    }

    /// Sets a numeric extra by name ([`NUMERIC_EXTRAS`]; counts are rounded). Unknown names
    /// are ignored.
    pub fn set(&mut self, name: &str, v: f64) {
        let count = || Some(v.max(0.0).round() as u64);
        match name {
            "read_bps" => self.read_bps = Some(v),
            "write_bps" => self.write_bps = Some(v),
            "fds" => self.fds = count(),
            "fds_pct" => self.fds_pct = Some(v),
            "threads" => self.threads = count(),
            "ctxsw_vol" => self.ctxsw_vol = Some(v),
            "ctxsw_invol" => self.ctxsw_invol = Some(v),
            _ => {}
        }
    }

    /// The problems of these extras as (field, reason): negative, non-finite or huge values,
    /// over-long or control-character owner/unit. Empty when acceptable.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for name in NUMERIC_EXTRAS {
            let Some(v) = self.get(name) else { continue };
            let max = match name {
                "fds_pct" => 100.0,
                "fds" | "threads" => MAX_COUNT as f64,
                _ => MAX_RATE,
            };
            if !v.is_finite() {
                out.push((name, "not finite".to_owned()));
            } else if !(0.0..=max).contains(&v) {
                out.push((name, format!("{v} is outside [0, {max}]")));
            }
        }
        for (name, v, max) in
            [("owner", &self.owner, MAX_OWNER_BYTES), ("unit", &self.unit, MAX_UNIT_BYTES)]
        {
            let Some(v) = v else { continue };
            if v.is_empty() {
                out.push((name, "empty".to_owned()));
            } else if v.len() > max {
                out.push((name, format!("{} bytes, at most {max}", v.len())));
            } else if v.chars().any(char::is_control) {
                out.push((name, "control characters not allowed".to_owned()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_sets_parse_and_print() {
        let s: ExtraSet = "io, fds,unit".parse().unwrap();
        assert!(s.has(ExtraMetric::Io) && s.has(ExtraMetric::Fds) && s.has(ExtraMetric::Unit));
        assert!(!s.has(ExtraMetric::Threads));
        assert_eq!(s.to_string(), "io,fds,unit");
        assert_eq!("".parse::<ExtraSet>(), Ok(ExtraSet::NONE));
        assert_eq!("none".parse::<ExtraSet>().unwrap().to_string(), "none");
        assert_eq!("all".parse::<ExtraSet>().unwrap().iter().count(), 6);
        let err = "io,disk".parse::<ExtraSet>().unwrap_err();
        assert!(err.contains("\"disk\"") && err.contains("ctxsw"), "{err}");
        // A hostile name is quoted, cut short.
        assert!("x".repeat(10_000).parse::<ExtraSet>().unwrap_err().len() < 200);
    }

    #[test]
    fn absent_extras_are_not_on_the_wire() {
        assert_eq!(serde_json::to_string(&Extras::default()).unwrap(), "{}");
        let x = Extras { fds: Some(3), unit: Some("a.service".into()), ..Default::default() };
        assert_eq!(serde_json::to_string(&x).unwrap(), r#"{"fds":3,"unit":"a.service"}"#);
    }

    #[test]
    fn extra_metrics_of_rules_have_their_wire_names() {
        for m in crate::Metric::EXTRAS {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(m.as_str().parse::<crate::Metric>(), Ok(m));
            assert!(NUMERIC_EXTRAS.contains(&m.as_str()));
        }
    }

    #[test]
    fn hostile_extras_are_named() {
        let bad = Extras {
            read_bps: Some(-1.0),
            write_bps: Some(f64::NAN),
            fds_pct: Some(150.0),
            ctxsw_vol: Some(1e300),
            owner: Some("u".repeat(65)),
            unit: Some("a\nb".into()),
            ..Default::default()
        };
        let fields: Vec<&str> = bad.problems().iter().map(|p| p.0).collect();
        assert_eq!(fields, ["read_bps", "write_bps", "fds_pct", "ctxsw_vol", "owner", "unit"]);
        let ok = Extras { fds: Some(10), fds_pct: Some(1.0), ..Default::default() };
        assert!(ok.problems().is_empty());
        let mut e = Extras::default();
        e.set("threads", 2.6);
        assert_eq!((e.threads, e.get("threads")), (Some(3), Some(3.0)));
    }
}
