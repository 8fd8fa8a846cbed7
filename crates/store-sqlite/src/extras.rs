//! The opt-in extra metrics (issue 19) in their own table, so the compact CPU/memory head ring
//! and chunks (and their bytes per sample) are unchanged when no extras are sent. One row per
//! (host, process, ts) that carried extras, the figures as JSON (a few dozen bytes), written in
//! the batch's transaction and dropped by retention.

use procwatch_model::extras::Extras;
use procwatch_model::{Batch, TsMs};
use procwatch_store::extras::ExtrasRecord;
use procwatch_store::{StoreResult, UsageQuery};
use rusqlite::{params, Transaction};

use crate::inner::Inner;
use crate::schema::{db_err, other};

pub(crate) const EXTRAS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS extras(host_id INTEGER NOT NULL, process TEXT NOT NULL,
  ts INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY(host_id, process, ts)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS extras_ts ON extras(ts);
";

/// Writes the extras of `batch`'s samples at or after `rfloor` inside the batch's transaction.
pub(crate) fn write_extras(
    tx: &Transaction,
    host_id: u32,
    batch: &Batch,
    rfloor: TsMs,
) -> StoreResult<()> {
    let mut st = None;
    for s in batch.samples.iter().filter(|s| s.ts >= rfloor) {
        let Some(x) = s.extras.as_deref().filter(|x| !x.is_empty()) else { continue };
        if st.is_none() {
            st = Some(
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO extras(host_id, process, ts, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db_err)?,
            );
        }
        let body = serde_json::to_string(x).map_err(other)?;
        if let Some(st) = st.as_mut() {
            st.execute(params![host_id, s.process, s.ts, body]).map_err(db_err)?;
        }
    }
    Ok(())
}

/// Drops extras older than `cutoff` (inside the retention transaction).
pub(crate) fn delete_extras_before(tx: &Transaction, cutoff: TsMs) -> StoreResult<()> {
    tx.execute("DELETE FROM extras WHERE ts < ?1", [cutoff]).map_err(db_err)?;
    Ok(())
}

impl Inner {
    pub(crate) fn extras_window(&self, q: &UsageQuery) -> StoreResult<Vec<ExtrasRecord>> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT h.name, e.process, e.ts, e.body FROM extras e JOIN hosts h ON h.id = e.host_id \
                     WHERE e.ts >= ?1 AND e.ts < ?2 AND (?3 IS NULL OR h.name = ?3) \
                     AND (?4 IS NULL OR e.process = ?4) ORDER BY h.name, e.process, e.ts",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![q.from, q.to, q.host, q.process], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (host, process, ts, body) = row.map_err(db_err)?;
                let extras: Extras = serde_json::from_str(&body).map_err(other)?;
                out.push(ExtrasRecord { host, process, ts, extras });
            }
            Ok(out)
        })
    }
}
