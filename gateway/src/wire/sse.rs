//! Incremental server-sent-events parsing.
//!
//! The proxy forwards every upstream chunk as soon as it arrives and feeds
//! the same bytes here; the scanner keeps only the unfinished tail of the
//! current event, so memory stays bounded by one event whatever the length
//! of the stream. An event larger than the configured limit is an error:
//! the gateway treats the stream as invalid rather than buffering without end.

use crate::wire::WireError;

/// One complete event: its `event:` name (empty when absent) and the
/// `data:` lines joined with `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Splits a byte stream into [`SseEvent`]s as bytes arrive.
#[derive(Debug)]
pub struct SseScanner {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a `\n` opening the next one belongs to it.
    after_cr: bool,
    current: SseEvent,
    has_data: bool,
    pending_bytes: usize,
    max_event_bytes: usize,
}

impl SseScanner {
    pub fn new(max_event_bytes: usize) -> Self {
        SseScanner {
            line: Vec::new(),
            after_cr: false,
            current: SseEvent::default(),
            has_data: false,
            pending_bytes: 0,
            max_event_bytes,
        }
    }

    /// Feed a chunk; every event it completes is passed to `on_event`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(SseEvent),
    ) -> Result<(), WireError> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            self.line.extend_from_slice(&rest[..pos]);
            let was_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if was_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut on_event)?;
        }
        self.line.extend_from_slice(rest);
        self.pending_bytes += rest.len();
        if self.pending_bytes > self.max_event_bytes {
            return Err(WireError::SseEventTooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    fn line_done(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(SseEvent),
    ) -> Result<(), WireError> {
        if line.is_empty() {
            if self.has_data || !self.current.event.is_empty() {
                on_event(std::mem::take(&mut self.current));
            }
            self.has_data = false;
            self.pending_bytes = 0;
            return Ok(());
        }
        self.pending_bytes += line.len();
        if self.pending_bytes > self.max_event_bytes {
            return Err(WireError::SseEventTooLarge(self.max_event_bytes));
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| WireError::SseNotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(input: &[u8], piece: usize) -> Result<Vec<SseEvent>, WireError> {
        let mut scanner = SseScanner::new(1024);
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            scanner.feed(chunk, |e| out.push(e))?;
        }
        Ok(out)
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_the_same_however_the_bytes_are_split() {
        let cases: Vec<(&[u8], Vec<SseEvent>)> = vec![
            (
                b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
                vec![ev("", "{\"a\":1}"), ev("", "[DONE]")],
            ),
            (
                b"event: message_start\ndata: {}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
                vec![ev("message_start", "{}"), ev("ping", "{\"type\":\"ping\"}")],
            ),
            (b"data: one\ndata: two\n\n", vec![ev("", "one\ntwo")]),
            (
                b": keep-alive\n\ndata:x\r\n\r\ndata: y\r\rdata: z\n\n",
                vec![ev("", "x"), ev("", "y"), ev("", "z")],
            ),
            (b"id: 4\nretry: 10\ndata\n\n", vec![ev("", "")]),
            // An unfinished event is not emitted.
            (b"data: partial", vec![]),
        ];
        for (input, want) in cases {
            for piece in [1, 2, 3, 7, input.len().max(1)] {
                assert_eq!(
                    scan_in_pieces(input, piece).unwrap(),
                    want,
                    "{:?} piece {piece}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn oversized_and_invalid_events_are_errors() {
        let big = format!("data: {}\n\n", "x".repeat(2000));
        for piece in [1, 100, big.len()] {
            assert_eq!(
                scan_in_pieces(big.as_bytes(), piece),
                Err(WireError::SseEventTooLarge(1024))
            );
        }
        assert_eq!(
            scan_in_pieces(b"data: \xff\xfe\n\n", 4),
            Err(WireError::SseNotUtf8)
        );
    }

    #[test]
    fn memory_is_bounded_by_one_event() {
        // Many small events in sequence never trip the per-event limit.
        let stream = "data: 0123456789\n\n".repeat(1000);
        assert_eq!(scan_in_pieces(stream.as_bytes(), 13).unwrap().len(), 1000);
    }
}
