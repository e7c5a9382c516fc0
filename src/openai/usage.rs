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

    /// Observes the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if !self.capturing {
                let n = self.scan.plain_string_run(rest);
                if n > 0 {
                    rest = rest.get(n..).unwrap_or_default();
                    continue;
                }
            }
            rest = tail;
            match self.scan.step(b) {
                Step::Outside => {}
                Step::ValueStart => {
                    if self.scan.key_is("usage") {
                        self.capturing = true;
                        self.oversized = false;
                        self.capture.clear();
                        self.push(b);
                    }
                }
                Step::ValueByte => {
                    if self.capturing {
                        self.push(b);
                    }
                }
                Step::ValueEnd => {
                    if self.capturing {
                        self.capturing = false;
                        self.usage = Usage::from_slice(&self.capture);
                        // Release the capture: usage is read once per body.
                        self.capture = Vec::new();
                    }
                }
            }
        }
    }

    fn push(&mut self, b: u8) {
        if !push_bounded(&mut self.capture, &[b], self.max_capture) {
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
mod tests {
    use super::*;
    use serde_json::json;

    fn u(p: u64, c: u64, t: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: t,
            cached_tokens: None,
            reasoning_tokens: None,
        }
    }

    #[test]
    fn from_json_chat() {
        let v = json!({"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 4, "accepted_prediction_tokens": 0}});
        assert_eq!(
            Usage::from_json(&v),
            Some(Usage {
                cached_tokens: Some(3),
                reasoning_tokens: Some(4),
                ..u(19, 10, 29)
            })
        );
    }

    #[test]
    fn from_json_completions_without_details() {
        let v = json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12});
        assert_eq!(Usage::from_json(&v), Some(u(5, 7, 12)));
    }

    #[test]
    fn from_json_embeddings() {
        let v = json!({"prompt_tokens": 8, "total_tokens": 8});
        assert_eq!(Usage::from_json(&v), Some(u(8, 0, 8)));
    }

    #[test]
    fn from_json_responses_api() {
        let v = json!({"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 123});
        assert_eq!(
            Usage::from_json(&v),
            Some(Usage {
                cached_tokens: Some(0),
                reasoning_tokens: Some(64),
                ..u(36, 87, 123)
            })
        );
    }

    #[test]
    fn from_json_missing_total_is_sum() {
        let v = json!({"prompt_tokens": 5, "completion_tokens": 7});
        assert_eq!(Usage::from_json(&v), Some(u(5, 7, 12)));
        let v = json!({"input_tokens": 1, "output_tokens": 2});
        assert_eq!(Usage::from_json(&v), Some(u(1, 2, 3)));
        let v = json!({"prompt_tokens": u64::MAX, "completion_tokens": 7});
        assert_eq!(Usage::from_json(&v), Some(u(u64::MAX, 7, u64::MAX)));
    }

    #[test]
    fn from_json_integral_floats_and_bad_values() {
        let v = json!({"prompt_tokens": 5.0, "completion_tokens": 2.5, "total_tokens": -1});
        assert_eq!(Usage::from_json(&v), Some(u(5, 0, 5)));
        let v = json!({"prompt_tokens": "5"});
        assert_eq!(Usage::from_json(&v), None);
        let v = json!({"prompt_tokens": 1e300});
        assert_eq!(Usage::from_json(&v), None);
    }

    #[test]
    fn from_json_rejects_non_usage() {
        assert_eq!(Usage::from_json(&json!(null)), None);
        assert_eq!(Usage::from_json(&json!([1, 2])), None);
        assert_eq!(Usage::from_json(&json!({})), None);
        assert_eq!(Usage::from_json(&json!({"foo": 1})), None);
        assert_eq!(Usage::from_slice(b"{not json"), None);
    }

    fn scan_whole(body: &str, max: usize) -> Option<Usage> {
        let mut s = JsonUsageScanner::new(max);
        s.feed(body.as_bytes());
        s.finish()
    }

    const USAGE: &str = r#"{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":0}}"#;

    fn expected() -> Option<Usage> {
        Some(Usage {
            reasoning_tokens: Some(0),
            ..u(9, 12, 21)
        })
    }

    fn chat_body(position: usize) -> String {
        let before = r#""id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o""#;
        let choices = r#""choices":[{"index":0,"message":{"role":"assistant","content":"He said \"usage\": {\"prompt_tokens\": 999} } ] \\ \" { [","usage":{"prompt_tokens":777}},"finish_reason":"stop","usage":{"prompt_tokens":555}}]"#;
        let usage = format!(r#""usage":{USAGE}"#);
        let parts: Vec<String> = match position {
            0 => vec![usage, before.into(), choices.into()],
            1 => vec![before.into(), usage, choices.into()],
            _ => vec![before.into(), choices.into(), usage],
        };
        format!("{{{}}}", parts.join(","))
    }

    #[test]
    fn scanner_usage_start_middle_end() {
        for pos in 0..3 {
            let body = chat_body(pos);
            // The body is valid JSON, and the nested decoys are really there.
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["choices"][0]["usage"]["prompt_tokens"], 555);
            assert_eq!(scan_whole(&body, 4096), expected(), "position {pos}");
        }
    }

    #[test]
    fn scanner_split_at_every_byte() {
        for pos in 0..3 {
            let body = chat_body(pos);
            let bytes = body.as_bytes();
            for k in 0..=bytes.len() {
                let mut s = JsonUsageScanner::new(4096);
                s.feed(&bytes[..k]);
                s.feed(&bytes[k..]);
                assert_eq!(s.finish(), expected(), "position {pos} split {k}");
            }
        }
    }

    #[test]
    fn scanner_one_byte_at_a_time_pretty_printed() {
        let v: Value = serde_json::from_str(&chat_body(1)).unwrap();
        let body = serde_json::to_string_pretty(&v).unwrap();
        let mut s = JsonUsageScanner::new(4096);
        for b in body.as_bytes() {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.finish(), expected());
    }

    #[test]
    fn scanner_ignores_nested_usage_only() {
        let body = r#"{"choices":[{"usage":{"prompt_tokens":1,"total_tokens":1}}],"data":{"usage":{"prompt_tokens":2}}}"#;
        assert_eq!(scan_whole(body, 4096), None);
    }

    #[test]
    fn scanner_key_lookalikes_in_strings() {
        let body = r#"{"note":"\"usage\":{\"prompt_tokens\":1}","x\"usage":{"prompt_tokens":3},"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(scan_whole(body, 4096), Some(u(4, 0, 4)));
    }

    #[test]
    fn scanner_escaped_backslash_before_quote() {
        // "a\\" ends the string; a naive scanner would think the quote is escaped.
        let body = r#"{"a":"x\\","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        assert_eq!(scan_whole(body, 4096), Some(u(2, 0, 2)));
    }

    #[test]
    fn scanner_oversized_usage_is_none() {
        let big = format!(
            r#"{{"usage":{{"prompt_tokens":1,"completion_tokens":2,"pad":"{}"}}}}"#,
            "x".repeat(5000)
        );
        let mut s = JsonUsageScanner::new(4096);
        for c in big.as_bytes().chunks(7) {
            s.feed(c);
        }
        assert_eq!(s.finish(), None);
        assert!(s.usage_oversized());
        assert!(s.capture.capacity() <= 4096);
        // Just under the limit still works.
        let ok = format!(r#"{{"usage":{USAGE}}}"#);
        assert_eq!(scan_whole(&ok, USAGE.len()), expected());
        assert_eq!(scan_whole(&ok, USAGE.len() - 1), None);
    }

    #[test]
    fn scanner_oversized_later_duplicate_clears_earlier() {
        let body = format!(
            r#"{{"usage":{USAGE},"usage":{{"prompt_tokens":1,"pad":"{}"}}}}"#,
            "x".repeat(100)
        );
        assert_eq!(scan_whole(&body, 64), None);
    }

    #[test]
    fn scanner_last_usage_wins_and_null() {
        let body = format!(r#"{{"usage":{USAGE},"usage":{{"prompt_tokens":1}}}}"#);
        assert_eq!(scan_whole(&body, 4096), Some(u(1, 0, 1)));
        assert_eq!(scan_whole(r#"{"usage":null}"#, 4096), None);
        assert_eq!(scan_whole(r#"{"usage":"x"}"#, 4096), None);
    }

    #[test]
    fn scanner_embeddings_shape() {
        let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093,{"usage":1}]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(scan_whole(body, 4096), Some(u(8, 0, 8)));
    }

    #[test]
    fn scanner_responses_shape() {
        let body = r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Hi {\"usage\":","annotations":[]}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null}"#;
        assert_eq!(
            scan_whole(body, 4096),
            Some(Usage {
                cached_tokens: Some(0),
                reasoning_tokens: Some(0),
                ..u(36, 87, 123)
            })
        );
    }

    #[test]
    fn scanner_truncated_or_invalid_bodies() {
        assert_eq!(scan_whole(r#"{"usage":{"prompt_tokens":1"#, 4096), None);
        assert_eq!(scan_whole(r#"[{"usage":{"prompt_tokens":1}}]"#, 4096), None);
        assert_eq!(scan_whole("", 4096), None);
        assert_eq!(scan_whole("\u{0}\u{ff}garbage", 4096), None);
        // Usage at the very end, closed by the top-level brace.
        assert_eq!(
            scan_whole(r#"{"usage":{"prompt_tokens":1}}"#, 4096),
            Some(u(1, 0, 1))
        );
    }

    #[test]
    fn scanner_deeply_nested_other_members_are_fine() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let body = format!(r#"{{"x":{deep},"usage":{{"prompt_tokens":1}}}}"#);
        assert_eq!(scan_whole(&body, 4096), Some(u(1, 0, 1)));
    }
}
