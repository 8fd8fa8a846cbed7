//! `Storage::usage_top` on the SQLite store: the first rows of the listing in a figure's
//! order, exactly those a caller sorting `usage_of`'s rows (stably: ties in listing order)
//! would take, on a fleet big enough for the two-thread path and for the ranked buffer to be
//! cut many times; and `None` where it cannot rank (merged rows, samples below the memory
//! floor), so the caller sorts.

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
    for host in [None, Some("host-03".to_string())] {
        let q = UsageQuery {
            from: now - 300_000,
            to: now + 60_000,
            host,
            process: None,
            per_host: true,
        };
        for (name, order, needs) in &orders {
            let mut want = store.usage_of(&q, *needs).await.unwrap();
            let total = want.len();
            assert_eq!(total, if q.host.is_some() { 40 } else { 480 });
            want.sort_by(|a, b| order(a, b)); // stable: ties keep the listing's order
            for keep in [1, 7, 130, 479, 600] {
                let got = store.usage_top(&q, *needs, order.clone(), keep).await.unwrap();
                let (rows, n) = got.unwrap_or_else(|| panic!("{name}: ranked from memory"));
                assert_eq!(n, total, "{name} keep {keep}");
                assert_eq!(rows, want[..keep.min(total)], "{name} keep {keep} host {:?}", q.host);
            }
        }
    }
    // Where it cannot rank, it says so and the caller sorts: merged rows, and a window
    // reaching below the memory floor (the older part is read from chunks).
    let order = desc(fig(|r| r.cpu.mean));
    let merged = UsageQuery {
        from: now - 300_000,
        to: now + 60_000,
        host: None,
        process: None,
        per_host: false,
    };
    assert!(store
        .usage_top(&merged, only(0, false, false), order.clone(), 5)
        .await
        .unwrap()
        .is_none());
    let deep = UsageQuery { from: now - 3 * 3_600_000, per_host: true, ..merged };
    assert!(store.usage_top(&deep, only(0, false, false), order, 5).await.unwrap().is_none());
}
