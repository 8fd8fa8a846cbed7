//! Batch validation: the ingestion rules of SPEC section 2, as pure functions over bytes and
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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Batch, LegacyPayload, Sample, TsMs};

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
    pub field: String,
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
    pub max_future_ms: i64,
    pub max_samples: usize,
}

impl Limits {
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

/// Checks every rule of SPEC section 2 that a typed batch can break.
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

/// The cpu and mem values of one legacy (process, timestamp).
type Joined = (Option<f64>, Option<f64>);

/// Checks a legacy payload and joins it into one batch.
///
/// - host = `ipaddress` (the host rules apply); `seq` 0, no host totals.
/// - `timestamp` is Unix seconds (float) and becomes ms, rounded to the nearest.
/// - `type_data` is `"cpu"` or `"mem"`. cpu `value` is psutil's per-core percent, accepted in
///   [0, 102,400], stored as `cores = value / 100` and `cpu = min(value, 100)`; mem `value` is in
///   [0, 100].
/// - Points of one (process, timestamp) join into one sample; if a type appears twice there, the
///   later point wins.
/// - A (process, timestamp) with only one of the two types takes the other metric from the
///   nearest point in time of the same process and type in the same payload (the earlier on a
///   tie), or 0 when the payload has none. The seed's client always sends both at each
///   timestamp, so this only matters for other clients; it keeps each metric's mean that of the
///   values actually sent when a process's points are interleaved, and never invents data
///   from other requests.
/// - `rss` is unknown (0) and `count` is 1.
pub fn legacy_to_batch(payload: &LegacyPayload, limits: &Limits) -> Result<Batch, Rejection> {
    let mut p = Problems::default();
    if let Some(r) = host_problem(&payload.ipaddress) {
        p.push(None, "ipaddress", r);
    }
    if payload.data.len() > limits.max_samples * 2 {
        p.push(
            None,
            "data",
            format!("{} points, at most {} a request", payload.data.len(), limits.max_samples * 2),
        );
        return Err(p.reject());
    }
    // (process, ts) -> (cpu value, mem value)
    let mut joined: BTreeMap<(&str, TsMs), Joined> = BTreeMap::new();
    for (i, pt) in payload.data.iter().enumerate() {
        let mut ok = true;
        let ts = if pt.timestamp.is_finite() {
            let ts = (pt.timestamp * 1000.0).round() as TsMs;
            if let Some(r) = limits.check_ts(ts) {
                p.push(Some(i), "timestamp", r);
                ok = false;
            }
            ts
        } else {
            p.push(Some(i), "timestamp", "not finite");
            ok = false;
            0
        };
        if let Some(r) = process_problem(&pt.process_name) {
            p.push(Some(i), "process_name", r);
            ok = false;
        }
        let is_cpu = match pt.type_data.as_str() {
            "cpu" => true,
            "mem" => false,
            other => {
                p.push(Some(i), "type_data", format!("{other:?} is neither \"cpu\" nor \"mem\""));
                continue;
            }
        };
        let max = if is_cpu { LEGACY_MAX_CPU } else { 100.0 };
        if let Some(r) = percent_problem(pt.value, max) {
            p.push(Some(i), "value", r);
            ok = false;
        }
        if ok {
            let slot = joined.entry((pt.process_name.as_str(), ts)).or_default();
            if is_cpu {
                slot.0 = Some(pt.value);
            } else {
                slot.1 = Some(pt.value);
            }
        }
    }
    p.finish()?;
    let mut samples = Vec::with_capacity(joined.len());
    // Keys are sorted by (process, ts): fill gaps from the nearest point of the same process.
    let keys: Vec<(&str, TsMs)> = joined.keys().copied().collect();
    let mut start = 0;
    while start < keys.len() {
        let process = keys[start].0;
        let end = start + keys[start..].iter().take_while(|k| k.0 == process).count();
        let rows: Vec<(TsMs, Option<f64>, Option<f64>)> = keys[start..end]
            .iter()
            .map(|k| {
                let (c, m) = joined[k];
                (k.1, c, m)
            })
            .collect();
        for (j, &(ts, cpu, mem)) in rows.iter().enumerate() {
            let cpu_v = cpu.or_else(|| nearest(&rows, j, |r| r.1)).unwrap_or(0.0);
            let mem_v = mem.or_else(|| nearest(&rows, j, |r| r.2)).unwrap_or(0.0);
            samples.push(Sample {
                ts,
                process: process.to_owned(),
                cpu: cpu_v.min(100.0),
                cores: cpu_v / 100.0,
                mem: mem_v,
                rss: 0,
                count: 1,
            });
        }
        start = end;
    }
    let batch = Batch {
        host: payload.ipaddress.clone(),
        agent: "legacy".into(),
        seq: 0,
        interval_ms: 0,
        host_totals: Vec::new(),
        samples,
        dropped_samples: 0,
    };
    validate_batch(&batch, limits)?;
    Ok(batch)
}

/// The value of `get` at the row nearest in time to `rows[j]` that has one (earlier on a tie).
fn nearest<T>(
    rows: &[(TsMs, T, T)],
    j: usize,
    get: impl Fn(&(TsMs, T, T)) -> Option<f64>,
) -> Option<f64> {
    let ts = rows[j].0;
    let before = rows[..j].iter().rev().find_map(|r| get(r).map(|v| (ts - r.0, v)));
    let after = rows[j + 1..].iter().find_map(|r| get(r).map(|v| (r.0 - ts, v)));
    match (before, after) {
        (Some(b), Some(a)) => Some(if a.0 < b.0 { a.1 } else { b.1 }),
        (Some(b), None) => Some(b.1),
        (None, Some(a)) => Some(a.1),
        (None, None) => None,
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Batch,
    Legacy,
}

/// Explains why a body did not parse into the typed struct, naming index and field.
///
/// The body is walked as a stream: the `samples` / `host_totals` / `data` arrays one item at
/// a time (each item a small `Value`, checked and dropped), so diagnosing a refused 16 MiB
/// body costs about one item of memory besides the body, not a `Value` tree of the whole body
/// (ten times its size).
fn diagnose(body: &[u8], err: &serde_json::Error, shape: Shape) -> Rejection {
    let mut top = Problems::default();
    let mut lists: Vec<(&'static str, Problems)> = match shape {
        Shape::Batch => {
            vec![("samples", Problems::default()), ("host_totals", Problems::default())]
        }
        Shape::Legacy => vec![("data", Problems::default())],
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = TopSeed { shape, lists: &mut lists };
    let obj = match serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|o| {
        de.end()?;
        Ok(o)
    }) {
        Ok(o) => o,
        Err(_) => return Rejection::one(locate_syntax_error(body, err, shape)),
    };
    let mut p = Problems::default();
    match obj {
        None => p.push(None, "body", "not a JSON object"),
        Some((mut obj, seen)) => {
            // The streamed lists were checked already; an empty stand-in keeps the top-level
            // walk from calling them missing.
            for name in seen {
                obj.insert(name.to_owned(), Value::Array(Vec::new()));
            }
            match shape {
                Shape::Batch => walk_batch(&Value::Object(obj), &mut top),
                Shape::Legacy => walk_legacy(&Value::Object(obj), &mut top),
            }
            p.absorb(top);
            for (_, l) in lists {
                p.absorb(l);
            }
        }
    }
    if p.total == 0 {
        p.push(None, "body", err.to_string());
    }
    p.reject()
}

/// The top level of a body: the list fields are streamed (see [`diagnose`]), the rest kept.
/// `None` when the body is not an object; else the other fields and the list names seen.
struct TopSeed<'a> {
    shape: Shape,
    lists: &'a mut Vec<(&'static str, Problems)>,
}

type Top = Option<(serde_json::Map<String, Value>, Vec<&'static str>)>;

impl<'de> serde::de::DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Top;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopSeed<'_> {
    type Value = Top;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Top, A::Error> {
        let mut obj = serde_json::Map::new();
        let mut seen = Vec::new();
        while let Some(key) = m.next_key::<String>()? {
            match self.lists.iter_mut().find(|(name, _)| *name == key) {
                Some((name, p)) => {
                    seen.push(*name);
                    // A list given twice: serde_json keeps the last; count the first too.
                    let kind = m.next_value_seed(ListSeed { shape: self.shape, list: name, p })?;
                    if let Some(kind) = kind {
                        p.push(None, *name, format!("{kind} is not an array"));
                    }
                }
                None => {
                    let v: Value = m.next_value()?;
                    obj.insert(key, v);
                }
            }
        }
        Ok(Some((obj, seen)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Top, A::Error> {
        while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(None)
    }
}

/// One list field, item by item; `Some(kind)` when it is not an array.
struct ListSeed<'a> {
    shape: Shape,
    list: &'static str,
    p: &'a mut Problems,
}

impl<'de> serde::de::DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Option<&'static str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ListSeed<'_> {
    type Value = Option<&'static str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        while let Some(item) = s.next_element::<Value>()? {
            match self.shape {
                Shape::Batch => check_batch_item(self.list, i, &item, self.p),
                Shape::Legacy => check_legacy_item(i, &item, self.p),
            }
            i += 1;
        }
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        while m.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(Some("an object"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some("a string"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some("null"))
    }
}

enum Kind {
    Str,
    Num,
    Int { min: i128, max: i128 },
}

const U64: Kind = Kind::Int { min: 0, max: u64::MAX as i128 };
const U32: Kind = Kind::Int { min: 0, max: u32::MAX as i128 };
const I64: Kind = Kind::Int { min: i64::MIN as i128, max: i64::MAX as i128 };

fn check_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    kind: Kind,
    required: bool,
    index: Option<usize>,
    field: &str,
    p: &mut Problems,
) {
    let Some(v) = obj.get(key) else {
        if required {
            p.push(index, field, "missing");
        }
        return;
    };
    let reason = match (&kind, v) {
        (Kind::Str, Value::String(_)) => None,
        (Kind::Str, _) => Some(format!("{} is not a string", short(v))),
        (Kind::Num, Value::Number(_)) => None,
        (Kind::Num, _) => Some(format!("{} is not a number", short(v))),
        (Kind::Int { min, max }, Value::Number(n)) => {
            let as_int = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
            match as_int {
                Some(i) if i < 0 && *min == 0 => Some(format!("{i} is negative")),
                Some(i) if i < *min || i > *max => Some(format!("{i} is out of range")),
                Some(_) => None,
                None => {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f < 0.0 && *min == 0 {
                        Some(format!("{n} is negative"))
                    } else {
                        Some(format!("{n} is not an integer"))
                    }
                }
            }
        }
        (Kind::Int { .. }, _) => Some(format!("{} is not an integer", short(v))),
    };
    if let Some(r) = reason {
        p.push(index, field, r);
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let mut cut = 40;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

fn walk_batch(v: &Value, p: &mut Problems) {
    let Some(obj) = v.as_object() else {
        p.push(None, "body", "not a JSON object");
        return;
    };
    check_field(obj, "host", Kind::Str, true, None, "host", p);
    check_field(obj, "agent", Kind::Str, false, None, "agent", p);
    check_field(obj, "seq", U64, false, None, "seq", p);
    check_field(obj, "interval_ms", U64, false, None, "interval_ms", p);
    check_field(obj, "dropped_samples", U64, false, None, "dropped_samples", p);
    for list in ["samples", "host_totals"] {
        match obj.get(list) {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    check_batch_item(list, i, item, p);
                }
            }
            Some(other) => p.push(None, list, format!("{} is not an array", short(other))),
        }
    }
}

/// Checks item `i` of a batch's `samples` or `host_totals`.
fn check_batch_item(list: &str, i: usize, item: &Value, p: &mut Problems) {
    let prefix = if list == "samples" { "" } else { "host_totals." };
    let Some(o) = item.as_object() else {
        p.push(Some(i), list, "not a JSON object");
        return;
    };
    let f = |name: &str| format!("{prefix}{name}");
    check_field(o, "ts", I64, true, Some(i), &f("ts"), p);
    check_field(o, "cpu", Kind::Num, true, Some(i), &f("cpu"), p);
    check_field(o, "mem", Kind::Num, true, Some(i), &f("mem"), p);
    if list == "samples" {
        check_field(o, "process", Kind::Str, true, Some(i), "process", p);
        check_field(o, "cores", Kind::Num, false, Some(i), "cores", p);
        check_field(o, "rss", U64, false, Some(i), "rss", p);
        check_field(o, "count", U32, false, Some(i), "count", p);
    } else {
        check_field(o, "unattributed_cpu", Kind::Num, false, Some(i), &f("unattributed_cpu"), p);
    }
}

/// Checks item `i` of a legacy payload's `data`.
fn check_legacy_item(i: usize, item: &Value, p: &mut Problems) {
    let Some(o) = item.as_object() else {
        p.push(Some(i), "data", "not a JSON object");
        return;
    };
    check_field(o, "timestamp", Kind::Num, true, Some(i), "timestamp", p);
    check_field(o, "value", Kind::Num, true, Some(i), "value", p);
    check_field(o, "process_name", Kind::Str, true, Some(i), "process_name", p);
    check_field(o, "type_data", Kind::Str, true, Some(i), "type_data", p);
}

fn walk_legacy(v: &Value, p: &mut Problems) {
    let Some(obj) = v.as_object() else {
        p.push(None, "body", "not a JSON object");
        return;
    };
    check_field(obj, "ipaddress", Kind::Str, true, None, "ipaddress", p);
    match obj.get("data") {
        None => p.push(None, "data", "missing"),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_legacy_item(i, item, p);
            }
        }
        Some(other) => p.push(None, "data", format!("{} is not an array", short(other))),
    }
}

/// Best-effort position of a JSON syntax error (or a number out of `f64` range): the key being
/// read and the index of the object in `samples` / `data`.
fn locate_syntax_error(body: &[u8], err: &serde_json::Error, shape: Shape) -> Problem {
    let reason = format!("invalid JSON: {err}");
    let offset = byte_offset(body, err.line(), err.column());
    let prefix = &body[..offset.min(body.len())];
    let Some(key) = last_key(prefix) else {
        return Problem::new(None, "body", reason);
    };
    let list: &[u8] = match shape {
        Shape::Batch => b"\"samples\"",
        Shape::Legacy => b"\"data\"",
    };
    let index = find_last(prefix, list)
        .map(|at| prefix[at..].iter().filter(|&&b| b == b'{').count())
        .filter(|&n| n > 0)
        .map(|n| n - 1);
    let key = match (shape, index.is_some()) {
        (Shape::Batch, false) if find_last(prefix, b"\"host_totals\"").is_some() => {
            format!("host_totals.{key}")
        }
        _ => key,
    };
    Problem::new(index, key, reason)
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (n, l) in body.split(|&b| b == b'\n').enumerate() {
        if n + 1 == line {
            return offset + column;
        }
        offset += l.len() + 1;
    }
    body.len()
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).rev().find(|&i| &hay[i..i + needle.len()] == needle)
}

/// The last `"key":` in `prefix`.
fn last_key(prefix: &[u8]) -> Option<String> {
    let colon = prefix.iter().rposition(|&b| b == b':')?;
    let before = prefix[..colon].trim_ascii_end();
    let close = before.len().checked_sub(1).filter(|&i| before[i] == b'"')?;
    let open = before[..close].iter().rposition(|&b| b == b'"')?;
    String::from_utf8(before[open + 1..close].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostTotal, LegacyPoint};

    const NOW: TsMs = 1_764_070_000_000;
    const HOUR: i64 = 3_600_000;

    fn limits() -> Limits {
        Limits::new(NOW, 48 * HOUR)
    }

    fn sample(process: &str) -> Sample {
        Sample {
            ts: NOW,
            process: process.into(),
            cpu: 12.5,
            cores: 0.25,
            mem: 3.2,
            rss: 1 << 28,
            count: 7,
        }
    }

    fn batch(samples: Vec<Sample>) -> Batch {
        Batch {
            host: "web-1".into(),
            agent: "test".into(),
            seq: 1,
            interval_ms: 10_000,
            host_totals: vec![HostTotal { ts: NOW, cpu: 41.5, mem: 55.0, unattributed_cpu: None }],
            samples,
            dropped_samples: 0,
        }
    }

    fn fields(r: &Rejection) -> Vec<(Option<usize>, &str)> {
        r.problems.iter().map(|p| (p.index, p.field.as_str())).collect()
    }

    #[test]
    fn valid_batch_passes_through() {
        let b = batch(vec![sample("postgres"), sample("ünïcode name")]);
        let body = serde_json::to_vec(&b).unwrap();
        assert_eq!(decode_batch(&body, &limits()).unwrap(), b);
    }

    #[test]
    fn each_rule_names_index_and_field() {
        type Case = (Box<dyn Fn(&mut Batch)>, Option<usize>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|b| b.host = String::new()), None, "host"),
            (Box::new(|b| b.host = "a".repeat(254)), None, "host"),
            (Box::new(|b| b.host = "web 1".into()), None, "host"),
            (Box::new(|b| b.samples[1].process = String::new()), Some(1), "process"),
            (Box::new(|b| b.samples[1].process = "x".repeat(256)), Some(1), "process"),
            (Box::new(|b| b.samples[1].process = "a\u{7}b".into()), Some(1), "process"),
            (Box::new(|b| b.samples[1].cpu = f64::NAN), Some(1), "cpu"),
            (Box::new(|b| b.samples[1].cpu = 100.5), Some(1), "cpu"),
            (Box::new(|b| b.samples[1].cpu = -0.1), Some(1), "cpu"),
            (Box::new(|b| b.samples[1].mem = f64::INFINITY), Some(1), "mem"),
            (Box::new(|b| b.samples[1].mem = 101.0), Some(1), "mem"),
            (Box::new(|b| b.samples[1].cores = -1.0), Some(1), "cores"),
            (Box::new(|b| b.samples[1].ts = NOW - 48 * HOUR - 1), Some(1), "ts"),
            (Box::new(|b| b.samples[1].ts = NOW + MAX_FUTURE_MS + 1), Some(1), "ts"),
            (Box::new(|b| b.host_totals[0].cpu = 200.0), Some(0), "host_totals.cpu"),
            (Box::new(|b| b.host_totals[0].ts = 0), Some(0), "host_totals.ts"),
        ];
        for (i, (mutate, index, field)) in cases.into_iter().enumerate() {
            let mut b = batch(vec![sample("a"), sample("b")]);
            mutate(&mut b);
            let r = validate_batch(&b, &limits()).expect_err(&format!("case {i} accepted"));
            assert_eq!(fields(&r), vec![(index, field)], "case {i}");
        }
    }

    #[test]
    fn boundaries_are_accepted() {
        let mut b = batch(vec![sample("a"), sample(&"p".repeat(255))]);
        b.host = "h".repeat(253);
        b.samples[0].cpu = 100.0;
        b.samples[0].mem = 0.0;
        b.samples[0].ts = NOW - 48 * HOUR;
        b.samples[1].ts = NOW + MAX_FUTURE_MS;
        validate_batch(&b, &limits()).unwrap();
    }

    #[test]
    fn too_many_samples() {
        let mut l = limits();
        l.max_samples = 3;
        let r = validate_batch(&batch(vec![sample("a"); 4]), &l).unwrap_err();
        assert_eq!(fields(&r), vec![(None, "samples")]);
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let mut b = batch(vec![sample("a"); 50]);
        for s in &mut b.samples {
            s.cpu = 500.0;
        }
        let r = validate_batch(&b, &limits()).unwrap_err();
        assert_eq!(r.problems.len(), MAX_PROBLEMS);
        assert_eq!(r.total, 50);
        assert!(
            r.message().contains("samples[0]") || r.message().contains("cpu[0]"),
            "{}",
            r.message()
        );
    }

    #[test]
    fn raw_json_type_problems() {
        let body = |s: &str| {
            format!(
                r#"{{"host":"h","samples":[{{"ts":{NOW},"process":"ok","cpu":1,"mem":1}},{s}]}}"#
            )
        };
        let cases = [
            (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"rss":-5}"#, "rss", "negative"),
            (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"rss":1.5}"#, "rss", "not an integer"),
            (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"count":-1}"#, "count", "negative"),
            (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"count":2.5}"#, "count", "not an integer"),
            (r#"{"ts":1.5,"process":"p","cpu":1,"mem":1}"#, "ts", "not an integer"),
            (r#"{"ts":1,"process":"p","cpu":"high","mem":1}"#, "cpu", "not a number"),
            (r#"{"ts":1,"cpu":1,"mem":1}"#, "process", "missing"),
            (r#"{"ts":1,"process":7,"cpu":1,"mem":1}"#, "process", "not a string"),
        ];
        for (sample, field, reason) in cases {
            let r = decode_batch(body(sample).as_bytes(), &limits()).unwrap_err();
            assert_eq!(fields(&r), vec![(Some(1), field)], "{sample}");
            assert!(r.problems[0].reason.contains(reason), "{sample}: {:?}", r.problems);
        }
    }

    #[test]
    fn out_of_range_number_is_located() {
        let body = format!(
            r#"{{"host":"h","samples":[{{"ts":{NOW},"process":"a","cpu":1,"mem":1}}, {{"ts":{NOW},"process":"b","cpu":1e999,"mem":1}}]}}"#
        );
        let r = decode_batch(body.as_bytes(), &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(Some(1), "cpu")], "{:?}", r.problems);
    }

    #[test]
    fn syntax_error_is_a_body_problem() {
        let r = decode_batch(b"{not json", &limits()).unwrap_err();
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].reason.starts_with("invalid JSON"));
        let r = decode_batch(b"[1,2]", &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(None, "body")]);
        let r = decode_batch(b"{\"samples\":[]}", &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(None, "host")]);
    }

    fn point(ts_s: f64, value: f64, process: &str, kind: &str) -> LegacyPoint {
        LegacyPoint { timestamp: ts_s, value, process_name: process.into(), type_data: kind.into() }
    }

    #[test]
    fn legacy_joins_cpu_and_mem() {
        let t = NOW as f64 / 1000.0 + 0.5;
        let payload = LegacyPayload {
            ipaddress: "10.0.0.5".into(),
            data: vec![
                point(t, 0.13, "chrome.exe", "mem"),
                point(t, 250.0, "chrome.exe", "cpu"),
                point(t, 1.0, "init", "cpu"),
                point(t, 2.0, "init", "mem"),
            ],
        };
        let b = legacy_to_batch(&payload, &limits()).unwrap();
        assert_eq!(b.host, "10.0.0.5");
        assert_eq!(b.samples.len(), 2);
        let c = &b.samples[0];
        assert_eq!((c.process.as_str(), c.ts), ("chrome.exe", NOW + 500));
        assert_eq!((c.cpu, c.cores, c.mem), (100.0, 2.5, 0.13));
        let i = &b.samples[1];
        assert_eq!((i.process.as_str(), i.cpu, i.cores, i.mem), ("init", 1.0, 0.01, 2.0));
    }

    #[test]
    fn legacy_missing_metric_takes_nearest_in_payload() {
        let t = NOW as f64 / 1000.0;
        let payload = LegacyPayload {
            ipaddress: "h".into(),
            data: vec![
                point(t, 10.0, "p", "cpu"),
                point(t + 10.0, 5.0, "p", "mem"),
                point(t + 30.0, 7.0, "p", "mem"),
                point(t, 3.0, "q", "cpu"),
            ],
        };
        let b = legacy_to_batch(&payload, &limits()).unwrap();
        let got: Vec<(&str, f64, f64)> =
            b.samples.iter().map(|s| (s.process.as_str(), s.cpu, s.mem)).collect();
        assert_eq!(
            got,
            vec![("p", 10.0, 5.0), ("p", 10.0, 5.0), ("p", 10.0, 7.0), ("q", 3.0, 0.0)]
        );
    }

    #[test]
    fn legacy_rules() {
        let t = NOW as f64 / 1000.0;
        let cases = [
            (point(t, LEGACY_MAX_CPU + 1.0, "p", "cpu"), "value"),
            (point(t, 100.5, "p", "mem"), "value"),
            (point(t, 1.0, "p", "disk"), "type_data"),
            (point(t, 1.0, "", "cpu"), "process_name"),
            (point(t - 49.0 * 3600.0, 1.0, "p", "cpu"), "timestamp"),
            (point(f64::NAN, 1.0, "p", "cpu"), "timestamp"),
        ];
        for (bad, field) in cases {
            let payload = LegacyPayload {
                ipaddress: "h".into(),
                data: vec![point(t, 1.0, "ok", "cpu"), bad],
            };
            let r = legacy_to_batch(&payload, &limits()).unwrap_err();
            assert_eq!(fields(&r), vec![(Some(1), field)]);
        }
        let payload = LegacyPayload { ipaddress: "bad host".into(), data: vec![] };
        assert_eq!(
            fields(&legacy_to_batch(&payload, &limits()).unwrap_err()),
            vec![(None, "ipaddress")]
        );
        let ok = LegacyPayload {
            ipaddress: "h".into(),
            data: vec![point(t, LEGACY_MAX_CPU, "p", "cpu")],
        };
        assert_eq!(legacy_to_batch(&ok, &limits()).unwrap().samples[0].cores, 1024.0);
    }

    #[test]
    fn legacy_raw_json_problems() {
        let body = br#"{"ipaddress":"h","data":[{"timestamp":1,"value":"x","process_name":"p","type_data":"cpu"}]}"#;
        let r = decode_legacy(body, &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(Some(0), "value")]);
        let r = decode_legacy(br#"{"data":[]}"#, &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(None, "ipaddress")]);
    }

    #[test]
    fn streamed_diagnosis_names_index_and_field() {
        let l = Limits::new(1_000_000, 1_000_000);
        let body = br#"{"host":"h","seq":-1,"samples":[{"ts":1,"process":"a","cpu":1,"mem":1},
            {"ts":2,"process":"b","cpu":"x","mem":1}],"host_totals":[{"ts":1,"cpu":1}]}"#;
        let r = decode_batch(body, &l).unwrap_err();
        let got: Vec<(Option<usize>, &str)> =
            r.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(got, [(None, "seq"), (Some(1), "cpu"), (Some(0), "host_totals.mem")]);
        let r = decode_batch(br#"{"host":"h","samples":"no"}"#, &l).unwrap_err();
        assert_eq!(r.problems[0].field, "samples");
        assert!(r.problems[0].reason.contains("not an array"), "{:?}", r.problems);
        let r = decode_batch(b"[1,2]", &l).unwrap_err();
        assert_eq!(r.problems[0].field, "body");
        let r = decode_legacy(br#"{"ipaddress":"h","data":[{"timestamp":1,"value":"x","process_name":"p","type_data":"cpu"}]}"#, &l).unwrap_err();
        let got: Vec<(Option<usize>, &str)> =
            r.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(got, [(Some(0), "value")]);
        let r = decode_legacy(br#"{"ipaddress":"h"}"#, &l).unwrap_err();
        assert_eq!(r.problems[0].field, "data");
    }
}
