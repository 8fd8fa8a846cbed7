//! The opt-in extra metrics (issue 19) in their own measurement, `procwatch_extras` (tags
//! `host`, `process`; one string field `x`, the figures as JSON), in the data retention policy
//! beside `proc`: written in the same requests as the batch's samples, so the `proc` points
//! and their cost are unchanged when no extras are sent.

use procwatch_model::extras::Extras;
use procwatch_model::Sample;
use procwatch_store::extras::{sort_dedup, ExtrasRecord};
use procwatch_store::{StoreError, StoreResult, UsageQuery};

use crate::influxql::ident;
use crate::line::{write_point, Field};
use crate::InfluxStore;

/// The measurement of the extras.
pub(crate) const EXTRAS: &str = "procwatch_extras";

/// Appends the extras point of `s` to `out`; `false` when the sample carries none.
pub(crate) fn extras_point(out: &mut String, host: &str, s: &Sample) -> StoreResult<bool> {
    let Some(x) = s.extras.as_deref().filter(|x| !x.is_empty()) else { return Ok(false) };
    let json = serde_json::to_string(x).map_err(|e| StoreError::Other(Box::new(e)))?;
    write_point(
        out,
        EXTRAS,
        &[("host", host), ("process", &s.process)],
        &[("x", Field::Str(&json))],
        s.ts,
    );
    Ok(true)
}

/// The statement that drops extras older than `cutoff` (retention).
pub(crate) fn delete_older(cutoff: i64) -> String {
    format!("DELETE FROM {} WHERE time < {cutoff}ms", ident(EXTRAS))
}

impl InfluxStore {
    pub(crate) async fn extras_window_inner(
        &self,
        q: &UsageQuery,
    ) -> StoreResult<Vec<ExtrasRecord>> {
        if q.to <= q.from {
            return Ok(Vec::new());
        }
        let s = self.schema().await?;
        let stmt = format!(
            "SELECT \"x\" FROM {} WHERE {} GROUP BY \"host\", \"process\" ORDER BY time ASC",
            self.from(s.data_rp.as_deref(), EXTRAS),
            self.usage_cond(q)
        );
        let res = self.client.query(self.db(), &stmt).await?;
        let mut out = Vec::new();
        for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            let (host, process) = (series.tag("host"), series.tag("process"));
            for r in series.rows() {
                let Some(json) = r.str("x") else { continue };
                match serde_json::from_str::<Extras>(json) {
                    Ok(extras) => out.push(ExtrasRecord {
                        host: host.clone(),
                        process: process.clone(),
                        ts: r.time(),
                        extras,
                    }),
                    Err(err) => tracing::warn!("influxdb: unreadable extras: {err}"),
                }
            }
        }
        sort_dedup(&mut out);
        Ok(out)
    }
}
