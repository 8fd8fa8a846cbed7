//! Where the time of an agent-sized batch (one host sweep, 300 samples) goes on the 2 × 2
//! cluster: each step of `write_batch` on its own, with the same settings and concurrency as
//! the HTTP bench, and what each costs the cluster (CPU per process from `/proc/PID/stat`,
//! ZooKeeper transactions, parts and fetches from `system.events` / `system.parts`), and the
//! same INSERT into a plain `ReplacingMergeTree` on the same nodes (what replication adds).
//!
//! `cargo run --release -p procwatch-store-clickhouse --features testing --example insert_profile`
//!
//! Environment: `PROFILE_BATCHES` (300 per phase), `PROFILE_CONNS` (4 in flight),
//! `PROFILE_STORE` (the store's settings to run, `INSERTS_IN_FLIGHT:CONNS,...`, default `4:4`),
//! `PROFILE_ONLY_STORE` (set: only the store phases, not the raw INSERTs), `PROFILE_QUERY_LOG`
//! (set: the raw INSERTs are logged in `system.query_log`, and each phase prints where their
//! server-side time went: CPU, waits for a core, disk writes; 18.16 counts ZooKeeper waits on
//! ZooKeeper's client thread, so that column stays 0 and the wait is in what is left over).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procwatch_model::clock::{Clock, SystemClock};
use procwatch_model::{Batch, Sample};
use procwatch_store::Storage;
use procwatch_store_clickhouse::rows::{sample_rows, HostRow};
use procwatch_store_clickhouse::testing::Cluster;
use procwatch_store_clickhouse::ClickHouseStore;

const PROCS: usize = 300;
const HOSTS: usize = 100;

fn env(name: &str, d: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// Batch `i`: host `i % HOSTS`, sweep `i / HOSTS`, 300 processes.
fn batch(i: usize, end: i64) -> Batch {
    let ts = end - 3_600_000 + (i / HOSTS) as i64 * 10_000;
    Batch {
        host: format!("fleet-{:03}", i % HOSTS),
        agent: "profile".into(),
        seq: (i / HOSTS) as u64 + 1,
        interval_ms: 10_000,
        host_totals: Vec::new(),
        samples: (0..PROCS)
            .map(|p| Sample {
                ts,
                process: format!("proc-{p:03}"),
                cpu: (p % 50) as f64 + 0.5,
                cores: 0.01,
                mem: 1.0,
                rss: 4096 * p as u64,
                count: 1,
                extras: None,
            })
            .collect(),
        dropped_samples: 0,
        report: None,
    }
}

fn query_log() -> bool {
    std::env::var("PROFILE_QUERY_LOG").is_ok()
}

fn client(url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_setting("insert_distributed_sync", "1")
        .with_setting("insert_deduplicate", "1")
        .with_setting("load_balancing", "in_order")
        .with_setting("prefer_localhost_replica", "0")
        .with_setting("log_queries", if query_log() { "1" } else { "0" })
}

/// Where the server-side time of the logged INSERTs into `db` went, from `system.query_log`
/// on every node (queries a node sent on to another, as a `Distributed` INSERT does, are logged
/// there too, with `is_initial_query = 0`).
fn insert_breakdown(c: &Cluster, db: &str) {
    let ev = |name: &str| {
        format!("avg(ProfileEvents.Values[indexOf(ProfileEvents.Names, '{name}')]) / 1000")
    };
    let q = format!(
        "SELECT is_initial_query, count(), quantile(0.5)(query_duration_ms), \
         avg(query_duration_ms), {}, {}, {}, {}, {}, {}, {} FROM system.query_log \
         WHERE type = 2 AND query LIKE 'INSERT INTO {db}.%' GROUP BY is_initial_query",
        ev("RealTimeMicroseconds"),
        ev("UserTimeMicroseconds"),
        ev("SystemTimeMicroseconds"),
        ev("OSCPUWaitMicroseconds"),
        ev("OSIOWaitMicroseconds"),
        ev("ZooKeeperWaitMicroseconds"),
        ev("DiskWriteElapsedMicroseconds"),
    );
    println!(
        "query_log (ms per INSERT; node, initial, count, p50, mean duration, thread real, user, \
         system, CPU wait, IO wait, ZooKeeper wait, disk write):"
    );
    for i in 0..4 {
        let _ = c.sql(i, "SYSTEM FLUSH LOGS");
        for line in c.sql(i, &q).unwrap_or_default().lines() {
            let f: Vec<String> = line
                .split('\t')
                .map(|x| x.parse::<f64>().map(|v| format!("{v:.1}")).unwrap_or(x.into()))
                .collect();
            println!("  node {i}: {}", f.join(", "));
        }
    }
}

async fn insert<T: clickhouse::RowWrite + clickhouse::RowOwned>(
    c: &clickhouse::Client,
    table: &str,
    rows: &[T],
) {
    let mut ins = c.insert_unescaped::<T>(table).await.expect("insert");
    for r in rows {
        ins.write(r).await.expect("write");
    }
    ins.end().await.expect("end");
}

/// utime + stime ticks of each cluster process and of this one.
fn cpu_ticks(pids: &[(String, u32)]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let me = ("self".to_string(), std::process::id());
    for (name, pid) in pids.iter().chain(std::iter::once(&me)) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        // Fields after the comm: state is index 0, utime 12, stime 13 (stat fields 14, 15).
        out.insert(name.clone(), f.get(12).copied().unwrap_or(0) + f.get(13).copied().unwrap_or(0));
    }
    out
}

/// `system.events` summed over the four nodes.
fn events(c: &Cluster) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for i in 0..4 {
        let body = c.sql(i, "SELECT event, value FROM system.events").unwrap_or_default();
        for line in body.lines() {
            if let Some((k, v)) = line.split_once('\t') {
                *out.entry(k.to_string()).or_insert(0) += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    out
}

fn parts(c: &Cluster, db: &str) -> u64 {
    (0..4)
        .map(|i| {
            c.sql(i, &format!("SELECT count() FROM system.parts WHERE database = '{db}'"))
                .ok()
                .and_then(|b| b.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Batch `i`, made on demand (a long run's batches would not fit in memory).
struct Batches(i64);

impl Batches {
    fn get(&self, i: usize) -> Batch {
        batch(i, self.0)
    }
}

/// One unit of work: a batch written, or one INSERT sent.
type BoxedFut = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// Unit `i`'s work.
type Op = Arc<dyn Fn(usize) -> BoxedFut + Send + Sync>;

/// Runs `units` calls of `op` with `conns` in flight; prints rate, latency and cluster costs.
async fn phase(
    c: &Cluster,
    db: &str,
    name: &str,
    units: usize,
    per_unit: usize,
    conns: usize,
    op: Op,
) {
    let clock = SystemClock;
    let pids = c.pids();
    let (t0, e0, p0) = (cpu_ticks(&pids), events(c), parts(c, db));
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let start = clock.instant();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, lat, op) = (next.clone(), lat.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let clock = SystemClock;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= units {
                    break;
                }
                let t = clock.instant();
                op(i).await;
                lat.lock().push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    // Let the replicas fetch and merge what this phase made before reading the costs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (t1, e1, p1) = (cpu_ticks(&pids), events(c), parts(c, db));
    let mut l = lat.lock().clone();
    l.sort_by(f64::total_cmp);
    let pct = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize];
    println!(
        "\n## {name}: {units} units x {per_unit} samples, {conns} in flight: {:.2} s, {:.0} samples/s, \
         {:.1} units/s; latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms",
        secs,
        (units * per_unit) as f64 / secs,
        units as f64 / secs,
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    let hz = 100.0;
    let cpu: Vec<String> = t1
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {:.1} ms",
                (v - t0.get(k).copied().unwrap_or(0)) as f64 / hz * 1000.0 / units as f64
            )
        })
        .collect();
    println!("CPU per unit (incl. 3 s after): {}", cpu.join(", "));
    let total: u64 = t1.iter().map(|(k, v)| v - t0.get(k).copied().unwrap_or(0)).sum();
    println!(
        "CPU total per unit: {:.1} ms; parts made (all nodes): {} ({:.2} per unit)",
        total as f64 / hz * 1000.0 / units as f64,
        p1 - p0,
        (p1 - p0) as f64 / units as f64
    );
    let keys = [
        "InsertQuery",
        "ZooKeeperTransactions",
        "ZooKeeperCreate",
        "ZooKeeperMulti",
        "ZooKeeperExists",
        "ZooKeeperGet",
        "ZooKeeperList",
        "ZooKeeperRemove",
        "ZooKeeperWaitMicroseconds",
        "ReplicatedPartFetches",
        "Merge",
        "MergedRows",
        "DuplicatedInsertedBlocks",
        "DelayedInserts",
        "NetworkReceiveElapsedMicroseconds",
        "NetworkSendElapsedMicroseconds",
        "DelayedInsertsMilliseconds",
        "RejectedInserts",
    ];
    let mut ev = Vec::new();
    for k in keys {
        let d = e1.get(k).copied().unwrap_or(0) - e0.get(k).copied().unwrap_or(0);
        if d > 0 {
            ev.push(format!("{k} {:.2}", d as f64 / units as f64));
        }
    }
    println!("per unit: {}", ev.join(", "));
    let most = (0..4)
        .filter_map(|i| {
            let q = "SELECT value FROM system.asynchronous_metrics \
                     WHERE metric = 'MaxPartCountForPartition'";
            c.sql(i, q).ok().and_then(|b| b.trim().parse::<f64>().ok())
        })
        .fold(0.0, f64::max);
    println!("most parts in one partition on a node now: {most}");
    if query_log() {
        insert_breakdown(c, db);
    }
}

fn main() {
    let Some(cluster) = Cluster::start_or_skip("insert_profile") else {
        std::process::exit(2);
    };
    let n = env("PROFILE_BATCHES", 300);
    let conns = env("PROFILE_CONNS", 4);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let end = SystemClock.now_ms() / 10_000 * 10_000;
    let c = &cluster;
    rt.block_on(async move {
        // Shard of each host (cityHash64(host) % 2, as the Distributed table computes it):
        // shard 1 is nodes 0/1, shard 2 nodes 2/3.
        let mut shard_of = BTreeMap::new();
        let list: Vec<String> = (0..HOSTS).map(|h| format!("'fleet-{h:03}'")).collect();
        let q = format!(
            "SELECT h, cityHash64(h) % 2 FROM (SELECT arrayJoin([{}]) AS h)",
            list.join(",")
        );
        for line in c.sql(0, &q).expect("shards").lines() {
            let (h, s) = line.split_once('\t').unwrap();
            shard_of.insert(h.to_string(), s.trim().parse::<usize>().unwrap());
        }
        let shard_of = Arc::new(shard_of);
        let batches = Arc::new(Batches(end));

        // 1. The store (grouping up to `in_flight` INSERTs), at several settings.
        let settings: Vec<(usize, usize)> = std::env::var("PROFILE_STORE")
            .unwrap_or_else(|_| "4:4".into())
            .split(',')
            .filter_map(|x| x.split_once(':'))
            .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
            .collect();
        for (k, (in_flight, conns)) in settings.into_iter().enumerate() {
            let db = format!("p_store{k}");
            let mut cfg = c.config(&db);
            cfg.max_inserts_in_flight = in_flight;
            let store = Arc::new(ClickHouseStore::connect(cfg).await.expect("connect"));
            let (s, b) = (store.clone(), batches.clone());
            let name = format!("ClickHouseStore::write_batch, {in_flight} INSERTs in flight");
            phase(
                c,
                &db,
                &name,
                n,
                PROCS,
                conns,
                Arc::new(move |i| {
                    let (s, b) = (s.clone(), b.clone());
                    Box::pin(async move {
                        s.write_batch(&b.get(i)).await.expect("write");
                    })
                }),
            )
            .await;
            println!("write stats: {:?}", store.write_stats());
        }
        if std::env::var("PROFILE_ONLY_STORE").is_ok() {
            return;
        }

        // 2. Only the samples INSERT through the Distributed table (sync).
        let db = "p_samples";
        ClickHouseStore::connect(c.config(db)).await.expect("connect");
        let cl = Arc::new(client(&c.url(0)));
        let (k, b) = (cl.clone(), batches.clone());
        phase(
            c,
            db,
            "samples INSERT via Distributed, sync",
            n,
            PROCS,
            conns,
            Arc::new(move |i| {
                let (k, b) = (k.clone(), b.clone());
                Box::pin(async move {
                    insert(&k, "p_samples.samples", &sample_rows(&b.get(i))).await;
                })
            }),
        )
        .await;

        // 3. Only the hosts row (replicated on all four nodes).
        let db = "p_hosts";
        ClickHouseStore::connect(c.config(db)).await.expect("connect");
        let (k, b) = (cl.clone(), batches.clone());
        phase(
            c,
            db,
            "hosts INSERT, 1 row",
            n,
            PROCS,
            conns,
            Arc::new(move |i| {
                let (k, b) = (k.clone(), b.clone());
                Box::pin(async move {
                    let r = HostRow {
                        host: b.get(i).host.clone(),
                        state: format!("{{\"seq\":{i}}}"),
                        version: i as u64 + 1,
                    };
                    insert(&k, "p_hosts.hosts", &[r]).await;
                })
            }),
        )
        .await;

        // 4. The samples INSERT straight into the shard's first replica's local table; then
        // (4b) the same INSERT into a plain `ReplacingMergeTree` on the same two nodes, from the
        // single-node schema (`schema::ddl(None, ..)`): no ZooKeeper commit and no replica
        // fetching the part, so what 4 costs beyond 4b is the replication's.
        ClickHouseStore::connect(c.config("p_direct")).await.expect("connect");
        for node in [0, 2] {
            for stmt in procwatch_store_clickhouse::schema::ddl(None, "p_plain") {
                c.sql(node, &stmt).expect("plain schema");
            }
        }
        let shard_clients = Arc::new([client(&c.url(0)), client(&c.url(2))]);
        for (db, table, name) in [
            (
                "p_direct",
                "p_direct.samples_local",
                "samples INSERT direct to the shard's samples_local",
            ),
            (
                "p_plain",
                "p_plain.samples",
                "samples INSERT into a plain (not replicated) ReplacingMergeTree on the same nodes",
            ),
        ] {
            let (k, b, so) = (shard_clients.clone(), batches.clone(), shard_of.clone());
            phase(
                c,
                db,
                name,
                n,
                PROCS,
                conns,
                Arc::new(move |i| {
                    let (k, b, so) = (k.clone(), b.clone(), so.clone());
                    Box::pin(async move {
                        let batch = b.get(i);
                        insert(&k[so[&batch.host]], table, &sample_rows(&batch)).await;
                    })
                }),
            )
            .await;
        }

        // 5. Groups of g batches per Distributed INSERT, `conns` groups in flight.
        for g in [4usize, 16] {
            let db = format!("p_group{g}");
            ClickHouseStore::connect(c.config(&db)).await.expect("connect");
            let (k, b) = (cl.clone(), batches.clone());
            let table = format!("{db}.samples");
            let units = (n * 4 / g).min(n);
            phase(
                c,
                &db,
                &format!("samples INSERT via Distributed, {g} batches per INSERT"),
                units,
                PROCS * g,
                conns,
                Arc::new(move |i| {
                    let (k, b, table) = (k.clone(), b.clone(), table.clone());
                    Box::pin(async move {
                        let mut all = Vec::new();
                        for j in i * g..(i + 1) * g {
                            all.extend(sample_rows(&b.get(j)));
                        }
                        insert(&k, &table, &all).await;
                    })
                }),
            )
            .await;
        }

        // 6. The hosts of a whole fleet in one INSERT (a periodic flush).
        let db = "p_hosts100";
        ClickHouseStore::connect(c.config(db)).await.expect("connect");
        let k = cl.clone();
        phase(
            c,
            db,
            "hosts INSERT, 100 rows",
            20,
            0,
            1,
            Arc::new(move |i| {
                let k = k.clone();
                Box::pin(async move {
                    let rows: Vec<HostRow> = (0..HOSTS)
                        .map(|h| HostRow {
                            host: format!("fleet-{h:03}"),
                            state: format!("{{\"seq\":{i}}}"),
                            version: i as u64 + 1,
                        })
                        .collect();
                    insert(&k, "p_hosts100.hosts", &rows).await;
                })
            }),
        )
        .await;
    });
}
