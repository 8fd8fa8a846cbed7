//! `<spool>/quarantine/`: batches the server refused for good, kept (under a byte cap) for a
//! person to look at.

use std::sync::atomic::Ordering;

use tracing::warn;

use crate::send::Request;
use crate::{AgentConfig, AgentStats};

/// Writes a refused request to `<spool>/quarantine/`, first deleting the oldest quarantined
/// batches so the directory stays under `cfg.quarantine_max_bytes`; returns the file path (or
/// why not).
pub(crate) fn quarantine(
    cfg: &AgentConfig,
    req: &Request,
    reason: &str,
    stats: &AgentStats,
) -> String {
    let dir = cfg.spool.dir.join("quarantine");
    let name = format!("{:013}-seq{}-id{}", cfg.clock.now_ms(), req.seq, req.last_id.unwrap_or(0));
    let body = dir.join(format!("{name}.json"));
    let err = dir.join(format!("{name}.error.txt"));
    let reason = &reason[..floor_char_boundary(reason, 4096)];
    let need = (req.body.len() + reason.len()) as u64;
    if need > cfg.quarantine_max_bytes {
        stats.quarantine_evicted_files.fetch_add(1, Ordering::Relaxed);
        warn!(
            message = "Refused batch larger than the quarantine cap; not kept.",
            bytes = need,
            quarantine_max_bytes = cfg.quarantine_max_bytes
        );
        return "<not written: larger than --quarantine-max-bytes>".to_owned();
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return format!("<not written: {e}>");
    }
    let evicted = make_room(&dir, cfg.quarantine_max_bytes - need);
    if evicted > 0 {
        stats.quarantine_evicted_files.fetch_add(evicted, Ordering::Relaxed);
        warn!(
            message = "Quarantine over its cap; deleted the oldest refused batches.",
            deleted = evicted,
            quarantine_max_bytes = cfg.quarantine_max_bytes
        );
    }
    let result = std::fs::write(&body, &req.body).and_then(|()| std::fs::write(&err, reason));
    match result {
        Ok(()) => body.display().to_string(),
        Err(e) => format!("<not written: {e}>"),
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Deletes the oldest quarantined batches (a `.json` and its `.error.txt`, oldest by name,
/// which starts with the zero-padded time) until the directory holds at most `budget` bytes;
/// returns how many batches went.
fn make_room(dir: &std::path::Path, budget: u64) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut files: Vec<(String, u64)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let len = e.metadata().ok().filter(|m| m.is_file())?.len();
            Some((e.file_name().to_string_lossy().into_owned(), len))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, l)| l).sum();
    if total <= budget {
        return 0;
    }
    files.sort();
    let mut evicted = 0;
    let mut i = 0;
    while total > budget && i < files.len() {
        let stem = files[i].0.split('.').next().unwrap_or_default().to_owned();
        // Every file of this batch (they sort next to each other).
        while i < files.len() && files[i].0.split('.').next() == Some(stem.as_str()) {
            if std::fs::remove_file(dir.join(&files[i].0)).is_ok() {
                total = total.saturating_sub(files[i].1);
            }
            i += 1;
        }
        evicted += 1;
    }
    evicted
}
