//! What the control channel adds to a batch's handling on the server, beside what the batch
//! costs already: `directive::effective` (the merge for one host, run when the agent reports an
//! older version than the newest the server handed out) over logs of 10 to 10,000 changes, and
//! `validate::decode_batch` of a 200-sample batch (every batch pays it), in one run.
//!
//! `cargo run --release -p procwatch-model --example directive_bench`

use std::hint::black_box;
use std::time::Instant;

use procwatch_model::directive::{effective, DirectiveRecord, SettingsChange};
use procwatch_model::validate::{decode_batch, Limits};

fn per_call_us(reps: u32, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(reps)
}

fn main() {
    let now = 1_764_892_800_000i64;
    let samples: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"ts":{now},"process":"proc-{i:03}","cpu":1.5,"cores":0.03,"mem":0.8,"rss":123456,"count":1}}"#))
        .collect();
    let body = format!(
        r#"{{"host":"web-17","agent":"procwatch/0.1.0","seq":9,"interval_ms":10000,"host_totals":[{{"ts":{now},"cpu":40,"mem":50}}],"samples":[{}],"report":{{"directive_version":3,"interval_ms":10000}}}}"#,
        samples.join(",")
    );
    let limits = Limits::new(now, 48 * 3_600_000);
    let decode = per_call_us(2_000, || {
        black_box(decode_batch(body.as_bytes(), &limits).expect("a valid batch"));
    });
    println!("decode_batch, 200 samples: {decode:.1} µs");
    for n in [10usize, 100, 1_000, 10_000] {
        // Globs of several shapes; one in ten matches web-17.
        let log: Vec<DirectiveRecord> = (0..n)
            .map(|i| DirectiveRecord {
                version: i as u64 + 1,
                at: now,
                who: "admin".into(),
                hosts: if i % 10 == 0 { "web-*".into() } else { format!("db-{i}-*") },
                set: SettingsChange { interval: Some("5s".into()), ..Default::default() },
            })
            .collect();
        let reps = (200_000 / n).max(20) as u32;
        let merge = per_call_us(reps, || {
            black_box(effective(&log, "web-17", 0));
        });
        println!(
            "effective over {n:>6} changes: {merge:>9.1} µs ({:.2}× a decode)",
            merge / decode
        );
    }
}
