//! The spool record payload of one sweep, and the `POST /api/v1/samples` body built from
//! spooled records.

use procwatch_model::directive::AgentReport;
use procwatch_model::{Batch, HostTotal, Sample};

use crate::SweepData;

/// Encodes a sweep as a spool record payload:
/// `interval_ms: u64 LE | host_len: u16 LE | host | totals_len: u32 LE | totals JSON array |
/// samples JSON array`. Requests are built by splicing these arrays, with no re-parsing.
pub fn encode_sweep(host: &str, interval_ms: u64, sweep: &SweepData) -> Vec<u8> {
    let totals = serde_json::to_vec(&sweep.host_totals).unwrap_or_else(|_| b"[]".to_vec());
    let samples = serde_json::to_vec(&sweep.samples).unwrap_or_else(|_| b"[]".to_vec());
    let host = &host.as_bytes()[..host.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(18 + host.len() + totals.len() + samples.len());
    out.extend_from_slice(&interval_ms.to_le_bytes());
    out.extend_from_slice(&(host.len() as u16).to_le_bytes());
    out.extend_from_slice(host);
    out.extend_from_slice(&(totals.len() as u32).to_le_bytes());
    out.extend_from_slice(&totals);
    out.extend_from_slice(&samples);
    out
}

/// The parts of a record payload; `None` if it is malformed.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadParts<'a> {
    /// The sweep interval, ms.
    pub interval_ms: u64,
    /// The host the sweep is of.
    pub host: &'a str,
    /// The host totals, a JSON array of `model::HostTotal`.
    pub totals_json: &'a [u8],
    /// The samples, a JSON array of `model::Sample`.
    pub samples_json: &'a [u8],
}

/// Splits a record payload written by [`encode_sweep`]; `None` if it is malformed.
pub fn decode_payload(p: &[u8]) -> Option<PayloadParts<'_>> {
    let interval_ms = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    let hl = u16::from_le_bytes(p.get(8..10)?.try_into().ok()?) as usize;
    let host = std::str::from_utf8(p.get(10..10 + hl)?).ok()?;
    let at = 10 + hl;
    let tl = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
    let totals_json = p.get(at + 4..at + 4 + tl)?;
    let samples_json = p.get(at + 4 + tl..)?;
    Some(PayloadParts { interval_ms, host, totals_json, samples_json })
}

/// Appends the elements of the JSON array `arr` to `out` (comma-separated after `first`).
fn splice_array(out: &mut Vec<u8>, arr: &[u8], first: &mut bool) {
    let inner = match (arr.first(), arr.last()) {
        (Some(b'['), Some(b']')) if arr.len() >= 2 => &arr[1..arr.len() - 1],
        _ => return,
    };
    if inner.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(inner);
}

/// Where the empty `host_totals` and `samples` arrays of a serialised envelope close: the
/// positions of their `]`. The keys cannot occur inside the `host`/`agent` strings (a quote
/// there is escaped), so the first match is the field.
fn list_slots(envelope: &[u8]) -> Option<(usize, usize)> {
    let find = |key: &[u8]| {
        envelope.windows(key.len()).position(|w| w == key).map(|at| at + key.len() - 1)
    };
    let totals = find(b"\"host_totals\":[]")?;
    let samples = find(b"\"samples\":[]")?;
    (totals < samples).then_some((totals, samples))
}

/// Builds one `POST /api/v1/samples` body from spooled records (all of one host).
///
/// The body is a [`procwatch_model::Batch`]: its envelope (field names, order, which fields
/// are left out) is that type's own serialisation, and its `host_totals` / `samples` are the
/// elements of the records' arrays, themselves the serialisation of the model's `HostTotal`
/// and `Sample` when the sweep was spooled. The arrays are joined, not parsed again: at the
/// replay's size (360 sweeps) parsing them back costs ~100 ms a request (`batch_bench`).
pub fn build_batch(
    host: &str,
    agent: &str,
    seq: u64,
    dropped: u64,
    records: &[(PayloadParts<'_>, u64)],
) -> Vec<u8> {
    build_batch_with(host, agent, seq, dropped, records, None)
}

/// [`build_batch`] with the agent's report (`Batch::report`: directive version, interval,
/// spool backlog, a refused directive) in the envelope.
pub fn build_batch_with(
    host: &str,
    agent: &str,
    seq: u64,
    dropped: u64,
    records: &[(PayloadParts<'_>, u64)],
    report: Option<&AgentReport>,
) -> Vec<u8> {
    let envelope = Batch {
        host: host.to_owned(),
        agent: agent.to_owned(),
        seq,
        // A batch of no sweep (a paused agent's heartbeat, a drop count) declares the interval
        // the agent runs: the server would otherwise take 0 for the host's interval and judge
        // its silence on its own, shorter one.
        interval_ms: records
            .first()
            .map_or_else(|| report.map_or(0, |r| r.interval_ms), |(p, _)| p.interval_ms),
        host_totals: Vec::new(),
        samples: Vec::new(),
        dropped_samples: dropped,
        report: report.cloned(),
    };
    let head = serde_json::to_vec(&envelope).unwrap_or_default();
    let Some((totals_at, samples_at)) = list_slots(&head) else {
        // Not reached while `Batch` has both lists; if it ever changes, say so in a test.
        return typed_batch(envelope, records);
    };
    let cap =
        records.iter().map(|(p, _)| p.totals_json.len() + p.samples_json.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(head.len() + cap);
    out.extend_from_slice(&head[..totals_at]);
    let mut first = true;
    for (p, _) in records {
        splice_array(&mut out, p.totals_json, &mut first);
    }
    out.extend_from_slice(&head[totals_at..samples_at]);
    let mut first = true;
    for (p, _) in records {
        splice_array(&mut out, p.samples_json, &mut first);
    }
    out.extend_from_slice(&head[samples_at..]);
    out
}

/// The same body by parsing the records back into model types (slow; the fallback).
fn typed_batch(mut batch: Batch, records: &[(PayloadParts<'_>, u64)]) -> Vec<u8> {
    for (p, _) in records {
        if let Ok(t) = serde_json::from_slice::<Vec<HostTotal>>(p.totals_json) {
            batch.host_totals.extend(t);
        }
        if let Ok(s) = serde_json::from_slice::<Vec<Sample>>(p.samples_json) {
            batch.samples.extend(s);
        }
    }
    serde_json::to_vec(&batch).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::TsMs;

    fn sweep(ts: TsMs, n: usize) -> SweepData {
        SweepData {
            ts,
            host_totals: vec![HostTotal { ts, cpu: 10.0, mem: 20.0, unattributed_cpu: None }],
            samples: (0..n)
                .map(|i| Sample {
                    ts,
                    process: format!("p{i}"),
                    cpu: 1.0,
                    cores: 0.02,
                    mem: 0.5,
                    rss: 1 << 20,
                    count: 1,
                    extras: None,
                })
                .collect(),
        }
    }

    #[test]
    fn payload_round_trips_and_batches_splice() {
        let a = encode_sweep("web-1", 10_000, &sweep(1000, 2));
        let b = encode_sweep("web-1", 10_000, &sweep(2000, 0));
        let c = encode_sweep("web-1", 10_000, &sweep(3000, 1));
        let pa = decode_payload(&a).unwrap();
        assert_eq!(pa.host, "web-1");
        assert_eq!(pa.interval_ms, 10_000);
        let parts =
            vec![(pa, 0), (decode_payload(&b).unwrap(), 1), (decode_payload(&c).unwrap(), 2)];
        let body = build_batch("web-1", "procwatch/test", 7, 3, &parts);
        let batch: procwatch_model::Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!(batch.seq, 7);
        assert_eq!(batch.dropped_samples, 3);
        assert_eq!(batch.interval_ms, 10_000);
        assert_eq!(batch.host_totals.len(), 3);
        assert_eq!(batch.samples.iter().map(|s| s.ts).collect::<Vec<_>>(), vec![1000, 1000, 3000]);
        assert_eq!(batch.samples, {
            let mut v = sweep(1000, 2).samples;
            v.extend(sweep(3000, 1).samples);
            v
        });
        assert!(decode_payload(&a[..5]).is_none());
    }

    /// The spliced body is the model's own serialisation of the same batch: same JSON value,
    /// whatever the host and agent strings hold, with and without drops, with no records.
    #[test]
    fn body_is_the_model_batch_serialised() {
        let odd = r#"we"b\"host_totals\":[]"samples":[]"#;
        let recs: Vec<Vec<u8>> = vec![
            encode_sweep(odd, 5_000, &sweep(1000, 3)),
            encode_sweep(odd, 5_000, &sweep(2000, 1)),
        ];
        for dropped in [0, 9] {
            for n in [0, 1, 2] {
                let parts: Vec<_> =
                    recs[..n].iter().map(|r| (decode_payload(r).unwrap(), 0)).collect();
                let body = build_batch(odd, "agent \"x\"", 3, dropped, &parts);
                let envelope = Batch {
                    host: odd.into(),
                    agent: "agent \"x\"".into(),
                    seq: 3,
                    interval_ms: if n == 0 { 0 } else { 5_000 },
                    host_totals: Vec::new(),
                    samples: Vec::new(),
                    dropped_samples: dropped,
                    report: None,
                };
                let typed = typed_batch(envelope, &parts);
                let a: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let b: serde_json::Value = serde_json::from_slice(&typed).unwrap();
                assert_eq!(a, b, "dropped {dropped}, {n} records");
            }
        }
    }
}
