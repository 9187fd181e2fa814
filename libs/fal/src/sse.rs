//! A small `text/event-stream` reader: enough for fal's status stream.

/// Longest event (or line) accepted, so a server cannot grow the buffer forever.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Splits a byte stream into events, returning each event's `data`.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Vec<String>,
    size: usize,
}

/// The stream is not SSE we can read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SseTooLarge;

impl SseParser {
    /// Feeds `chunk`; returns the data of every event it completed, in order.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseTooLarge> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut events);
            } else {
                self.line.push(byte);
                if self.line.len() > MAX_EVENT_BYTES {
                    return Err(SseTooLarge);
                }
            }
        }
        if self.size > MAX_EVENT_BYTES {
            return Err(SseTooLarge);
        }
        Ok(events)
    }

    /// The data of an event the stream ended in the middle of, if any.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        let mut events = Vec::new();
        self.line_done(&line, &mut events);
        self.line_done(b"", &mut events);
        events.pop()
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(std::mem::take(&mut self.data).join("\n"));
                self.size = 0;
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            self.size += value.len();
            self.data.push(String::from_utf8_lossy(value).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b": keep-alive\n\ndata: {\"a\"").expect("ok"),
            Vec::<String>::new()
        );
        assert_eq!(
            parser
                .push(b":1}\r\n\r\nevent: x\ndata:{\"b\":2}\n\n")
                .expect("ok"),
            vec!["{\"a\":1}".to_owned(), "{\"b\":2}".to_owned()]
        );
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"data: one\ndata: two\n\n").expect("ok"),
            vec!["one\ntwo".to_owned()]
        );
    }

    #[test]
    fn an_unterminated_event_is_flushed_at_the_end() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: last").expect("ok").is_empty());
        assert_eq!(parser.finish().as_deref(), Some("last"));
        assert_eq!(parser.finish(), None);
    }
}
