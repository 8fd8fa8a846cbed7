//! Conformance case of the opt-in extra metrics (issue 19): stored with their samples,
//! read back by `Storage::extras_window`, replaced on rewrite, dropped by retention, and
//! absent for samples that carry none.

use procwatch_model::extras::Extras;
use procwatch_model::Sample;

use super::{base_ts, batch, q, sample};
use crate::Storage;

fn with_extras(ts: i64, process: &str, fds: u64, unit: &str) -> Sample {
    let mut s = sample(ts, process, 10.0, 5.0);
    s.extras = Some(Box::new(Extras {
        read_bps: Some(1_048_576.5),
        write_bps: Some(0.0),
        fds: Some(fds),
        fds_pct: Some(fds as f64 / 10.24),
        threads: Some(4),
        ctxsw_vol: Some(12.25),
        ctxsw_invol: Some(0.5),
        owner: Some("www-data".into()),
        unit: Some(unit.into()),
    }));
    s
}

/// Extras round-trip exactly, per series and window, sorted by (host, process, ts).
pub async fn extras_round_trip(store: &dyn Storage) {
    let t0 = base_ts();
    let samples = vec![
        with_extras(t0, "web", 10, "nginx.service"),
        with_extras(t0 + 10_000, "web", 12, "nginx.service"),
        sample(t0, "plain", 1.0, 1.0),
        with_extras(t0, "db", 100, "0123456789ab"),
    ];
    store.write_batch(&batch("xh1", 1, samples.clone())).await.expect("write");
    store.write_batch(&batch("xh2", 1, vec![with_extras(t0, "web", 3, "x.scope")])).await.unwrap();
    // A rewrite replaces the extras of that (host, process, ts).
    let rewrite = vec![with_extras(t0 + 10_000, "web", 14, "nginx.service")];
    store.write_batch(&batch("xh1", 2, rewrite)).await.expect("rewrite");

    let all = store.extras_window(&q(t0, t0 + 60_000, None, None, true)).await.unwrap();
    let keys: Vec<(&str, &str, i64)> =
        all.iter().map(|r| (r.host.as_str(), r.process.as_str(), r.ts - t0)).collect();
    assert_eq!(
        keys,
        [("xh1", "db", 0), ("xh1", "web", 0), ("xh1", "web", 10_000), ("xh2", "web", 0)],
        "records sorted by host, process, ts; none for the plain sample"
    );
    assert_eq!(all[1].extras, *samples[0].extras.clone().unwrap(), "every field back");
    assert_eq!(all[2].extras.fds, Some(14), "the rewrite replaced it");
    assert_eq!(all[0].extras.unit.as_deref(), Some("0123456789ab"));

    let one = store.extras_window(&q(t0, t0 + 60_000, Some("xh1"), Some("web"), true)).await;
    assert_eq!(one.unwrap().len(), 2, "host and process filter");
    let early = store.extras_window(&q(t0 + 1, t0 + 10_000, None, None, true)).await.unwrap();
    assert!(early.is_empty(), "half-open window: {early:?}");

    store.apply_retention(t0 + 5_000).await.expect("retention");
    let left = store.extras_window(&q(t0 - 60_000, t0 + 60_000, None, None, true)).await.unwrap();
    assert_eq!(left.iter().map(|r| r.ts - t0).collect::<Vec<_>>(), [10_000], "retention");
}
