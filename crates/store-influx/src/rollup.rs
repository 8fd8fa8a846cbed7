//! Long-range history (`Storage::history_answer`) on InfluxDB: roll-ups by server-side
//! aggregation.
//!
//! InfluxDB keeps the raw samples for its retention policy (the store's `retention`, 48 h by
//! default) and procwatch creates no continuous query: a `"5m"` answer is
//! `SELECT mean/min/max … GROUP BY time(step)` over the raw samples, the range widened to
//! whole steps. InfluxDB aligns `GROUP BY time` buckets to the epoch, as the roll-up buckets
//! are, so the answer equals the embedded store's roll-ups over the same samples. A range
//! older than the retention policy has no samples left to aggregate: such history needs a
//! longer retention policy (or a continuous query into one, which procwatch does not manage).

use procwatch_store::rollup::{pick_resolution, rollup_range};
use procwatch_store::{HistoryAnswer, HistoryQuery, Resolution, StoreResult};

use crate::InfluxStore;

impl InfluxStore {
    /// See the module doc: raw at the query's step, or aggregated over whole steps.
    pub(crate) async fn history_answer_inner(
        &self,
        q: &HistoryQuery,
    ) -> StoreResult<HistoryAnswer> {
        let horizon = self.clock.now_ms() - self.cfg.retention.as_millis() as i64;
        let (resolution, step_ms) = pick_resolution(q, horizon);
        let q = match resolution {
            Resolution::Raw => q.clone(),
            Resolution::Rollup5m => {
                let (from, to) = rollup_range(q.from, q.to, step_ms);
                HistoryQuery { from, to, step_ms, ..q.clone() }
            }
        };
        Ok(HistoryAnswer { resolution, step_ms, points: self.history_inner(&q).await? })
    }
}
