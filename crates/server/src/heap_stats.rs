//! The allocator's own account of the process heap, as the binary last read it (issue 16: the
//! memory breakdown). The server binary reads glibc's `mallinfo2` right after each periodic
//! `malloc_trim` (both walk the heaps, so they share the cost and the cadence) and records it
//! here; `/metrics` exports the last reading as `procwatch_heap_in_use_bytes` and
//! `procwatch_heap_free_bytes`. With them, the resident size splits into memory the program
//! holds, memory the allocator keeps free inside its heaps, and the rest (code, stacks,
//! SQLite's mapped pages). A scrape never walks the heap itself: on a fragmented heap of a few
//! GB a walk takes milliseconds with the allocator's locks held.

use std::sync::atomic::{AtomicU64, Ordering};

static IN_USE: AtomicU64 = AtomicU64::new(0);
static FREE: AtomicU64 = AtomicU64::new(0);

/// Records a reading: bytes handed out to the program (small chunks and mmapped blocks), and
/// bytes free inside the allocator's heaps after the trim.
pub fn record(in_use: u64, free: u64) {
    IN_USE.store(in_use, Ordering::Relaxed);
    FREE.store(free, Ordering::Relaxed);
}

/// The last reading, `(in_use, free)`; `None` before the first one (and on builds whose
/// allocator has no such account).
pub fn last() -> Option<(u64, u64)> {
    let in_use = IN_USE.load(Ordering::Relaxed);
    (in_use > 0).then(|| (in_use, FREE.load(Ordering::Relaxed)))
}
