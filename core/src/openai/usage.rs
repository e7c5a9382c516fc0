//! Token usage as reported by OpenAI-compatible servers, and incremental
//! extraction of it from non-streamed JSON response bodies.

use serde_json::{Map, Value};

use super::bounded::push_bounded;
use super::json_scan::{Step, TopLevelScanner};

/// Token counts of one request/response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `prompt_tokens_details.cached_tokens` / `input_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
    /// `completion_tokens_details.reasoning_tokens` / `output_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<u64>,
}

/// A token count: a non-negative integer. Integral floats (`12.0`) are accepted
/// because some servers serialize counts through floating point.
fn count(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // u64::MAX as f64 rounds up to 2^64, hence the strict `<`.
    (f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

fn field(obj: &Map<String, Value>, name: &str) -> Option<u64> {
    obj.get(name).and_then(count)
}

fn detail(obj: &Map<String, Value>, details: &str, name: &str) -> Option<u64> {
    obj.get(details)?.as_object().and_then(|d| field(d, name))
}

impl Usage {
    /// Reads a usage object in any of the OpenAI shapes:
    /// chat/completions (`prompt_tokens`, `completion_tokens`, `total_tokens`,
    /// `*_tokens_details`), embeddings (no completion tokens) and the Responses
    /// API (`input_tokens`, `output_tokens`, `*_tokens_details`).
    ///
    /// Returns `None` for anything that is not an object with at least one of
    /// the prompt/completion/total counts. A missing total is prompt + completion.
    pub fn from_json(v: &Value) -> Option<Usage> {
        let obj = v.as_object()?;
        let prompt = field(obj, "prompt_tokens").or_else(|| field(obj, "input_tokens"));
        let completion = field(obj, "completion_tokens").or_else(|| field(obj, "output_tokens"));
        let total = field(obj, "total_tokens");
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let prompt_tokens = prompt.unwrap_or(0);
        let completion_tokens = completion.unwrap_or(0);
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: total.unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
            cached_tokens: detail(obj, "prompt_tokens_details", "cached_tokens")
                .or_else(|| detail(obj, "input_tokens_details", "cached_tokens")),
            reasoning_tokens: detail(obj, "completion_tokens_details", "reasoning_tokens")
                .or_else(|| detail(obj, "output_tokens_details", "reasoning_tokens")),
        })
    }

    /// [`Usage::from_json`] on raw JSON bytes; `None` if they do not parse.
    pub fn from_slice(bytes: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<Value>(bytes)
            .ok()
            .as_ref()
            .and_then(Usage::from_json)
    }
}

/// Default cap on the captured `usage` value: real usage objects are < 1 KiB.
pub const DEFAULT_MAX_USAGE_BYTES: usize = 4096;

/// Extracts the top-level `"usage"` member of a JSON response body that is
/// observed in arbitrary chunks, without buffering the body.
///
/// Only the bytes of the top-level `usage` value are kept, up to `max_capture`;
/// a larger value is dropped (the result is then `None`). A `usage` nested
/// anywhere else (inside `choices`, or the streaming Responses API's
/// `{"response":{"usage":..}}` wrapper) is ignored: every non-streamed OpenAI
/// response shape, Responses API included, has its usage at the top level.
/// If `usage` appears more than once, the last one wins.
pub struct JsonUsageScanner {
    scan: TopLevelScanner,
    max_capture: usize,
    capture: Vec<u8>,
    capturing: bool,
    oversized: bool,
    usage: Option<Usage>,
}

impl JsonUsageScanner {
    pub fn new(max_capture: usize) -> Self {
        JsonUsageScanner {
            scan: TopLevelScanner::new(),
            max_capture,
            capture: Vec::new(),
            capturing: false,
            oversized: false,
            usage: None,
        }
    }

    /// Observes the next chunk of the body. The `usage` value's bytes are copied out as
    /// slices of the chunk: at its end, or when the chunk ends inside it.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        // Where the captured bytes of this chunk start, while capturing.
        let mut from = 0;
        while let Some(&b) = chunk.get(i) {
            if !self.capturing {
                let n = self
                    .scan
                    .plain_string_run(chunk.get(i..).unwrap_or_default());
                if n > 0 {
                    i += n;
                    continue;
                }
            }
            match self.scan.step(b) {
                Step::Outside | Step::ValueByte => {}
                Step::ValueStart => {
                    if self.scan.key_is("usage") {
                        self.capturing = true;
                        self.oversized = false;
                        self.capture.clear();
                        from = i;
                    }
                }
                Step::ValueEnd => {
                    if self.capturing {
                        self.push(chunk.get(from..i).unwrap_or_default());
                    }
                    if self.capturing {
                        self.capturing = false;
                        self.usage = Usage::from_slice(&self.capture);
                        // Release the capture: usage is read once per body.
                        self.capture = Vec::new();
                    }
                }
            }
            i += 1;
        }
        if self.capturing {
            self.push(chunk.get(from..).unwrap_or_default());
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if !push_bounded(&mut self.capture, bytes, self.max_capture) {
            // Too big to be a real usage object: give up on this value (and,
            // since the last `usage` member wins, on any earlier one).
            self.capturing = false;
            self.usage = None;
            self.oversized = true;
            self.capture = Vec::new();
        }
    }

    /// The usage found so far (complete top-level `usage` values only).
    pub fn finish(&self) -> Option<Usage> {
        self.usage
    }

    /// Same as [`JsonUsageScanner::finish`].
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether a top-level `usage` value exceeded `max_capture`.
    pub fn usage_oversized(&self) -> bool {
        self.oversized
    }
}

#[cfg(test)]
mod tests;
