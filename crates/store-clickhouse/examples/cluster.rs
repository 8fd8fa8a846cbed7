//! Starts a throwaway ZooKeeper + 2-shard × 2-replica ClickHouse cluster on loopback ports (the
//! test harness), prints its node URLs, and stops it when stdin closes (Ctrl-D) or on Ctrl-C.
//!
//! `cargo run -p procwatch-store-clickhouse --features testing --example cluster`

use procwatch_store_clickhouse::testing::{Cluster, CLUSTER};

fn main() {
    let Some(cluster) = Cluster::start_or_skip("example cluster") else {
        std::process::exit(2);
    };
    for i in 0..4 {
        println!("node {i}: {}", cluster.url(i));
    }
    println!("zookeeper: {}", cluster.zookeeper_addr());
    println!("cluster name: {CLUSTER}; press Ctrl-D to stop");
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        line.clear();
    }
}
