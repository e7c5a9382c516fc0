//! Unit tests for `sse.rs` (kept apart to keep that file small).

use super::*;

const ROLE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#;
const HELLO: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
const WORLD: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" wörld 🌍\n"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
const FINISH: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#;
const USAGE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

/// A realistic OpenAI chat stream, with a keep-alive comment thrown in,
/// `data:` without the space once, and `event`/`id` fields.
fn openai_stream() -> String {
    format!(
        "data: {ROLE}\n\n: keep-alive\n\ndata: {HELLO}\n\nid: 7\nevent: message\ndata:{WORLD}\n\ndata: {FINISH}\n\ndata: {USAGE}\n\ndata: [DONE]\n\n"
    )
}

fn expected_summary() -> StreamSummary {
    StreamSummary {
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            total_tokens: 13,
            cached_tokens: Some(2),
            reasoning_tokens: Some(0),
        }),
        generated_chars: 5 + 9,
        estimated_completion_tokens: 4,
        saw_done: true,
        events: 6,
        oversized_events: 0,
        malformed_events: 0,
    }
}

/// Feeds `chunks`; returns the summary and the index of every call that
/// reported first content.
fn run<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> (StreamSummary, Vec<usize>) {
    let mut s = SseScanner::new(max);
    let mut firsts = Vec::new();
    for (i, c) in chunks.into_iter().enumerate() {
        if s.feed(c).first_content {
            firsts.push(i);
        }
    }
    assert!(s.buffered_capacity() <= max);
    (s.summary(), firsts)
}

/// Byte index whose processing completes the first content event (the
/// line end of the blank line after the `Hello` chunk).
fn first_content_byte(stream: &str, blank: &str) -> usize {
    let hello = stream.find("\"Hello\"").unwrap();
    hello + stream[hello..].find(blank).unwrap() + blank.len() / 2
}

fn check_all_splits(stream: &str, blank: &str) {
    let bytes = stream.as_bytes();
    let expected = expected_summary();
    let first_at = first_content_byte(stream, blank);

    // (a) whole
    assert_eq!(run(DEFAULT_MAX_EVENT_BYTES, [bytes]), (expected, vec![0]));

    // (b) two chunks, split at every position
    for k in 0..=bytes.len() {
        let (summary, firsts) = run(DEFAULT_MAX_EVENT_BYTES, [&bytes[..k], &bytes[k..]]);
        assert_eq!(summary, expected, "split at {k}");
        let want = if k > first_at { 0 } else { 1 };
        assert_eq!(firsts, vec![want], "split at {k}");
    }

    // (c) one byte at a time
    let (summary, firsts) = run(DEFAULT_MAX_EVENT_BYTES, bytes.chunks(1));
    assert_eq!(summary, expected);
    assert_eq!(firsts, vec![first_at]);

    // Irregular chunk sizes.
    for size in [2, 3, 7, 64, 333] {
        let (summary, firsts) = run(DEFAULT_MAX_EVENT_BYTES, bytes.chunks(size));
        assert_eq!(summary, expected);
        assert_eq!(firsts, vec![first_at / size]);
    }
}

#[test]
fn openai_stream_lf() {
    check_all_splits(&openai_stream(), "\n\n");
}

#[test]
fn openai_stream_crlf() {
    let stream = openai_stream().replace('\n', "\r\n");
    // The JSON payload "\n" inside WORLD is an escape, not a real newline.
    assert!(stream.contains(r#"🌍\n""#));
    check_all_splits(&stream, "\r\n\r\n");
}

#[test]
fn openai_stream_cr() {
    let stream = openai_stream().replace('\n', "\r");
    check_all_splits(&stream, "\r\r");
}

#[test]
fn first_content_is_the_hello_event() {
    let stream = openai_stream();
    let mut s = SseScanner::new(DEFAULT_MAX_EVENT_BYTES);
    let head = format!("data: {ROLE}\n\n: keep-alive\n\n");
    let r = s.feed(head.as_bytes());
    assert_eq!(
        r,
        FeedResult {
            first_content: false,
            events: 1,
            saw_done: false
        }
    );
    let r = s.feed(format!("data: {HELLO}\n\n").as_bytes());
    assert_eq!(
        r,
        FeedResult {
            first_content: true,
            events: 1,
            saw_done: false
        }
    );
    let rest = &stream[stream.find("id: 7").unwrap()..];
    let r = s.feed(rest.as_bytes());
    assert_eq!(
        r,
        FeedResult {
            first_content: false,
            events: 4,
            saw_done: true
        }
    );
    assert_eq!(s.summary(), expected_summary());
}

#[test]
fn mixed_line_endings() {
    let stream = format!("data: {ROLE}\r\n\r\ndata: {HELLO}\n\rdata: {WORLD}\r\rdata: {FINISH}\n\ndata: {USAGE}\r\n\ndata: [DONE]\r\n\r\n");
    let (summary, firsts) = run(DEFAULT_MAX_EVENT_BYTES, [stream.as_bytes()]);
    assert_eq!(firsts, vec![0]);
    assert_eq!(
        summary,
        StreamSummary {
            events: 6,
            ..expected_summary()
        }
    );
}

#[test]
fn multi_line_data_is_joined_with_newline() {
    // JSON split over several data lines; the joining newline is whitespace.
    let stream =
        "data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"abc\"}}],\ndata:\"usage\":null}\n\n";
    let (summary, firsts) = run(1024, stream.as_bytes().chunks(1));
    assert_eq!(firsts, vec![stream.len() - 1]);
    assert_eq!(summary.generated_chars, 3);
    assert_eq!(summary.events, 1);
    assert_eq!(summary.malformed_events, 0);
    // Without the newline joins the two lines would form `"ab` + `c"`: the
    // content is a real JSON string spanning the lines, so the join is visible.
    let stream = "data: {\"choices\":[{\"text\":\"a\ndata: b\"}]}\n\n";
    let (summary, _) = run(1024, [stream.as_bytes()]);
    assert_eq!(
        summary.malformed_events, 1,
        "a raw newline inside a JSON string is invalid"
    );
}

#[test]
fn framing_edge_cases() {
    let stream = concat!(
        "retry: 1000\n",
        ": comment with data: {\"choices\":[{\"text\":\"x\"}]}\n",
        "\n",
        "event: ping\n",
        "\n",
        "dat: {}\n",
        "datas: {}\n",
        "Data: {}\n",
        " data: {}\n",
        "\n",
        "data\n",
        "\n",
        "data:\n",
        "\n",
        "data:  [DONE]\n",
        "\n",
    );
    let (summary, firsts) = run(1024, [stream.as_bytes()]);
    assert!(firsts.is_empty());
    // `data` (no colon) and `data:` are empty data events: malformed JSON.
    assert_eq!(summary.events, 3);
    assert_eq!(summary.malformed_events, 2);
    assert!(
        summary.saw_done,
        "one extra space is part of the value, trimmed for [DONE]"
    );
    assert_eq!(summary.generated_chars, 0);
}

#[test]
fn event_without_trailing_blank_line_needs_finish() {
    let stream = format!("data: {HELLO}\n\ndata: {USAGE}");
    let mut s = SseScanner::new(DEFAULT_MAX_EVENT_BYTES);
    assert!(s.feed(stream.as_bytes()).first_content);
    assert_eq!(s.summary().usage, None);
    assert_eq!(s.finish().events, 1);
    assert_eq!(s.summary().usage.map(|u| u.total_tokens), Some(13));
    assert_eq!(s.finish(), FeedResult::default());
    // Also with a trailing line end but no blank line.
    let mut s = SseScanner::new(DEFAULT_MAX_EVENT_BYTES);
    s.feed(format!("data: {USAGE}\r").as_bytes());
    s.finish();
    assert_eq!(s.summary().events, 1);
    assert!(s.summary().usage.is_some());
}

#[test]
fn oversized_events_are_skipped_with_bounded_memory() {
    let max = 512;
    let big = format!(
        r#"{{"choices":[{{"delta":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":99}}}}"#,
        "x".repeat(5000)
    );
    // Single huge line, and the same spread over many data lines.
    let split_big = big
        .as_bytes()
        .chunks(100)
        .map(|c| format!("data: {}\n", String::from_utf8_lossy(c)))
        .collect::<String>();
    for big_event in [format!("data: {big}\n"), split_big] {
        let stream = format!(
            "data: {ROLE}\n\n{big_event}\ndata: {HELLO}\n\ndata: {USAGE}\n\ndata: [DONE]\n\n"
        );
        for chunk in [1, 7, 4096, stream.len()] {
            let mut s = SseScanner::new(max);
            let mut firsts = 0;
            for c in stream.as_bytes().chunks(chunk) {
                firsts += usize::from(s.feed(c).first_content);
                assert!(s.buffered_capacity() <= max);
            }
            let summary = s.summary();
            assert_eq!(firsts, 1);
            assert_eq!(summary.oversized_events, 1);
            assert_eq!(summary.events, 4);
            assert_eq!(
                summary.generated_chars, 5,
                "the oversized content is not counted"
            );
            assert_eq!(summary.usage.map(|u| u.prompt_tokens), Some(10));
            assert!(summary.saw_done);
        }
    }
}

#[test]
fn event_exactly_at_the_limit_is_kept() {
    let data = format!("data: {HELLO}\n\n");
    let (summary, _) = run(HELLO.len(), [data.as_bytes()]);
    assert_eq!((summary.events, summary.oversized_events), (1, 0));
    let (summary, _) = run(HELLO.len() - 1, [data.as_bytes()]);
    assert_eq!((summary.events, summary.oversized_events), (0, 1));
}

#[test]
fn long_comments_and_other_fields_do_not_count_against_the_limit() {
    let stream = format!(
        ": {}\nevent: {}\ndata: {HELLO}\n\n",
        "c".repeat(10_000),
        "e".repeat(10_000)
    );
    let (summary, firsts) = run(HELLO.len(), stream.as_bytes().chunks(3));
    assert_eq!(firsts.len(), 1);
    assert_eq!((summary.events, summary.oversized_events), (1, 0));
}

#[test]
fn malformed_json_is_counted() {
    let head = "data: {\"choices\":\n\ndata: not json\n\ndata: ";
    let tail = format!(
        "\n\ndata: {HELLO}\n\ndata: {{\"a\":{}}}\n\n",
        "[".repeat(500)
    );
    let mut s = SseScanner::new(4096);
    s.feed(head.as_bytes());
    s.feed(b"\xff\xfe");
    s.feed(tail.as_bytes());
    let summary = s.summary();
    // Truncated JSON, plain text, invalid UTF-8, and 500-deep nesting
    // (beyond serde_json's recursion limit: malformed, not a crash).
    assert_eq!(summary.malformed_events, 4);
    assert_eq!(summary.events, 5);
    assert_eq!(summary.generated_chars, 5);
}

#[test]
fn deeply_nested_event_is_malformed_not_a_crash() {
    let stream = format!("data: {}\n\n", "[".repeat(50_000));
    let mut s = SseScanner::new(1 << 20);
    s.feed(stream.as_bytes());
    assert_eq!(s.summary().malformed_events, 1);
}

#[test]
fn no_usage_estimates_from_chars() {
    let stream = format!(
        "data: {ROLE}\n\ndata: {HELLO}\n\ndata: {WORLD}\n\ndata: {FINISH}\n\ndata: [DONE]\n\n"
    );
    let (summary, _) = run(DEFAULT_MAX_EVENT_BYTES, [stream.as_bytes()]);
    assert_eq!(summary.usage, None);
    assert_eq!(summary.generated_chars, 14);
    assert_eq!(summary.estimated_completion_tokens, 4);
    assert_eq!(summary.completion_tokens(), 4);
    assert_eq!(expected_summary().completion_tokens(), 3);
}

#[test]
fn last_usage_wins_and_null_usage_is_ignored() {
    let stream = format!(
        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":1}}}}\n\ndata: {USAGE}\n\ndata: {{\"choices\":[],\"usage\":null}}\n\n"
    );
    let (summary, _) = run(4096, [stream.as_bytes()]);
    assert_eq!(summary.usage.map(|u| u.total_tokens), Some(13));
}

#[test]
fn completions_stream() {
    let stream = concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"Once upon\",\"index\":0,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" a time\",\"index\":0,\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7}}\n\n",
        "data: [DONE]\n\n",
    );
    let (summary, firsts) = run(4096, stream.as_bytes().chunks(1));
    assert_eq!(firsts.len(), 1);
    assert_eq!(summary.generated_chars, 16);
    assert_eq!(summary.usage.map(|u| u.completion_tokens), Some(3));
    assert!(summary.saw_done);
}

#[test]
fn tool_call_stream() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let mut s = SseScanner::new(4096);
    let first = s.feed(
        stream
            .as_bytes()
            .split_at(stream.find("\n\n").unwrap() + 2)
            .0,
    );
    assert!(
        first.first_content,
        "the first tool-call chunk is the first output"
    );
    s.feed(
        stream
            .as_bytes()
            .split_at(stream.find("\n\n").unwrap() + 2)
            .1,
    );
    assert_eq!(s.summary().generated_chars, 16);
}

#[test]
fn reasoning_stream() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"Let me think\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"42\"}}]}\n\n",
    );
    let mut s = SseScanner::new(4096);
    let mut results = Vec::new();
    for event in stream.split_inclusive("\n\n") {
        results.push(s.feed(event.as_bytes()).first_content);
    }
    assert_eq!(results, vec![false, true, false]);
    assert_eq!(s.summary().generated_chars, 14);
}

#[test]
fn responses_api_stream() {
    let stream = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.output_item.added\n",
        "data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" there\"}\n\n",
        "event: response.output_text.done\n",
        "data: {\"type\":\"response.output_text.done\",\"text\":\"Hi there\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi there\"}]}],\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":15}}}\n\n",
    );
    let mut s = SseScanner::new(4096);
    let mut first_at = Vec::new();
    for (i, event) in stream.split_inclusive("\n\n").enumerate() {
        if s.feed(event.as_bytes()).first_content {
            first_at.push(i);
        }
    }
    assert_eq!(first_at, vec![2]);
    let summary = s.summary();
    assert_eq!(summary.generated_chars, 8);
    assert_eq!(summary.events, 6);
    assert!(!summary.saw_done);
    assert_eq!(
        summary.usage,
        Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
            total_tokens: 15,
            cached_tokens: Some(0),
            reasoning_tokens: Some(0),
        })
    );
}

#[test]
fn long_line_one_byte_at_a_time_is_linear() {
    // 4 MiB in one data line fed bytewise: quadratic rescanning would take
    // hours; this is a few hundred milliseconds in debug builds.
    let content = "y".repeat(4 << 20);
    let stream = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n");
    let mut s = SseScanner::new(8 << 20);
    let mut firsts = 0;
    for b in stream.as_bytes() {
        firsts += usize::from(s.feed(std::slice::from_ref(b)).first_content);
    }
    assert_eq!(firsts, 1);
    assert_eq!(s.summary().generated_chars, 4 << 20);
}

#[test]
fn empty_feeds_and_zero_limit() {
    let mut s = SseScanner::new(0);
    assert_eq!(s.feed(b""), FeedResult::default());
    s.feed(format!("data: {HELLO}\n\n").as_bytes());
    assert_eq!(s.summary().oversized_events, 1);
    assert_eq!(s.buffered_capacity(), 0);
    assert_eq!(s.finish(), FeedResult::default());
}
