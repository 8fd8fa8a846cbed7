//! The opt-in extra metrics (issue 19) in their own sharded table, `extras` (`extras_local` per
//! node, `Distributed` by `cityHash64(host)` like `samples`; `ReplacingMergeTree` by the batch
//! `seq`, partitioned by day, rows `(host, process, ts, x)` with `x` the figures as JSON), so
//! `samples` and its cost are unchanged when no extras are sent. Written beside the samples,
//! read `FINAL` above the retention floor, dropped by day partitions with them.

use clickhouse::Row;
use procwatch_model::extras::Extras;
use procwatch_model::Batch;
use procwatch_store::extras::ExtrasRecord;
use procwatch_store::UsageQuery;
use serde::{Deserialize, Serialize};

use crate::{ClickHouseError, ClickHouseStore};

/// One row of `extras`. Field order = column order (RowBinary is positional).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct ExtrasRow {
    pub host: String,
    pub process: String,
    pub ts: i64,
    pub x: String,
    pub version: u64,
}

/// A queried row: the columns without `version`.
#[derive(Debug, Clone, Row, Deserialize)]
struct ExtrasOut {
    host: String,
    process: String,
    ts: i64,
    x: String,
}

/// The `CREATE TABLE` statements of `extras` (see `schema::ddl` for the shapes).
pub fn ddl(cluster: Option<&str>, db: &str) -> Vec<String> {
    let on = cluster.map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
    let day = "toDate(toDateTime(intDiv(ts, 1000)))";
    let cols = "(host String, process String, ts Int64, x String, version UInt64)";
    match cluster {
        Some(c) => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.extras_local{on} {cols} ENGINE = \
                 ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/extras_local', \
                 '{{replica}}', version) PARTITION BY {day} ORDER BY (host, process, ts)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.extras{on} AS {db}.extras_local \
                 ENGINE = Distributed({c}, {db}, extras_local, cityHash64(host))"
            ),
        ],
        None => vec![format!(
            "CREATE TABLE IF NOT EXISTS {db}.extras {cols} ENGINE = ReplacingMergeTree(version) \
             PARTITION BY {day} ORDER BY (host, process, ts)"
        )],
    }
}

/// The extras rows of a batch.
pub fn rows(batch: &Batch) -> Result<Vec<ExtrasRow>, ClickHouseError> {
    let mut out = Vec::new();
    for s in &batch.samples {
        let Some(x) = s.extras.as_deref().filter(|x| !x.is_empty()) else { continue };
        let x = serde_json::to_string(x)
            .map_err(|e| ClickHouseError::Corrupt(format!("extras of {:?}: {e}", s.process)))?;
        out.push(ExtrasRow {
            host: batch.host.clone(),
            process: s.process.clone(),
            ts: s.ts,
            x,
            version: batch.seq,
        });
    }
    Ok(out)
}

/// `Storage::extras_window`: rows above the retention floor, sorted by (host, process, ts).
pub async fn window(
    st: &ClickHouseStore,
    q: &UsageQuery,
) -> Result<Vec<ExtrasRecord>, ClickHouseError> {
    let from = q.from.max(st.floor());
    if q.to <= from {
        return Ok(Vec::new());
    }
    let sql = crate::sql::window_of(
        st.db(),
        "extras",
        "host, process, ts, x",
        q.host.is_some(),
        q.process.is_some(),
    );
    let query = crate::queries::bind_window(st.client.query(&sql), from, q);
    let rows = st.run(query.fetch_all::<ExtrasOut>()).await?;
    rows.into_iter()
        .map(|r| {
            let extras: Extras = serde_json::from_str(&r.x).map_err(|e| {
                ClickHouseError::Corrupt(format!("extras of {:?}/{:?}: {e}", r.host, r.process))
            })?;
            Ok(ExtrasRecord { host: r.host, process: r.process, ts: r.ts, extras })
        })
        .collect()
}
