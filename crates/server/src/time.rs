//! Time and duration parameters of the query API, as pure functions.
//!
//! A time (`from`, `to`) is one of:
//! - Unix milliseconds: `1764070000000`;
//! - RFC 3339: `2025-11-25T12:00:00Z` (fractional seconds and offsets accepted);
//! - relative to the server's clock: `now`, `now-2h`, `-2h`, `-90s`, `now+5m`.
//!
//! A duration (`window`, `step`) is a humantime duration (`5m`, `10s`, `1h30m`, `250ms`) or a
//! plain integer of milliseconds.

use procwatch_model::TsMs;

/// Parses a duration parameter into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return if ms >= 0 { Ok(ms) } else { Err(format!("{s:?} is negative")) };
    }
    procwatch_model::duration::parse_ms(s).map_err(|e| format!("{e}, or a number of ms"))
}

/// Parses a time parameter into Unix milliseconds, relative forms against `now`.
pub fn parse_time_ms(s: &str, now: TsMs) -> Result<TsMs, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let rel = s.strip_prefix("now").unwrap_or(s);
    if rel.is_empty() {
        return Ok(now);
    }
    if let Some(d) = rel.strip_prefix('-') {
        return parse_duration_ms(d).map(|d| now.saturating_sub(d));
    }
    if let Some(d) = rel.strip_prefix('+') {
        return parse_duration_ms(d).map(|d| now.saturating_add(d));
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is not a time (Unix ms, RFC 3339, now, now-2h or -2h): {e}"))?;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too far ahead")),
        Err(e) => i64::try_from(e.duration().as_millis())
            .map(|ms| -ms)
            .map_err(|_| format!("{s:?} is too far back")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: TsMs = 1_764_072_000_000; // 2025-11-25T12:00:00Z

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("10000"), Ok(10_000));
        assert!(parse_duration_ms("-5").is_err());
        assert!(parse_duration_ms("soon").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("1764070000000", NOW), Ok(1_764_070_000_000));
        assert_eq!(parse_time_ms("now", NOW), Ok(NOW));
        assert_eq!(parse_time_ms("now-2h", NOW), Ok(NOW - 7_200_000));
        assert_eq!(parse_time_ms("-90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_time_ms("now+5m", NOW), Ok(NOW + 300_000));
        assert_eq!(parse_time_ms("2025-11-25T12:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_time_ms("2025-11-25T12:00:00.250Z", 0), Ok(NOW + 250));
        assert!(parse_time_ms("yesterday", NOW).is_err());
    }
}
