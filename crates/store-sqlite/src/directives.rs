//! Directive changes of the control channel: one row per version, the record as JSON, kept
//! whatever its age (retention does not touch the table).

use procwatch_model::directive::DirectiveRecord;
use procwatch_store::StoreResult;
use rusqlite::params;

use crate::inner::Inner;
use crate::options::Durability;
use crate::schema::{db_err, other};

impl Inner {
    pub(crate) fn put_directive(&self, r: &DirectiveRecord) -> StoreResult<()> {
        let row = params![r.version as i64, r.at, serde_json::to_string(r).map_err(other)?];
        let sql = "INSERT OR REPLACE INTO directives(version, at, body) VALUES (?1, ?2, ?3)";
        let w = self.writer.lock();
        w.conn.execute(sql, row).map_err(db_err)?;
        if self.opts.durability == Durability::Power {
            let ticket = self.wal_sync.ticket();
            drop(w);
            self.sync_wal(ticket)?;
        }
        Ok(())
    }

    pub(crate) fn directives(&self) -> StoreResult<Vec<DirectiveRecord>> {
        let bodies = self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM directives ORDER BY version")
                .map_err(db_err)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db_err)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
        })?;
        bodies.iter().map(|b| serde_json::from_str(b).map_err(other)).collect()
    }
}
