//! The read side (window, usage, history, host totals, alarm events) and retention. Every
//! sample query reads the `Distributed` tables `FINAL` (the newest version of each key; exact,
//! since a host's rows all live on one shard) above the retention floor. `usage` is aggregated
//! by ClickHouse (`sql::usage`, the reference formulas); `history` here with the shared
//! `procwatch_store::agg` arithmetic over one series' raw samples.

use procwatch_model::directive::DirectiveRecord;
use procwatch_model::{AlarmEvent, HostTotal, Sample, TsMs};
use procwatch_store::memory::{alarm_matches, sort_newest_first};
use procwatch_store::{agg, rollup};
use procwatch_store::{
    AlarmQuery, HistoryAnswer, HistoryPoint, HistoryQuery, Resolution, SeriesWindow, StoreError,
    StoreResult, UsageQuery, UsageRow, DEFAULT_RAW_RETENTION_MS,
};

use crate::rows::{AlarmRow, DirectiveRow, SampleRow, TotalRow, UsageOut};
use crate::{floor_row, sql, ClickHouseError, ClickHouseStore};

type R<T> = Result<T, ClickHouseError>;

/// Raw samples of `q`'s window, sorted by (host, process, ts).
async fn fetch_samples(st: &ClickHouseStore, q: &UsageQuery) -> R<Vec<SampleRow>> {
    let from = q.from.max(st.floor());
    if q.to <= from {
        return Ok(Vec::new());
    }
    let sql = sql::samples_window(st.db(), q.host.is_some(), q.process.is_some());
    let query = bind_window(st.client.query(&sql), from, q);
    st.run(query.fetch_all::<SampleRow>()).await
}

/// Binds `from`, `q.to`, then `q.host` and `q.process` when set: the parameters of the
/// window queries of `sql` (`samples_window`, `usage`, `window_of`).
pub(crate) fn bind_window(
    mut query: clickhouse::query::Query,
    from: TsMs,
    q: &UsageQuery,
) -> clickhouse::query::Query {
    query = query.bind(from).bind(q.to);
    if let Some(h) = &q.host {
        query = query.bind(h.as_str());
    }
    if let Some(p) = &q.process {
        query = query.bind(p.as_str());
    }
    query
}

/// Groups sorted rows into series (host, process, samples oldest first).
fn series(rows: Vec<SampleRow>) -> Vec<SeriesWindow> {
    let mut out: Vec<SeriesWindow> = Vec::new();
    for r in rows {
        let s = r.sample();
        match out.last_mut() {
            Some(w) if w.host == r.host && w.process == r.process => w.samples.push(s),
            _ => out.push(SeriesWindow { host: r.host, process: r.process, samples: vec![s] }),
        }
    }
    out
}

pub async fn window(st: &ClickHouseStore, q: &UsageQuery) -> R<Vec<SeriesWindow>> {
    Ok(series(fetch_samples(st, q).await?))
}

/// Usage statistics, computed by ClickHouse next to the data (`sql::usage`): only one row per
/// group crosses the network, not the samples.
pub async fn usage(st: &ClickHouseStore, q: &UsageQuery) -> R<Vec<UsageRow>> {
    let from = q.from.max(st.floor());
    if q.to <= from {
        return Ok(Vec::new());
    }
    let sql = sql::usage(st.db(), q.per_host, q.host.is_some(), q.process.is_some());
    let query = bind_window(st.client.query(&sql), from, q);
    let rows = st.run(query.fetch_all::<UsageOut>()).await?;
    Ok(rows.into_iter().map(|r| r.row(q.per_host)).collect())
}

/// The samples of one series over `[q.from, q.to)`; `NotFound` for a series the cluster does
/// not know.
async fn series_samples(st: &ClickHouseStore, q: &HistoryQuery) -> StoreResult<Vec<Sample>> {
    let uq = UsageQuery {
        from: q.from,
        to: q.to,
        host: Some(q.host.clone()),
        process: Some(q.process.clone()),
        per_host: true,
    };
    let rows = fetch_samples(st, &uq).await?;
    if rows.is_empty() {
        let known: u64 = st
            .run(
                st.client
                    .query(&sql::series_known(st.db()))
                    .bind(q.host.as_str())
                    .bind(q.process.as_str())
                    .bind(st.floor())
                    .fetch_one::<u64>(),
            )
            .await?;
        if known == 0 {
            return Err(StoreError::NotFound(format!("{}/{}", q.host, q.process)));
        }
    }
    Ok(rows.iter().map(SampleRow::sample).collect())
}

pub async fn history(st: &ClickHouseStore, q: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
    Ok(agg::history_points(series_samples(st, q).await?.iter(), q.step_ms))
}

/// History at the resolution `rollup::pick_resolution` picks, raw samples kept
/// `DEFAULT_RAW_RETENTION_MS`. The cluster keeps no roll-up table yet: a `5m` answer is the
/// 5-minute buckets computed here from the raw rows of the widened range (exact, as the
/// conformance suite asks), so it reaches back only as far as the raw retention.
pub async fn history_answer(st: &ClickHouseStore, q: &HistoryQuery) -> StoreResult<HistoryAnswer> {
    let horizon = st.clock.now_ms() - DEFAULT_RAW_RETENTION_MS;
    let (resolution, step_ms) = rollup::pick_resolution(q, horizon);
    if resolution == Resolution::Raw {
        return Ok(HistoryAnswer { resolution, step_ms, points: history(st, q).await? });
    }
    let (from, to) = rollup::rollup_range(q.from, q.to, step_ms);
    let samples = series_samples(st, &HistoryQuery { from, to, ..q.clone() }).await?;
    let buckets = rollup::buckets_of(samples.iter());
    Ok(HistoryAnswer {
        resolution,
        step_ms,
        points: rollup::points_from_buckets(&buckets, step_ms),
    })
}

pub async fn host_totals(
    st: &ClickHouseStore,
    host: &str,
    from: TsMs,
    to: TsMs,
) -> R<Vec<HostTotal>> {
    let from = from.max(st.floor());
    if to <= from {
        return Ok(Vec::new());
    }
    let rows: Vec<TotalRow> = st
        .run(
            st.client
                .query(&sql::host_totals(st.db()))
                .bind(host)
                .bind(from)
                .bind(to)
                .bind(host)
                .bind(from)
                .bind(to)
                .fetch_all::<TotalRow>(),
        )
        .await?;
    // Sorted by ts then version: the last row of each ts is its newest.
    let mut out: Vec<HostTotal> = Vec::with_capacity(rows.len());
    for r in &rows {
        match out.last_mut() {
            Some(last) if last.ts == r.ts => *last = r.total(),
            _ => out.push(r.total()),
        }
    }
    Ok(out)
}

pub async fn put_alarm_event(st: &ClickHouseStore, e: &AlarmEvent) -> R<()> {
    put_alarm_events(st, std::slice::from_ref(e)).await
}

/// Every event in one INSERT (a table replicated on every node: one INSERT costs about as
/// much as a data INSERT twice over, whatever it carries), versions increasing in order so
/// a later event with the same id wins.
pub async fn put_alarm_events(st: &ClickHouseStore, events: &[AlarmEvent]) -> R<()> {
    let rows: Vec<AlarmRow> = events
        .iter()
        .map(|e| AlarmRow {
            id: e.id.clone(),
            host: e.host.clone(),
            start: e.start,
            open: u8::from(e.end.is_none()),
            event: serde_json::to_string(e).expect("an alarm event serializes"),
            version: st.next_version(),
        })
        .collect();
    st.insert("alarm_events", &rows).await
}

pub async fn put_directive(st: &ClickHouseStore, d: &DirectiveRecord) -> R<()> {
    let row = DirectiveRow {
        directive: d.version,
        at: d.at,
        record: serde_json::to_string(d).expect("a directive serializes"),
        version: st.next_version(),
    };
    st.insert("directives", &[row]).await
}

pub async fn directives(st: &ClickHouseStore) -> R<Vec<DirectiveRecord>> {
    let query = st.client.query(&sql::directives(st.db()));
    let rows: Vec<DirectiveRow> = st.run(query.fetch_all::<DirectiveRow>()).await?;
    rows.iter()
        .map(|r| {
            serde_json::from_str(&r.record).map_err(|err| {
                ClickHouseError::Corrupt(format!("directive {}: {err}", r.directive))
            })
        })
        .collect()
}

pub async fn alarm_events(st: &ClickHouseStore, q: &AlarmQuery) -> R<Vec<AlarmEvent>> {
    let sql = sql::alarm_events(
        st.db(),
        q.active_only,
        q.host.is_some(),
        q.from.is_some(),
        q.to.is_some(),
    );
    let mut query = st.client.query(&sql);
    if let Some(h) = &q.host {
        query = query.bind(h.as_str());
    }
    if let Some(f) = q.from {
        query = query.bind(f);
    }
    if let Some(t) = q.to {
        query = query.bind(t);
    }
    let rows: Vec<AlarmRow> = st.run(query.fetch_all::<AlarmRow>()).await?;
    let floor = st.floor();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let e: AlarmEvent = serde_json::from_str(&r.event)
            .map_err(|err| ClickHouseError::Corrupt(format!("alarm event {:?}: {err}", r.id)))?;
        // Closed events that ended before the retention floor are gone.
        if e.end.is_some_and(|end| end < floor) || !alarm_matches(q, &e) {
            continue;
        }
        out.push(e);
    }
    sort_newest_first(&mut out);
    if q.limit > 0 {
        out.truncate(q.limit);
    }
    Ok(out)
}

/// Start (Unix ms) of the UTC day holding `ts`.
fn day_start(ts: TsMs) -> TsMs {
    ts - ts.rem_euclid(86_400_000)
}

pub async fn apply_retention(st: &ClickHouseStore, cutoff: TsMs) -> R<u64> {
    let old_floor = st.floor();
    if cutoff <= old_floor {
        return Ok(0);
    }
    let db = st.db();
    let removed: u64 = st
        .run(
            st.client
                .query(&sql::retention_count(db))
                .bind(old_floor)
                .bind(cutoff)
                .fetch_one::<u64>(),
        )
        .await?;
    // The floor first: from here on no query shows the rows, whatever the drops below do.
    st.insert("meta", &[floor_row(cutoff, st.next_version())]).await?;
    st.floor.fetch_max(cutoff, std::sync::atomic::Ordering::SeqCst);
    // Whole days before the cutoff's day go as partitions, on every shard.
    let before = day_start(cutoff);
    let mut dropped = 0;
    let tables = [
        ("samples", "samples_local"),
        ("host_totals", "host_totals_local"),
        ("extras", "extras_local"),
    ];
    for (dist, local) in tables {
        let days: Vec<String> = st
            .run(st.client.query(&sql::old_days(db, dist)).bind(before).fetch_all::<String>())
            .await?;
        for day in days {
            let sql = sql::drop_day(db, local, Some(&st.cfg.cluster), &day);
            st.run(st.client.query(&sql).execute()).await?;
            dropped += 1;
        }
    }
    // Closed alarm events that ended before the cutoff: a replicated mutation (it rewrites
    // the table's parts in the background, the floor hides them meanwhile), so once per day
    // dropped rather than at every retention pass.
    if dropped > 0 {
        let sql = sql::delete_old_alarms(db, cutoff);
        if let Err(e) = st.run(st.client.query(&sql).execute()).await {
            tracing::warn!(error = %e, "clickhouse: could not delete old alarm events");
        }
    }
    Ok(removed)
}
