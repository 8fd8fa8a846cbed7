//! The on-disk spool: every sweep the agent took and the server has not yet acknowledged.
//!
//! # Design constraints
//!
//! - **Nothing taken is lost silently.** Every sweep is appended here *before* anything tries
//!   to send it, and leaves only when the server answered `2xx` (acked), when it was set aside
//!   in quarantine (the server refused it), or when a cap forced a drop — and a drop is counted
//!   (samples), logged at `warn`, and reported to the server in the next batch.
//! - **Caps.** [`SpoolConfig::max_bytes`] (default 256 MiB, the sum of the segment files) and
//!   [`SpoolConfig::max_age`] (default 48 h, the server's default retention: older samples
//!   would be refused anyway). Past the byte cap the *oldest* segment goes whole, so the
//!   granularity of a drop is one segment ([`SpoolConfig::segment_bytes`], default 8 MiB,
//!   1/32 of the cap; room for one 16-byte segment header is kept free). Past the age cap
//!   the expired records are skipped one by one.
//! - **Writer appends, reader acks.** One writer (the sweep loop) appends at the tail; one
//!   reader (the sender) reads from the ack cursor, oldest first, and acks a prefix. A segment
//!   whose records are all acked is deleted (never the one being written).
//! - **File format.** A directory of segment files `<first id, 20 digits>.seg`. Each starts
//!   with a 16-byte header: magic `PWSPOOL\0`, format version `u32` LE (1), 4 reserved zero
//!   bytes. Then records, each `len: u32 LE | crc: u32 LE | body`, where `crc` is the CRC-32
//!   (IEEE, crc32fast) of `body` and `body` is `id: u64 LE | ts: i64 LE | samples: u32 LE |
//!   payload` (`len` counts the whole body). Record ids increase through the files.
//! - **fsync policy.** By default every append is followed by `fdatasync` of the segment (and a
//!   new segment by an fsync of the directory): a sweep the agent took survives a power loss
//!   once `append` returned. [`SpoolConfig::fsync`] turns it off (page cache only: survives a
//!   crash of the agent, not of the machine). The cost is measured in BENCHMARKS.md.
//! - **Torn tail.** On open every segment is scanned and every record's length and CRC are
//!   checked. The first bad record (a write cut short by a power loss, or corruption) ends the
//!   segment: it and anything after it are truncated away with a warning, and the agent goes
//!   on. Nothing in a corrupt spool makes the agent fail to start; an unreadable segment is
//!   set aside as `<name>.corrupt`.
//! - **Ack cursor and sender state** live in `state.json` (written to a temporary file,
//!   fsynced, renamed): the next unacked record id, the next batch `seq`, the count of dropped
//!   samples not yet reported, and the request in flight. A restart resends at most the request
//!   that was in flight when the agent died — with the same `seq`, so the server treats it as a
//!   retry (writes are idempotent; it is counted as possibly duplicate).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procwatch_model::TsMs;
use tracing::warn;

mod ledger;
mod segment;
#[cfg(test)]
mod tests;

use ledger::read_state;
pub use ledger::{Inflight, SpoolState};
use segment::{
    encode_record, scan_segment, segment_header, segment_name, Meta, Scan, Segment, BODY_FIXED,
    FRAME_LEN, MAX_RECORD,
};
pub use segment::{HEADER_LEN, MAGIC, VERSION};

/// Where and how much to spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool directory (created if missing).
    pub dir: PathBuf,
    /// Cap on the total size of the segment files, bytes. Default 256 MiB.
    pub max_bytes: u64,
    /// Records older than this (by their sweep `ts`) are dropped. Default 48 h.
    pub max_age: Duration,
    /// A segment is closed and a new one started past this size. Default 8 MiB.
    pub segment_bytes: u64,
    /// `fdatasync` after every append. Default true.
    pub fsync: bool,
}

impl SpoolConfig {
    /// The defaults for a spool in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(48 * 3600),
            segment_bytes: 8 << 20,
            fsync: true,
        }
    }
}

/// Spool failures. Only real I/O failures surface; corruption is repaired on open.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    /// A file or directory of the spool could not be read or written.
    Io {
        /// The file or directory.
        path: PathBuf,
        #[source]
        /// The operating system's error.
        source: io::Error,
    },
    /// `state.json` could not be written.
    #[error("spool state {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// One spooled record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's id (ids increase through the segments).
    pub id: u64,
    /// The sweep's timestamp, Unix ms.
    pub ts: TsMs,
    /// How many samples the payload holds (for drop accounting).
    pub samples: u32,
    /// The sweep as [`crate::encode_sweep`] wrote it.
    pub payload: Vec<u8>,
}

/// What a cap dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Records dropped.
    pub records: u64,
    /// Samples those records held.
    pub samples: u64,
}

impl Dropped {
    fn add(&mut self, o: Dropped) {
        self.records += o.records;
        self.samples += o.samples;
    }
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting to be sent.
    pub pending_records: u64,
    /// Bytes cut from torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Segment files set aside as unreadable.
    pub corrupt_segments: u64,
    /// The request in flight when the agent last stopped (it will be resent).
    pub inflight: Option<Inflight>,
}

/// The spool. Not internally synchronised: the agent keeps it behind a mutex.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    /// Open handle on the last segment (the one appended to).
    writer: Option<File>,
    next_id: u64,
    state: SpoolState,
    total_bytes: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, scanning and repairing every segment.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let mut report = OpenReport::default();
        let state = read_state(&cfg.dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(io_err(&cfg.dir))? {
            let entry = entry.map_err(io_err(&cfg.dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                names.push((first, path));
            }
        }
        names.sort();
        let mut segments = VecDeque::new();
        let mut total_bytes = 0;
        let mut max_id: Option<u64> = None;
        for (first_id, path) in names {
            match scan_segment(&path, first_id)? {
                Scan::Empty { truncated } => report.truncated_bytes += truncated,
                Scan::Ok { records, size, truncated } => {
                    if truncated > 0 {
                        warn!(
                            message = "Spool segment had a torn or corrupt tail; cut it off.",
                            path = %path.display(),
                            bytes = truncated
                        );
                        report.truncated_bytes += truncated;
                    }
                    if let Some(last) = records.last() {
                        max_id = Some(last.id);
                    }
                    total_bytes += size;
                    segments.push_back(Segment { first_id, path, size, records });
                }
                Scan::BadHeader => {
                    let aside = path.with_extension("seg.corrupt");
                    warn!(
                        message = "Spool segment has no valid header; set aside.",
                        path = %path.display(),
                        aside = %aside.display()
                    );
                    fs::rename(&path, &aside).map_err(io_err(&path))?;
                    report.corrupt_segments += 1;
                }
            }
        }
        let mut next_id = max_id.map_or(0, |m| m + 1);
        next_id = next_id.max(state.next_unacked);
        if let Some(inf) = state.inflight {
            next_id = next_id.max(inf.last_id + 1);
        }
        let mut spool = Spool { cfg, segments, writer: None, next_id, state, total_bytes };
        spool.gc()?;
        report.pending_records = spool.pending_records();
        report.inflight = spool.state.inflight;
        Ok((spool, report))
    }

    /// The directory the spool lives in.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The sender state (ack cursor, next seq, dropped counts, request in flight).
    pub fn state(&self) -> &SpoolState {
        &self.state
    }

    /// Records not yet acked.
    pub fn pending_records(&self) -> u64 {
        self.segments
            .iter()
            .flat_map(|s| s.records.iter())
            .filter(|m| m.id >= self.state.next_unacked)
            .count() as u64
    }

    /// Total size of the segment files, bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether any record waits to be sent.
    pub fn has_pending(&self) -> bool {
        self.segments
            .iter()
            .rev()
            .find_map(Segment::last_id)
            .is_some_and(|last| last >= self.state.next_unacked)
    }

    /// Appends one record (after enforcing the caps, which may drop the oldest records to make
    /// room). `now` is the wall clock in Unix ms, for the age cap. Returns the record's id and
    /// what the caps dropped.
    pub fn append(
        &mut self,
        ts: TsMs,
        samples: u32,
        payload: &[u8],
        now: TsMs,
    ) -> Result<(u64, Dropped), SpoolError> {
        let frame_len = FRAME_LEN + BODY_FIXED as u64 + payload.len() as u64;
        let mut dropped = self.enforce_age(now)?;
        if frame_len + HEADER_LEN > self.cfg.max_bytes || frame_len > MAX_RECORD as u64 {
            // Can never fit: drop this record itself, loudly.
            let d = Dropped { records: 1, samples: samples as u64 };
            warn!(
                message = "Sweep larger than the spool cap; dropped.",
                bytes = frame_len,
                max_bytes = self.cfg.max_bytes,
                samples
            );
            self.count_dropped(d)?;
            dropped.add(d);
            return Ok((self.next_id, dropped));
        }
        // Room for the record and, conservatively, for a new segment header.
        dropped.add(self.enforce_bytes(frame_len + HEADER_LEN)?);
        let need_new = match self.segments.back() {
            None => true,
            // An empty segment whose name is not the next id (its records were cut off) is
            // not reused: a segment's name must be the id of its first record.
            Some(seg) if seg.records.is_empty() => seg.first_id != self.next_id,
            Some(seg) => {
                seg.size + frame_len > self.cfg.segment_bytes
                    || seg.last_id().is_some_and(|l| l + 1 != self.next_id)
            }
        };
        if need_new || self.writer.is_none() {
            if need_new {
                self.start_segment()?;
            } else if let Some(seg) = self.segments.back() {
                let f =
                    OpenOptions::new().append(true).open(&seg.path).map_err(io_err(&seg.path))?;
                self.writer = Some(f);
            }
        }
        let id = self.next_id;
        let buf = encode_record(id, ts, samples, payload);
        let Some(seg) = self.segments.back_mut() else {
            unreachable!("a segment was just ensured")
        };
        let Some(w) = self.writer.as_mut() else { unreachable!("a writer was just ensured") };
        let offset = seg.size;
        let written =
            w.write_all(&buf).and_then(|()| if self.cfg.fsync { w.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // E.g. the disk is full. Cut the partial record off, so that the next append does
            // not land after garbage (which a reopen would cut off together with it).
            let _ = w.set_len(offset);
            self.writer = None;
            return Err(io_err(&seg.path)(e));
        }
        seg.size += frame_len;
        seg.records.push(Meta { id, offset, len: frame_len, ts, samples });
        self.total_bytes += frame_len;
        self.next_id += 1;
        Ok((id, dropped))
    }

    /// Reads unacked records oldest first, starting at the ack cursor: at most `max_records`,
    /// and no more than `max_bytes` of payload (but always at least one record if any).
    pub fn read(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, SpoolError> {
        self.read_range(self.state.next_unacked, u64::MAX, max_records, max_bytes)
    }

    /// Reads unacked records with `from <= id <= through`, oldest first, within the limits.
    pub fn read_range(
        &self,
        from: u64,
        through: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let from = from.max(self.state.next_unacked);
        let mut out: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        for seg in &self.segments {
            if seg.last_id().is_none_or(|l| l < from) {
                continue;
            }
            let file = File::open(&seg.path).map_err(io_err(&seg.path))?;
            for m in seg.records.iter().filter(|m| m.id >= from) {
                if m.id > through || out.len() >= max_records {
                    return Ok(out);
                }
                let plen = (m.len - FRAME_LEN) as usize - BODY_FIXED;
                if !out.is_empty() && bytes + plen > max_bytes {
                    return Ok(out);
                }
                let mut payload = vec![0; plen];
                file.read_exact_at(&mut payload, m.offset + FRAME_LEN + BODY_FIXED as u64)
                    .map_err(io_err(&seg.path))?;
                bytes += plen;
                out.push(Record { id: m.id, ts: m.ts, samples: m.samples, payload });
            }
        }
        Ok(out)
    }

    fn enforce_age(&mut self, now: TsMs) -> Result<Dropped, SpoolError> {
        let cutoff = now.saturating_sub(self.cfg.max_age.as_millis() as i64);
        let mut d = Dropped::default();
        let mut through = None;
        let mut gone = Vec::new();
        'outer: for seg in &self.segments {
            for m in &seg.records {
                if m.id < self.state.next_unacked {
                    continue;
                }
                if m.ts >= cutoff {
                    break 'outer;
                }
                d.records += 1;
                d.samples += m.samples as u64;
                through = Some(m.id);
                gone.push((m.id, m.samples));
            }
        }
        for (id, samples) in gone {
            self.note_drop(id, samples);
        }
        if let Some(id) = through {
            warn!(
                message = "Spooled sweeps older than the spool's max age were dropped.",
                records = d.records,
                samples = d.samples,
                max_age_s = self.cfg.max_age.as_secs()
            );
            self.state.next_unacked = id + 1;
            self.state.dropped_pending += d.samples;
            self.state.dropped_total += d.samples;
            self.persist()?;
            self.gc()?;
        }
        Ok(d)
    }

    fn enforce_bytes(&mut self, incoming: u64) -> Result<Dropped, SpoolError> {
        let mut d = Dropped::default();
        while self.total_bytes + incoming > self.cfg.max_bytes && !self.segments.is_empty() {
            if self.segments.len() == 1 {
                // The only segment is the one being written: close it so it can go.
                self.writer = None;
            }
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                self.writer = None;
            }
            let next_unacked = self.state.next_unacked;
            for m in seg.records.iter().filter(|m| m.id >= next_unacked) {
                d.records += 1;
                d.samples += m.samples as u64;
                self.note_drop(m.id, m.samples);
            }
            if let Some(last) = seg.last_id() {
                self.state.next_unacked = self.state.next_unacked.max(last + 1);
            }
            self.total_bytes -= seg.size;
            remove_file(&seg.path)?;
        }
        if d.records > 0 {
            warn!(
                message = "Spool is full; dropped the oldest sweeps.",
                records = d.records,
                samples = d.samples,
                max_bytes = self.cfg.max_bytes
            );
            self.state.dropped_pending += d.samples;
            self.state.dropped_total += d.samples;
        }
        if d.records > 0 {
            self.persist()?;
        }
        Ok(d)
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(segment_name(self.next_id));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&segment_header()).map_err(io_err(&path))?;
        if self.cfg.fsync {
            f.sync_all().map_err(io_err(&path))?;
            sync_dir(&self.cfg.dir)?;
        }
        self.writer = Some(f);
        self.total_bytes += HEADER_LEN;
        self.segments.push_back(Segment {
            first_id: self.next_id,
            path,
            size: HEADER_LEN,
            records: Vec::new(),
        });
        Ok(())
    }

    /// Deletes segments whose records are all acked, except the last one (kept for appends
    /// while it is open and not full).
    fn gc(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            if front.last_id().is_some_and(|l| l >= self.state.next_unacked) {
                break;
            }
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            self.total_bytes -= seg.size;
            remove_file(&seg.path)?;
        }
        Ok(())
    }

    /// The first segment's first id (for tests and diagnostics).
    pub fn first_segment_id(&self) -> Option<u64> {
        self.segments.front().map(|s| s.first_id)
    }
}

pub(super) fn remove_file(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Replaces `dir/name` with `body` atomically: a temporary file is written (and fsynced when
/// `fsync`), renamed over it, and the directory fsynced, so a crash leaves the old or the new
/// file whole. The spool's `state.json` and the agent's `settings.json` are written so.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    body: &[u8],
    fsync: bool,
) -> Result<(), SpoolError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(body).map_err(io_err(&tmp))?;
    if fsync {
        f.sync_data().map_err(io_err(&tmp))?;
    }
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if fsync {
        // The rename itself is durable only once the directory is.
        sync_dir(dir)?;
    }
    Ok(())
}
