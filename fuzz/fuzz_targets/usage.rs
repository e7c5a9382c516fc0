//! The JSON usage scanner (non-streamed responses) and `Usage::from_slice`.
//!
//! Input: byte 0 picks the capture limit, byte 1 the chunk size, the rest is the body.
//! Beyond "never panics": the result does not depend on chunking, and a usage found in a
//! complete JSON object body is the one `serde_json` sees at its top level.
#![no_main]

use ai_gateway_core::openai::usage::{JsonUsageScanner, Usage};
use libfuzzer_sys::fuzz_target;

fn scan(limit: usize, body: &[u8], chunk: usize) -> (Option<Usage>, bool) {
    let mut s = JsonUsageScanner::new(limit);
    for c in body.chunks(chunk.max(1)) {
        s.feed(c);
    }
    assert_eq!(s.finish(), s.usage());
    (s.finish(), s.usage_oversized())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (head, body) = data.split_at(2);
    let limit = [8usize, 64, 4096][usize::from(head[0] % 3)];
    let _ = Usage::from_slice(body);
    let whole = scan(limit, body, body.len());
    let chunked = scan(limit, body, usize::from(head[1]) + 1);
    let bytewise = scan(limit, body, 1);
    assert_eq!(whole, chunked, "usage depends on chunking");
    assert_eq!(whole, bytewise, "usage depends on chunking (byte by byte)");
    if let (Some(u), false) = (whole.0, whole.1) {
        if let Ok(serde_json::Value::Object(top)) = serde_json::from_slice(body) {
            let expected = top.get("usage").and_then(Usage::from_json);
            assert_eq!(
                Some(u),
                expected,
                "scanner and serde_json disagree on usage"
            );
        }
    }
});
