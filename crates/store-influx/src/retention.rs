//! `apply_retention()`: what the retention policy does not already drop (see the crate doc,
//! "Retention").

use procwatch_model::TsMs;
use procwatch_store::StoreResult;

use crate::influxql::{ident, tag_eq};
use crate::line;
use crate::schema::{ALARM, BATCH, HOST, PROC};
use crate::InfluxStore;

/// How much earlier than "now − RP duration" a retention cutoff may be and still be left to
/// the retention policy.
const RP_SLACK_MS: i64 = 5 * 60_000;

impl InfluxStore {
    pub(crate) async fn apply_retention_inner(&self, cutoff: TsMs) -> StoreResult<u64> {
        let s = self.schema().await?;
        if !s.managed {
            return Ok(0);
        }
        let rp = s.data_rp.as_deref();
        let mut stmts = Vec::new();
        let mut samples = 0;
        // The retention policy drops what is older than its duration (by whole shards): only a
        // cutoff more recent than that needs DELETEs (tests, or a --retention under 1 h).
        let rp_cutoff = self.clock.now_ms() - self.rp_duration().as_millis() as i64 + RP_SLACK_MS;
        if cutoff > rp_cutoff {
            let (n, totals) = self.count_older(rp, cutoff).await?;
            samples = n;
            if n > 0 {
                stmts.push(format!("DELETE FROM {} WHERE time < {cutoff}ms", ident(PROC)));
            }
            if totals > 0 {
                stmts.push(format!("DELETE FROM {} WHERE time < {cutoff}ms", ident(HOST)));
            }
            stmts.push(crate::extras::delete_older(cutoff));
        }
        for h in self.hosts_inner().await? {
            if h.last_seen < cutoff {
                // Its cached bookkeeping goes with it: a batch after this starts afresh.
                self.host_locks.lock().expect("host locks").remove(&h.host);
                stmts.push(format!(
                    "DROP SERIES FROM {} WHERE {}",
                    ident(BATCH),
                    tag_eq("host", &h.host)
                ));
            }
        }
        let closed = format!(
            "SELECT \"end\", \"id\" FROM {} WHERE \"open\" = false AND \"end\" < {cutoff}",
            self.from(s.events_rp.as_deref(), ALARM)
        );
        let res = self.client.query(self.db(), &closed).await?;
        let ids: Vec<String> = res
            .first()
            .map(|r| r.series.as_slice())
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.rows())
            .filter_map(|r| r.str("id").map(|id| line::decode_tag_value(id).into_owned()))
            .collect();
        for chunk in ids.chunks(200) {
            let conds: Vec<String> = chunk.iter().map(|id| tag_eq("id", id)).collect();
            stmts.push(format!("DROP SERIES FROM {} WHERE {}", ident(ALARM), conds.join(" OR ")));
        }
        if !stmts.is_empty() {
            self.client.query(self.db(), &stmts.join("; ")).await?;
        }
        Ok(samples)
    }

    /// Samples and host totals older than `cutoff`.
    pub(crate) async fn count_older(
        &self,
        rp: Option<&str>,
        cutoff: TsMs,
    ) -> StoreResult<(u64, u64)> {
        let counts = format!(
            "SELECT count(\"cpu\") AS n FROM {} WHERE time < {cutoff}ms; \
             SELECT count(\"cpu\") AS n FROM {} WHERE time < {cutoff}ms",
            self.from(rp, PROC),
            self.from(rp, HOST)
        );
        let res = self.client.query(self.db(), &counts).await?;
        let count = |i: usize| -> u64 {
            res.get(i)
                .and_then(|r| r.series.first())
                .and_then(|s| s.rows().next().and_then(|r| r.u64("n")))
                .unwrap_or(0)
        };
        Ok((count(0), count(1)))
    }
}
