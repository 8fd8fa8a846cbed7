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
