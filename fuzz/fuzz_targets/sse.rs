//! The SSE scanner over arbitrary bytes in arbitrary chunks.
//!
//! Input: byte 0 picks the event size limit, bytes 1..3 seed the chunking, the rest is
//! the stream. Beyond "never panics": the summary does not depend on how the stream was
//! cut into chunks (one piece vs. the fuzzer's chunking vs. byte by byte), and first
//! content is reported at most once.
#![no_main]

use ai_gateway_core::openai::sse::{SseScanner, StreamSummary};
use libfuzzer_sys::fuzz_target;

fn run(limit: usize, stream: &[u8], cuts: &mut dyn FnMut(usize) -> usize) -> StreamSummary {
    let mut s = SseScanner::new(limit);
    let mut first = 0u32;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = cuts(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        first += u32::from(s.feed(chunk).first_content);
        rest = tail;
    }
    first += u32::from(s.finish().first_content);
    assert!(first <= 1, "first content reported {first} times");
    s.summary()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (head, stream) = data.split_at(3);
    // Small limits too, so the oversized-event path is reached.
    let limit = [16usize, 64, 1024, 64 * 1024][usize::from(head[0] % 4)];
    let mut seed = u32::from(head[1]) << 8 | u32::from(head[2]) | 1;
    let whole = run(limit, stream, &mut |n| n);
    let chunked = run(limit, stream, &mut |_| {
        // xorshift: reproducible chunk sizes from the input's own seed.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        1 + (seed % 97) as usize
    });
    assert_eq!(whole, chunked, "summary depends on chunking");
    if stream.len() <= 4096 {
        let bytewise = run(limit, stream, &mut |_| 1);
        assert_eq!(
            whole, bytewise,
            "summary depends on chunking (byte by byte)"
        );
    }
});
