//! The tables, as SQL that both ClickHouse 18.16 (Debian) and current releases accept.
//!
//! Per database:
//! - `samples_local` / `host_totals_local`: one `ReplicatedReplacingMergeTree` per node (ZooKeeper
//!   path per `{shard}`, so the two replicas of a shard hold the same rows), partitioned by day
//!   (`toDate`) so retention drops whole partitions (18.16 has no `TTL`), sorted by
//!   `(host, process, ts)` / `(host, ts)` so one host's series are contiguous and the fleet view
//!   reads each host's range in order. `version` is the batch `seq`: a rewrite of the same
//!   `(host, process, ts)` by a later batch replaces the row (queries read `FINAL`).
//!   **Host totals are written to `samples`** as process `''`, a name no batch can carry
//!   (`rows::SampleRow::host_total`: `cores` holds the unattributed CPU, `count` whether the
//!   agent sent it), so that a batch is one replicated INSERT (a part and a ZooKeeper commit
//!   per INSERT is what a small batch costs the cluster), not two; every sample query says
//!   `process != ''`. `host_totals_local` is still created and read (`sql::host_totals`): it
//!   holds what builds before that change wrote, until retention drops its days.
//! - `samples` / `host_totals`: `Distributed` tables over them, sharded by `cityHash64(host)`,
//!   so all of a host's rows live on one shard and `FINAL` per shard is exact.
//! - `hosts`, `alarm_events`, `meta`: small catalogs replicated on **every** node (one ZooKeeper
//!   path for the whole cluster), `ReplacingMergeTree` by a write version; read on the node the
//!   store talks to.
//!
//! Timestamps are `Int64` Unix milliseconds (18.16 has no `DateTime64`); no column `CODEC`
//! (18.16 has none: the default LZ4 applies).

/// The DDL statements creating database `db` on cluster `cluster`, in order. With `cluster ==
/// None` the equivalent single-node schema (`ReplacingMergeTree`, no `ON CLUSTER`, a `Merge`-free
/// plain table under the `Distributed` names) used to check the same shapes on a current
/// ClickHouse (chdb) that has no ZooKeeper.
pub fn ddl(cluster: Option<&str>, db: &str) -> Vec<String> {
    let on = cluster.map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
    // Per-shard engine (local tables) and cluster-wide engine (catalogs).
    let sharded = |table: &str, version: &str| match cluster {
        Some(_) => format!(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/{table}', \
             '{{replica}}', {version})"
        ),
        None => format!("ReplacingMergeTree({version})"),
    };
    let global = |table: &str| match cluster {
        Some(_) => format!(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/all/{db}/{table}', '{{replica}}', \
             version)"
        ),
        None => "ReplacingMergeTree(version)".to_string(),
    };
    let day = "toDate(toDateTime(intDiv(ts, 1000)))";
    // With a cluster the queries go to the `Distributed` tables; without, the local tables are
    // the only ones and carry the queried names.
    let (samples, totals) = match cluster {
        Some(_) => ("samples_local", "host_totals_local"),
        None => ("samples", "host_totals"),
    };
    let mut v = vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}{on}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{samples}{on} (host String, process String, \
             ts Int64, cpu Float64, cores Float64, mem Float64, rss UInt64, count UInt32, \
             version UInt64) ENGINE = {} PARTITION BY {day} ORDER BY (host, process, ts)",
            sharded(samples, "version")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{totals}{on} (host String, ts Int64, cpu Float64, \
             mem Float64, unattributed_cpu Float64, has_unattributed UInt8, version UInt64) \
             ENGINE = {} PARTITION BY {day} ORDER BY (host, ts)",
            sharded(totals, "version")
        ),
    ];
    if let Some(c) = cluster {
        for (dist, local) in [("samples", samples), ("host_totals", totals)] {
            v.push(format!(
                "CREATE TABLE IF NOT EXISTS {db}.{dist}{on} AS {db}.{local} \
                 ENGINE = Distributed({c}, {db}, {local}, cityHash64(host))"
            ));
        }
    }
    v.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.hosts{on} (host String, state String, version UInt64) \
         ENGINE = {} ORDER BY host",
        global("hosts")
    ));
    v.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.alarm_events{on} (id String, host String, start Int64, \
         open UInt8, event String, version UInt64) ENGINE = {} ORDER BY id",
        global("alarm_events")
    ));
    v.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.meta{on} (key String, value Int64, version UInt64) \
         ENGINE = {} ORDER BY key",
        global("meta")
    ));
    v.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.directives{on} (directive UInt64, at Int64, \
         record String, version UInt64) ENGINE = {} ORDER BY directive",
        global("directives")
    ));
    v.extend(crate::extras::ddl(cluster, db));
    v
}

/// Whether `name` is safe to splice into SQL as a database or cluster identifier.
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}
