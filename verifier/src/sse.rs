//! A small Server-Sent Events parser (the WHATWG event-stream format) for the revocation
//! stream: bytes in, complete events out. Lines end in LF, CRLF or CR; `:` lines are comments
//! (hallpass's heartbeats); `data` lines accumulate; a blank line dispatches. Lines and events
//! are bounded so a misbehaving peer cannot grow memory without limit.

use std::mem;

/// Longest line accepted.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most data one event may accumulate.
const MAX_DATA_BYTES: usize = 256 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The last event id the stream set (it persists across events, as in browsers).
    pub id: Option<String>,
    /// The event type; `message` when the event named none.
    pub event: String,
    /// The data lines, joined with `\n`.
    pub data: String,
}

/// The stream broke the format or its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseError(pub String);

#[derive(Debug, Default)]
pub(crate) struct Parser {
    buffer: Vec<u8>,
    after_cr: bool,
    started: bool,
    id: Option<String>,
    event: String,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Feeds a chunk of the stream; returns the events it completed.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        // A CR that ended the previous chunk ended its line; an LF right after it is the
        // second half of a CRLF.
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = start + offset;
            let next = match self.buffer[end] {
                b'\r' if end + 1 == self.buffer.len() => {
                    self.after_cr = true;
                    end + 1
                }
                b'\r' if self.buffer[end + 1] == b'\n' => end + 2,
                _ => end + 1,
            };
            let line = std::str::from_utf8(&self.buffer[start..end])
                .map_err(|_| SseError("the event stream is not UTF-8".into()))?
                .to_owned();
            start = next;
            self.line(&line, &mut events)?;
        }
        self.buffer.drain(..start);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(SseError("an event-stream line is too long".into()));
        }
        Ok(events)
    }

    fn line(&mut self, mut line: &str, events: &mut Vec<Event>) -> Result<(), SseError> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            if self.has_data {
                let mut data = mem::take(&mut self.data);
                data.pop(); // the newline after the last data line
                let event = mem::take(&mut self.event);
                events.push(Event {
                    id: self.id.clone(),
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_DATA_BYTES {
                    return Err(SseError("an event's data is too large".into()));
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            // `retry` and unknown fields are ignored, as the format requires.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        chunks
            .iter()
            .flat_map(|c| p.push(c).unwrap_or_else(|e| panic!("{e:?}")))
            .collect()
    }

    #[test]
    fn events_comments_and_ids() {
        let events = all(&[b": keep-alive\n\nid: 7\nevent: revocation\ndata: {\"a\":1}\n\n"]);
        assert_eq!(
            events,
            [Event {
                id: Some("7".into()),
                event: "revocation".into(),
                data: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn split_anywhere_and_any_line_ending() {
        let text =
            b"\xEF\xBB\xBFid:1\r\nevent:revocation\r\ndata:x\r\ndata: y\r\n\r\nid: 2\rdata: z\r\r";
        let whole = all(&[text]);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].data, "x\ny");
        assert_eq!(whole[0].id.as_deref(), Some("1"));
        assert_eq!(whole[1].event, "message");
        assert_eq!(whole[1].id.as_deref(), Some("2"));
    }

    #[test]
    fn no_data_no_event_and_the_id_persists() {
        let events = all(&[b"id: 3\nevent: revocation\n\ndata: a\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("3"));
        assert_eq!(events[0].event, "message");
    }

    #[test]
    fn bounds_and_encoding() {
        let mut p = Parser::default();
        assert!(p.push(&vec![b'a'; MAX_LINE_BYTES + 1]).is_err());
        let mut p = Parser::default();
        assert!(p.push(b"data: \xff\n").is_err());
        let mut p = Parser::default();
        let line = format!("data: {}\n", "x".repeat(60_000));
        let mut failed = false;
        for _ in 0..5 {
            failed |= p.push(line.as_bytes()).is_err();
        }
        assert!(failed);
    }
}
