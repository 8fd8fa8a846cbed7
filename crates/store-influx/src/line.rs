//! InfluxDB line protocol, written by pure functions.
//!
//! Escaping (InfluxDB 1.x/2.x line protocol):
//! - measurement: `,` and space are backslash-escaped;
//! - tag keys, tag values and field keys: `,`, `=` and space are backslash-escaped;
//! - string field values: `"` and `\` are backslash-escaped, the value is double-quoted;
//! - integer fields carry an `i` suffix, floats are written in Rust's shortest round-trip form.
//!
//! What the line protocol cannot carry: a tag value that *ends* with a backslash (InfluxDB 1.x
//! takes the separator after it as escaped and refuses the line), and backslashes right
//! before a backslash or an escaped `,`, `=` or space, which InfluxDB 1.x reads literally but
//! parsers that honour `\\` as an escape (possibly 3.x) may not. [`encode_tag_value`] replaces each
//! such backslash by U+001A (SUB) and [`decode_tag_value`] maps it back; process names never
//! contain control characters (SPEC section 2), so the mapping is unambiguous. Every other value
//! (a backslash before an ordinary character included, `C:\Program Files\x`) is stored as
//! is, so `SHOW TAG VALUES` shows real process names.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Stands in for a backslash the line protocol cannot carry (see the module doc).
pub const SUB: char = '\u{1A}';

/// A field value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// A float, written in Rust's shortest round-trip form.
    Float(f64),
    /// A signed 64-bit integer, written with the `i` suffix.
    Int(i64),
    /// A boolean, written `true` or `false`.
    Bool(bool),
    /// A string, written double-quoted with `"` and `\` escaped.
    Str(&'a str),
}

/// Makes a tag value representable in line protocol (see the module doc). The same encoding
/// must be applied to tag values compared in InfluxQL.
pub fn encode_tag_value(v: &str) -> Cow<'_, str> {
    if !v.contains('\\') {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars().peekable();
    while let Some(c) = it.next() {
        let unsafe_backslash =
            c == '\\' && it.peek().is_none_or(|n| matches!(n, '\\' | ',' | '=' | ' '));
        out.push(if unsafe_backslash { SUB } else { c });
    }
    Cow::Owned(out)
}

/// Inverse of [`encode_tag_value`], for tag values read back from InfluxDB.
pub fn decode_tag_value(v: &str) -> Cow<'_, str> {
    if v.contains(SUB) {
        Cow::Owned(v.replace(SUB, "\\"))
    } else {
        Cow::Borrowed(v)
    }
}

fn escape_into(out: &mut String, s: &str, specials: &[char]) {
    for c in s.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends one point (one line, `\n`-terminated) to `out`. Tag values are encoded with
/// [`encode_tag_value`]; empty tag values are left out (InfluxDB would drop them anyway).
/// `fields` must not be empty.
pub fn write_point(
    out: &mut String,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, Field<'_>)],
    ts: i64,
) {
    debug_assert!(!fields.is_empty());
    escape_into(out, measurement, &[',', ' ']);
    for (k, v) in tags {
        if v.is_empty() {
            continue;
        }
        out.push(',');
        escape_into(out, k, &[',', '=', ' ']);
        out.push('=');
        escape_into(out, &encode_tag_value(v), &[',', '=', ' ']);
    }
    for (i, (k, v)) in fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        escape_into(out, k, &[',', '=', ' ']);
        out.push('=');
        match v {
            Field::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Field::Int(n) => {
                let _ = write!(out, "{n}i");
            }
            Field::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Field::Str(s) => {
                out.push('"');
                escape_into(out, s, &['"', '\\']);
                out.push('"');
            }
        }
    }
    let _ = writeln!(out, " {ts}");
}

/// The point of one sample: measurement `proc`, tags `host` and `process`.
pub fn sample_point(out: &mut String, host: &str, s: &procwatch_model::Sample) {
    write_point(
        out,
        "proc",
        &[("host", host), ("process", &s.process)],
        &[
            ("cpu", Field::Float(s.cpu)),
            ("cores", Field::Float(s.cores)),
            ("mem", Field::Float(s.mem)),
            ("rss", int(s.rss)),
            ("count", Field::Int(i64::from(s.count))),
        ],
        s.ts,
    );
}

/// The point of one host total: measurement `host`, tag `host`.
pub fn host_total_point(out: &mut String, host: &str, t: &procwatch_model::HostTotal) {
    let mut fields = vec![("cpu", Field::Float(t.cpu)), ("mem", Field::Float(t.mem))];
    if let Some(u) = t.unattributed_cpu.filter(|u| u.is_finite()) {
        fields.push(("unattributed_cpu", Field::Float(u)));
    }
    write_point(out, "host", &[("host", host)], &fields, t.ts);
}

/// `u64` to a line-protocol integer (InfluxDB 1.x integers are signed 64-bit).
pub fn int(v: u64) -> Field<'static> {
    Field::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(m: &str, tags: &[(&str, &str)], fields: &[(&str, Field<'_>)], ts: i64) -> String {
        let mut s = String::new();
        write_point(&mut s, m, tags, fields, ts);
        s
    }

    #[test]
    fn plain_point() {
        let l = line(
            "proc",
            &[("host", "web-1"), ("process", "postgres")],
            &[
                ("cpu", Field::Float(12.5)),
                ("cores", Field::Float(0.25)),
                ("rss", Field::Int(268435456)),
                ("count", Field::Int(7)),
            ],
            1764070000000,
        );
        assert_eq!(
            l,
            "proc,host=web-1,process=postgres cpu=12.5,cores=0.25,rss=268435456i,count=7i \
             1764070000000\n"
        );
    }

    #[test]
    fn floats_are_shortest_round_trip_and_integral_floats_stay_floats() {
        let l = line("m", &[], &[("a", Field::Float(5.0)), ("b", Field::Float(0.1 + 0.2))], 1);
        assert_eq!(l, "m a=5,b=0.30000000000000004 1\n");
        let l = line("m", &[], &[("a", Field::Float(1e-7))], 1);
        assert_eq!(l, "m a=0.0000001 1\n");
    }

    #[test]
    fn tag_values_escape_comma_space_equals() {
        let l = line("proc", &[("process", "a b,c=d")], &[("x", Field::Int(1))], 5);
        assert_eq!(l, "proc,process=a\\ b\\,c\\=d x=1i 5\n");
    }

    #[test]
    fn quotes_and_unicode_in_tags_pass_through() {
        let l = line("proc", &[("process", "it's \"q\" ünï 🚀")], &[("x", Field::Bool(true))], 5);
        assert_eq!(l, "proc,process=it's\\ \"q\"\\ ünï\\ 🚀 x=true 5\n");
    }

    #[test]
    fn string_fields_escape_quote_and_backslash_only() {
        let l = line("e", &[], &[("j", Field::Str(r#"{"a":"b\\c", d=1}"#))], -3);
        assert_eq!(l, "e j=\"{\\\"a\\\":\\\"b\\\\\\\\c\\\", d=1}\" -3\n");
    }

    #[test]
    fn measurement_and_keys_are_escaped() {
        let l = line("my meas,x", &[("k ey", "v")], &[("f=1", Field::Int(-2))], 0);
        assert_eq!(l, "my\\ meas\\,x,k\\ ey=v f\\=1=-2i 0\n");
    }

    #[test]
    fn empty_tag_values_are_left_out() {
        let l = line("m", &[("a", ""), ("b", "x")], &[("f", Field::Int(1))], 0);
        assert_eq!(l, "m,b=x f=1i 0\n");
    }

    #[test]
    fn backslashes_before_ordinary_characters_are_kept() {
        assert_eq!(encode_tag_value(r"C:\Program Files\x"), r"C:\Program Files\x");
        let l = line("m", &[("p", r"C:\Program Files\x")], &[("f", Field::Int(1))], 0);
        assert_eq!(l, "m,p=C:\\Program\\ Files\\x f=1i 0\n");
    }

    #[test]
    fn other_backslashes_are_substituted_and_restored() {
        for (raw, enc) in [
            (r"foo\", "foo\u{1A}"),
            (r"a\ b", "a\u{1A} b"),
            (r"a\,b", "a\u{1A},b"),
            (r"a\=b", "a\u{1A}=b"),
            (r"a\\b", "a\u{1A}\\b"),
            (r"a\\", "a\u{1A}\u{1A}"),
            (r"\", "\u{1A}"),
        ] {
            assert_eq!(encode_tag_value(raw), enc, "{raw}");
            assert_eq!(decode_tag_value(enc), raw);
        }
        let l = line("m", &[("p", r"a\ b")], &[("f", Field::Int(1))], 0);
        assert_eq!(l, "m,p=a\u{1A}\\ b f=1i 0\n");
    }

    #[test]
    fn u64_clamps_to_i64() {
        assert_eq!(int(u64::MAX), Field::Int(i64::MAX));
        assert_eq!(int(42), Field::Int(42));
    }
}
