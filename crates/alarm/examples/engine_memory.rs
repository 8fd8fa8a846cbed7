//! The alarm engine's heap per quiet process, counted by the allocator (issue 16): feeds N
//! quiet processes (cpu and mem 0–10 %, cores 0–0.1, at 10 s) through `Engine::feed` host by
//! host and `Engine::finish` once a pass, as the server's evaluator does, with the default
//! rules, then reports the bytes the engine holds (allocated minus freed while it was built,
//! the inputs freed) per process. `Engine::estimated_bytes` is printed beside it, to check
//! the gauge's model against the count.
//!
//! `cargo run --release -p procwatch-alarm --example engine_memory [-- HOSTS PROCESSES PASSES]`
//! (default 1000 hosts × 100 processes, 6 passes: 100,000 processes, 300,000 rule series).

use procwatch_alarm::{Engine, HostSeen, RuleSet, SeriesInput};
use procwatch_model::Sample;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Bytes requested and not yet freed.
static REQUESTED: AtomicIsize = AtomicIsize::new(0);
/// The same in glibc malloc chunks (64-bit): request + 8 rounded up to 16, at least 32.
static CHUNKS: AtomicIsize = AtomicIsize::new(0);

fn chunk(size: usize) -> isize {
    (size + 8).next_multiple_of(16).max(32) as isize
}

fn track(size: usize, sign: isize) {
    REQUESTED.fetch_add(sign * size as isize, Ordering::Relaxed);
    CHUNKS.fetch_add(sign * chunk(size), Ordering::Relaxed);
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            track(l.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            track(l.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        track(l.size(), -1);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            track(l.size(), -1);
            track(new, 1);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> (isize, isize) {
    (REQUESTED.load(Ordering::Relaxed), CHUNKS.load(Ordering::Relaxed))
}

/// A deterministic value in `0..1` (xorshift).
fn unit(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args().nth(i).map_or(default, |a| a.parse().expect("a count"))
    };
    let (n_hosts, n_procs, passes) = (arg(1, 1000), arg(2, 100), arg(3, 6));
    const STEP: i64 = 10_000;
    let t0: i64 = 1_700_000_000_000;
    let hosts: Vec<String> = (0..n_hosts).map(|h| format!("host-{h:05}")).collect();
    let procs: Vec<String> = (0..n_procs).map(|p| format!("proc-{p:04}")).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;

    let before = live();
    let mut engine = Engine::new(RuleSet::default());
    let mut events = 0usize;
    for pass in 0..passes as i64 {
        let now = t0 + pass * STEP;
        for host in &hosts {
            let samples: Vec<[Sample; 1]> = procs
                .iter()
                .map(|p| {
                    let cpu = 10.0 * unit(&mut rng);
                    [Sample {
                        ts: now,
                        process: p.clone(),
                        cpu,
                        cores: cpu / 100.0,
                        mem: 10.0 * unit(&mut rng),
                        rss: 1 << 20,
                        count: 1,
                        extras: None,
                    }]
                })
                .collect();
            let inputs: Vec<SeriesInput<'_>> = procs
                .iter()
                .zip(&samples)
                .map(|(p, s)| SeriesInput { host, process: p, samples: s, interval_ms: STEP })
                .collect();
            events += engine.feed(&inputs).len();
        }
        let seen: Vec<HostSeen<'_>> = hosts
            .iter()
            .map(|h| HostSeen { host: h, last_seen: now, interval_ms: STEP, pause: None })
            .collect();
        events += engine.finish(now, &seen).len();
    }
    let after = live();
    let n = (n_hosts * n_procs) as f64;
    let (requested, chunks) = ((after.0 - before.0) as f64, (after.1 - before.1) as f64);
    let series = engine.warmups().len();
    println!(
        "{} processes ({n_hosts} hosts × {n_procs}), {series} rule series ({} dormant), \
         {passes} samples each at 10 s, {events} events",
        n_hosts * n_procs,
        engine.dormant_series()
    );
    println!(
        "engine heap: {:.1} MiB requested = {:.1} bytes a process ({:.1} a series); \
         {:.1} bytes a process in glibc chunks",
        requested / (1 << 20) as f64,
        requested / n,
        requested / series as f64,
        chunks / n
    );
    println!("estimated_bytes(): {:.1} bytes a process", engine.estimated_bytes() as f64 / n);
}
