//! Unit tests of the spool: append, read, ack, torn tails, caps and the ledger across reopen.

use super::segment::parse_records;
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
