//! The peer: the same influxd driven directly, without procwatch. The identical line protocol
//! (the store's own encoder, encoded and compressed before the clock starts) is sent straight
//! to `/write` by the same number of writers, and the InfluxQL that answers `get-all` (the
//! mean of `mem` and `cpu` per process) straight to `/query`: the engine's own figures.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use procwatch_model::Batch;
use procwatch_store_influx::influxql::{ident, string};
use procwatch_store_influx::line;

/// One database on an influxd, written and queried over plain HTTP.
#[derive(Clone)]
pub struct Direct {
    http: reqwest::Client,
    url: String,
    db: String,
}

/// How the batches are cut into `/write` requests.
#[derive(Clone, Copy)]
pub struct Cut {
    /// Points per request; 0 = one agent batch (its samples and host totals) per request.
    pub points: usize,
    pub gzip: bool,
}

impl Direct {
    /// Creates database `db` with the retention policy the store creates (48 h, 1 h shards,
    /// default), so both sides write to the same shard layout.
    pub async fn create(url: &str, db: &str) -> Self {
        let d = Direct { http: reqwest::Client::new(), url: url.into(), db: db.into() };
        d.query_raw(&format!("CREATE DATABASE {}", ident(db))).await;
        d.query_raw(&format!(
            "CREATE RETENTION POLICY \"procwatch\" ON {} DURATION 172800s REPLICATION 1 \
             SHARD DURATION 1h DEFAULT",
            ident(db)
        ))
        .await;
        d
    }

    async fn query_raw(&self, q: &str) -> serde_json::Value {
        let resp = self
            .http
            .post(format!("{}/query", self.url))
            .query(&[("db", self.db.as_str()), ("epoch", "ms")])
            .form(&[("q", q)])
            .send()
            .await
            .expect("direct /query");
        assert!(resp.status().is_success(), "direct /query {q}: {}", resp.status());
        let v: serde_json::Value = resp.json().await.expect("direct /query json");
        assert!(v["results"][0]["error"].is_null(), "direct /query {q}: {v}");
        v
    }

    /// Request bodies for `batches` cut as `cut` says.
    pub fn bodies(batches: &[Batch], cut: Cut) -> Vec<Vec<u8>> {
        let mut texts = Vec::new();
        let mut cur = String::new();
        let mut n = 0;
        for b in batches {
            for s in &b.samples {
                line::sample_point(&mut cur, &b.host, s);
                n += 1;
                if cut.points > 0 && n == cut.points {
                    texts.push(std::mem::take(&mut cur));
                    n = 0;
                }
            }
            for t in &b.host_totals {
                line::host_total_point(&mut cur, &b.host, t);
                n += 1;
            }
            if cut.points == 0 {
                texts.push(std::mem::take(&mut cur));
                n = 0;
            }
        }
        if !cur.is_empty() {
            texts.push(cur);
        }
        texts
            .into_iter()
            .map(|t| {
                if cut.gzip {
                    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
                    enc.write_all(t.as_bytes()).expect("gzip");
                    enc.finish().expect("gzip")
                } else {
                    t.into_bytes()
                }
            })
            .collect()
    }

    /// Writes `bodies` with `writers` concurrent requests; samples/s for `samples` samples.
    pub async fn ingest(
        &self,
        bodies: Vec<Vec<u8>>,
        gzip: bool,
        writers: usize,
        samples: usize,
    ) -> f64 {
        let bodies = Arc::new(bodies);
        let next = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (d, bodies, next) = (self.clone(), bodies.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(body) = bodies.get(i) else { break };
                    let mut rb = d
                        .http
                        .post(format!("{}/write", d.url))
                        .query(&[("db", d.db.as_str()), ("precision", "ms")])
                        .body(body.clone());
                    if gzip {
                        rb = rb.header("content-encoding", "gzip");
                    }
                    let resp = rb.send().await.expect("direct /write");
                    assert_eq!(resp.status().as_u16(), 204, "direct /write");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        samples as f64 / t.elapsed().as_secs_f64()
    }

    /// The InfluxQL of `get-all`: mean `mem` and `cpu` per process over `[from, to)`, of one
    /// host or of all.
    pub fn get_all_ql(&self, from: i64, to: i64, host: Option<&str>) -> String {
        let host = host.map(|h| format!(" AND \"host\" = {}", string(h))).unwrap_or_default();
        format!(
            "SELECT mean(\"mem\") AS mem, mean(\"cpu\") AS cpu FROM {}.\"procwatch\".\"proc\" \
             WHERE time >= {from}ms AND time < {to}ms{host} GROUP BY \"process\"",
            ident(&self.db)
        )
    }

    /// Runs `q` and answers its latency and the number of series (rows of get-all).
    pub async fn timed_query(&self, q: &str) -> (Duration, usize) {
        let t = Instant::now();
        let v = self.query_raw(q).await;
        let elapsed = t.elapsed();
        let rows = v["results"][0]["series"].as_array().map_or(0, Vec::len);
        (elapsed, rows)
    }
}
