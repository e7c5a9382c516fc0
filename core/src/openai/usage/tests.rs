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
