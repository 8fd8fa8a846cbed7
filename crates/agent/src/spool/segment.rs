//! The segment file format: a 16-byte header, then framed, CRC-checked records (see the
//! spool's module documentation for the byte layout). Pure byte handling plus the scan that
//! repairs a torn tail on open; which records are still owed to the server is the ledger's.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use procwatch_model::TsMs;
use tracing::info;

use super::{io_err, remove_file, SpoolError};

/// The header a new segment starts with: magic, format version, 4 reserved zero bytes.
pub(super) fn segment_header() -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// One record framed for the disk: `len | crc | id | ts | samples | payload`.
pub(super) fn encode_record(id: u64, ts: TsMs, samples: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FRAME_LEN as usize + BODY_FIXED + payload.len());
    buf.extend_from_slice(&((BODY_FIXED + payload.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&samples.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Segment file magic.
pub const MAGIC: &[u8; 8] = b"PWSPOOL\0";
/// Segment format version.
pub const VERSION: u32 = 1;
/// Segment header length in bytes.
pub const HEADER_LEN: u64 = 16;
/// Record frame: `len` + `crc`.
pub(super) const FRAME_LEN: u64 = 8;
/// Fixed part of a record body: `id` + `ts` + `samples`.
pub(super) const BODY_FIXED: usize = 20;
/// A record larger than this is treated as corrupt on read (the server refuses bodies past
/// 16 MiB anyway).
pub(super) const MAX_RECORD: u32 = 64 << 20;

#[derive(Debug, Clone, Copy)]
/// Where one record lies in its segment, and what the spool needs of it without reading it.
pub(super) struct Meta {
    pub(super) id: u64,
    pub(super) offset: u64,
    /// Whole frame length on disk.
    pub(super) len: u64,
    pub(super) ts: TsMs,
    pub(super) samples: u32,
}

#[derive(Debug)]
/// One segment file and the records it holds.
pub(super) struct Segment {
    pub(super) first_id: u64,
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) records: Vec<Meta>,
}

impl Segment {
    pub(super) fn last_id(&self) -> Option<u64> {
        self.records.last().map(|m| m.id)
    }
}

/// The file name of the segment whose first record is `first_id`.
pub(super) fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

/// What scanning a segment found.
pub(super) enum Scan {
    Ok {
        records: Vec<Meta>,
        size: u64,
        truncated: u64,
    },
    /// A segment whose header was cut short; removed.
    Empty {
        truncated: u64,
    },
    BadHeader,
}

/// Reads a segment, checking every record; cuts a torn or corrupt tail off the file.
/// `first_id` (from the file name) is the lowest id a record in it may have.
pub(super) fn scan_segment(path: &Path, first_id: u64) -> Result<Scan, SpoolError> {
    let mut data = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut data)).map_err(io_err(path))?;
    if data.len() < HEADER_LEN as usize
        || &data[..8] != MAGIC
        || u32::from_le_bytes([data[8], data[9], data[10], data[11]]) != VERSION
    {
        if data.len() < HEADER_LEN as usize && MAGIC.starts_with(&data[..data.len().min(8)]) {
            // A header cut short while the segment was being created: nothing in it.
            remove_file(path)?;
            return Ok(Scan::Empty { truncated: data.len() as u64 });
        }
        return Ok(Scan::BadHeader);
    }
    let (records, good_len) = parse_records(&data, Some(first_id));
    let truncated = data.len() as u64 - good_len;
    if truncated > 0 {
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(good_len).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        info!(message = "Truncated spool segment.", path = %path.display(), to = good_len);
    }
    Ok(Scan::Ok { records, size: good_len, truncated })
}

/// Parses the records of a segment (header included in `data`); returns the valid records and
/// the length of the valid prefix. Ids must increase and be at least `expect_id`. Pure: the torn-tail logic is tested on byte strings.
pub(super) fn parse_records(data: &[u8], mut expect_id: Option<u64>) -> (Vec<Meta>, u64) {
    let mut records = Vec::new();
    let mut pos = HEADER_LEN as usize;
    while pos + FRAME_LEN as usize <= data.len() {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if (len as usize) < BODY_FIXED || len > MAX_RECORD {
            break;
        }
        let start = pos + FRAME_LEN as usize;
        let end = start + len as usize;
        if end > data.len() {
            break;
        }
        let body = &data[start..end];
        if crc32fast::hash(body) != crc {
            break;
        }
        let id = u64::from_le_bytes(body[0..8].try_into().unwrap_or_default());
        if expect_id.is_some_and(|e| id < e) {
            break;
        }
        let ts = i64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
        let samples = u32::from_le_bytes(body[16..20].try_into().unwrap_or_default());
        records.push(Meta { id, offset: pos as u64, len: FRAME_LEN + len as u64, ts, samples });
        expect_id = Some(id + 1);
        pos = end;
    }
    (records, pos.min(data.len()) as u64)
}
