//! Head rows: one batch's samples as fixed 48-byte records (the write path's format).

use procwatch_model::TsMs;

use crate::codec::CorruptChunk;

pub(crate) const HEAD_REC: usize = 48;

/// One decoded head record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRec {
    pub(crate) sid: u32,
    pub(crate) ts: TsMs,
    pub(crate) cpu: f64,
    pub(crate) cores: f64,
    pub(crate) mem: f64,
    pub(crate) rss: u64,
    pub(crate) count: u32,
}

pub(crate) fn encode_head(recs: &[HeadRec]) -> Vec<u8> {
    let mut out = Vec::with_capacity(recs.len() * HEAD_REC);
    for r in recs {
        out.extend_from_slice(&r.sid.to_le_bytes());
        out.extend_from_slice(&r.ts.to_le_bytes());
        out.extend_from_slice(&r.cpu.to_le_bytes());
        out.extend_from_slice(&r.cores.to_le_bytes());
        out.extend_from_slice(&r.mem.to_le_bytes());
        out.extend_from_slice(&r.rss.to_le_bytes());
        out.extend_from_slice(&r.count.to_le_bytes());
    }
    out
}

pub(crate) fn decode_head(data: &[u8], out: &mut Vec<HeadRec>) -> Result<(), CorruptChunk> {
    if !data.chunks_exact(HEAD_REC).remainder().is_empty() {
        return Err(CorruptChunk("head row length"));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    for b in data.chunks_exact(HEAD_REC) {
        out.push(HeadRec {
            sid: u32_at(b, 0),
            ts: u64_at(b, 4) as i64,
            cpu: f64::from_bits(u64_at(b, 12)),
            cores: f64::from_bits(u64_at(b, 20)),
            mem: f64::from_bits(u64_at(b, 28)),
            rss: u64_at(b, 36),
            count: u32_at(b, 44),
        });
    }
    Ok(())
}

/// Sorts records by (series, ts), keeping the last written of equal (series, ts).
pub(crate) fn sort_dedup(recs: &mut Vec<HeadRec>) {
    // Stable sort keeps write order among equal keys; keep the last of each run.
    recs.sort_by_key(|r| (r.sid, r.ts));
    let mut out: Vec<HeadRec> = Vec::with_capacity(recs.len());
    for r in recs.drain(..) {
        match out.last_mut() {
            Some(l) if l.sid == r.sid && l.ts == r.ts => *l = r,
            _ => out.push(r),
        }
    }
    *recs = out;
}
