//! Why a body did not parse: the body walked again, as a stream, to name the index and field
//! of each problem (see [`diagnose`]).

use serde_json::Value;

use super::{Problem, Problems, Rejection};

#[derive(Clone, Copy)]
pub(super) enum Shape {
    Batch,
    Legacy,
}

/// Explains why a body did not parse into the typed struct, naming index and field.
///
/// The body is walked as a stream: the `samples` / `host_totals` / `data` arrays one item at
/// a time (each item a small `Value`, checked and dropped), so diagnosing a refused 16 MiB
/// body costs about one item of memory besides the body, not a `Value` tree of the whole body
/// (ten times its size).
pub(super) fn diagnose(body: &[u8], err: &serde_json::Error, shape: Shape) -> Rejection {
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
