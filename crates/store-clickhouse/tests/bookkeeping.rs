//! Host bookkeeping off the write path, on the real cluster: a batch's bookkeeping is pending
//! (this store's `hosts()` shows it, the `hosts` table does not have it yet) until the
//! periodic flush writes it; a server that dies before that flush loses no acknowledged
//! sample, the agent's retry through another server stores nothing twice, and what is lost is
//! exactly the documented part of the bookkeeping.

mod support;

use std::time::Duration;

use procwatch_model::{Batch, HostTotal};
use procwatch_store::conformance::{base_ts, batch, sample};
use procwatch_store::{Storage, UsageQuery};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;
use support::eventually;

/// Batch `seq` of host `bk-1`: 20 samples at timestamps unique to it, one host total, one
/// sample reported dropped.
fn nth(t0: i64, seq: u64) -> Batch {
    let ts = t0 + seq as i64 * 10_000;
    let samples = (0..20).map(|i| sample(ts, &format!("p{i:02}"), seq as f64, 1.0)).collect();
    let mut b = batch("bk-1", seq, samples);
    b.dropped_samples = 1;
    b.host_totals = vec![HostTotal { ts, cpu: seq as f64, mem: 5.0, unattributed_cpu: None }];
    b
}

/// `hosts` rows of `host` physically in the table (node 0, where the stores write).
fn table_rows(cluster: &Cluster, db: &str, host: &str) -> u64 {
    let q = format!("SELECT count() FROM {db}.hosts WHERE host = '{host}'");
    cluster.sql(0, &q).expect("count").trim().parse().expect("a number")
}

/// Sample rows stored, counted without `FINAL` (a duplicate counts twice) on the first replica
/// of each shard (nodes 0 and 2), where the store writes and reads (`load_balancing=in_order`);
/// not the host totals, which share the table as process ''.
fn sample_rows(cluster: &Cluster, db: &str) -> u64 {
    let q = format!("SELECT count() FROM {db}.samples_local WHERE process != ''");
    [0, 2]
        .iter()
        .map(|&i| cluster.sql(i, &q).expect("count").trim().parse::<u64>().expect("a number"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_bookkeeping_reads_back_and_a_crash_before_the_flush_loses_no_sample() {
    let test = "pending_bookkeeping_reads_back_and_a_crash_before_the_flush_loses_no_sample";
    let Some(cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "bookkeeping";
    let t0 = base_ts();

    // Server A, whose flush would come only after an hour: everything stays pending.
    let mut cfg = cluster.config(db);
    cfg.hosts_flush_every = Duration::from_secs(3_600);
    let a = ClickHouseStore::connect(cfg).await.expect("connect a");
    for seq in 1..=3 {
        assert_eq!(a.write_batch(&nth(t0, seq)).await.expect("write").seq_gap, 0);
    }
    // A's reads show the pending bookkeeping; the table has none of it yet.
    let hosts = a.hosts().await.expect("hosts");
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let h = &hosts[0];
    assert_eq!(
        (h.host.as_str(), h.last_seen, h.last_seq, h.seq_gaps, h.dropped_samples),
        ("bk-1", t0 + 30_000, 3, 0, 3)
    );
    assert_eq!(h.latest.as_ref().map(|l| l.ts), Some(t0 + 30_000));
    assert_eq!(table_rows(&cluster, db, "bk-1"), 0, "nothing flushed yet");
    assert_eq!(a.write_stats().host_flushes, 0);
    // Every acknowledged sample is on its shard already.
    assert_eq!(sample_rows(&cluster, db), 60);

    // A dies (dropped without `close`: its flush never runs). The agent did not see the
    // answer to seq 3, so it sends it again, to server B, then seq 4.
    drop(a);
    let mut cfg = cluster.config(db);
    cfg.hosts_flush_every = Duration::from_millis(200);
    let b = ClickHouseStore::connect(cfg).await.expect("connect b");
    assert_eq!(b.write_batch(&nth(t0, 3)).await.expect("retry").seq_gap, 0);
    assert_eq!(b.write_batch(&nth(t0, 4)).await.expect("write").seq_gap, 0);

    // No sample lost, none stored twice: physically (the retry's block is deduplicated) and
    // as every query reads it.
    assert_eq!(sample_rows(&cluster, db), 80, "the retry stored nothing twice");
    let q = UsageQuery { from: t0, to: t0 + 60_000, host: None, process: None, per_host: true };
    let usage = b.usage(&q).await.expect("usage");
    assert_eq!(usage.len(), 20);
    assert!(usage.iter().all(|r| r.samples == 4), "{usage:?}");

    // What the crash lost, as documented: A's pending bookkeeping of seq 1-3. B starts the
    // host from the table (nothing there) at the retried seq 3: no false gap, but the two
    // dropped samples reported by seq 1 and 2 are not counted.
    let hosts = b.hosts().await.expect("hosts");
    let h = &hosts[0];
    assert_eq!((h.last_seen, h.last_seq, h.seq_gaps, h.dropped_samples), (t0 + 40_000, 4, 0, 2));

    // B's flush writes it, and a third server reading only the table sees it.
    assert!(
        eventually(30, || table_rows(&cluster, db, "bk-1") >= 1),
        "B's bookkeeping never reached the hosts table"
    );
    let c = ClickHouseStore::connect(cluster.config(db)).await.expect("connect c");
    let hosts = c.hosts().await.expect("hosts");
    assert_eq!(hosts.len(), 1);
    assert_eq!((hosts[0].last_seq, hosts[0].dropped_samples), (4, 2));
    assert!(b.write_stats().host_flushes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_host_writes_its_pending_bookkeeping_first_and_close_flushes() {
    let test = "retiring_a_host_writes_its_pending_bookkeeping_first_and_close_flushes";
    let Some(cluster) = Cluster::start_or_skip(test) else {
        return;
    };
    let db = "bookkeeping_retire";
    let t0 = base_ts();
    let mut cfg = cluster.config(db);
    cfg.hosts_flush_every = Duration::from_secs(3_600);
    let a = ClickHouseStore::connect(cfg).await.expect("connect");
    a.write_batch(&batch("rt-1", 1, vec![sample(t0, "x", 1.0, 1.0)])).await.expect("w");
    a.write_batch(&batch("rt-1", 2, vec![sample(t0 + 1_000, "x", 1.0, 1.0)])).await.expect("w");
    a.write_batch(&batch("rt-2", 5, vec![sample(t0, "y", 1.0, 1.0)])).await.expect("w");
    // The retirement is recorded in the table before the answer, on top of the pending
    // bookkeeping (last seen t0 + 1 s, not t0).
    assert_eq!(a.retire_host("rt-1", t0 + 500).await.expect("retire"), t0 + 1_000);
    let fresh = ClickHouseStore::connect(cluster.config(db)).await.expect("connect");
    let names =
        |h: Vec<procwatch_store::HostInfo>| h.into_iter().map(|h| h.host).collect::<Vec<_>>();
    assert_eq!(names(fresh.hosts().await.expect("hosts")), ["rt-2"]);
    assert_eq!(names(a.hosts().await.expect("hosts")), ["rt-2"]);
    // Newer data lists it again, pending at first; `close` writes it.
    a.write_batch(&batch("rt-1", 3, vec![sample(t0 + 2_000, "x", 1.0, 1.0)])).await.expect("w");
    assert_eq!(names(a.hosts().await.expect("hosts")), ["rt-1", "rt-2"]);
    assert_eq!(names(fresh.hosts().await.expect("hosts")), ["rt-2"], "not flushed yet");
    a.close().await.expect("close");
    let hosts = fresh.hosts().await.expect("hosts");
    assert_eq!(names(hosts.clone()), ["rt-1", "rt-2"]);
    assert_eq!((hosts[0].last_seen, hosts[0].last_seq), (t0 + 2_000, 3));
}
