//! The schema the store finds or creates in InfluxDB: measurements, the database, the
//! retention policies (see the crate doc, "Schema" and "Retention").

use std::sync::Arc;
use std::time::Duration;

use procwatch_model::Sample;
use procwatch_store::{StoreError, StoreResult};

use crate::influxql::{self, ident};
use crate::{InfluxStore, DEFAULT_RP};

pub(crate) const PROC: &str = "proc";
pub(crate) const HOST: &str = "host";
pub(crate) const BATCH: &str = "batch";
pub(crate) const ALARM: &str = "alarm_event";
/// One point per directive change of the control channel (`directives.rs`).
pub(crate) const DIRECTIVE: &str = "directive";
/// One point per retirement of a host (`retire_host`): field `at`.
pub(crate) const RETIRED: &str = "retired_host";
pub(crate) const METRICS: [&str; 4] = ["cpu", "cores", "mem", "rss"];
pub(crate) const SAMPLE_COLS: &str = r#""cpu", "cores", "mem", "rss", "count""#;

/// What the store found or created in InfluxDB.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    /// RP of samples, host totals and batch metadata (`None`: the database's default).
    pub(crate) data_rp: Option<String>,
    /// RP of alarm events.
    pub(crate) events_rp: Option<String>,
    /// Whether the store created/ALTERs the RPs (1.x) and may DELETE.
    pub(crate) managed: bool,
}

/// Shard duration for a retention (see the crate doc).
fn shard_duration(retention: Duration) -> &'static str {
    let days = retention.as_secs_f64() / 86_400.0;
    if days <= 2.0 {
        "1h"
    } else if days <= 180.0 {
        "1d"
    } else {
        "7d"
    }
}

/// A sample from a row of `SELECT {SAMPLE_COLS}` on `proc`.
pub(crate) fn sample_from_row(process: &str, r: &influxql::Row<'_>) -> Sample {
    Sample {
        ts: r.time(),
        process: process.to_string(),
        cpu: r.f64("cpu").unwrap_or(0.0),
        cores: r.f64("cores").unwrap_or(0.0),
        mem: r.f64("mem").unwrap_or(0.0),
        rss: r.u64("rss").unwrap_or(0),
        count: r.u64("count").unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        extras: None,
    }
}

impl InfluxStore {
    /// The database, for `/query`.
    pub(crate) fn db(&self) -> Option<&str> {
        Some(&self.cfg.db)
    }

    /// The schema, checked (and created) on first use and again after an `Unavailable`.
    pub(crate) async fn schema(&self) -> StoreResult<Arc<Schema>> {
        if let Some(s) = self.schema.lock().expect("schema lock").clone() {
            return Ok(s);
        }
        let _g = self.init_lock.lock().await;
        if let Some(s) = self.schema.lock().expect("schema lock").clone() {
            return Ok(s);
        }
        let s = Arc::new(self.init().await?);
        *self.schema.lock().expect("schema lock") = Some(s.clone());
        Ok(s)
    }

    pub(crate) async fn init(&self) -> StoreResult<Schema> {
        self.client.ping().await?;
        let db = ident(&self.cfg.db);
        match self.client.query(None, &format!("CREATE DATABASE {db}")).await {
            Ok(_) => {}
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    "influxdb: cannot create database {db} ({e}); assuming InfluxDB 2.x/3.x with \
                     a DBRP mapping: retention is the bucket's"
                );
                return Ok(Schema {
                    data_rp: self.cfg.rp.clone(),
                    events_rp: self.cfg.rp.clone(),
                    managed: false,
                });
            }
        }
        let rp = self.cfg.rp.clone().unwrap_or_else(|| DEFAULT_RP.to_string());
        let secs = self.rp_duration().as_secs();
        let shard = shard_duration(self.cfg.retention);
        let create = format!(
            "CREATE RETENTION POLICY {} ON {db} DURATION {secs}s REPLICATION 1 SHARD DURATION \
             {shard} DEFAULT",
            ident(&rp)
        );
        match self.client.query(None, &create).await {
            Ok(_) => {}
            Err(StoreError::Other(e)) if e.to_string().contains("already exists") => {
                let alter = format!(
                    "ALTER RETENTION POLICY {} ON {db} DURATION {secs}s SHARD DURATION {shard} \
                     DEFAULT",
                    ident(&rp)
                );
                self.client.query(None, &alter).await?;
                tracing::info!("influxdb: retention policy {rp} set to {secs}s and made default");
            }
            Err(e) => return Err(e),
        }
        let events_rp = format!("{rp}_events");
        let create_events = format!(
            "CREATE RETENTION POLICY {} ON {db} DURATION INF REPLICATION 1",
            ident(&events_rp)
        );
        match self.client.query(None, &create_events).await {
            Ok(_) => {}
            Err(StoreError::Other(e)) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e),
        }
        Ok(Schema { data_rp: Some(rp), events_rp: Some(events_rp), managed: true })
    }

    /// A measurement qualified with its database and retention policy.
    pub(crate) fn from(&self, rp: Option<&str>, measurement: &str) -> String {
        match rp {
            Some(rp) => format!("{}.{}.{}", ident(&self.cfg.db), ident(rp), ident(measurement)),
            None => ident(measurement),
        }
    }

    /// The retention policy's duration (InfluxDB's minimum is 1 h).
    pub(crate) fn rp_duration(&self) -> Duration {
        Duration::from_secs(self.cfg.retention.as_secs().max(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_durations() {
        assert_eq!(shard_duration(Duration::from_secs(48 * 3600)), "1h");
        assert_eq!(shard_duration(Duration::from_secs(7 * 86_400)), "1d");
        assert_eq!(shard_duration(Duration::from_secs(365 * 86_400)), "7d");
    }
}
