//! `usage()`: the statistics of each process group, computed by InfluxDB (see the crate
//! doc, "Queries").

use std::collections::BTreeMap;

use procwatch_model::Sample;
use procwatch_store::{Stats, StoreResult, UsageNeeds, UsageQuery, UsageRow};

use crate::influxql::{ident, linear_ranks, nearest_rank_arg, tag_eq, time_range, Series};
use crate::schema::{sample_from_row, METRICS, PROC, SAMPLE_COLS};
use crate::InfluxStore;

/// `top(f, k)` answers p95 and max when `k = n − lo ≤ TOP_MAX` (windows of up to ~600
/// samples); above, two `percentile()` calls and `max()` do.
const TOP_MAX: usize = 32;

/// What one statement of the second round of a usage query answers.
#[derive(Debug, Clone, Copy)]
enum StmtKind {
    Min { n: usize },
    Top { n: usize },
    Percentiles { n: usize },
}

impl StmtKind {
    fn n(self) -> usize {
        match self {
            StmtKind::Min { n } | StmtKind::Top { n } | StmtKind::Percentiles { n } => n,
        }
    }
}

/// Key of a usage group: (host when per host, process).
type GroupKey = (Option<String>, String);

fn group_key(s: &Series, per_host: bool) -> GroupKey {
    (per_host.then(|| s.tag("host")), s.tag("process"))
}

fn group_cond(k: &GroupKey) -> String {
    match &k.0 {
        Some(h) => format!("({} AND {})", tag_eq("host", h), tag_eq("process", &k.1)),
        None => tag_eq("process", &k.1),
    }
}

impl InfluxStore {
    pub(crate) fn usage_cond(&self, q: &UsageQuery) -> String {
        let mut cond = time_range(q.from, q.to);
        if let Some(h) = &q.host {
            cond.push_str(" AND ");
            cond.push_str(&tag_eq("host", h));
        }
        if let Some(p) = &q.process {
            cond.push_str(" AND ");
            cond.push_str(&tag_eq("process", p));
        }
        cond
    }

    /// `usage()` computing only what `needs` asks (see the crate doc, "Queries").
    pub(crate) async fn usage_inner(
        &self,
        q: &UsageQuery,
        needs: UsageNeeds,
    ) -> StoreResult<Vec<UsageRow>> {
        if q.to <= q.from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let from = self.from(s.data_rp.as_deref(), PROC);
        let cond = self.usage_cond(q);
        let group = if q.per_host { r#""host", "process""# } else { r#""process""# };
        let metrics: Vec<(usize, &str)> =
            METRICS.iter().copied().enumerate().filter(|(j, _)| needs.metrics[*j]).collect();

        // Round 1, one statement (and a second, concurrent request for the newest samples when
        // `last` is needed): the means of the metrics needed and, when p95 or the sample count
        // is needed, the number of samples of each group (it picks the ranks of p95). `get-all`
        // is this one statement, the same InfluxQL a person would write.
        let with_n = needs.spread || needs.samples || metrics.is_empty();
        let mut cols: Vec<String> =
            metrics.iter().map(|(_, m)| format!("mean({}) AS \"{m}_mean\"", ident(m))).collect();
        if with_n {
            cols.push("count(\"cpu\") AS n".into());
        }
        let means = format!("SELECT {} FROM {from} WHERE {cond} GROUP BY {group}", cols.join(", "));
        let newest = format!(
            "SELECT {SAMPLE_COLS} FROM {from} WHERE {cond} GROUP BY {group} \
             ORDER BY time DESC LIMIT 1"
        );
        let (res, newest) = if needs.last {
            tokio::try_join!(
                self.client.query(self.db(), &means),
                self.client.query(self.db(), &newest)
            )?
        } else {
            (self.client.query(self.db(), &means).await?, Vec::new())
        };
        struct Part {
            n: usize,
            stats: [Stats; 4],
            last: Option<Sample>,
        }
        let mut parts: BTreeMap<GroupKey, Part> = BTreeMap::new();
        for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            let Some(row) = series.rows().next() else { continue };
            let n = if with_n { row.u64("n").unwrap_or(0) as usize } else { 1 };
            if n > 0 {
                let mut stats = [Stats::default(); 4];
                for (j, m) in &metrics {
                    stats[*j].mean = row.f64(&format!("{m}_mean")).unwrap_or(0.0);
                }
                let n = if with_n { n } else { 0 };
                parts.insert(group_key(series, q.per_host), Part { n, stats, last: None });
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        for series in newest.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            let key = group_key(series, q.per_host);
            if let (Some(p), Some(row)) = (parts.get_mut(&key), series.rows().next()) {
                p.last = Some(sample_from_row(&key.1, &row));
            }
        }
        if !needs.spread {
            return Ok(parts
                .into_iter()
                .map(|((host, process), p)| usage_row(host, process, p.n, p.stats, p.last))
                .collect());
        }

        // Round 2, as concurrent requests (InfluxDB runs each on its own core): per metric its
        // mean, min, max and the two order statistics
        // around numpy's linear p95 rank. Those come from `top(f, k)` (the k = n − lo largest
        // values, max included) when k is small, else from InfluxDB's nearest-rank
        // `percentile()` at the two ranks. One statement per distinct sample count n,
        // restricted to the groups with that count (but the most common one).
        let mut by_n: BTreeMap<usize, Vec<&GroupKey>> = BTreeMap::new();
        for (k, p) in &parts {
            by_n.entry(p.n).or_default().push(k);
        }
        let majority = by_n.iter().max_by_key(|(_, v)| v.len()).map(|(n, _)| *n).unwrap_or(0);
        let mut requests = Vec::new();
        // What each statement of a metric's request answers (the same for every metric).
        let mut kinds: Vec<StmtKind> = Vec::new();
        for (i, (_, m)) in metrics.iter().enumerate() {
            let f = ident(m);
            let mut stmts = Vec::new();
            for (&n, keys) in &by_n {
                let (lo, hi, _) = linear_ranks(0.95, n);
                let mut c = cond.clone();
                if n != majority {
                    let keys: Vec<String> = keys.iter().map(|k| group_cond(k)).collect();
                    c = format!("{c} AND ({})", keys.join(" OR "));
                }
                let k = n - lo;
                if k <= TOP_MAX {
                    stmts.push(format!(
                        "SELECT min({f}) AS min FROM {from} WHERE {c} GROUP BY {group}; \
                         SELECT top({f}, {k}) AS top FROM {from} WHERE {c} GROUP BY {group}"
                    ));
                    if i == 0 {
                        kinds.push(StmtKind::Min { n });
                        kinds.push(StmtKind::Top { n });
                    }
                } else {
                    let (alo, ahi) = (nearest_rank_arg(lo, n), nearest_rank_arg(hi, n));
                    stmts.push(format!(
                        "SELECT min({f}) AS min, max({f}) AS max, \
                         percentile({f}, {alo}) AS lo, percentile({f}, {ahi}) AS hi \
                         FROM {from} WHERE {c} GROUP BY {group}"
                    ));
                    if i == 0 {
                        kinds.push(StmtKind::Percentiles { n });
                    }
                }
            }
            requests.push(stmts.join("; "));
        }
        let answers =
            futures::future::try_join_all(requests.iter().map(|r| self.client.query(self.db(), r)))
                .await?;
        for (i, answer) in answers.iter().enumerate() {
            let j = metrics[i].0;
            for (kind, result) in kinds.iter().zip(answer) {
                let n = kind.n();
                let (lo, hi, frac) = linear_ranks(0.95, n);
                for series in &result.series {
                    let key = group_key(series, q.per_host);
                    let Some(p) = parts.get_mut(&key).filter(|p| p.n == n) else { continue };
                    let st = &mut p.stats[j];
                    match kind {
                        StmtKind::Min { .. } => {
                            let Some(row) = series.rows().next() else { continue };
                            st.min = row.f64("min").unwrap_or(0.0);
                        }
                        StmtKind::Top { .. } => {
                            // The n − lo largest values, largest first: index i is rank n−1−i.
                            let mut top: Vec<f64> =
                                series.rows().filter_map(|r| r.f64("top")).collect();
                            top.sort_by(|a, b| b.total_cmp(a));
                            let at = |rank: usize| top.get(n - 1 - rank).copied().unwrap_or(0.0);
                            st.max = top.first().copied().unwrap_or(0.0);
                            st.p95 = at(lo) + (at(hi) - at(lo)) * frac;
                        }
                        StmtKind::Percentiles { .. } => {
                            let Some(row) = series.rows().next() else { continue };
                            let plo = row.f64("lo").unwrap_or(0.0);
                            let phi = row.f64("hi").unwrap_or(plo);
                            st.min = row.f64("min").unwrap_or(0.0);
                            st.max = row.f64("max").unwrap_or(0.0);
                            st.p95 = plo + (phi - plo) * frac;
                        }
                    }
                }
            }
        }

        Ok(parts
            .into_iter()
            .map(|((host, process), p)| usage_row(host, process, p.n, p.stats, p.last))
            .collect())
    }
}

/// A row from its statistics and newest sample (all 0 when not asked for).
fn usage_row(
    host: Option<String>,
    process: String,
    n: usize,
    stats: [Stats; 4],
    last: Option<Sample>,
) -> UsageRow {
    let last = last.unwrap_or_else(|| Sample {
        ts: 0,
        process: process.clone(),
        cpu: 0.0,
        cores: 0.0,
        mem: 0.0,
        rss: 0,
        count: 0,
        extras: None,
    });
    let [mut cpu, mut cores, mut mem, mut rss] = stats;
    cpu.last = last.cpu;
    cores.last = last.cores;
    mem.last = last.mem;
    rss.last = last.rss as f64;
    UsageRow {
        host,
        process,
        cpu,
        cores,
        mem,
        rss,
        count: last.count,
        samples: n as u64,
        last_ts: last.ts,
    }
}
