//! Every statement the store sends besides the DDL (`schema`), in one place, with `?` where the
//! client binds a value. Public so that `tests/chdb.rs` can run the same shapes on a current
//! ClickHouse (chdb) as the cluster runs on 18.16.

/// Columns of a queried sample (`rows::SampleRow`, the columns of `samples`).
pub const SAMPLE_COLUMNS: &str = "host, process, ts, cpu, cores, mem, rss, count, version";

/// Every query of samples keeps to this condition: host totals share the table as process `''`
/// (`rows::HOST_TOTAL_PROCESS`), a name no batch can carry.
const NOT_TOTAL: &str = "process != ''";

/// Raw samples in `[?, ?)`, optionally of one host and/or process, newest version of each key,
/// sorted per series. Binds: from, to, [host], [process].
pub fn samples_window(db: &str, host: bool, process: bool) -> String {
    window_of(db, "samples", SAMPLE_COLUMNS, host, process)
}

/// `columns` of `table` in `[?, ?)` as [`samples_window`] reads `samples` (also `extras`).
pub fn window_of(db: &str, table: &str, columns: &str, host: bool, process: bool) -> String {
    let mut sql = format!(
        "SELECT {columns} FROM {db}.{table} FINAL WHERE ts >= ? AND ts < ? AND {NOT_TOTAL}"
    );
    if host {
        sql.push_str(" AND host = ?");
    }
    if process {
        sql.push_str(" AND process = ?");
    }
    sql.push_str(" ORDER BY host, process, ts");
    sql
}

/// Whether a series has any sample at or above the floor. Binds: host, process, floor.
pub fn series_known(db: &str) -> String {
    format!(
        "SELECT count() FROM {db}.samples WHERE host = ? AND process = ? AND ts >= ? \
         AND {NOT_TOTAL}"
    )
}

/// Host totals of one host in `[?, ?)`: the rows of `samples` with process `''`
/// (`rows::SampleRow::host_total`) and those that builds before that change wrote to
/// `host_totals`, sorted by `ts` then `version` (the caller keeps the last of each `ts`).
/// Binds: host, from, to, host, from, to.
pub fn host_totals(db: &str) -> String {
    format!(
        "SELECT host, ts, cpu, mem, unattributed_cpu, has_unattributed, version FROM (\
         SELECT host, ts, cpu, mem, cores AS unattributed_cpu, toUInt8(count) AS \
         has_unattributed, version FROM {db}.samples FINAL WHERE host = ? AND process = '' \
         AND ts >= ? AND ts < ? \
         UNION ALL SELECT host, ts, cpu, mem, unattributed_cpu, has_unattributed, version \
         FROM {db}.host_totals FINAL WHERE host = ? AND ts >= ? AND ts < ?) ORDER BY ts, version"
    )
}

/// The newest bookkeeping row of one host. Binds: host.
pub fn host_state(db: &str) -> String {
    format!("SELECT state FROM {db}.hosts WHERE host = ? ORDER BY version DESC LIMIT 1")
}

/// The newest bookkeeping row of every host.
pub fn hosts(db: &str) -> String {
    format!("SELECT host, argMax(state, version) FROM {db}.hosts GROUP BY host ORDER BY host")
}

/// Directive changes of the control channel, newest row of each, by directive version.
pub fn directives(db: &str) -> String {
    format!("SELECT directive, at, record, version FROM {db}.directives FINAL ORDER BY directive")
}

/// Alarm events, newest version of each id, with the filters given. Binds: [host], [from],
/// [to].
pub fn alarm_events(db: &str, active_only: bool, host: bool, from: bool, to: bool) -> String {
    let mut sql =
        format!("SELECT id, host, start, open, event, version FROM {db}.alarm_events FINAL");
    let conds: Vec<&str> =
        [(active_only, "open = 1"), (host, "host = ?"), (from, "start >= ?"), (to, "start < ?")]
            .into_iter()
            .filter_map(|(on, c)| on.then_some(c))
            .collect();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql
}

/// The retention floor (0 when none was ever set: `max` over no rows).
pub fn retention_floor(db: &str) -> String {
    format!("SELECT max(value) FROM {db}.meta WHERE key = 'retention_floor'")
}

/// Samples between the old floor and the cutoff (what retention removes). Binds: old floor,
/// cutoff.
pub fn retention_count(db: &str) -> String {
    format!("SELECT count() FROM {db}.samples WHERE ts >= ? AND ts < ? AND {NOT_TOTAL}")
}

/// The day partitions of `table` holding rows before `?` (a day start).
pub fn old_days(db: &str, table: &str) -> String {
    format!(
        "SELECT DISTINCT toString(toDate(toDateTime(intDiv(ts, 1000)))) FROM {db}.{table} \
         WHERE ts < ?"
    )
}

/// Drops one day partition (`day` as `YYYY-MM-DD`, from [`old_days`]) of a local table, on
/// every node of `cluster` (`None`: this node only).
pub fn drop_day(db: &str, table: &str, cluster: Option<&str>, day: &str) -> String {
    let on = cluster.map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
    format!("ALTER TABLE {db}.{table}{on} DROP PARTITION '{day}'")
}

/// Deletes closed alarm events that ended before `cutoff` (a replicated mutation).
pub fn delete_old_alarms(db: &str, cutoff: i64) -> String {
    format!(
        "ALTER TABLE {db}.alarm_events DELETE WHERE open = 0 AND \
         visitParamExtractInt(event, 'end') < {cutoff}"
    )
}

/// Replicated tables of the database that are read-only (ZooKeeper unreachable). Binds: db.
pub const READONLY_REPLICAS: &str =
    "SELECT count() FROM system.replicas WHERE database = ? AND is_readonly";

/// The five statistics of one metric column `c` over a group, in the order of
/// `rows::UsageOut`: mean, min, max, last (at the newest `ts`) and p95 — numpy's linear
/// percentile, `s[lo] + (s[hi] - s[lo]) * (r - lo)` with `r = 0.95 * (n - 1)` over the sorted
/// values, the same floating-point steps as `procwatch_store::agg::percentile_sorted`.
fn stats_columns(c: &str, name: &str) -> String {
    let r = "(0.95 * (count() - 1))";
    let at = |i: &str| format!("arrayElement(s_{name}, toUInt64({i}({r})) + 1)");
    format!(
        "avg({c}), min({c}), max({c}), argMax({c}, ts), \
         arrayElement(arraySort(groupArray({c})) AS s_{name}, toUInt64(floor({r})) + 1) \
         + ({hi} - {lo}) * ({r} - floor({r}))",
        hi = at("ceil"),
        lo = at("floor"),
    )
}

/// Usage statistics per (host, process) when `per_host`, else per process over every host
/// (host `''`), computed by ClickHouse. Binds: from, to, [host], [process].
pub fn usage(db: &str, per_host: bool, host: bool, process: bool) -> String {
    // Not `'' AS host`: ClickHouse aliases are visible in WHERE, and would hide the column.
    let (key, group) =
        if per_host { ("host", "host, process") } else { ("'' AS merged", "process") };
    let mut sql = format!(
        "SELECT {key}, process, count(), max(ts), argMax(count, ts), {}, {}, {}, {} \
         FROM {db}.samples FINAL WHERE ts >= ? AND ts < ? AND {NOT_TOTAL}",
        stats_columns("cpu", "cpu"),
        stats_columns("cores", "cores"),
        stats_columns("mem", "mem"),
        stats_columns("toFloat64(rss)", "rss"),
    );
    if host {
        sql.push_str(" AND host = ?");
    }
    if process {
        sql.push_str(" AND process = ?");
    }
    sql.push_str(&format!(" GROUP BY {group} ORDER BY {group}"));
    sql
}
