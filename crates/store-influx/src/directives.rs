//! Directive changes of the control channel (measurement `directive`, in the events retention
//! policy, whose duration is infinite when the store manages it): one point per version,
//! tagged `version`, at the change's time, the record as JSON in field `record`. Read back
//! whole, deduplicated by version (the newest point wins: a version put again replaces it).

use std::collections::BTreeMap;

use procwatch_model::directive::DirectiveRecord;
use procwatch_store::{StoreError, StoreResult};

use crate::line::{write_point, Field};
use crate::schema::DIRECTIVE;
use crate::InfluxStore;

impl InfluxStore {
    pub(crate) async fn put_directive_inner(&self, r: &DirectiveRecord) -> StoreResult<()> {
        let s = self.schema().await?;
        let json = serde_json::to_string(r).map_err(|e| StoreError::Other(Box::new(e)))?;
        let mut line = String::new();
        let version = r.version.to_string();
        write_point(
            &mut line,
            DIRECTIVE,
            &[("version", &version)],
            &[("record", Field::Str(&json))],
            r.at,
        );
        self.client.write(&self.cfg.db, s.events_rp.as_deref(), &line).await
    }

    pub(crate) async fn directives_inner(&self) -> StoreResult<Vec<DirectiveRecord>> {
        let s = self.schema().await?;
        let stmt =
            format!("SELECT \"record\" FROM {}", self.from(s.events_rp.as_deref(), DIRECTIVE));
        let res = self.client.query(self.db(), &stmt).await?;
        let mut by_version = BTreeMap::new();
        for series in res.first().map(|r| r.series.as_slice()).unwrap_or_default() {
            // Rows come oldest first: a later point of a version replaces an earlier one.
            for row in series.rows() {
                let Some(json) = row.str("record") else { continue };
                match serde_json::from_str::<DirectiveRecord>(json) {
                    Ok(d) => {
                        by_version.insert(d.version, d);
                    }
                    Err(err) => tracing::warn!("influxdb: unreadable directive: {err}"),
                }
            }
        }
        Ok(by_version.into_values().collect())
    }
}
