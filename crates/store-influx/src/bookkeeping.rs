//! The hosts' seq bookkeeping (measurement `batch`), `hosts()` and `retire_host()`.

use std::collections::BTreeMap;

use procwatch_model::{HostTotal, TsMs};
use procwatch_store::{HostInfo, StoreError, StoreResult};

use crate::influxql::{self, tag_eq};
use crate::line::{write_point, Field};
use crate::schema::{Schema, BATCH, HOST, RETIRED};
use crate::InfluxStore;

/// The host's cumulative bookkeeping (the newest `batch` point).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BatchState {
    pub(crate) time: TsMs,
    pub(crate) last_seq: u64,
    pub(crate) seq_gaps: u64,
    pub(crate) dropped_samples: u64,
    pub(crate) interval_ms: u64,
    pub(crate) last_seen: TsMs,
}

impl BatchState {
    pub(crate) fn from_row(r: &influxql::Row<'_>) -> Self {
        Self {
            time: r.time(),
            last_seq: r.u64("last_seq").unwrap_or(0),
            seq_gaps: r.u64("seq_gaps").unwrap_or(0),
            dropped_samples: r.u64("dropped_samples").unwrap_or(0),
            interval_ms: r.u64("interval_ms").unwrap_or(0),
            last_seen: r.i64("last_seen").unwrap_or(0),
        }
    }
}

const BATCH_COLS: &str = r#""last_seq", "seq_gaps", "dropped_samples", "interval_ms", "last_seen""#;

impl InfluxStore {
    pub(crate) async fn batch_state(
        &self,
        s: &Schema,
        host: &str,
    ) -> StoreResult<Option<BatchState>> {
        let q = format!(
            "SELECT {BATCH_COLS} FROM {} WHERE {} ORDER BY time DESC LIMIT 1",
            self.from(s.data_rp.as_deref(), BATCH),
            tag_eq("host", host)
        );
        let res = self.client.query(self.db(), &q).await?;
        Ok(res
            .first()
            .and_then(|r| r.series.first())
            .and_then(|s| s.rows().next().map(|r| BatchState::from_row(&r))))
    }

    pub(crate) async fn hosts_inner(&self) -> StoreResult<Vec<HostInfo>> {
        let s = self.schema().await?;
        let rp = s.data_rp.as_deref();
        let q = format!(
            "SELECT {BATCH_COLS} FROM {} GROUP BY \"host\" ORDER BY time DESC LIMIT 1; \
             SELECT \"cpu\", \"mem\", \"unattributed_cpu\" FROM {} GROUP BY \"host\" \
             ORDER BY time DESC LIMIT 1; \
             SELECT \"at\" FROM {} GROUP BY \"host\" ORDER BY time DESC LIMIT 1",
            self.from(rp, BATCH),
            self.from(rp, HOST),
            self.from(rp, RETIRED)
        );
        let res = self.client.query(self.db(), &q).await?;
        let mut latest: BTreeMap<String, HostTotal> = BTreeMap::new();
        if let Some(r) = res.get(1) {
            for series in &r.series {
                if let Some(row) = series.rows().next() {
                    latest.insert(
                        series.tag("host"),
                        HostTotal {
                            ts: row.time(),
                            cpu: row.f64("cpu").unwrap_or(0.0),
                            mem: row.f64("mem").unwrap_or(0.0),
                            unattributed_cpu: row.f64("unattributed_cpu"),
                        },
                    );
                }
            }
        }
        let mut retired: BTreeMap<String, TsMs> = BTreeMap::new();
        if let Some(r) = res.get(2) {
            for series in &r.series {
                if let Some(at) = series.rows().next().and_then(|row| row.i64("at")) {
                    retired.insert(series.tag("host"), at);
                }
            }
        }
        let mut out = Vec::new();
        if let Some(r) = res.first() {
            for series in &r.series {
                let Some(row) = series.rows().next() else { continue };
                let b = BatchState::from_row(&row);
                let host = series.tag("host");
                if retired.get(&host).is_some_and(|at| b.last_seen <= *at) {
                    continue;
                }
                out.push(HostInfo {
                    latest: latest.remove(&host),
                    host,
                    last_seen: b.last_seen,
                    interval_ms: b.interval_ms,
                    last_seq: b.last_seq,
                    seq_gaps: b.seq_gaps,
                    dropped_samples: b.dropped_samples,
                });
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    pub(crate) async fn retire_host_inner(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let Some(last_seen) =
            self.hosts_inner().await?.into_iter().find(|h| h.host == host).map(|h| h.last_seen)
        else {
            return Err(StoreError::NotFound(format!("host {host:?}")));
        };
        let s = self.schema().await?;
        let mut line = String::new();
        write_point(
            &mut line,
            RETIRED,
            &[("host", host)],
            &[("at", Field::Int(at.max(last_seen)))],
            self.clock.now_ms(),
        );
        self.client.write(&self.cfg.db, s.data_rp.as_deref(), &line).await?;
        Ok(last_seen)
    }
}
