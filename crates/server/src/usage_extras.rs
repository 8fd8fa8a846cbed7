//! The opt-in extra metrics (issue 19) in query answers: `GET /api/v1/usage?metrics=fds,…`
//! attaches each row's extras statistics, `group_by=unit|owner` sums the rows of each
//! service or user into one row, and history carries the extras points beside the CPU/memory
//! points. Everything is computed from [`procwatch_store::Storage::extras_window`] with the
//! store's shared arithmetic ([`procwatch_store::extras`]), so every backend answers alike.
//!
//! Grouping (`group_by`): one row per unit (or owner), `process` = its name, `host` = null;
//! a series belongs to the unit (owner) of its newest extras record in the window, `(none)`
//! when it has none (the agent does not collect `unit`/`owner`). Each statistic is the sum
//! over the group's series: exact for `mean` and `last` when the series share sweeps (one
//! agent), an upper bound for `max` and `p95`, a lower one for `min`; `count` and `samples`
//! are sums, `last_ts` the newest. At most [`MAX_GROUPS`] groups (the highest mean cpu); the
//! rest are summed into the `(other)` row.

use std::collections::HashMap;

use procwatch_store::extras::{self, ExtrasUsage};
use procwatch_store::{Stats, UsageQuery, UsageRow};

use crate::error::ApiError;
use crate::AppState;

/// At most this many groups in a `group_by` answer (the rest: one `(other)` row).
pub const MAX_GROUPS: usize = 1000;
/// The group of series without a unit (owner).
pub const NO_GROUP: &str = "(none)";

/// What `group_by` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The systemd unit or container id.
    Unit,
    /// The owning user.
    Owner,
}

impl GroupBy {
    /// Parses the `group_by` parameter.
    pub fn parse(v: &str) -> Result<GroupBy, ApiError> {
        match v {
            "unit" => Ok(GroupBy::Unit),
            "owner" => Ok(GroupBy::Owner),
            _ => {
                let shown: String = v.chars().take(40).collect();
                Err(ApiError::bad_param("group_by", format!("{shown:?}: unit or owner")))
            }
        }
    }
}

/// The extras usage of a query's series, by (host, process).
#[derive(Debug, Default)]
pub struct ExtrasIndex(HashMap<(Option<String>, String), ExtrasUsage>);

impl ExtrasIndex {
    /// Reads the extras of the query's window and computes their statistics.
    pub async fn load(st: &AppState, uq: &UsageQuery) -> Result<ExtrasIndex, ApiError> {
        let records = st.store.extras_window(uq).await?;
        let usage = extras::usage(&records, uq.per_host);
        Ok(ExtrasIndex(
            usage.into_iter().map(|u| ((u.host.clone(), u.process.clone()), u)).collect(),
        ))
    }

    /// The extras of one row, taken out of the index.
    pub fn take(&mut self, row: &UsageRow) -> Option<Box<ExtrasUsage>> {
        self.0.remove(&(row.host.clone(), row.process.clone())).map(Box::new)
    }

    fn group_of(&self, row: &UsageRow, by: GroupBy) -> &str {
        let x = self.0.get(&(row.host.clone(), row.process.clone()));
        let name = x.and_then(|x| match by {
            GroupBy::Unit => x.unit.as_deref(),
            GroupBy::Owner => x.owner.as_deref(),
        });
        name.unwrap_or(NO_GROUP)
    }
}

fn add_stats(a: &mut Stats, b: &Stats) {
    a.mean += b.mean;
    a.min += b.min;
    a.max += b.max;
    a.last += b.last;
    a.p95 += b.p95;
}

fn add_row(acc: &mut UsageRow, r: &UsageRow) {
    add_stats(&mut acc.cpu, &r.cpu);
    add_stats(&mut acc.cores, &r.cores);
    add_stats(&mut acc.mem, &r.mem);
    add_stats(&mut acc.rss, &r.rss);
    acc.count = acc.count.saturating_add(r.count);
    acc.samples += r.samples;
    acc.last_ts = acc.last_ts.max(r.last_ts);
}

fn empty_row(name: &str) -> UsageRow {
    UsageRow {
        host: None,
        process: name.to_owned(),
        cpu: Stats::default(),
        cores: Stats::default(),
        mem: Stats::default(),
        rss: Stats::default(),
        count: 0,
        samples: 0,
        last_ts: 0,
    }
}

/// The rows summed per group (module documentation), sorted by group name.
pub fn group_rows(rows: &[UsageRow], idx: &ExtrasIndex, by: GroupBy) -> Vec<UsageRow> {
    let mut groups: HashMap<&str, UsageRow> = HashMap::new();
    for r in rows {
        let g = idx.group_of(r, by);
        add_row(groups.entry(g).or_insert_with(|| empty_row(g)), r);
    }
    let mut out: Vec<UsageRow> = groups.into_values().collect();
    if out.len() > MAX_GROUPS {
        out.sort_by(|a, b| {
            b.cpu.mean.total_cmp(&a.cpu.mean).then_with(|| a.process.cmp(&b.process))
        });
        let mut other = empty_row(crate::governor::OTHER);
        for r in out.drain(MAX_GROUPS - 1..) {
            add_row(&mut other, &r);
        }
        out.push(other);
    }
    out.sort_by(|a, b| a.process.cmp(&b.process));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, process: &str, cpu: f64) -> UsageRow {
        let mut r = empty_row(process);
        r.host = Some(host.into());
        r.cpu = Stats { mean: cpu, min: cpu, max: cpu, last: cpu, p95: cpu };
        r.count = 1;
        r.samples = 2;
        r
    }

    fn usage(host: &str, process: &str, unit: &str) -> ExtrasUsage {
        ExtrasUsage {
            host: Some(host.into()),
            process: process.into(),
            unit: Some(unit.into()),
            ..Default::default()
        }
    }

    #[test]
    fn rows_sum_per_unit_and_the_rest_is_none() {
        let mut idx = ExtrasIndex::default();
        for u in [usage("h", "nginx", "web.service"), usage("h", "php", "web.service")] {
            idx.0.insert((u.host.clone(), u.process.clone()), u);
        }
        let rows = [row("h", "nginx", 10.0), row("h", "php", 5.0), row("h", "bash", 1.0)];
        let g = group_rows(&rows, &idx, GroupBy::Unit);
        let names: Vec<&str> = g.iter().map(|r| r.process.as_str()).collect();
        assert_eq!(names, ["(none)", "web.service"]);
        assert_eq!((g[1].cpu.mean, g[1].count, g[1].samples), (15.0, 2, 4));
        assert!(g.iter().all(|r| r.host.is_none()));
        assert_eq!(group_rows(&rows, &idx, GroupBy::Owner).len(), 1);
        assert!(GroupBy::parse("pid").is_err());
    }

    #[test]
    fn hostile_numbers_of_groups_are_capped() {
        let mut idx = ExtrasIndex::default();
        let mut rows = Vec::new();
        for i in 0..(MAX_GROUPS + 500) {
            let p = format!("p{i}");
            let u = usage("h", &p, &format!("u{i}.service"));
            idx.0.insert((u.host.clone(), u.process.clone()), u);
            rows.push(row("h", &p, i as f64));
        }
        let g = group_rows(&rows, &idx, GroupBy::Unit);
        assert_eq!(g.len(), MAX_GROUPS);
        let other = g.iter().find(|r| r.process == crate::governor::OTHER).unwrap();
        assert_eq!(other.count, 501);
    }
}
