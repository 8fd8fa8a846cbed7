//! Console lines: `RED   web-1 java cpu 93.1% > 80%` (level padded to 5), coloured by level
//! when asked (RED red, AMBER amber, STALE grey, resolved green).

use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use procwatch_model::{AlarmEvent, AlarmKind, Level, Metric, TsMs};

use crate::{Notifier, NotifyError};

/// A figure without a useless `.0`: `80`, `80.5`.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn unit(metric: Metric) -> &'static str {
    match metric {
        Metric::Cores => "",
        Metric::Cpu | Metric::Mem | Metric::FdsPct => "%",
        _ => "",
    }
}

/// `s` made safe for a terminal: control characters (C0, DEL, C1: ESC sequences could
/// recolour, move the cursor or retitle the terminal) and the Unicode bidirectional
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C: they
/// reorder what a reader sees) are written as `\u{XXXX}`; everything else is kept.
pub fn escape_for_terminal(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    }
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:04X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The line for one event, without colour codes (host and process names escaped with
/// [`escape_for_terminal`]):
/// - `RED   web-1 java cpu 93.1% > 80%`
/// - `AMBER web-1 java mem 61.0% forecast 85.2% > 80% in 7m`
/// - `OK    web-1 java cpu 12.0% < 75% (was RED)` (resolved: below T − hysteresis is not
///   known here, so the threshold is shown)
/// - `STALE web-1 java cpu no data (was RED at 93.1%)` (the value that raised the alarm)
/// - `RED   web-1 host silent: no data for 32s (alarm after 30s without data)`
/// - `OK    web-1 host retired: host retired by alice@ops`
/// - `CLOSE web-1 java cpu STALE (raised at 93.1%): process exited: …` (closed without a
///   recovery; the reason says why)
pub fn format_line(ev: &AlarmEvent) -> String {
    let level = format!("{:5}", ev.level.as_str());
    let host = escape_for_terminal(&ev.host);
    let process = escape_for_terminal(&ev.process);
    if ev.kind == AlarmKind::HostRetired {
        let why = escape_for_terminal(ev.reason.as_deref().unwrap_or("host retired"));
        return format!("OK    {host} host retired: {why}");
    }
    if let (Some(_), Some(why), false) = (ev.end, &ev.reason, ev.level == Level::Ok) {
        let why = escape_for_terminal(why);
        let what = if ev.kind == AlarmKind::HostSilent {
            format!("{host} host silent")
        } else {
            let u = unit(ev.metric);
            format!("{host} {process} {} {} (raised at {:.1}{u})", ev.metric, ev.level, ev.value)
        };
        return format!("CLOSE {what}: {why}");
    }
    if ev.kind == AlarmKind::HostSilent {
        return match ev.level {
            Level::Ok => format!("{level} {host} host heard from again"),
            _ => format!(
                "{level} {host} host silent: no data for {}s (alarm after {}s without data)",
                short(ev.value.round()),
                short(ev.threshold)
            ),
        };
    }
    let u = unit(ev.metric);
    let what = format!("{level} {host} {process} {}", ev.metric);
    match ev.level {
        Level::Red => format!("{what} {:.1}{u} > {}{u}", ev.value, short(ev.threshold)),
        Level::Amber => {
            let mut s = format!("{what} {:.1}{u}", ev.value);
            if let Some(f) = ev.forecast {
                s += &format!(" forecast {f:.1}{u}");
            }
            s += &format!(" > {}{u}", short(ev.threshold));
            if let Some(eta) = ev.eta_seconds {
                s += &format!(" in {}", eta_text(eta));
            }
            s
        }
        Level::Ok => {
            format!("{what} {:.1}{u} < {}{u} (was {})", ev.value, short(ev.threshold), ev.previous)
        }
        Level::Stale => format!("{what} no data (was {} at {:.1}{u})", ev.previous, ev.value),
    }
}

fn eta_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// ANSI colour of a level: red, amber (256-colour 214, falls back to yellow-ish), grey,
/// green.
fn colour(level: Level) -> &'static str {
    match level {
        Level::Red => "\x1b[1;31m",
        Level::Amber => "\x1b[38;5;214m",
        Level::Stale => "\x1b[90m",
        Level::Ok => "\x1b[32m",
    }
}

/// `RED   web-1 java cpu 93.1% > 80% (still active since 2026-12-04 16:40:12 UTC)`: an alarm
/// announced before (by an earlier run) listed again by the server.
pub fn still_active_line(ev: &AlarmEvent) -> String {
    format!("{} (still active since {})", format_line(ev), utc(ev.start))
}

/// `2026-12-04 16:40:12 UTC` for Unix ms.
fn utc(ms: TsMs) -> String {
    let t = procwatch_model::clock::Utc::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Whether an event is a transition worth a line: the closing copy of the previous event
/// (level unchanged, `end` set) is not, the event that replaced it is; an event closed with
/// a `reason` (no successor: process exited, host retired or dropped) is.
pub fn is_transition(ev: &AlarmEvent) -> bool {
    ev.end.is_none() || ev.level == Level::Ok || ev.reason.is_some()
}

/// The line with colour codes when `colour` is on.
pub fn render(ev: &AlarmEvent, colour_on: bool) -> String {
    let line = format_line(ev);
    if colour_on {
        format!("{}{line}\x1b[0m", colour(ev.level))
    } else {
        line
    }
}

/// Prints one line per transition to a writer (stdout in `procwatch alarm`).
pub struct Console<W: Write + Send> {
    out: Mutex<W>,
    colour: bool,
}

impl<W: Write + Send> Console<W> {
    /// A console writing to `out`, with ANSI colours if `colour`.
    pub fn new(out: W, colour: bool) -> Self {
        Self { out: Mutex::new(out), colour }
    }
}

#[async_trait]
impl<W: Write + Send + 'static> Notifier for Console<W> {
    fn name(&self) -> &str {
        "console"
    }

    async fn notify(&self, ev: &AlarmEvent) -> Result<(), NotifyError> {
        if !is_transition(ev) {
            return Ok(());
        }
        let line = render(ev, self.colour);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(NotifyError::Io)
    }

    async fn still_active(&self, ev: &AlarmEvent) -> Result<(), NotifyError> {
        let line = still_active_line(ev);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(NotifyError::Io)
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// `RED web-1 java cpu 93.14 > 80`, open.
    pub fn event() -> AlarmEvent {
        super::tests::event(Level::Red, Level::Ok)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn event(level: Level, previous: Level) -> AlarmEvent {
        AlarmEvent {
            id: "x".into(),
            kind: AlarmKind::Series,
            host: "web-1".into(),
            process: "java".into(),
            metric: Metric::Cpu,
            level,
            previous,
            start: 1,
            end: None,
            value: 93.14,
            peak: 93.14,
            threshold: 80.0,
            forecast: None,
            eta_seconds: None,
            reason: None,
        }
    }

    #[test]
    fn lines_follow_the_spec() {
        assert_eq!(format_line(&event(Level::Red, Level::Ok)), "RED   web-1 java cpu 93.1% > 80%");
        let mut amber = event(Level::Amber, Level::Ok);
        amber.value = 61.0;
        amber.forecast = Some(85.24);
        amber.eta_seconds = Some(420.0);
        assert_eq!(format_line(&amber), "AMBER web-1 java cpu 61.0% forecast 85.2% > 80% in 7m");
        let mut ok = event(Level::Ok, Level::Red);
        ok.value = 12.0;
        assert_eq!(format_line(&ok), "OK    web-1 java cpu 12.0% < 80% (was RED)");
        let mut cores = event(Level::Red, Level::Ok);
        cores.metric = Metric::Cores;
        cores.value = 3.25;
        cores.threshold = 2.5;
        assert_eq!(format_line(&cores), "RED   web-1 java cores 3.2 > 2.5");
        let mut host = event(Level::Red, Level::Ok);
        host.kind = AlarmKind::HostSilent;
        host.process = String::new();
        host.value = 31.6;
        host.threshold = 30.0;
        assert_eq!(
            format_line(&host),
            "RED   web-1 host silent: no data for 32s (alarm after 30s without data)"
        );
        let mut closed = event(Level::Stale, Level::Red);
        closed.end = Some(2);
        closed.reason = Some("process exited: no sample of it for 1m".into());
        assert!(is_transition(&closed));
        assert_eq!(
            format_line(&closed),
            "CLOSE web-1 java cpu STALE (raised at 93.1%): process exited: no sample of it for 1m"
        );
        let stale = event(Level::Stale, Level::Red);
        assert_eq!(format_line(&stale), "STALE web-1 java cpu no data (was RED at 93.1%)");
    }

    #[test]
    fn control_and_bidi_characters_in_names_are_escaped() {
        let mut ev = event(Level::Red, Level::Ok);
        ev.process = "invoice\u{202E}fdp.exe\x1b]0;pwned\x07\x1b[2J\u{2066}x\u{9B}".into();
        ev.host = "web\r\n-1\u{200F}".into();
        for line in [format_line(&ev), render(&ev, true)] {
            let names = line.trim_start_matches("\x1b[1;31m").trim_end_matches("\x1b[0m");
            assert!(
                !names.chars().any(|c| c.is_control()
                    || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200F}')),
                "{line:?}"
            );
        }
        assert_eq!(
            format_line(&ev),
            "RED   web\\u{000D}\\u{000A}-1\\u{200F} invoice\\u{202E}fdp.exe\\u{001B}]0;pwned\\u{0007}\\u{001B}[2J\\u{2066}x\\u{009B} cpu 93.1% > 80%"
        );
        // Ordinary names, non-ASCII included, are untouched.
        assert_eq!(escape_for_terminal("nginx: worker (é, 日本)"), "nginx: worker (é, 日本)");
    }

    #[test]
    fn colour_only_when_asked_and_closing_copies_are_skipped() {
        let red = event(Level::Red, Level::Ok);
        assert_eq!(render(&red, false), format_line(&red));
        assert!(render(&red, true).starts_with("\x1b[1;31mRED   "));
        assert!(render(&red, true).ends_with("\x1b[0m"));
        assert!(render(&event(Level::Ok, Level::Red), true).starts_with("\x1b[32m"));
        let mut closed = red.clone();
        closed.end = Some(5);
        assert!(!is_transition(&closed));
        assert!(is_transition(&red));
    }

    #[tokio::test]
    async fn console_writes_one_line_per_transition() {
        let c = Console::new(Vec::new(), false);
        let mut closed = event(Level::Red, Level::Ok);
        closed.end = Some(9);
        for ev in [event(Level::Red, Level::Ok), closed, event(Level::Ok, Level::Red)] {
            c.notify(&ev).await.unwrap();
        }
        let text = String::from_utf8(c.out.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("RED   web-1 java cpu 93.1%"));
        assert!(lines[1].starts_with("OK    web-1 java cpu"));
    }
}
