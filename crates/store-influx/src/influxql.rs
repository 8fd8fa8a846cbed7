//! InfluxQL text (quoting, conditions) and the JSON answer of `/query`, as pure functions.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::line::encode_tag_value;

/// A double-quoted identifier (`"my db"`); `"` and `\` are escaped.
pub fn ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A single-quoted string literal; `'`, `\` and newline are escaped (the only escapes the
/// InfluxQL scanner accepts, with `\"`).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `"key" = 'value'` for a tag, with the tag value encoded as it was written.
pub fn tag_eq(key: &str, value: &str) -> String {
    format!("{} = {}", ident(key), string(&encode_tag_value(value)))
}

/// The half-open time condition `from <= time < to`, in milliseconds.
pub fn time_range(from: i64, to: i64) -> String {
    format!("time >= {from}ms AND time < {to}ms")
}

/// A percentile argument for InfluxDB's nearest-rank `percentile(field, N)` that selects the
/// element at 0-based index `k` of `n` sorted values. InfluxDB picks index
/// `floor(n·N/100 + 0.5) − 1`; `N = 100·(k+1)/n` lands in the middle of the right interval.
pub fn nearest_rank_arg(k: usize, n: usize) -> f64 {
    100.0 * (k + 1) as f64 / n as f64
}

/// The 0-based ranks bracketing numpy's linear percentile `q` ∈ [0, 1] of `n` values and the
/// interpolation fraction: `p = v[lo] + (v[hi] − v[lo]) · frac`.
pub fn linear_ranks(q: f64, n: usize) -> (usize, usize, f64) {
    if n <= 1 {
        return (0, 0, 0.0);
    }
    let rank = q * (n - 1) as f64;
    let lo = rank.floor();
    (lo as usize, rank.ceil() as usize, rank - lo)
}

/// The body of a `/query` answer.
#[derive(Debug, Default, Deserialize)]
pub struct Response {
    /// One result per statement, in statement order.
    #[serde(default)]
    pub results: Vec<StatementResult>,
    /// Error of the request as a whole, if any (a statement's own error is in
    /// [`StatementResult::error`]).
    #[serde(default)]
    pub error: Option<String>,
}

/// The answer to one statement.
#[derive(Debug, Default, Deserialize)]
pub struct StatementResult {
    /// 0-based position of the statement in the query.
    #[serde(default)]
    pub statement_id: usize,
    /// The series the statement returned (none when nothing matched).
    #[serde(default)]
    pub series: Vec<Series>,
    /// The statement's error, if it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// One series of an answer: rows of `values` under `columns`.
#[derive(Debug, Default, Deserialize)]
pub struct Series {
    /// Measurement name.
    #[serde(default)]
    pub name: String,
    /// Tags of the series (`GROUP BY`), as stored: encoded, so read them with [`Series::tag`].
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Column names, in the order of each row's values.
    #[serde(default)]
    pub columns: Vec<String>,
    /// The rows, one value per column (`null` where the point has no such field).
    #[serde(default)]
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// Index of a column.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// A tag of the series, decoded (see `line::decode_tag_value`); "" when absent.
    pub fn tag(&self, key: &str) -> String {
        self.tags
            .get(key)
            .map(|v| crate::line::decode_tag_value(v).into_owned())
            .unwrap_or_default()
    }

    /// Rows as column-name accessors.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.values.iter().map(move |v| Row { series: self, values: v })
    }
}

/// One row of a series.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    series: &'a Series,
    values: &'a [Value],
}

impl Row<'_> {
    /// The value of column `col`; `None` if there is no such column or the value is `null`.
    pub fn get(&self, col: &str) -> Option<&Value> {
        self.series.col(col).and_then(|i| self.values.get(i)).filter(|v| !v.is_null())
    }

    /// Column `col` as a float (integers converted).
    pub fn f64(&self, col: &str) -> Option<f64> {
        self.get(col).and_then(Value::as_f64)
    }

    /// Column `col` as an integer (floats truncated toward zero, saturating).
    pub fn i64(&self, col: &str) -> Option<i64> {
        self.get(col).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    }

    /// Column `col` as an unsigned integer (negative values clamp to 0).
    pub fn u64(&self, col: &str) -> Option<u64> {
        self.i64(col).map(|v| v.max(0) as u64)
    }

    /// Column `col` as a string.
    pub fn str(&self, col: &str) -> Option<&str> {
        self.get(col).and_then(Value::as_str)
    }

    /// Column `col` as a boolean.
    pub fn bool(&self, col: &str) -> Option<bool> {
        self.get(col).and_then(Value::as_bool)
    }

    /// The `time` column (epoch=ms).
    pub fn time(&self) -> i64 {
        self.i64("time").unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_strings_are_quoted() {
        assert_eq!(ident("proc"), "\"proc\"");
        assert_eq!(ident(r#"my "db"\x"#), r#""my \"db\"\\x""#);
        assert_eq!(string("it's"), r"'it\'s'");
        assert_eq!(string(r"C:\x"), r"'C:\\x'");
        assert_eq!(string("a\nb"), r"'a\nb'");
        assert_eq!(string("🚀 ü"), "'🚀 ü'");
    }

    #[test]
    fn tag_conditions_use_the_written_encoding() {
        assert_eq!(tag_eq("process", "java"), r#""process" = 'java'"#);
        assert_eq!(tag_eq("process", r"foo\"), "\"process\" = 'foo\u{1A}'");
        assert_eq!(tag_eq("process", r"a'b\c"), r#""process" = 'a\'b\\c'"#);
    }

    #[test]
    fn time_ranges_are_half_open_in_ms() {
        assert_eq!(time_range(10, 20), "time >= 10ms AND time < 20ms");
    }

    /// InfluxDB's own index formula, to check `nearest_rank_arg` against.
    fn influx_index(n: usize, pct: f64) -> i64 {
        (n as f64 * pct / 100.0 + 0.5).floor() as i64 - 1
    }

    #[test]
    fn nearest_rank_arg_selects_every_index() {
        for n in 1..=500 {
            for k in 0..n {
                assert_eq!(influx_index(n, nearest_rank_arg(k, n)), k as i64, "n={n} k={k}");
            }
        }
    }

    #[test]
    fn linear_ranks_match_numpy() {
        assert_eq!(linear_ranks(0.95, 1), (0, 0, 0.0));
        let (lo, hi, f) = linear_ranks(0.95, 4); // rank 2.85
        assert_eq!((lo, hi), (2, 3));
        assert!((f - 0.85).abs() < 1e-12);
        let (lo, hi, f) = linear_ranks(0.95, 21); // rank 19 exactly
        assert_eq!((lo, hi, f), (19, 19, 0.0));
    }

    #[test]
    fn parses_answers_with_errors_and_nulls() {
        let body = r#"{"results":[{"statement_id":0,"series":[{"name":"proc",
            "tags":{"host":"h","process":"a\u001a"},"columns":["time","cpu","rss"],
            "values":[[1000,2.5,null],[2000,3,7]]}]},{"statement_id":1,"error":"boom"}]}"#;
        let r: Response = serde_json::from_str(body).unwrap();
        assert_eq!(r.results.len(), 2);
        let s = &r.results[0].series[0];
        assert_eq!(s.tag("process"), "a\\");
        let rows: Vec<Row<'_>> = s.rows().collect();
        assert_eq!(rows[0].time(), 1000);
        assert_eq!(rows[0].f64("cpu"), Some(2.5));
        assert_eq!(rows[0].i64("rss"), None);
        assert_eq!(rows[1].f64("cpu"), Some(3.0));
        assert_eq!(rows[1].u64("rss"), Some(7));
        assert_eq!(r.results[1].error.as_deref(), Some("boom"));
        let e: Response = serde_json::from_str(r#"{"error":"bad"}"#).unwrap();
        assert_eq!(e.error.as_deref(), Some("bad"));
    }
}
