//! The spool record payload of one sweep, and the `POST /api/v1/samples` body built from
//! spooled records.

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
    pub interval_ms: u64,
    pub host: &'a str,
    pub totals_json: &'a [u8],
    pub samples_json: &'a [u8],
}

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

/// Builds one `POST /api/v1/samples` body from spooled records (all of one host).
pub fn build_batch(
    host: &str,
    agent: &str,
    seq: u64,
    dropped: u64,
    records: &[(PayloadParts<'_>, u64)],
) -> Vec<u8> {
    let interval_ms = records.first().map_or(0, |(p, _)| p.interval_ms);
    let cap =
        records.iter().map(|(p, _)| p.totals_json.len() + p.samples_json.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(cap + 256);
    out.extend_from_slice(b"{\"host\":");
    out.extend_from_slice(&serde_json::to_vec(host).unwrap_or_default());
    out.extend_from_slice(b",\"agent\":");
    out.extend_from_slice(&serde_json::to_vec(agent).unwrap_or_default());
    out.extend_from_slice(format!(",\"seq\":{seq},\"interval_ms\":{interval_ms}").as_bytes());
    if dropped > 0 {
        out.extend_from_slice(format!(",\"dropped_samples\":{dropped}").as_bytes());
    }
    out.extend_from_slice(b",\"host_totals\":[");
    let mut first = true;
    for (p, _) in records {
        splice_array(&mut out, p.totals_json, &mut first);
    }
    out.extend_from_slice(b"],\"samples\":[");
    let mut first = true;
    for (p, _) in records {
        splice_array(&mut out, p.samples_json, &mut first);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_model::{HostTotal, Sample, TsMs};

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
}
