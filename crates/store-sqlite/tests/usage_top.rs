//! `Storage::usage_top` on the SQLite store: the first rows of the listing in a figure's
//! order, exactly those a caller sorting `usage_of`'s rows (stably: ties in listing order)
//! would take, on a fleet big enough for the two-thread path and for the ranked buffer to be
//! cut many times, from memory and from below the memory floor (late head rows, then
//! chunks); and `None` where it cannot rank (merged rows), so the caller sorts.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procwatch_model::Sample;
use procwatch_store::conformance::batch;
use procwatch_store::{RowOrder, Storage, UsageNeeds, UsageQuery, UsageRow};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

fn only(k: usize, spread: bool, last: bool) -> UsageNeeds {
    let mut metrics = [false; 4];
    metrics[k] = true;
    UsageNeeds { metrics, spread, last, samples: true }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranked_rows_are_the_sorted_listings_first_rows() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { maintenance_interval: Duration::ZERO, ..SqliteOptions::default() };
    let store = SqliteStore::open(dir.path(), opts).unwrap();
    // 12 hosts × 40 processes, 6 samples each; few distinct figures, so ties everywhere.
    for h in 0..12u32 {
        let mut samples = Vec::new();
        for p in 0..40u32 {
            for i in 0..6u32 {
                let v = f64::from((p * 3 + h + i) % 7);
                samples.push(Sample {
                    ts: now - 60_000 + i64::from(i) * 10_000,
                    process: format!("proc-{p:02}"),
                    cpu: v,
                    cores: v / 100.0,
                    mem: f64::from((p + h) % 5) + 0.5,
                    rss: u64::from(1 + (p * h + i) % 4) << 20,
                    count: 1 + (p + i) % 3,
                    extras: None,
                });
            }
        }
        store.write_batch(&batch(&format!("host-{h:02}"), 1, samples)).await.unwrap();
    }
    let fig = |f: fn(&UsageRow) -> f64| -> RowOrder {
        Arc::new(move |a: &UsageRow, b: &UsageRow| f(a).total_cmp(&f(b)))
    };
    let desc = |o: RowOrder| -> RowOrder { Arc::new(move |a, b| o(a, b).reverse()) };
    let orders: Vec<(&str, RowOrder, UsageNeeds)> = vec![
        ("cpu.mean desc", desc(fig(|r| r.cpu.mean)), only(0, false, false)),
        ("mem.max asc", fig(|r| r.mem.max), only(2, true, false)),
        ("rss.p95 desc", desc(fig(|r| r.rss.p95)), only(3, true, false)),
        ("cores.last desc", desc(fig(|r| r.cores.last)), only(1, false, true)),
        (
            "count desc",
            Arc::new(|a: &UsageRow, b: &UsageRow| b.count.cmp(&a.count)),
            UsageNeeds { last: true, ..only(0, false, false) },
        ),
    ];
    let check = |q: UsageQuery, hosts: usize| {
        let (store, orders) = (&store, &orders);
        async move {
            for (name, order, needs) in orders {
                let mut want = store.usage_of(&q, *needs).await.unwrap();
                let total = want.len();
                assert_eq!(total, if q.host.is_some() { 40 } else { 40 * hosts });
                want.sort_by(|a, b| order(a, b)); // stable: ties keep the listing's order
                for keep in [1, 7, 130, 479, 600] {
                    let got = store.usage_top(&q, *needs, order.clone(), keep).await.unwrap();
                    let (rows, n) = got.unwrap_or_else(|| panic!("{name}: not ranked"));
                    assert_eq!(n, total, "{name} keep {keep}");
                    let (from, host) = (q.from, &q.host);
                    assert_eq!(rows, want[..keep.min(total)], "{name} keep {keep} {host:?} {from}");
                }
            }
        }
    };
    let recent = |host: Option<String>| UsageQuery {
        from: now - 300_000,
        to: now + 60_000,
        host,
        process: None,
        per_host: true,
    };
    for host in [None, Some("host-03".to_string())] {
        check(recent(host), 12).await;
    }
    // An hour earlier, below the memory floor, for 9 of the hosts (three have only recent
    // samples): first late head rows, then, after a fold, chunks. A window reaching back
    // there is ranked over the older samples and the recent ones together.
    for h in 0..9u32 {
        let mut samples = Vec::new();
        for p in 0..40u32 {
            for i in 0..6u32 {
                let v = f64::from((p * 5 + h * 2 + i) % 9);
                samples.push(Sample {
                    ts: now - 3_600_000 + i64::from(i) * 10_000,
                    process: format!("proc-{p:02}"),
                    cpu: v,
                    cores: v / 50.0,
                    mem: f64::from((p * h) % 6) + 0.25,
                    rss: u64::from(1 + (p + h + i) % 5) << 20,
                    count: 1 + (p * i) % 4,
                    extras: None,
                });
            }
        }
        store.write_batch(&batch(&format!("host-{h:02}"), 2, samples)).await.unwrap();
    }
    let deep = |host: Option<String>| UsageQuery { from: now - 3 * 3_600_000, ..recent(host) };
    for host in [None, Some("host-03".to_string()), Some("host-10".to_string())] {
        check(deep(host), 12).await;
    }
    store.compact_at(now).unwrap();
    for host in [None, Some("host-03".to_string())] {
        check(deep(host), 12).await;
    }
    // The older samples are in the listing, and ranked: host-00's row holds 12 samples.
    let rows = store.usage_of(&deep(Some("host-00".into())), only(0, false, false)).await.unwrap();
    assert!(rows.iter().all(|r| r.samples == 12), "{rows:?}");
    // Where it cannot rank, it says so and the caller sorts: merged rows.
    let order = desc(fig(|r| r.cpu.mean));
    let merged = UsageQuery { per_host: false, ..recent(None) };
    assert!(store
        .usage_top(&merged, only(0, false, false), order.clone(), 5)
        .await
        .unwrap()
        .is_none());
    let merged_deep = UsageQuery { per_host: false, ..deep(None) };
    assert!(store
        .usage_top(&merged_deep, only(0, false, false), order, 5)
        .await
        .unwrap()
        .is_none());
}
