//! Shard-aware writes: a batch's data goes straight to its shard's local tables
//! (`samples_local`, `host_totals_local`, `extras_local`) on one of the shard's replicas,
//! skipping the `Distributed` hop, when the configuration names every shard's replicas
//! ([`crate::ClickHouseConfig::shard_urls`]).
//!
//! **Where a host goes.** The `Distributed` tables are sharded by `cityHash64(host)` (see
//! `schema`): ClickHouse takes the key modulo the sum of the shards' weights and gives each
//! shard, in the order of `<remote_servers>`, as many consecutive slots as its weight.
//! [`ShardMap`] does the same with ClickHouse's CityHash (v1.0.2, the `ch_cityhash102` crate; the
//! current Google CityHash differs), reading the weights from `system.clusters` at connect, so a
//! host's rows land where a `Distributed` insert would have put them and every read through
//! the `Distributed` tables (and `FINAL` per shard) stays exact. `tests/shard_routing.rs` checks
//! the function against the real cluster's `cityHash64` and its placement of rows.
//!
//! **Which replica.** The first of the shard's replicas in cluster order, the one
//! `load_balancing=in_order` reads from, so a batch is readable through the `Distributed`
//! tables as soon as it is acknowledged; on a connection error or timeout the next (and that
//! replica is passed over for [`AVOID_FOR`] after such an error, by the store's clock). What
//! is resent is the same INSERT (the same rows in the same order, so the same block): if the
//! first replica had committed it before the connection broke, the other replica finds its
//! block id in the shard's ZooKeeper log and stores nothing (`insert_deduplicate=1`). The
//! guarantee is the one the `Distributed` insert with `insert_distributed_sync=1` gave: a 2xx
//! means the rows are written on a replica of their shard and committed in ZooKeeper, from
//! where the other replica fetches them.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use procwatch_model::clock::Clock;
use std::sync::Arc;

use crate::group::Rows;
use crate::{ClickHouseError, Conn};

/// How long a replica that failed with a connection error is passed over (the next replica of
/// its shard takes the writes), unless it is the last one left to try.
pub const AVOID_FOR: Duration = Duration::from_secs(5);

/// ClickHouse's `cityHash64` of a `String` value (CityHash v1.0.2 of its bytes).
pub fn city_hash64(bytes: &[u8]) -> u64 {
    ch_cityhash102::cityhash64(bytes)
}

/// A host's shard as the `Distributed` tables' sharding key `cityHash64(host)` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// Slot (key modulo the total weight) to shard index (0-based, in cluster order).
    slots: Vec<usize>,
}

impl ShardMap {
    /// The map of shards with these weights, in cluster order (`None` when there is no shard
    /// or every weight is 0).
    pub fn new(weights: &[u64]) -> Option<Self> {
        let slots: Vec<usize> = weights
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| std::iter::repeat_n(i, w as usize))
            .collect();
        (!slots.is_empty()).then_some(ShardMap { slots })
    }

    /// Shards in the map.
    pub fn shards(&self) -> usize {
        self.slots.last().map_or(0, |s| s + 1)
    }

    /// The shard index (0-based, cluster order) of `host`.
    pub fn shard_of(&self, host: &str) -> usize {
        let slot = city_hash64(host.as_bytes()) % self.slots.len() as u64;
        self.slots[slot as usize]
    }
}

/// One shard's replicas, in cluster order, with the failover between them.
pub(crate) struct Replicas {
    conns: Vec<Conn>,
    clock: Arc<dyn Clock>,
    /// Per replica: passed over until then (after a connection error).
    avoid_until: Mutex<Vec<Option<Instant>>>,
}

impl Replicas {
    /// The replicas (at least one) in cluster order.
    pub(crate) fn new(conns: Vec<Conn>, clock: Arc<dyn Clock>) -> Self {
        let n = conns.len();
        Replicas { conns, clock, avoid_until: Mutex::new(vec![None; n]) }
    }

    /// The order to try the replicas in now: cluster order, those passed over last.
    fn order(&self) -> Vec<usize> {
        let now = self.clock.instant();
        let avoid = self.avoid_until.lock();
        let (mut ok, passed): (Vec<usize>, Vec<usize>) =
            (0..self.conns.len()).partition(|&i| avoid[i].is_none_or(|t| now >= t));
        ok.extend(passed);
        ok
    }

    /// Inserts `rows` into `table` on the first replica that takes them.
    async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), ClickHouseError>
    where
        T: clickhouse::RowWrite + clickhouse::RowOwned,
    {
        let order = self.order();
        let mut last = None;
        for (k, &i) in order.iter().enumerate() {
            match self.conns[i].insert(table, rows).await {
                Ok(()) => {
                    self.avoid_until.lock()[i] = None;
                    return Ok(());
                }
                Err(e) if e.is_connection() && k + 1 < order.len() => {
                    tracing::warn!(
                        error = %e,
                        "clickhouse: a replica cannot be reached; writing its shard's data to \
                         the next replica"
                    );
                    self.avoid_until.lock()[i] = Some(self.clock.instant() + AVOID_FOR);
                    last = Some(e);
                }
                Err(e) => {
                    if e.is_connection() {
                        self.avoid_until.lock()[i] = Some(self.clock.instant() + AVOID_FOR);
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClickHouseError::Config("a shard without replicas".into())))
    }

    /// A group's rows into the shard's local tables: samples (host totals included) and extras
    /// at once (independent inserts; without extras, one).
    pub(crate) async fn insert_rows(&self, rows: &Rows) -> Result<(), ClickHouseError> {
        let (a, b) = tokio::join!(
            self.insert("samples_local", &rows.samples),
            self.insert("extras_local", &rows.extras)
        );
        a?;
        b
    }
}

/// A row of `system.clusters` as the checks read it.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ClusterRow {
    shard: u64,
    weight: u64,
    #[allow(dead_code)] // read for the row's layout (RowBinary is positional)
    replica: u64,
}

/// `(shard_num, shard_weight, replica_num)` of the cluster's rows (all of them, or only the
/// node's own with `local`). Binds: cluster.
fn cluster_rows_sql(local: bool) -> String {
    format!(
        "SELECT toUInt64(shard_num), toUInt64(shard_weight), toUInt64(replica_num) \
         FROM system.clusters WHERE cluster = ?{} ORDER BY shard_num, replica_num",
        if local { " AND is_local" } else { "" }
    )
}

/// The node's replica name of `samples_local` (its `{replica}` macro). Binds: db.
const REPLICA_NAME_SQL: &str =
    "SELECT replica_name FROM system.replicas WHERE database = ? AND table = 'samples_local'";

/// The shard map and each shard's replicas for `cfg.shard_urls`, checked against the cluster
/// as `base` (the store's node) and every named node see it: one entry per shard, in cluster
/// order, each URL a replica of that shard, no replica twice. (That a shard's replicas are in
/// cluster order, which makes the first the one reads go to, is the operator's to get right:
/// 18.16 does not show a node its own position; a wrong order only delays read-your-writes by
/// the replication lag.) `None` when no shard URL is set.
pub(crate) async fn connect(
    base: &Conn,
    cfg: &crate::ClickHouseConfig,
    clock: &Arc<dyn Clock>,
) -> Result<Option<(ShardMap, Vec<Replicas>)>, ClickHouseError> {
    if cfg.shard_urls.is_empty() {
        return Ok(None);
    }
    let bad = |m: String| ClickHouseError::Config(format!("shard URLs: {m}"));
    let rows: Vec<ClusterRow> = base
        .run(base.client.query(&cluster_rows_sql(false)).bind(&cfg.cluster).fetch_all())
        .await?;
    let mut weights: Vec<u64> = Vec::new();
    for r in &rows {
        if r.shard as usize == weights.len() + 1 {
            weights.push(r.weight);
        } else if r.shard as usize != weights.len() {
            return Err(bad(format!("cluster {} has shard numbers out of order", cfg.cluster)));
        }
    }
    if weights.len() != cfg.shard_urls.len() {
        return Err(bad(format!(
            "cluster {} has {} shards, {} were given",
            cfg.cluster,
            weights.len(),
            cfg.shard_urls.len()
        )));
    }
    let map = ShardMap::new(&weights)
        .ok_or_else(|| bad(format!("cluster {} has no shard of weight > 0", cfg.cluster)))?;
    let mut shards = Vec::new();
    for (i, urls) in cfg.shard_urls.iter().enumerate() {
        if urls.is_empty() {
            return Err(bad(format!("shard {} has no replica", i + 1)));
        }
        let (mut conns, mut names) = (Vec::new(), Vec::new());
        for url in urls {
            let conn = Conn {
                client: base.client.clone().with_url(url.clone()),
                url: url.clone(),
                timeout: base.timeout,
                db: base.db.clone(),
            };
            // 18.16 marks every replica of the node's own shard `is_local`, so this checks
            // the shard; the replica's position is not visible there (its replica name is).
            let own: Vec<ClusterRow> = conn
                .run(conn.client.query(&cluster_rows_sql(true)).bind(&cfg.cluster).fetch_all())
                .await?;
            if own.is_empty() || own.iter().any(|r| r.shard != (i + 1) as u64) {
                let is: Vec<u64> = own.iter().map(|r| r.shard).collect();
                return Err(bad(format!(
                    "{url} was given as a replica of shard {} of cluster {}, but its local \
                     shard there is {is:?}",
                    i + 1,
                    cfg.cluster
                )));
            }
            let name: String =
                conn.run(conn.client.query(REPLICA_NAME_SQL).bind(&base.db).fetch_one()).await?;
            if names.contains(&name) {
                return Err(bad(format!("{url} is replica {name:?} of shard {} again", i + 1)));
            }
            names.push(name);
            conns.push(conn);
        }
        shards.push(Replicas::new(conns, clock.clone()));
    }
    Ok(Some((map, shards)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn city_hash64_is_clickhouses_version() {
        // ClickHouse's own reference values (its docs: "ClickHouse64" column), which the
        // current Google CityHash does not give.
        assert_eq!(city_hash64(b"Moscow"), 12507901496292878638);
        assert_eq!(
            city_hash64(b"How can you write a big system without C++?  -Paul Glick"),
            6237945311650045625
        );
    }

    #[test]
    fn weights_give_consecutive_slots_in_cluster_order() {
        let map = ShardMap::new(&[1, 2]).expect("a map");
        assert_eq!(map.slots, vec![0, 1, 1]);
        assert_eq!(map.shards(), 2);
        assert!(ShardMap::new(&[]).is_none());
        assert!(ShardMap::new(&[0, 0]).is_none());
        let even = ShardMap::new(&[1, 1]).expect("a map");
        for host in ["a", "web-1", "fleet-042"] {
            assert_eq!(even.shard_of(host), (city_hash64(host.as_bytes()) % 2) as usize);
        }
    }
}
