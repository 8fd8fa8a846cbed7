//! Property tests (proptest) of the ingestion path's round trips and the limits' invariants.

use std::time::{Duration, Instant};

use procwatch_model::validate::{decode_batch, Limits};
use procwatch_model::{Batch, HostTotal, Sample};
use procwatch_server::ingest::gunzip_bounded;
use procwatch_server::limits::RateLimiter;
use proptest::prelude::*;

const NOW: i64 = 1_764_070_000_000;

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        -3_600_000i64..60_000,
        "[^\\p{Cc}]{1,40}",
        0.0f64..=100.0,
        0.0f64..=64.0,
        0.0f64..=100.0,
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(dt, process, cpu, cores, mem, rss, count)| Sample {
            ts: NOW + dt,
            process,
            cpu,
            cores,
            mem,
            rss,
            count,
            extras: None,
        })
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        "[A-Za-z0-9._:-]{1,60}",
        any::<u64>(),
        proptest::collection::vec(sample(), 0..40),
        proptest::option::of(0.0f64..=100.0),
    )
        .prop_map(|(host, seq, samples, unattributed_cpu)| Batch {
            host,
            agent: "prop".into(),
            seq,
            interval_ms: 10_000,
            host_totals: vec![HostTotal { ts: NOW, cpu: 12.5, mem: 50.0, unattributed_cpu }],
            samples,
            dropped_samples: 0,
            report: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// What an agent sends (JSON, gzip) comes out of the server's decode path unchanged.
    #[test]
    fn valid_batch_round_trips_through_gzip_and_decode(b in batch()) {
        let json = serde_json::to_vec(&b).unwrap();
        let raw = gunzip_bounded(&gzip(&json), 16 << 20).unwrap();
        let limits = Limits::new(NOW, 48 * 3600 * 1000);
        let back = decode_batch(&raw, &limits).map_err(|r| TestCaseError::fail(r.message()))?;
        // serde_json without its `float_roundtrip` feature may parse a 17-digit float one ulp
        // off (found by this test): floats are compared to 1e-15 relative, the rest exactly.
        prop_assert_eq!(back.samples.len(), b.samples.len());
        for (x, y) in back.samples.iter().zip(&b.samples) {
            for (u, v) in [(x.cpu, y.cpu), (x.cores, y.cores), (x.mem, y.mem)] {
                prop_assert!((u - v).abs() <= 1e-15 * v.abs().max(1.0), "{} vs {}", u, v);
            }
        }
        let (u, v) = (back.host_totals[0].unattributed_cpu, b.host_totals[0].unattributed_cpu);
        prop_assert_eq!(u.is_some(), v.is_some());
        if let (Some(u), Some(v)) = (u, v) {
            prop_assert!((u - v).abs() <= 1e-15 * v.abs().max(1.0), "{} vs {}", u, v);
        }
        let exact = |mut b: Batch| {
            for s in &mut b.samples {
                (s.cpu, s.cores, s.mem) = (0.0, 0.0, 0.0);
            }
            for t in &mut b.host_totals {
                t.unattributed_cpu = None;
            }
            b
        };
        prop_assert_eq!(exact(back), exact(b));
    }

    /// The bounded gunzip gives back exactly the data when it fits and refuses it otherwise.
    #[test]
    fn gunzip_is_exact_within_the_bound(data in proptest::collection::vec(any::<u8>(), 0..5000), max in 0usize..6000) {
        match gunzip_bounded(&gzip(&data), max) {
            Ok(out) => {
                prop_assert!(data.len() <= max);
                prop_assert_eq!(out, data);
            }
            Err(_) => prop_assert!(data.len() > max),
        }
    }

    /// Over any arrival pattern, one key never gets more than burst + rate × elapsed requests.
    #[test]
    fn rate_limiter_never_admits_more_than_the_bucket(
        rate in 0.5f64..50.0,
        burst in 1u32..20,
        gaps_ms in proptest::collection::vec(0u64..300, 1..300),
    ) {
        let l = RateLimiter::new(rate, burst);
        let t0 = Instant::now();
        let mut t = t0;
        let mut admitted = 0u64;
        for g in gaps_ms {
            t += Duration::from_millis(g);
            if l.check("k", t).is_ok() {
                admitted += 1;
            }
            let bound = f64::from(burst) + rate * (t - t0).as_secs_f64();
            prop_assert!(admitted as f64 <= bound + 1e-9, "{} > {}", admitted, bound);
        }
    }
}
