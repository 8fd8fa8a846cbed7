//! Group commit of the data INSERTs (`samples`, `host_totals`, `extras`) with several INSERTs in
//! flight.
//!
//! Measured (BENCHMARKS.md, "ClickHouse cluster", Run 4; `examples/insert_profile.rs`): a
//! replicated INSERT costs the cluster about the same CPU, ZooKeeper transactions and parts
//! whether it carries 300 rows or 4,800, so one INSERT per one-sweep batch spends the two cores
//! on per-INSERT overhead. A batch therefore joins a queue; while fewer than `max_in_flight`
//! INSERTs run, a new one starts with everything queued (up to `max_group_rows`), at once or,
//! with a `linger` set, once it has waited that long for more batches to share it; under load
//! the batches that queue behind the running INSERTs go together in the next one (without a
//! linger). (Run 2's group commit allowed one INSERT in flight and serialized the writes; this
//! one keeps the parallelism.) The linger is off by default: Run 5 measured 5 ms at 4
//! concurrent writers and the rate fell (same-run ratio to InfluxDB 0.29, 0.29 and 0.09
//! against 0.18–0.41 without). The likely reason (inferred, not measured per shard): the
//! batches of a group are hosts on different shards, so a group of two still costs a
//! replicated INSERT on each shard it touches and answers when the slower has, after the
//! linger. At 16 writers it carried 4.7 instead of 2.9 batches per INSERT at the same rate.
//!
//! With shard-aware writes (`shard.rs`) the store keeps one group commit per shard
//! ([`Writer::Sharded`]), each sending its groups straight to its shard's local tables, with
//! its own INSERT slots (`max_inserts_in_flight_per_shard`, 2 by default: with 1, Run 6 at 4
//! writers fell to half the rate): while a shard's INSERTs are in flight, that shard's batches
//! queue and go together in its next one, and a
//! group never spans two shards (a `Distributed` INSERT of a group over both shards answers
//! when the slower shard has; BENCHMARKS.md, Run 6).
//!
//! Every batch of a group gets the group's result: `Ok` only once ClickHouse acknowledged the
//! INSERT holding its rows (`insert_distributed_sync=1`: written on a replica of every target
//! shard). A failed group fails every batch in it, even if one shard took its part: the
//! agents retry, and the rows written twice are the same `(host, process, ts, version)`, which
//! `ReplacingMergeTree` read `FINAL` counts once.
//!
//! Bounds: the rows waiting in the queue are capped (`MAX_QUEUED_ROWS`; a writer waits for room
//! beyond it), a group never exceeds `max_group_rows` unless one batch alone does, and the
//! linger is at most `MAX_LINGER` (100 ms), so a batch waits at most one linger before its
//! INSERT starts when a slot is free.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use procwatch_model::clock::Clock;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::extras::ExtrasRow;
use crate::rows::SampleRow;
use crate::shard::Replicas;
use crate::{ClickHouseError, Conn};

/// Rows waiting for an INSERT, over every batch queued: past this a writer waits for room.
pub const MAX_QUEUED_ROWS: usize = 400_000;

/// The longest linger a configuration may ask for (a longer one is cut to this).
pub const MAX_LINGER: Duration = Duration::from_millis(100);

/// The rows one batch (or one group of batches) writes: samples and host totals in one table,
/// the opt-in extras in their own.
#[derive(Default)]
pub struct Rows {
    pub samples: Vec<SampleRow>,
    pub extras: Vec<ExtrasRow>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.samples.len() + self.extras.len()
    }

    pub fn append(&mut self, mut other: Rows) {
        self.samples.append(&mut other.samples);
        self.extras.append(&mut other.extras);
    }
}

/// Where a group's INSERT goes.
pub enum Target {
    /// The `Distributed` tables, through the store's node (`insert_distributed_sync=1`): a
    /// group may hold hosts of every shard.
    Distributed(Box<Conn>),
    /// One shard's local tables on one of its replicas (`shard.rs`): every host of the group
    /// is on that shard.
    Shard(Replicas),
}

impl Target {
    async fn insert_rows(&self, rows: &Rows) -> Result<(), ClickHouseError> {
        match self {
            Target::Distributed(conn) => conn.insert_rows(rows).await,
            Target::Shard(replicas) => replicas.insert_rows(rows).await,
        }
    }
}

/// An INSERT's outcome, shared by the batches of its group.
pub type Shared = Result<(), Arc<ClickHouseError>>;

struct Waiting {
    rows: Rows,
    done: oneshot::Sender<Shared>,
    room: OwnedSemaphorePermit,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Waiting>,
    in_flight: usize,
}

struct Inner {
    target: Target,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    room: Arc<Semaphore>,
    max_in_flight: usize,
    max_group_rows: usize,
    linger: Duration,
    /// Group INSERTs sent and batches they carried.
    groups: AtomicU64,
    batches: AtomicU64,
    /// Time the data INSERTs took, summed (µs).
    insert_us: AtomicU64,
}

/// How the group commit is set up (from [`crate::ClickHouseConfig`]).
pub struct Settings {
    pub max_in_flight: usize,
    pub max_group_rows: usize,
    pub linger: Duration,
}

/// What the group commit did since the store connected.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub groups: u64,
    pub batches: u64,
    pub insert_time: Duration,
}

/// The data writer: one per store.
pub struct GroupCommit {
    inner: Arc<Inner>,
}

impl GroupCommit {
    pub fn new(target: Target, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        GroupCommit {
            inner: Arc::new(Inner {
                target,
                clock,
                state: Mutex::new(State::default()),
                room: Arc::new(Semaphore::new(MAX_QUEUED_ROWS)),
                max_in_flight: settings.max_in_flight.max(1),
                max_group_rows: settings.max_group_rows.max(1),
                linger: settings.linger.min(MAX_LINGER),
                groups: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                insert_us: AtomicU64::new(0),
            }),
        }
    }

    /// Group INSERTs sent, the batches they carried and the time they took, since the store
    /// connected.
    pub fn stats(&self) -> Stats {
        Stats {
            groups: self.inner.groups.load(Ordering::Relaxed),
            batches: self.inner.batches.load(Ordering::Relaxed),
            insert_time: Duration::from_micros(self.inner.insert_us.load(Ordering::Relaxed)),
        }
    }

    /// Writes one batch's rows; returns once the INSERT holding them was acknowledged (or
    /// failed). Cancelling the call does not cancel the INSERT.
    pub async fn write(&self, rows: Rows) -> Shared {
        if rows.len() == 0 {
            return Ok(());
        }
        let want = u32::try_from(rows.len().min(MAX_QUEUED_ROWS)).unwrap_or(u32::MAX);
        let room = self.inner.room.clone().acquire_many_owned(want).await.map_err(|_| {
            Arc::new(ClickHouseError::GroupCommit("the write queue was closed".into()))
        })?;
        let (done, answer) = oneshot::channel();
        let start = {
            let mut st = self.inner.state.lock();
            st.queue.push_back(Waiting { rows, done, room });
            let start = st.in_flight < self.inner.max_in_flight;
            if start {
                st.in_flight += 1;
            }
            start
        };
        if start {
            tokio::spawn(drain(self.inner.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(Arc::new(ClickHouseError::GroupCommit(
                "the INSERT task ended without an answer".into(),
            )))
        })
    }
}

/// Gives the slot back if a drain task panics while holding it.
struct Slot {
    inner: Arc<Inner>,
    held: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.held {
            self.inner.state.lock().in_flight -= 1;
        }
    }
}

/// One INSERT slot: sends groups while batches are queued, then frees the slot. A new slot
/// first lingers (`linger`, when set) so that the batches arriving meanwhile share its INSERT;
/// later groups of the same slot have waited for the previous INSERT and go at once.
async fn drain(inner: Arc<Inner>) {
    let mut slot = Slot { inner: inner.clone(), held: true };
    if !inner.linger.is_zero() {
        tokio::time::sleep(inner.linger).await;
    }
    loop {
        let group: Vec<Waiting> = {
            let mut st = inner.state.lock();
            let mut group = Vec::new();
            let mut n = 0;
            while let Some(w) = st.queue.front() {
                if !group.is_empty() && n + w.rows.len() > inner.max_group_rows {
                    break;
                }
                n += w.rows.len();
                group.push(st.queue.pop_front().expect("front exists"));
            }
            if group.is_empty() {
                // Freed under the same lock that queued work checks: nothing is stranded.
                st.in_flight -= 1;
                slot.held = false;
                return;
            }
            group
        };
        inner.groups.fetch_add(1, Ordering::Relaxed);
        inner.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
        let mut rows = Rows::default();
        let mut answers = Vec::with_capacity(group.len());
        for w in group {
            rows.append(w.rows);
            answers.push((w.done, w.room));
        }
        let started = inner.clock.instant();
        let out = inner.target.insert_rows(&rows).await.map_err(Arc::new);
        let took = inner.clock.instant().saturating_duration_since(started);
        inner.insert_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        drop(rows);
        for (done, room) in answers {
            let _ = done.send(out.clone());
            drop(room);
        }
    }
}

/// The store's data writer: one group commit through the `Distributed` tables, or one per
/// shard straight to its local tables (`shard.rs`), a batch joining its host's shard's.
pub enum Writer {
    /// Every batch through the `Distributed` tables.
    Distributed(GroupCommit),
    /// Per shard (index = the shard in cluster order), routed by `map`.
    Sharded { map: crate::shard::ShardMap, shards: Vec<GroupCommit> },
}

impl Writer {
    /// Writes one batch's rows (all of `host`); returns once the INSERT holding them was
    /// acknowledged (or failed).
    pub async fn write(&self, host: &str, rows: Rows) -> Shared {
        match self {
            Writer::Distributed(g) => g.write(rows).await,
            Writer::Sharded { map, shards } => shards[map.shard_of(host)].write(rows).await,
        }
    }

    /// What the group commits did, summed over the shards.
    pub fn stats(&self) -> Stats {
        let all: &[GroupCommit] = match self {
            Writer::Distributed(g) => std::slice::from_ref(g),
            Writer::Sharded { shards, .. } => shards,
        };
        all.iter().map(GroupCommit::stats).fold(
            Stats { groups: 0, batches: 0, insert_time: Duration::ZERO },
            |a, b| Stats {
                groups: a.groups + b.groups,
                batches: a.batches + b.batches,
                insert_time: a.insert_time + b.insert_time,
            },
        )
    }

    /// Whether data goes straight to the shards.
    pub fn sharded(&self) -> Option<&crate::shard::ShardMap> {
        match self {
            Writer::Distributed(_) => None,
            Writer::Sharded { map, .. } => Some(map),
        }
    }
}
