//! The SQLite store answers like the reference `MemoryStore` on a small fleet: enough hosts
//! and processes for the two-thread query path, with data both in memory and in chunks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procwatch_model::{Batch, Sample};
use procwatch_store::memory::MemoryStore;
use procwatch_store::{Stats, Storage, UsageQuery, UsageRow};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn same_stats(a: &Stats, b: &Stats) -> bool {
    close(a.mean, b.mean)
        && a.min == b.min
        && a.max == b.max
        && a.last == b.last
        && close(a.p95, b.p95)
}

fn same_rows(a: &[UsageRow], b: &[UsageRow]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            (&x.host, &x.process, x.samples, x.last_ts),
            (&y.host, &y.process, y.samples, y.last_ts)
        );
        assert_eq!(x.count, y.count, "{x:?} vs {y:?}");
        for (s, t) in [(&x.cpu, &y.cpu), (&x.cores, &y.cores), (&x.mem, &y.mem), (&x.rss, &y.rss)] {
            assert!(same_stats(s, t), "{x:?}\nvs\n{y:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_queries_match_the_reference() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(
        dir.path(),
        SqliteOptions { maintenance_interval: Duration::ZERO, ..Default::default() },
    )
    .unwrap();
    let memory = MemoryStore::new();
    let t0 = now - 18 * 60_000; // 10 hosts × 210 processes, 60 sweeps: the first 3 min in chunks
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..60i64 {
        for h in 0..10 {
            let samples: Vec<Sample> = (0..210)
                .map(|k| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Most series at an agent's precision (the store's narrow window), some
                    // of arbitrary precision from the start, some turning so halfway.
                    let agent_like = k % 7 != 0 && !(k % 11 == 0 && i >= 30);
                    let (mem, rss) = if agent_like {
                        ((x % 5000) as f64 / 1000.0, (x % 250_000) * 4096)
                    } else {
                        ((x % 5000) as f64 / 97.0, x % 1_000_000_000)
                    };
                    Sample {
                        ts: t0 + i * 10_000 + h * 3, // hosts slightly apart, no ties
                        process: format!("p{k:03}"),
                        cpu: (x % 10_000) as f64 / 100.0,
                        cores: (x % 777) as f64 / 100.0,
                        mem,
                        rss,
                        count: (x % 4) as u32 + 1,
                        extras: None,
                    }
                })
                .collect();
            let b = Batch {
                host: format!("h{h:02}"),
                agent: String::new(),
                seq: i as u64 + 1,
                interval_ms: 10_000,
                host_totals: vec![],
                samples,
                dropped_samples: 0,
                report: None,
            };
            sqlite.write_batch(&b).await.unwrap();
            memory.write_batch(&b).await.unwrap();
        }
    }
    // Before a maintenance pass the samples below the floor are late head rows; after one
    // they are chunks, read per series for one host (210 series) and in one scan for the
    // fleet (2,100 series below the floor).
    for folded in [false, true] {
        if folded {
            let done = sqlite.compact_at(now).unwrap();
            assert!(done.head_rows_folded > 0, "{done:?}");
        }
        for from in [now - 10 * 60_000, now - 17 * 60_000] {
            for per_host in [true, false] {
                for host in [None, Some("h03".to_string())] {
                    let q = UsageQuery { from, to: now + 1, host, process: None, per_host };
                    let what = format!("folded={folded} {q:?}");
                    same_rows(&sqlite.usage(&q).await.unwrap(), &memory.usage(&q).await.unwrap());
                    let w = UsageQuery { per_host: true, ..q };
                    assert_eq!(
                        sqlite.window(&w).await.unwrap(),
                        memory.window(&w).await.unwrap(),
                        "{what}"
                    );
                }
            }
            let q = UsageQuery {
                from,
                to: now,
                host: None,
                process: Some("p007".into()),
                per_host: false,
            };
            same_rows(&sqlite.usage(&q).await.unwrap(), &memory.usage(&q).await.unwrap());
            assert_eq!(sqlite.window(&q).await.unwrap(), memory.window(&q).await.unwrap());
        }
    }
}
