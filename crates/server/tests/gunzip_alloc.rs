//! What one gzip request costs in heap while it is decoded: the decoder's own state and the
//! output, not fixed 32 + 64 KiB staging buffers per request in flight (issue 16: ingestion
//! buffers were a sizeable part of the server's memory at 30,000 series). A test binary of
//! its own, because it installs a counting allocator (counting only the test's thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static NOW: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = ON.try_with(|on| {
        if on.get() {
            let now = NOW.with(|n| {
                let v = (n.get() as isize + delta).max(0) as usize;
                n.set(v);
                v
            });
            PEAK.with(|p| p.set(p.get().max(now)));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        track(l.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        track(-(l.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        track(new as isize - l.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap bytes allocated by `f` on this thread above what it held before.
fn peak_of(f: impl FnOnce()) -> usize {
    NOW.with(|n| n.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    PEAK.with(|p| p.get())
}

#[test]
fn a_small_gzip_body_costs_the_decoder_and_its_output_not_staging_buffers() {
    let json = br#"{"host":"h","samples":[]}"#.repeat(40); // 1 KB
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&json).unwrap();
    let body = e.finish().unwrap();
    let mut out = Vec::new();
    let peak = peak_of(|| out = procwatch_server::ingest::gunzip_bounded(&body, 16 << 20).unwrap());
    assert_eq!(out, json);
    // The inflate state is ≈ 43 KiB (its 32 KiB window and tables); before, a 32 KiB input
    // buffer and a 64 KiB chunk came on top (≈ 140 KiB).
    assert!(peak < 64 * 1024, "peak heap of one small gunzip: {peak} bytes");
    eprintln!("peak heap of one 1 KB gunzip: {peak} bytes");
}
