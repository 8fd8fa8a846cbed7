//! Raw reads: `window()` (samples per series), `history()` and `host_totals()`.

use procwatch_model::{HostTotal, TsMs};
use procwatch_store::{
    HistoryPoint, HistoryQuery, SeriesWindow, StoreError, StoreResult, UsageQuery,
};

use crate::influxql::{ident, tag_eq, time_range};
use crate::schema::{sample_from_row, HOST, PROC, SAMPLE_COLS};
use crate::InfluxStore;

impl InfluxStore {
    pub(crate) async fn window_inner(&self, q: &UsageQuery) -> StoreResult<Vec<SeriesWindow>> {
        if q.to <= q.from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let stmt = format!(
            "SELECT {SAMPLE_COLS} FROM {} WHERE {} GROUP BY \"host\", \"process\" \
             ORDER BY time ASC",
            self.from(s.data_rp.as_deref(), PROC),
            self.usage_cond(q)
        );
        let res = self.client.query(self.db(), &stmt).await?;
        let mut out: Vec<SeriesWindow> = res
            .into_iter()
            .next()
            .map(|r| r.series)
            .unwrap_or_default()
            .iter()
            .map(|series| {
                let process = series.tag("process");
                SeriesWindow {
                    host: series.tag("host"),
                    samples: series.rows().map(|r| sample_from_row("", &r)).collect(),
                    process,
                }
            })
            .filter(|w| !w.samples.is_empty())
            .collect();
        out.sort_by(|a, b| (&a.host, &a.process).cmp(&(&b.host, &b.process)));
        Ok(out)
    }

    pub(crate) async fn history_inner(&self, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let s = self.schema().await?;
        let from = self.from(s.data_rp.as_deref(), PROC);
        let series_cond =
            format!("{} AND {}", tag_eq("host", &q.host), tag_eq("process", &q.process));
        let mut points = Vec::new();
        if q.to > q.from {
            let cond = format!("{series_cond} AND {}", time_range(q.from, q.to));
            let stmt = if q.step_ms > 0 {
                format!(
                    "SELECT mean(\"cpu\") AS cpu, min(\"cpu\") AS cpu_min, max(\"cpu\") AS cpu_max, \
                     mean(\"cores\") AS cores, mean(\"mem\") AS mem, min(\"mem\") AS mem_min, \
                     max(\"mem\") AS mem_max, mean(\"rss\") AS rss, \
                     mean(\"count\") AS \"count\" FROM {from} WHERE {cond} \
                     GROUP BY time({}ms) fill(none)",
                    q.step_ms
                )
            } else {
                format!("SELECT {SAMPLE_COLS} FROM {from} WHERE {cond} ORDER BY time ASC")
            };
            let res = self.client.query(self.db(), &stmt).await?;
            for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
                for r in series.rows() {
                    let cpu = r.f64("cpu").unwrap_or(0.0);
                    let mem = r.f64("mem").unwrap_or(0.0);
                    points.push(HistoryPoint {
                        ts: r.time(),
                        cpu,
                        cpu_min: r.f64("cpu_min").unwrap_or(cpu),
                        cpu_max: r.f64("cpu_max").unwrap_or(cpu),
                        cores: r.f64("cores").unwrap_or(0.0),
                        mem,
                        mem_min: r.f64("mem_min").unwrap_or(mem),
                        mem_max: r.f64("mem_max").unwrap_or(mem),
                        rss: r.f64("rss").unwrap_or(0.0),
                        count: r.f64("count").unwrap_or(0.0),
                    });
                }
            }
        }
        if points.is_empty() {
            // SHOW TAG VALUES rather than SHOW SERIES: InfluxDB 2.x/3.x serve it too.
            let show = format!(
                "SHOW TAG VALUES FROM {} WITH KEY = {} WHERE {series_cond}",
                ident(PROC),
                ident("process")
            );
            let res = self.client.query(self.db(), &show).await?;
            let known = res.first().is_some_and(|r| r.series.iter().any(|s| !s.values.is_empty()));
            if !known {
                return Err(StoreError::NotFound(format!(
                    "no series for host {:?}, process {:?}",
                    q.host, q.process
                )));
            }
        }
        points.sort_by_key(|p| p.ts);
        Ok(points)
    }

    pub(crate) async fn host_totals_inner(
        &self,
        host: &str,
        from: TsMs,
        to: TsMs,
    ) -> StoreResult<Vec<HostTotal>> {
        if to <= from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let stmt = format!(
            "SELECT \"cpu\", \"mem\", \"unattributed_cpu\" FROM {} WHERE {} AND {} ORDER BY time ASC",
            self.from(s.data_rp.as_deref(), HOST),
            tag_eq("host", host),
            time_range(from, to)
        );
        let res = self.client.query(self.db(), &stmt).await?;
        Ok(res
            .first()
            .map(|r| r.series.as_slice())
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.rows())
            .map(|r| HostTotal {
                ts: r.time(),
                cpu: r.f64("cpu").unwrap_or(0.0),
                mem: r.f64("mem").unwrap_or(0.0),
                unattributed_cpu: r.f64("unattributed_cpu"),
            })
            .collect())
    }
}
