use super::*;
use serde_json::json;

#[test]
fn chat_role_chunk_is_not_content() {
    let e = json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null});
    assert_eq!(interpret(&e), EventInfo::default());
    let e = json!({"choices":[{"index":0,"delta":{"content":null},"finish_reason":"stop"}]});
    assert_eq!(interpret(&e), EventInfo::default());
}

#[test]
fn chat_content_counts_chars_not_bytes() {
    let e = json!({"choices":[{"delta":{"content":"héllo 🌍"}},{"delta":{"content":"ab"}}]});
    let i = interpret(&e);
    assert!(i.content);
    assert_eq!(i.chars, 9);
}

#[test]
fn reasoning_and_refusal_are_content() {
    let e = json!({"choices":[{"delta":{"reasoning_content":"think"}}]});
    assert_eq!(interpret(&e).chars, 5);
    assert!(interpret(&e).content);
    let e = json!({"choices":[{"delta":{"reasoning":"abc"}}]});
    assert_eq!(interpret(&e).chars, 3);
    let e = json!({"choices":[{"delta":{"refusal":"no"}}]});
    assert_eq!(interpret(&e).chars, 2);
}

#[test]
fn tool_calls() {
    let e = json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]});
    let i = interpret(&e);
    assert!(i.content);
    assert_eq!(i.chars, 0);
    let e = json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]});
    assert_eq!(interpret(&e).chars, 8);
    let e = json!({"choices":[{"delta":{"tool_calls":[]}}]});
    assert!(!interpret(&e).content);
}

#[test]
fn completions_text() {
    let e = json!({"object":"text_completion","choices":[{"text":"Once","index":0}]});
    assert_eq!(interpret(&e).chars, 4);
    let e = json!({"choices":[{"text":"","index":0,"finish_reason":"length"}]});
    assert!(!interpret(&e).content);
}

#[test]
fn usage_chunk() {
    let e =
        json!({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}});
    let i = interpret(&e);
    assert!(!i.content);
    assert_eq!(i.usage.map(|u| u.total_tokens), Some(7));
    let e = json!({"choices":[],"usage":"nope"});
    assert_eq!(interpret(&e).usage, None);
}

#[test]
fn responses_events() {
    let e = json!({"type":"response.created","response":{"id":"r","usage":null}});
    assert_eq!(interpret(&e), EventInfo::default());
    let e = json!({"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"Hi!"});
    assert_eq!(interpret(&e).chars, 3);
    assert!(interpret(&e).content);
    let e = json!({"type":"response.output_text.delta","delta":""});
    assert!(!interpret(&e).content);
    let e = json!({"type":"response.function_call_arguments.delta","delta":"{}"});
    assert_eq!(interpret(&e).chars, 2);
    // Done events repeat the full text: not counted again.
    let e = json!({"type":"response.output_text.done","text":"Hi!"});
    assert_eq!(interpret(&e), EventInfo::default());
    let e = json!({"type":"response.audio.delta","delta":"AAAA"});
    assert_eq!(interpret(&e), EventInfo::default());
    let e = json!({"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}});
    assert_eq!(
        interpret(&e)
            .usage
            .map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((5, 6))
    );
}

#[test]
fn odd_shapes_are_harmless() {
    for e in [
        json!(null),
        json!([1]),
        json!("x"),
        json!({"choices":"x"}),
        json!({"choices":[1,null,{"delta":5}]}),
        json!({"type":7,"delta":"x"}),
    ] {
        assert_eq!(interpret(&e), EventInfo::default());
    }
}
