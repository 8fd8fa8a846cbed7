//! Alarm events: stored as JSON, filtered and sorted like the reference store.

use procwatch_model::AlarmEvent;
use procwatch_store::memory::{alarm_matches, sort_newest_first};
use procwatch_store::{AlarmQuery, StoreResult};
use rusqlite::params;

use crate::inner::Inner;
use crate::schema::{db_err, other};

impl Inner {
    pub(crate) fn put_alarm_event(&self, e: &AlarmEvent) -> StoreResult<()> {
        let body = serde_json::to_string(e).map_err(other)?;
        let w = self.writer.lock();
        w.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO alarms(id, start, end_ts, host, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![e.id, e.start, e.end, e.host, body]))
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) fn alarm_events(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let mut v = self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM alarms WHERE start >= ?1 AND start < ?2 AND (?3 IS NULL OR host = ?3) AND (?4 = 0 OR end_ts IS NULL)",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(
                    params![
                        q.from.unwrap_or(i64::MIN),
                        q.to.unwrap_or(i64::MAX),
                        q.host,
                        q.active_only
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(db_err)?;
            let mut out = Vec::new();
            for body in rows {
                let e: AlarmEvent = serde_json::from_str(&body.map_err(db_err)?).map_err(other)?;
                if alarm_matches(q, &e) {
                    out.push(e);
                }
            }
            Ok(out)
        })?;
        sort_newest_first(&mut v);
        if q.limit > 0 {
            v.truncate(q.limit);
        }
        Ok(v)
    }
}
