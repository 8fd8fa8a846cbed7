//! Retention: the persisted retention floor and what drops below it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use procwatch_model::TsMs;
use procwatch_store::StoreResult;
use rusqlite::params;

use crate::catalog::HostEntry;
use crate::inner::Inner;
use crate::schema::db_err;

impl Inner {
    pub(crate) fn apply_retention(&self, cutoff: TsMs) -> StoreResult<u64> {
        if cutoff <= self.retention_floor.load(Ordering::SeqCst) {
            return Ok(0);
        }
        // Everything older than the cutoff must be in chunks before whole chunks are dropped.
        self.advance(cutoff)?;
        self.fold_late()?;
        let mut w = self.writer.lock();
        let tx = w.conn.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('retention_floor', ?1)",
            [cutoff],
        )
        .map_err(db_err)?;
        let removed: i64 = tx
            .query_row("SELECT COALESCE(SUM(n), 0) FROM chunks WHERE end_ts < ?1", [cutoff], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        tx.execute("DELETE FROM chunks WHERE end_ts < ?1", [cutoff]).map_err(db_err)?;
        crate::extras::delete_extras_before(&tx, cutoff)?;
        let hosts: Vec<Arc<HostEntry>> = self.catalog.read().hosts.values().cloned().collect();
        {
            let mut st = tx
                .prepare_cached("DELETE FROM host_totals WHERE host_id = ?1 AND ts < ?2")
                .map_err(db_err)?;
            for h in &hosts {
                st.execute(params![h.id, cutoff]).map_err(db_err)?;
            }
        }
        tx.execute("DELETE FROM alarms WHERE end_ts IS NOT NULL AND end_ts < ?1", [cutoff])
            .map_err(db_err)?;
        // A retirement older than the cutoff hides nothing any more: the host is gone.
        tx.execute("DELETE FROM retired_hosts WHERE at < ?1", [cutoff]).map_err(db_err)?;
        self.catalog.write().retired.retain(|_, at| *at >= cutoff);
        // Hosts silent since before the cutoff are forgotten (their seq history too).
        tx.execute(
            "UPDATE hosts SET last_seq = NULL, seq_gaps = 0, dropped = 0 WHERE last_seen < ?1",
            [cutoff],
        )
        .map_err(db_err)?;
        // Series left with no chunk, no roll-up and nothing in memory (so nothing in the head either)
        // are forgotten, so the catalog does not grow with every process name ever seen.
        let orphans: Vec<(u32, u32, String)> = {
            let mut st = tx
                .prepare_cached(
                    "SELECT id, host_id, process FROM series s WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.series_id = s.id) AND NOT EXISTS (SELECT 1 FROM rollups r WHERE r.series_id = s.id) AND NOT EXISTS (SELECT 1 FROM rollup_blocks b WHERE b.series_id = s.id)",
                )
                .map_err(db_err)?;
            let rows =
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db_err)?;
            let cat = self.catalog.read();
            let mut out = Vec::new();
            for row in rows {
                let (sid, hid, process): (u32, u32, String) = row.map_err(db_err)?;
                let in_memory = cat.by_id.get(&hid).is_some_and(|h| {
                    h.index.read().series.get(&process).is_some_and(|r| !r.c.is_empty())
                });
                if !in_memory {
                    out.push((sid, hid, process));
                }
            }
            out
        };
        {
            let mut st = tx.prepare_cached("DELETE FROM series WHERE id = ?1").map_err(db_err)?;
            for (sid, _, _) in &orphans {
                st.execute([sid]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        self.retention_floor.store(cutoff, Ordering::SeqCst);
        if !orphans.is_empty() {
            let mut cat = self.catalog.write();
            for (sid, hid, process) in &orphans {
                cat.series.remove(sid);
                if let Some(h) = cat.by_id.get(hid) {
                    h.series.write().remove(process);
                }
            }
        }
        for h in &hosts {
            let mut st = h.state.lock();
            if st.last_seen < cutoff {
                st.seq = None;
                st.dropped_samples = 0;
            }
            if st.latest.as_ref().is_some_and(|l| l.ts < cutoff) {
                st.latest = None;
            }
        }
        Ok(removed.max(0) as u64)
    }
}
