//! Incremental `text/event-stream` observer for streamed completions.
//!
//! The filter passes every chunk through unchanged; [`SseScanner`] only
//! watches. It parses SSE framing byte by byte, carries at most one event's
//! `data` across chunks (capped by `max_event_bytes`), and interprets each
//! complete event as OpenAI JSON: first generated content (for
//! time-to-first-token), generated characters (to estimate completion tokens
//! when the server sends no usage) and the usage object.
//!
//! Framing follows the WHATWG SSE rules we need: `\n`, `\r\n` and `\r` line
//! ends; `data:` with or without one leading space; several `data` lines
//! joined with `\n`; comments and other fields ignored; an event ends at a
//! blank line. Not handled: a leading byte-order mark (OpenAI-compatible
//! servers do not send one).

use serde_json::Value;

use super::bounded::push_bounded;
use super::request::estimate_tokens_from_chars;
use super::sse_event::interpret;
use super::usage::Usage;

/// Default per-event cap: real chunks are well under 1 KiB, but a final
/// non-delta event (e.g. Responses API `response.completed`, which repeats the
/// whole output) can be large.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// What happened during one [`SseScanner::feed`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedResult {
    /// Generated content was seen for the first time in this call.
    pub first_content: bool,
    /// Data events completed in this call.
    pub events: u64,
    /// `data: [DONE]` arrived in this call.
    pub saw_done: bool,
}

/// Totals for the stream so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The last non-null usage seen (chat/completions `usage`, Responses API
    /// `response.usage`).
    pub usage: Option<Usage>,
    /// Characters of generated text, reasoning and tool-call arguments.
    pub generated_chars: u64,
    /// `ceil(generated_chars / 4)`; use when `usage` is `None`.
    pub estimated_completion_tokens: u64,
    pub saw_done: bool,
    /// Data events processed (including `[DONE]`, excluding oversized ones).
    pub events: u64,
    /// Events skipped because their data exceeded `max_event_bytes`.
    pub oversized_events: u64,
    /// Data events that were not valid JSON.
    pub malformed_events: u64,
}

impl StreamSummary {
    /// Completion tokens as reported, or else estimated.
    pub fn completion_tokens(&self) -> u64 {
        self.usage
            .map_or(self.estimated_completion_tokens, |u| u.completion_tokens)
    }
}

/// Where we are within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Reading the field name; `matched` bytes of `data` so far.
    Field { matched: u8 },
    /// Just after `data:`; one leading space is still to be dropped.
    DataStart,
    /// Inside a `data` value.
    Data,
    /// Comment, other field, or not a field we know: skip to line end.
    Ignore,
}

const DATA: &[u8] = b"data";

pub struct SseScanner {
    max_event_bytes: usize,
    line: Line,
    /// The previous byte was `\r`, so a following `\n` is part of that line end.
    after_cr: bool,
    /// `data` of the current event, lines joined by `\n`; at most `max_event_bytes`.
    data: Vec<u8>,
    data_lines: u64,
    /// The current event outgrew the cap; skip it up to the next blank line.
    oversized: bool,
    first_content_seen: bool,
    usage: Option<Usage>,
    generated_chars: u64,
    saw_done: bool,
    events: u64,
    oversized_events: u64,
    malformed_events: u64,
}

fn line_end_at(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(bytes.len())
}

impl SseScanner {
    pub fn new(max_event_bytes: usize) -> Self {
        SseScanner {
            max_event_bytes,
            line: Line::Field { matched: 0 },
            after_cr: false,
            data: Vec::new(),
            data_lines: 0,
            oversized: false,
            first_content_seen: false,
            usage: None,
            generated_chars: 0,
            saw_done: false,
            events: 0,
            oversized_events: 0,
            malformed_events: 0,
        }
    }

    /// Observes the next chunk of the response body. Linear in the chunk:
    /// each byte is looked at once, and buffered data is parsed only once,
    /// when its event completes.
    pub fn feed(&mut self, chunk: &[u8]) -> FeedResult {
        let mut res = FeedResult::default();
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    rest = tail;
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                self.after_cr = b == b'\r';
                self.end_line(&mut res);
                rest = tail;
                continue;
            }
            match self.line {
                Line::Field { matched } => {
                    rest = tail;
                    self.line = if matched == 4 && b == b':' {
                        self.begin_data_line();
                        Line::DataStart
                    } else if DATA.get(usize::from(matched)) == Some(&b) {
                        Line::Field {
                            matched: matched.saturating_add(1),
                        }
                    } else {
                        Line::Ignore
                    };
                }
                Line::DataStart => {
                    self.line = Line::Data;
                    if b == b' ' {
                        rest = tail;
                    }
                }
                Line::Data => {
                    let (run, after) = rest
                        .split_at_checked(line_end_at(rest))
                        .unwrap_or((rest, &[]));
                    self.append(run);
                    rest = after;
                }
                Line::Ignore => {
                    rest = rest.get(line_end_at(rest)..).unwrap_or_default();
                }
            }
        }
        res
    }

    /// Call at end of stream: completes a final event that lacks its blank
    /// line (strict SSE would drop it, but its usage is still worth having).
    pub fn finish(&mut self) -> FeedResult {
        let mut res = FeedResult::default();
        self.after_cr = false;
        self.end_line(&mut res);
        if self.data_lines > 0 || self.oversized {
            self.dispatch(&mut res);
        }
        res
    }

    pub fn summary(&self) -> StreamSummary {
        StreamSummary {
            usage: self.usage,
            generated_chars: self.generated_chars,
            estimated_completion_tokens: estimate_tokens_from_chars(self.generated_chars),
            saw_done: self.saw_done,
            events: self.events,
            oversized_events: self.oversized_events,
            malformed_events: self.malformed_events,
        }
    }

    /// Bytes currently allocated for carry-over (never above `max_event_bytes`).
    pub fn buffered_capacity(&self) -> usize {
        self.data.capacity()
    }

    fn begin_data_line(&mut self) {
        self.data_lines = self.data_lines.saturating_add(1);
        if self.data_lines > 1 {
            self.append(b"\n");
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if !self.oversized && !push_bounded(&mut self.data, bytes, self.max_event_bytes) {
            self.oversized = true;
            self.data.clear();
        }
    }

    fn end_line(&mut self, res: &mut FeedResult) {
        match self.line {
            // Empty line: the event is complete.
            Line::Field { matched: 0 } => self.dispatch(res),
            // A bare `data` line: a data line with an empty value.
            Line::Field { matched: 4 } => self.begin_data_line(),
            Line::Field { .. } | Line::DataStart | Line::Data | Line::Ignore => {}
        }
        self.line = Line::Field { matched: 0 };
    }

    fn dispatch(&mut self, res: &mut FeedResult) {
        if self.oversized {
            self.oversized_events = self.oversized_events.saturating_add(1);
        } else if self.data_lines > 0 {
            self.events = self.events.saturating_add(1);
            res.events = res.events.saturating_add(1);
            self.process_data(res);
        }
        self.data.clear();
        self.data_lines = 0;
        self.oversized = false;
    }

    fn process_data(&mut self, res: &mut FeedResult) {
        if self.data.trim_ascii() == b"[DONE]" {
            self.saw_done = true;
            res.saw_done = true;
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&self.data) else {
            self.malformed_events = self.malformed_events.saturating_add(1);
            return;
        };
        let info = interpret(&event);
        self.generated_chars = self.generated_chars.saturating_add(info.chars);
        if info.content && !self.first_content_seen {
            self.first_content_seen = true;
            res.first_content = true;
        }
        if info.usage.is_some() {
            self.usage = info.usage;
        }
    }
}

#[cfg(test)]
mod tests;
