//! Batch validation: the ingestion rules of docs/contract.md §2, as pure functions over bytes and
//! wire types, so the server only has to call them and map a [`Rejection`] to a `400`.
//!
//! - [`decode_batch`] turns a `POST /api/v1/samples` body (already decompressed) into a valid
//!   [`Batch`], or a [`Rejection`] listing the first [`MAX_PROBLEMS`] problems, each naming the
//!   index and field. Valid JSON is parsed once into typed structs (the fast path); only when
//!   that fails is the body parsed again as a `serde_json::Value` to say which sample and field
//!   are wrong (a negative or fractional `rss`, a string `cpu`, a missing `process`, ...).
//! - [`decode_legacy`] does the same for the seed system's `PUT /ressources-usage/save-all`
//!   payload and joins its points into a [`Batch`] (see [`legacy_to_batch`] for the rules).
//!
//! Problem fields: for samples `index` is the index in `samples` and `field` the sample's field
//! (`"cpu"`); for host totals `field` is prefixed (`"host_totals.cpu"`) and `index` is the
//! index in `host_totals`; for legacy points `index` is the index in `data` and `field` the
//! point's field (`"value"`); batch-level problems (`"host"`, `"samples"`) have `index: null`.
//!
//! JSON cannot carry NaN or infinity; a number too large for an `f64` (`1e999`) is refused by
//! the JSON parser itself, and for that case the field and index are found, best effort, from
//! the parser's position (the last key before it, and the count of objects since `"samples"` /
//! `"data"`).

use serde::{Deserialize, Serialize};

mod diagnose;
mod legacy;

use crate::{Batch, LegacyPayload, TsMs};

use diagnose::{diagnose, Shape};
pub use legacy::legacy_to_batch;

/// At most this many samples a batch.
pub const MAX_SAMPLES: usize = 100_000;
/// At most this many bytes of body, after decompression.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// A timestamp may be at most this far ahead of the server's clock.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// A rejection lists at most this many problems.
pub const MAX_PROBLEMS: usize = 20;
/// The largest legacy cpu value accepted: psutil's per-core percent on a 1,024-core host.
pub const LEGACY_MAX_CPU: f64 = 102_400.0;

/// One thing wrong with a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Index of the sample, host total or legacy point; `None` for batch-level fields.
    pub index: Option<usize>,
    /// The field, e.g. `"cpu"` or `"host_totals.mem"` (see the module documentation).
    pub field: String,
    /// What is wrong with it, in words a sender can act on.
    pub reason: String,
}

impl Problem {
    fn new(index: Option<usize>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem { index, field: field.into(), reason: reason.into() }
    }
}

/// Why a batch was refused: its first problems and how many there were in all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Rejection {
    /// The first problems found (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Every problem found (at least `problems.len()`).
    pub total: usize,
}

impl Rejection {
    fn one(p: Problem) -> Self {
        Rejection { problems: vec![p], total: 1 }
    }

    /// A one-line summary naming the first problem.
    pub fn message(&self) -> String {
        let Some(first) = self.problems.first() else {
            return "batch refused".to_owned();
        };
        let at = match first.index {
            Some(i) => format!("{}[{i}]", first.field),
            None => first.field.clone(),
        };
        let more =
            if self.total > 1 { format!(" (and {} more)", self.total - 1) } else { String::new() };
        format!("batch refused, nothing stored: {at}: {}{more}", first.reason)
    }
}

/// The clock and bounds a batch is checked against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The server's clock, Unix ms.
    pub now_ms: TsMs,
    /// Samples older than `now_ms - retention_ms` are refused.
    pub retention_ms: i64,
    /// A timestamp may be at most this far ahead of `now_ms`.
    pub max_future_ms: i64,
    /// At most this many samples a batch.
    pub max_samples: usize,
}

impl Limits {
    /// Limits at `now_ms` keeping `retention_ms` of history, with the default caps.
    pub fn new(now_ms: TsMs, retention_ms: i64) -> Self {
        Limits { now_ms, retention_ms, max_future_ms: MAX_FUTURE_MS, max_samples: MAX_SAMPLES }
    }

    fn check_ts(&self, ts: TsMs) -> Option<String> {
        let oldest = self.now_ms.saturating_sub(self.retention_ms);
        if ts < oldest {
            Some(format!("{ts} is older than the retention (oldest accepted {oldest})"))
        } else if ts > self.now_ms.saturating_add(self.max_future_ms) {
            Some(format!(
                "{ts} is more than {} s in the future (server clock {})",
                self.max_future_ms / 1000,
                self.now_ms
            ))
        } else {
            None
        }
    }
}

/// Collects problems, keeping the first [`MAX_PROBLEMS`].
#[derive(Debug, Default)]
struct Problems {
    list: Vec<Problem>,
    total: usize,
}

impl Problems {
    fn push(&mut self, index: Option<usize>, field: impl Into<String>, reason: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(Problem::new(index, field, reason));
        }
    }

    /// Appends `other`'s problems (within the cap) and counts all of them.
    fn absorb(&mut self, other: Problems) {
        let room = MAX_PROBLEMS.saturating_sub(self.list.len());
        self.list.extend(other.list.into_iter().take(room));
        self.total += other.total;
    }

    fn reject(self) -> Rejection {
        Rejection { problems: self.list, total: self.total }
    }

    fn finish(self) -> Result<(), Rejection> {
        if self.total == 0 {
            Ok(())
        } else {
            Err(Rejection { problems: self.list, total: self.total })
        }
    }
}

/// Why `host` is not a valid host name (1–253 bytes of `[A-Za-z0-9._:-]`), if it is not.
pub fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("empty".into());
    }
    if host.len() > 253 {
        return Some(format!("{} bytes, at most 253", host.len()));
    }
    if let Some(c) =
        host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Some(format!("character {c:?} not allowed (only A-Z a-z 0-9 . _ : -)"));
    }
    None
}

/// Why `name` is not a valid process name (1–255 bytes of UTF-8, no control characters).
pub fn process_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".into());
    }
    if name.len() > 255 {
        return Some(format!("{} bytes, at most 255", name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("control character {c:?} not allowed"));
    }
    None
}

fn percent_problem(v: f64, max: f64) -> Option<String> {
    if !v.is_finite() {
        Some("not finite".into())
    } else if !(0.0..=max).contains(&v) {
        Some(format!("{v} is outside [0, {max}]"))
    } else {
        None
    }
}

/// Checks every rule of docs/contract.md §2 that a typed batch can break.
pub fn validate_batch(batch: &Batch, limits: &Limits) -> Result<(), Rejection> {
    let mut p = Problems::default();
    if let Some(r) = host_problem(&batch.host) {
        p.push(None, "host", r);
    }
    if batch.samples.len() > limits.max_samples {
        p.push(
            None,
            "samples",
            format!("{} samples, at most {} a batch", batch.samples.len(), limits.max_samples),
        );
        return p.finish();
    }
    for (i, s) in batch.samples.iter().enumerate() {
        if let Some(r) = limits.check_ts(s.ts) {
            p.push(Some(i), "ts", r);
        }
        if let Some(r) = process_problem(&s.process) {
            p.push(Some(i), "process", r);
        }
        if let Some(r) = percent_problem(s.cpu, 100.0) {
            p.push(Some(i), "cpu", r);
        }
        if !s.cores.is_finite() {
            p.push(Some(i), "cores", "not finite");
        } else if s.cores < 0.0 {
            p.push(Some(i), "cores", format!("{} is negative", s.cores));
        }
        if let Some(r) = percent_problem(s.mem, 100.0) {
            p.push(Some(i), "mem", r);
        }
        for (field, r) in
            s.extras.as_deref().map(crate::extras::Extras::problems).unwrap_or_default()
        {
            p.push(Some(i), format!("extras.{field}"), r);
        }
    }
    for (i, t) in batch.host_totals.iter().enumerate() {
        if let Some(r) = limits.check_ts(t.ts) {
            p.push(Some(i), "host_totals.ts", r);
        }
        if let Some(r) = percent_problem(t.cpu, 100.0) {
            p.push(Some(i), "host_totals.cpu", r);
        }
        if let Some(r) = percent_problem(t.mem, 100.0) {
            p.push(Some(i), "host_totals.mem", r);
        }
        if let Some(r) = t.unattributed_cpu.and_then(|u| percent_problem(u, 100.0)) {
            p.push(Some(i), "host_totals.unattributed_cpu", r);
        }
    }
    p.finish()
}

/// Parses and validates a `POST /api/v1/samples` body (decompressed).
pub fn decode_batch(body: &[u8], limits: &Limits) -> Result<Batch, Rejection> {
    match serde_json::from_slice::<Batch>(body) {
        Ok(batch) => validate_batch(&batch, limits).map(|()| batch),
        Err(err) => Err(diagnose(body, &err, Shape::Batch)),
    }
}

/// Parses and validates a legacy `PUT /ressources-usage/save-all` body and joins it into a
/// batch (see [`legacy_to_batch`]).
pub fn decode_legacy(body: &[u8], limits: &Limits) -> Result<Batch, Rejection> {
    match serde_json::from_slice::<LegacyPayload>(body) {
        Ok(payload) => legacy_to_batch(&payload, limits),
        Err(err) => Err(diagnose(body, &err, Shape::Legacy)),
    }
}

#[cfg(test)]
mod tests;
