//! Conformance cases of roll-ups and resolution selection (`Storage::history_answer`).
//!
//! What a backend must do to pass them: implement `history_answer` following
//! `rollup::pick_resolution` with its own raw horizon ("now − raw retention", which must be
//! at least a few hours for these recent timestamps), and at `Resolution::Rollup5m` answer
//! points over whole 5-minute (or step) buckets whose cpu/mem min and max equal those of the
//! raw samples and whose means match within 1e-9 relative, late samples and rewrites included.

use procwatch_model::{Sample, TsMs};

use super::{assert_close, base_ts, batch, sample};
use crate::{HistoryPoint, HistoryQuery, Resolution, Storage, ROLLUP_MS};

/// Start of the roll-up test data: `base_ts` aligned down to a 5-minute bucket.
fn bucket_ts() -> TsMs {
    let t = base_ts();
    t - t.rem_euclid(ROLLUP_MS)
}

fn hq(host: &str, from: TsMs, to: TsMs, step_ms: i64) -> HistoryQuery {
    HistoryQuery { host: host.into(), process: "roll".into(), from, to, step_ms }
}

/// Irregular values for step `i` (distinct minima and maxima per bucket).
fn roll_sample(t0: TsMs, i: i64) -> Sample {
    let cpu = ((i * 37) % 101) as f64 * 0.75;
    let mem = 2.0 + ((i * 53) % 89) as f64 / 8.0;
    sample(t0 + 5_000 + i * 10_000, "roll", cpu, mem)
}

/// Checks every point against the raw samples of its `[ts, ts + step)`.
#[track_caller]
fn assert_buckets_exact(what: &str, pts: &[HistoryPoint], samples: &[Sample], step: i64) {
    let mut want_ts: Vec<TsMs> =
        samples.iter().map(|s| s.ts - s.ts.rem_euclid(step)).collect::<Vec<_>>();
    want_ts.dedup();
    assert_eq!(pts.iter().map(|p| p.ts).collect::<Vec<_>>(), want_ts, "{what}: bucket starts");
    for p in pts {
        let inb: Vec<&Sample> =
            samples.iter().filter(|s| s.ts >= p.ts && s.ts < p.ts + step).collect();
        let n = inb.len() as f64;
        let mean = |f: fn(&Sample) -> f64| inb.iter().map(|s| f(s)).sum::<f64>() / n;
        let min = |f: fn(&Sample) -> f64| inb.iter().map(|s| f(s)).fold(f64::MAX, f64::min);
        let max = |f: fn(&Sample) -> f64| inb.iter().map(|s| f(s)).fold(f64::MIN, f64::max);
        // min and max are exact (no arithmetic), means within the suite's tolerance.
        assert_eq!(p.cpu_min, min(|s| s.cpu), "{what}: cpu_min at {}", p.ts);
        assert_eq!(p.cpu_max, max(|s| s.cpu), "{what}: cpu_max at {}", p.ts);
        assert_eq!(p.mem_min, min(|s| s.mem), "{what}: mem_min at {}", p.ts);
        assert_eq!(p.mem_max, max(|s| s.mem), "{what}: mem_max at {}", p.ts);
        assert_close("cpu", p.cpu, mean(|s| s.cpu));
        assert_close("cores", p.cores, mean(|s| s.cores));
        assert_close("mem", p.mem, mean(|s| s.mem));
        assert_close("rss", p.rss, mean(|s| s.rss as f64));
        assert_close("count", p.count, mean(|s| f64::from(s.count)));
    }
}

/// At a 5-minute step the answer is the roll-ups (`"5m"`), and each bucket's min/mean/max
/// equal those of its raw samples; a 15-minute step merges three buckets exactly.
pub async fn rollup_exact(store: &dyn Storage) {
    let t0 = bucket_ts();
    let samples: Vec<Sample> = (0..120).map(|i| roll_sample(t0, i)).collect();
    for (k, chunk) in samples.chunks(7).enumerate() {
        store.write_batch(&batch("ru-1", k as u64 + 1, chunk.to_vec())).await.expect("write");
    }
    let a =
        store.history_answer(&hq("ru-1", t0, t0 + 20 * 60_000, ROLLUP_MS)).await.expect("history");
    assert_eq!(a.resolution, Resolution::Rollup5m);
    assert_eq!(a.step_ms, ROLLUP_MS);
    assert_buckets_exact("5m", &a.points, &samples, ROLLUP_MS);
    let a = store
        .history_answer(&hq("ru-1", t0, t0 + 20 * 60_000, 3 * ROLLUP_MS))
        .await
        .expect("history");
    assert_eq!(a.resolution, Resolution::Rollup5m);
    let three: Vec<Sample> = samples.iter().filter(|s| s.ts < t0 + 20 * 60_000).cloned().collect();
    let step = 3 * ROLLUP_MS;
    let start = t0 - t0.rem_euclid(step);
    let in_range: Vec<Sample> = three.into_iter().filter(|s| s.ts >= start).collect();
    assert_buckets_exact("15m", &a.points, &in_range, step);
}

/// A late sample (a spool replay, a rewrite of a stored timestamp) updates its bucket exactly:
/// the rewritten value replaces the old one, a new timestamp is added once.
pub async fn rollup_late_sample(store: &dyn Storage) {
    let t0 = bucket_ts();
    let mut samples: Vec<Sample> = (0..90).map(|i| roll_sample(t0, i)).collect();
    store.write_batch(&batch("rl-1", 1, samples.clone())).await.expect("write");
    let range = hq("rl-1", t0, t0 + 15 * 60_000, ROLLUP_MS);
    let before = store.history_answer(&range).await.expect("history");
    assert_buckets_exact("before", &before.points, &samples, ROLLUP_MS);
    // Hours later (for the store) the agent replays: a rewrite of sample 40 with a new
    // maximum and minimum mem, and a new sample between two others, both in bucket 1.
    let mut rewrite = samples[40].clone();
    rewrite.cpu = 500.0;
    rewrite.mem = 0.5;
    let extra = sample(samples[41].ts + 1_000, "roll", 0.125, 99.0);
    store
        .write_batch(&batch("rl-1", 2, vec![rewrite.clone(), extra.clone()]))
        .await
        .expect("write");
    samples[40] = rewrite;
    samples.insert(42, extra);
    let after = store.history_answer(&range).await.expect("history");
    assert_buckets_exact("after the late samples", &after.points, &samples, ROLLUP_MS);
    // Written again (a retry): nothing counted twice.
    store
        .write_batch(&batch("rl-1", 2, vec![samples[40].clone(), samples[42].clone()]))
        .await
        .expect("write");
    let again = store.history_answer(&range).await.expect("history");
    assert_buckets_exact("after the retry", &again.points, &samples, ROLLUP_MS);
}

/// A 30-day range reaches past raw retention: answered from roll-ups (`"5m"`, whole
/// 5-minute buckets even at step 0); a recent range at a fine step is raw.
pub async fn resolution_by_range(store: &dyn Storage) {
    let t0 = bucket_ts();
    let samples: Vec<Sample> = (0..60).map(|i| roll_sample(t0, i)).collect();
    store.write_batch(&batch("rr-1", 1, samples.clone())).await.expect("write");
    let to = t0 + 60 * 60_000;
    let long =
        store.history_answer(&hq("rr-1", to - 30 * 86_400_000, to, 0)).await.expect("history");
    assert_eq!(long.resolution, Resolution::Rollup5m, "30 days");
    assert_eq!(long.step_ms, ROLLUP_MS);
    assert_buckets_exact("30 days", &long.points, &samples, ROLLUP_MS);
    let long = store
        .history_answer(&hq("rr-1", to - 30 * 86_400_000, to, 3_600_000))
        .await
        .expect("history");
    assert_eq!((long.resolution, long.step_ms), (Resolution::Rollup5m, 3_600_000));
    assert_buckets_exact("30 days hourly", &long.points, &samples, 3_600_000);
    let raw = store.history_answer(&hq("rr-1", t0, to, 60_000)).await.expect("history");
    assert_eq!((raw.resolution, raw.step_ms), (Resolution::Raw, 60_000));
    assert_eq!(raw.points, store.history(&hq("rr-1", t0, to, 60_000)).await.expect("history"));
    let raw = store.history_answer(&hq("rr-1", t0, to, 0)).await.expect("history");
    assert_eq!(raw.resolution, Resolution::Raw);
    assert_eq!(raw.points.len(), samples.len());
}
