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
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procwatch_model::TsMs;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Segment file magic.
pub const MAGIC: &[u8; 8] = b"PWSPOOL\0";
/// Segment format version.
pub const VERSION: u32 = 1;
/// Segment header length in bytes.
pub const HEADER_LEN: u64 = 16;
/// Record frame: `len` + `crc`.
const FRAME_LEN: u64 = 8;
/// Fixed part of a record body: `id` + `ts` + `samples`.
const BODY_FIXED: usize = 20;
/// A record larger than this is treated as corrupt on read (the server refuses bodies past
/// 16 MiB anyway).
const MAX_RECORD: u32 = 64 << 20;
const STATE_FILE: &str = "state.json";

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
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool state {path}: {reason}")]
    State { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// One spooled record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    /// The sweep's timestamp, Unix ms.
    pub ts: TsMs,
    /// How many samples the payload holds (for drop accounting).
    pub samples: u32,
    pub payload: Vec<u8>,
}

/// A request the sender has built and may have sent: persisted so a restart resends exactly it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    pub seq: u64,
    /// The last record id the request holds (it holds every unacked record up to it).
    pub last_id: u64,
    /// The `dropped_samples` the request reports.
    pub dropped: u64,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolState {
    /// The first record id not yet acked.
    pub next_unacked: u64,
    /// The `seq` of the next new request.
    pub next_seq: u64,
    /// Dropped samples not yet reported to the server in an accepted batch.
    pub dropped_pending: u64,
    /// All samples ever dropped by this spool (caps and quarantine).
    pub dropped_total: u64,
    #[serde(default)]
    pub inflight: Option<Inflight>,
    /// Samples of the request in flight that a cap dropped while it was being sent: if that
    /// attempt succeeds they were delivered after all and are taken off the drop counts.
    #[serde(default)]
    pub inflight_dropped: u64,
}

/// What a cap dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub records: u64,
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

#[derive(Debug, Clone, Copy)]
struct Meta {
    id: u64,
    offset: u64,
    /// Whole frame length on disk.
    len: u64,
    ts: TsMs,
    samples: u32,
}

#[derive(Debug)]
struct Segment {
    first_id: u64,
    path: PathBuf,
    size: u64,
    records: Vec<Meta>,
}

impl Segment {
    fn last_id(&self) -> Option<u64> {
        self.records.last().map(|m| m.id)
    }
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

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
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
        let mut buf = Vec::with_capacity(frame_len as usize);
        buf.extend_from_slice(&((BODY_FIXED + payload.len()) as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&ts.to_le_bytes());
        buf.extend_from_slice(&samples.to_le_bytes());
        buf.extend_from_slice(payload);
        let crc = crc32fast::hash(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
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

    /// Marks every record up to and including `id` as delivered, clears the request in flight
    /// and lowers the unreported drop count by `reported_dropped`; persists the state and
    /// deletes fully acked segments. Returns the samples counted as dropped that the request
    /// delivered after all (a cap dropped them while it was on the wire).
    pub fn ack_through(&mut self, id: u64, reported_dropped: u64) -> Result<u64, SpoolError> {
        self.state.next_unacked = self.state.next_unacked.max(id + 1);
        self.state.dropped_pending = self.state.dropped_pending.saturating_sub(reported_dropped);
        let restored = std::mem::take(&mut self.state.inflight_dropped);
        if restored > 0 {
            self.state.dropped_pending = self.state.dropped_pending.saturating_sub(restored);
            self.state.dropped_total = self.state.dropped_total.saturating_sub(restored);
            info!(
                message = "Dropped sweeps were in the request the server just accepted; not dropped after all.",
                samples = restored
            );
        }
        self.state.inflight = None;
        self.persist()?;
        self.gc()?;
        Ok(restored)
    }

    /// The request in flight is about to be rebuilt from what the spool still holds: drops of
    /// its records are final.
    pub fn settle_inflight_drops(&mut self) {
        self.state.inflight_dropped = 0;
    }

    fn note_drop(&mut self, id: u64, samples: u32) {
        if self.state.inflight.is_some_and(|i| id <= i.last_id) {
            self.state.inflight_dropped += samples as u64;
        }
    }

    /// Records the request about to be sent (so a restart resends the same request with the
    /// same `seq`) and persists it. A new request takes `next_seq`.
    pub fn set_inflight(&mut self, inflight: Inflight) -> Result<(), SpoolError> {
        self.state.next_seq = self.state.next_seq.max(inflight.seq + 1);
        self.state.inflight = Some(inflight);
        self.persist()
    }

    /// Takes `seq` for a request that holds no record (it only reports drops).
    pub fn take_seq(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.state.next_seq = self.state.next_seq.max(seq + 1);
        self.persist()
    }

    /// The server accepted a request that only reported `reported` dropped samples.
    pub fn ack_dropped(&mut self, reported: u64) -> Result<(), SpoolError> {
        self.state.dropped_pending = self.state.dropped_pending.saturating_sub(reported);
        self.persist()
    }

    /// Forgets the request in flight without acking (e.g. it is to be split), giving its `seq`
    /// back when the server never accepted it.
    pub fn clear_inflight(&mut self, reuse_seq: bool) -> Result<(), SpoolError> {
        self.state.inflight_dropped = 0;
        if let Some(inf) = self.state.inflight.take() {
            if reuse_seq && self.state.next_seq == inf.seq + 1 {
                self.state.next_seq = inf.seq;
            }
        }
        self.persist()
    }

    /// Counts samples dropped outside the caps (e.g. quarantined) so they are reported.
    pub fn count_dropped(&mut self, d: Dropped) -> Result<(), SpoolError> {
        self.state.dropped_pending += d.samples;
        self.state.dropped_total += d.samples;
        self.persist()
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
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        f.write_all(&header).map_err(io_err(&path))?;
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

    fn persist(&self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(STATE_FILE);
        let tmp = self.cfg.dir.join("state.json.tmp");
        let body = serde_json::to_vec(&self.state)
            .map_err(|e| SpoolError::State { path: path.clone(), reason: e.to_string() })?;
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&body).map_err(io_err(&tmp))?;
        if self.cfg.fsync {
            f.sync_data().map_err(io_err(&tmp))?;
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if self.cfg.fsync {
            // The rename itself is durable only once the directory is.
            sync_dir(&self.cfg.dir)?;
        }
        Ok(())
    }

    /// The first segment's first id (for tests and diagnostics).
    pub fn first_segment_id(&self) -> Option<u64> {
        self.segments.front().map(|s| s.first_id)
    }
}

fn remove_file(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

fn read_state(dir: &Path) -> Result<SpoolState, SpoolError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => Ok(s),
            Err(e) => {
                // The state file is replaced atomically, so this is outside damage. Start from
                // the beginning: resending is harmless (idempotent writes), losing is not.
                warn!(
                    message = "Spool state unreadable; resending everything spooled.",
                    path = %path.display(),
                    error = %e
                );
                Ok(SpoolState::default())
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SpoolState::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

enum Scan {
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
fn scan_segment(path: &Path, first_id: u64) -> Result<Scan, SpoolError> {
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
fn parse_records(data: &[u8], mut expect_id: Option<u64>) -> (Vec<Meta>, u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig { segment_bytes: 200, fsync: false, ..SpoolConfig::new(dir) }
    }

    fn now() -> TsMs {
        1_764_070_000_000
    }

    #[test]
    fn append_read_ack_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, rep) = Spool::open(cfg(dir.path())).unwrap();
        assert_eq!(rep.pending_records, 0);
        for i in 0..10u32 {
            let (id, d) = s.append(now(), i, format!("p{i}").as_bytes(), now()).unwrap();
            assert_eq!(id, i as u64);
            assert_eq!(d, Dropped::default());
        }
        let r = s.read(3, usize::MAX).unwrap();
        assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(r[2].payload, b"p2");
        s.ack_through(2, 0).unwrap();
        drop(s);
        let (s, rep) = Spool::open(cfg(dir.path())).unwrap();
        assert_eq!(rep.pending_records, 7);
        let r = s.read(100, usize::MAX).unwrap();
        assert_eq!(r.first().map(|r| r.id), Some(3));
        assert_eq!(r.last().map(|r| (r.id, r.samples)), Some((9, 9)));
    }

    #[test]
    fn torn_tail_is_cut_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.segment_bytes = 1 << 20;
        let (mut s, _) = Spool::open(c.clone()).unwrap();
        for i in 0..3 {
            s.append(now(), 1, &[i; 50], now()).unwrap();
        }
        drop(s);
        let seg = dir.path().join(segment_name(0));
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 7).unwrap();
        let (mut s, rep) = Spool::open(c.clone()).unwrap();
        assert_eq!(rep.pending_records, 2);
        assert!(rep.truncated_bytes > 0);
        let (id, _) = s.append(now(), 1, b"after", now()).unwrap();
        assert_eq!(id, 2);
        drop(s);
        let (s, rep) = Spool::open(c).unwrap();
        assert_eq!(rep.truncated_bytes, 0);
        let r = s.read(10, usize::MAX).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].payload, b"after");
    }

    #[test]
    fn flipped_byte_is_detected_by_crc() {
        let mut data = Vec::new();
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&VERSION.to_le_bytes());
        data.extend_from_slice(&[0; 4]);
        for id in 0..2u64 {
            let mut body = Vec::new();
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&5i64.to_le_bytes());
            body.extend_from_slice(&3u32.to_le_bytes());
            body.extend_from_slice(b"payload");
            data.extend_from_slice(&(body.len() as u32).to_le_bytes());
            data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            data.extend_from_slice(&body);
        }
        let (recs, good) = parse_records(&data, None);
        assert_eq!(recs.len(), 2);
        assert_eq!(good, data.len() as u64);
        let n = data.len();
        data[n - 2] ^= 0x40;
        let (recs, good) = parse_records(&data, None);
        assert_eq!(recs.len(), 1);
        assert_eq!(good, recs[0].offset + recs[0].len);
        // A garbage length is a torn tail too.
        data.truncate(good as usize);
        data.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(parse_records(&data, None).0.len(), 1);
    }

    #[test]
    fn bad_header_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment_name(0)), b"not a spool segment at all").unwrap();
        let (s, rep) = Spool::open(cfg(dir.path())).unwrap();
        assert_eq!(rep.corrupt_segments, 1);
        assert_eq!(s.pending_records(), 0);
        assert!(dir.path().join("00000000000000000000.seg.corrupt").exists());
    }

    #[test]
    fn byte_cap_drops_oldest_segment_and_counts_samples() {
        let dir = tempfile::tempdir().unwrap();
        let c = SpoolConfig {
            max_bytes: 1000,
            segment_bytes: 300,
            fsync: false,
            ..SpoolConfig::new(dir.path())
        };
        let (mut s, _) = Spool::open(c).unwrap();
        let mut dropped = Dropped::default();
        for _ in 0..20 {
            let (_, d) = s.append(now(), 7, &[1; 72], now()).unwrap();
            dropped.add(d);
        }
        // 100-byte frames, 2 per 300-byte segment (+16 header): the cap keeps about 9.
        assert!(s.total_bytes() <= 1000, "{}", s.total_bytes());
        assert!(dropped.records > 0);
        assert_eq!(dropped.samples, dropped.records * 7);
        assert_eq!(s.pending_records() + dropped.records, 20);
        assert_eq!(s.state().dropped_pending, dropped.samples);
        assert_eq!(s.state().dropped_total, dropped.samples);
        // What is left is the newest, in order.
        let r = s.read(100, usize::MAX).unwrap();
        assert_eq!(r.last().map(|r| r.id), Some(19));
        assert!(r.windows(2).all(|w| w[1].id == w[0].id + 1));
        // Reporting the drop clears the pending count.
        let last = r.last().unwrap().id;
        s.ack_through(last, dropped.samples).unwrap();
        assert_eq!(s.state().dropped_pending, 0);
    }

    #[test]
    fn drop_of_a_request_on_the_wire_is_undone_when_it_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let c = SpoolConfig {
            max_bytes: 500,
            segment_bytes: 250,
            fsync: false,
            ..SpoolConfig::new(dir.path())
        };
        let (mut s, _) = Spool::open(c).unwrap();
        // 100-byte frames, 2 per segment.
        s.append(now(), 5, &[1; 72], now()).unwrap();
        s.append(now(), 5, &[1; 72], now()).unwrap();
        s.set_inflight(Inflight { seq: 0, last_id: 1, dropped: 0 }).unwrap();
        let mut dropped = Dropped::default();
        for _ in 0..3 {
            dropped.add(s.append(now(), 5, &[1; 72], now()).unwrap().1);
        }
        assert_eq!(dropped.samples, 10);
        assert_eq!(s.state().dropped_pending, 10);
        // The request holding ids 0 and 1 was accepted: they were delivered after all.
        assert_eq!(s.ack_through(1, 0).unwrap(), 10);
        assert_eq!(s.state().dropped_pending, 0);
        assert_eq!(s.state().dropped_total, 0);
        // Had it failed instead, the rebuilt request would not hold them: the drop is final.
        s.set_inflight(Inflight { seq: 1, last_id: 3, dropped: 0 }).unwrap();
        for _ in 0..3 {
            s.append(now(), 5, &[1; 72], now()).unwrap();
        }
        s.settle_inflight_drops();
        assert_eq!(s.ack_through(3, 0).unwrap(), 0);
        assert!(s.state().dropped_pending > 0);
    }

    #[test]
    fn age_cap_drops_expired_records() {
        let dir = tempfile::tempdir().unwrap();
        let c = SpoolConfig {
            max_age: Duration::from_secs(60),
            fsync: false,
            ..SpoolConfig::new(dir.path())
        };
        let (mut s, _) = Spool::open(c).unwrap();
        for i in 0..5 {
            s.append(now() + i * 30_000, 2, b"x", now()).unwrap();
        }
        // At now + 150 s, records at +0 and +30 s (older than +90 s) expire.
        let (_, d) = s.append(now() + 150_000, 2, b"y", now() + 150_000).unwrap();
        assert_eq!(d, Dropped { records: 3, samples: 6 });
        let r = s.read(100, usize::MAX).unwrap();
        assert!(r.iter().all(|r| r.ts >= now() + 90_000));
        assert_eq!(r.len() as u64 + d.records, 6);
    }

    #[test]
    fn inflight_and_seq_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(cfg(dir.path())).unwrap();
        s.append(now(), 1, b"a", now()).unwrap();
        s.set_inflight(Inflight { seq: 0, last_id: 0, dropped: 0 }).unwrap();
        drop(s);
        let (mut s, rep) = Spool::open(cfg(dir.path())).unwrap();
        assert_eq!(rep.inflight.map(|i| i.seq), Some(0));
        assert_eq!(s.state().next_seq, 1);
        s.ack_through(0, 0).unwrap();
        assert_eq!(s.state().inflight, None);
        s.clear_inflight(true).unwrap();
        assert_eq!(s.state().next_seq, 1);
    }
}
