//! Model check of the spool: random appends, reads, acks, torn or corrupted tails and
//! reopenings, checked against an in-memory queue (`VecDeque`).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use procwatch_agent::spool::{Spool, SpoolConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        samples: u32,
        payload: Vec<u8>,
    },
    Read(usize),
    Ack(usize),
    Reopen,
    /// Close, cut `cut` bytes (1..=frame) off the last record, or flip one byte of it, reopen.
    Damage {
        cut: usize,
        flip: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u32..50, proptest::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(samples, payload)| Op::Append { samples, payload }),
        2 => (1usize..6).prop_map(Op::Read),
        2 => (0usize..5).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => (1usize..200, any::<bool>()).prop_map(|(cut, flip)| Op::Damage { cut, flip }),
    ]
}

const TS: i64 = 1_764_070_000_000;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig { segment_bytes: 180, fsync: false, ..SpoolConfig::new(dir) }
}

fn last_segment(dir: &Path) -> Option<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop()
}

struct Model {
    /// Unacked records: (id, samples, payload).
    queue: VecDeque<(u64, u32, Vec<u8>)>,
    next_id: u64,
    /// Frame length of the last record appended, and whether it is still unacked.
    last: Option<(u64, usize)>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn spool_behaves_like_a_queue(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(config(dir.path())).unwrap();
        let mut m = Model { queue: VecDeque::new(), next_id: 0, last: None };
        for op in ops {
            match op {
                Op::Append { samples, payload } => {
                    let (id, dropped) = spool.append(TS, samples, &payload, TS).unwrap();
                    prop_assert_eq!(dropped.records, 0);
                    prop_assert_eq!(id, m.next_id);
                    m.next_id += 1;
                    m.last = Some((id, 8 + 20 + payload.len()));
                    m.queue.push_back((id, samples, payload));
                }
                Op::Read(k) => {
                    let got = spool.read(k, usize::MAX).unwrap();
                    let want: Vec<_> = m.queue.iter().take(k).cloned().collect();
                    prop_assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        prop_assert_eq!(g.id, w.0);
                        prop_assert_eq!(g.samples, w.1);
                        prop_assert_eq!(&g.payload, &w.2);
                        prop_assert_eq!(g.ts, TS);
                    }
                }
                Op::Ack(k) => {
                    if k > 0 && k <= m.queue.len() {
                        let id = m.queue[k - 1].0;
                        spool.ack_through(id, 0).unwrap();
                        m.queue.drain(..k);
                    }
                }
                Op::Reopen => {
                    drop(spool);
                    spool = Spool::open(config(dir.path())).unwrap().0;
                }
                Op::Damage { cut, flip } => {
                    drop(spool);
                    if let (Some((last_id, frame)), Some(seg)) = (m.last, last_segment(dir.path())) {
                        let len = std::fs::metadata(&seg).unwrap().len();
                        // Only when the last record is still in that file (it always is: the
                        // last segment is never deleted, and caps are off here).
                        let cut = cut.min(frame) as u64;
                        let f = OpenOptions::new().write(true).read(true).open(&seg).unwrap();
                        if flip {
                            let at = len - cut;
                            let mut b = [0u8];
                            f.read_exact_at(&mut b, at).unwrap();
                            f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
                        } else {
                            f.set_len(len - cut).unwrap();
                        }
                        drop(f);
                        // The damaged record is gone; if it was unacked, the queue loses it
                        // and its id is given out again.
                        if m.queue.back().is_some_and(|r| r.0 == last_id) {
                            m.queue.pop_back();
                            m.next_id = last_id;
                        }
                        m.last = None;
                    }
                    let (s, report) = Spool::open(config(dir.path())).unwrap();
                    spool = s;
                    prop_assert_eq!(report.pending_records, m.queue.len() as u64);
                }
            }
            prop_assert_eq!(spool.pending_records(), m.queue.len() as u64);
            prop_assert_eq!(spool.has_pending(), !m.queue.is_empty());
        }
        // Whatever happened, a final reopen reads back exactly the queue.
        drop(spool);
        let (spool, _) = Spool::open(config(dir.path())).unwrap();
        let got = spool.read(usize::MAX, usize::MAX).unwrap();
        let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        let want: Vec<u64> = m.queue.iter().map(|r| r.0).collect();
        prop_assert_eq!(ids, want);
    }
}

#[derive(Debug, Clone)]
enum CapOp {
    Append(usize),
    Ack(usize),
    Reopen,
}

fn cap_op() -> impl Strategy<Value = CapOp> {
    prop_oneof![
        6 => (0usize..120).prop_map(CapOp::Append),
        2 => (0usize..4).prop_map(CapOp::Ack),
        1 => Just(CapOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Under a byte cap: the spool never exceeds it, keeps the newest records in order, and
    /// every record appended is either pending, acked, or counted as dropped.
    #[test]
    fn byte_cap_keeps_the_newest_and_counts_the_rest(
        ops in proptest::collection::vec(cap_op(), 1..80),
        max_bytes in 400u64..1500,
        segment_bytes in 100u64..500,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig { max_bytes, segment_bytes, fsync: false, ..SpoolConfig::new(dir.path()) };
        let (mut spool, _) = Spool::open(cfg.clone()).unwrap();
        // Model: the unacked records (id -> samples), and what was dropped from them.
        let mut live: std::collections::BTreeMap<u64, u32> = Default::default();
        let mut model_dropped = 0u64;
        let mut reported_dropped = 0u64;
        let mut last_appended = None;
        for op in ops {
            match op {
                CapOp::Append(len) => {
                    let samples = len as u32 % 7;
                    let (id, d) = spool.append(TS, samples, &vec![7u8; len], TS).unwrap();
                    reported_dropped += d.samples;
                    live.insert(id, samples);
                    last_appended = Some(id);
                    prop_assert!(spool.total_bytes() <= max_bytes,
                        "{} > {max_bytes}", spool.total_bytes());
                }
                CapOp::Ack(k) => {
                    let recs = spool.read(k, usize::MAX).unwrap();
                    if let Some(last) = recs.last() {
                        spool.ack_through(last.id, 0).unwrap();
                        live.retain(|id, _| *id > last.id);
                    }
                }
                CapOp::Reopen => {
                    drop(spool);
                    spool = Spool::open(cfg.clone()).unwrap().0;
                }
            }
            let pending: Vec<u64> =
                spool.read(usize::MAX, usize::MAX).unwrap().iter().map(|r| r.id).collect();
            // Whatever left `live` without an ack was dropped by the cap.
            let gone: Vec<u64> = live.keys().copied().filter(|id| !pending.contains(id)).collect();
            for id in gone {
                model_dropped += live.remove(&id).unwrap_or(0) as u64;
            }
            // Pending is exactly the model's unacked records, consecutive, the newest kept.
            prop_assert_eq!(&pending, &live.keys().copied().collect::<Vec<_>>());
            prop_assert!(pending.windows(2).all(|w| w[1] == w[0] + 1), "{pending:?}");
            if !pending.is_empty() {
                prop_assert_eq!(pending.last().copied(), last_appended);
            }
            prop_assert_eq!(model_dropped, reported_dropped);
            prop_assert_eq!(spool.state().dropped_total, reported_dropped);
            prop_assert_eq!(spool.pending_records(), pending.len() as u64);
        }
    }
}
