//! A small Server-Sent Events parser (the `text/event-stream` format of the WHATWG HTML
//! standard), pure: bytes in, events out. Chunks may split lines and UTF-8 characters
//! anywhere.
//!
//! - Lines end with `\n`, `\r\n` or `\r`.
//! - `field: value` (one optional space after the colon is dropped); a line without a colon is
//!   a field with an empty value; a line starting with `:` is a comment (keep-alive).
//! - `data` lines are joined with `\n`; a blank line dispatches the event, unless it has no
//!   data (then it is dropped, as browsers do). `event` defaults to `message`.
//! - `id` sets the last event id, which persists across events (and is what a reconnecting
//!   client sends as `Last-Event-ID`); an id containing NUL is ignored. `retry` (ms) is
//!   reported so the client can use it as its reconnect delay.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the stream named none.
    pub event: String,
    /// The event's data (multi-line data joined with `\n`).
    pub data: String,
    /// The last event id seen so far in the stream (may come from an earlier event).
    pub id: Option<String>,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

impl SseParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the last event seen, for `Last-Event-ID`.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnect delay the server asked for with `retry:`, if any.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&String::from_utf8_lossy(&line), &mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if std::mem::take(&mut self.has_data) {
                let event = if event.is_empty() { "message".to_owned() } else { event };
                out.push(SseEvent { event, data, id: self.last_id.clone() });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent { event: event.into(), data: data.into(), id: id.map(Into::into) }
    }

    #[test]
    fn parses_events_comments_and_ids() {
        let mut p = SseParser::new();
        let got = p
            .push(b": keep-alive\n\nevent: alarm\nid: b-1\ndata: {\"a\":1}\n\ndata: x\ndata:y\n\n");
        assert_eq!(
            got,
            vec![ev("alarm", "{\"a\":1}", Some("b-1")), ev("message", "x\ny", Some("b-1"))]
        );
        assert_eq!(p.last_id(), Some("b-1"));
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let text = "event: alarm\r\nid: 7\r\ndata: h\u{e9}llo\r\n\r\nretry: 1500\rdata\r\r";
        let want = {
            let mut p = SseParser::new();
            p.push(text.as_bytes())
        };
        assert_eq!(want, vec![ev("alarm", "h\u{e9}llo", Some("7")), ev("message", "", Some("7"))]);
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut p = SseParser::new();
            let mut got = p.push(&bytes[..cut]);
            got.extend(p.push(&bytes[cut..]));
            assert_eq!(got, want, "split at {cut}");
            assert_eq!(p.retry_ms(), Some(1500));
        }
        // One byte at a time.
        let mut p = SseParser::new();
        let got: Vec<SseEvent> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unfinished_events_and_data_less_events_are_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.push(b"event: alarm\n\n").is_empty());
        assert!(p.push(b"data: half").is_empty());
        assert_eq!(p.push(b"\n\n"), vec![ev("message", "half", None)]);
        assert!(p.push(b"id: a\0b\ndata: z\n\n")[0].id.is_none());
    }
}
