//! The one duration syntax of procwatch: a number and a unit, repeatable (`250ms`, `10s`, `5m`,
//! `1h30m`, `7d`; the units of the `humantime` crate). Config files, rules, notifier settings
//! and the query API's `window`/`step` all parse through here; a caller that also takes a bare
//! number (the query API: milliseconds; a notifier's `resend`: seconds) says so itself.

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration ({reason}); write a number and a unit, e.g. 250ms, 10s, 5m, 1h30m, 7d")]
pub struct DurationError {
    /// The text refused (trimmed).
    pub text: String,
    /// The parser's reason, e.g. `unknown time unit "x"`.
    pub reason: String,
}

/// Parses a duration (surrounding whitespace ignored).
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    humantime::parse_duration(s)
        .map_err(|e| DurationError { text: s.to_owned(), reason: e.to_string() })
}

/// Parses a duration into whole milliseconds.
pub fn parse_ms(s: &str) -> Result<i64, DurationError> {
    let d = parse(s)?;
    i64::try_from(d.as_millis())
        .map_err(|_| DurationError { text: s.trim().to_owned(), reason: "too long".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syntax() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("7d"), Ok(7 * 86_400_000));
        for bad in ["", "10", "soon", "5x", "-5s"] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("is not a duration"), "{e}");
        }
        assert!(parse_ms("100000000000000000000s").is_err());
    }
}
