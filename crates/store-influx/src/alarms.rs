//! Alarm events (measurement `alarm_event`, in the events retention policy).

use std::collections::BTreeMap;

use procwatch_model::AlarmEvent;
use procwatch_store::memory::{alarm_matches, sort_newest_first};
use procwatch_store::{AlarmQuery, StoreError, StoreResult};

use crate::influxql::tag_eq;
use crate::ingest::check_name;
use crate::line::{write_point, Field};
use crate::schema::ALARM;
use crate::InfluxStore;

impl InfluxStore {
    pub(crate) async fn put_alarm_event_inner(&self, e: &AlarmEvent) -> StoreResult<()> {
        if e.id.is_empty() {
            return Err(StoreError::InvalidInput("alarm event without id".into()));
        }
        check_name("alarm id", &e.id)?;
        let s = self.schema().await?;
        let json = serde_json::to_string(e).map_err(|err| StoreError::Other(Box::new(err)))?;
        let mut line = String::new();
        write_point(
            &mut line,
            ALARM,
            &[("host", &e.host), ("id", &e.id), ("metric", e.metric.as_str())],
            &[
                ("event", Field::Str(&json)),
                ("process", Field::Str(&e.process)),
                ("level", Field::Str(e.level.as_str())),
                ("open", Field::Bool(e.end.is_none())),
                ("end", Field::Int(e.end.unwrap_or(0))),
            ],
            e.start,
        );
        self.client.write(&self.cfg.db, s.events_rp.as_deref(), &line).await
    }

    pub(crate) async fn alarm_events_inner(&self, q: &AlarmQuery) -> StoreResult<Vec<AlarmEvent>> {
        let s = self.schema().await?;
        let mut conds = Vec::new();
        if let Some(f) = q.from {
            conds.push(format!("time >= {f}ms"));
        }
        if let Some(t) = q.to {
            conds.push(format!("time < {t}ms"));
        }
        if let Some(h) = &q.host {
            conds.push(tag_eq("host", h));
        }
        if let Some(m) = q.metric {
            conds.push(tag_eq("metric", m.as_str()));
        }
        if q.active_only {
            conds.push("\"open\" = true".into());
        }
        let mut stmt =
            format!("SELECT \"event\" FROM {}", self.from(s.events_rp.as_deref(), ALARM));
        if !conds.is_empty() {
            stmt = format!("{stmt} WHERE {}", conds.join(" AND "));
        }
        let res = self.client.query(self.db(), &stmt).await?;
        let mut by_id: BTreeMap<String, AlarmEvent> = BTreeMap::new();
        for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            for r in series.rows() {
                let Some(json) = r.str("event") else { continue };
                match serde_json::from_str::<AlarmEvent>(json) {
                    Ok(e) if alarm_matches(q, &e) => {
                        by_id.insert(e.id.clone(), e);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!("influxdb: unreadable alarm event: {err}"),
                }
            }
        }
        let mut v: Vec<AlarmEvent> = by_id.into_values().collect();
        sort_newest_first(&mut v);
        if q.limit > 0 {
            v.truncate(q.limit);
        }
        Ok(v)
    }
}
