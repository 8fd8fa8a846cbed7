//! A pass's alarm events go to the cluster in one INSERT (`Storage::put_alarm_events`), not
//! one replicated INSERT per event, and read back as `put_alarm_event` one by one would: every
//! event, a later event with the same id winning.

use procwatch_store::conformance::{base_ts, red_event};
use procwatch_store::{AlarmQuery, Storage};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_of_alarm_events_is_one_insert_and_the_later_event_of_an_id_wins() {
    let test = "a_pass_of_alarm_events_is_one_insert_and_the_later_event_of_an_id_wins";
    let Some(cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "alarm_batch";
    let store = ClickHouseStore::connect(cluster.config(db)).await.expect("connect");
    let t0 = base_ts();
    let mut events: Vec<_> = (0..50)
        .map(|i| red_event(&format!("ev-{i:02}"), &format!("h-{}", i % 5), "java", t0 + i))
        .collect();
    // The same alarm closed later in the same pass: its second event must win.
    let mut closed = events[7].clone();
    closed.end = Some(t0 + 60_000);
    closed.peak = 99.0;
    events.push(closed.clone());
    store.put_alarm_events(&events).await.expect("put");
    store.put_alarm_events(&[]).await.expect("nothing to put");

    // One INSERT: one part on the node the store writes to (the table was empty).
    let q = format!(
        "SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'alarm_events' \
         AND active"
    );
    assert_eq!(cluster.sql(0, &q).expect("parts").trim(), "1", "one INSERT for the pass");

    let q = AlarmQuery { limit: 0, ..AlarmQuery::default() };
    let stored = store.alarm_events(&q).await.expect("alarm events");
    assert_eq!(stored.len(), 50, "every event once: {stored:?}");
    let seven = stored.iter().find(|e| e.id == "ev-07").expect("ev-07");
    assert_eq!(seven, &closed, "the later event of an id wins");
    let open = store
        .alarm_events(&AlarmQuery { active_only: true, limit: 0, ..AlarmQuery::default() })
        .await
        .expect("open events");
    assert_eq!(open.len(), 49);
}
