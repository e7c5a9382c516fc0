//! What one streamed JSON event tells us: generated content and usage.

use serde_json::Value;

use super::usage::Usage;

/// Responses API event types whose string `delta` is model output.
const RESPONSES_TEXT_DELTAS: [&str; 5] = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
];

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EventInfo {
    /// The event carries generated output (text, reasoning or a tool call).
    pub content: bool,
    /// Generated characters in the event.
    pub chars: u64,
    pub usage: Option<Usage>,
}

fn chars(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str)
        .map_or(0, |s| u64::try_from(s.chars().count()).unwrap_or(u64::MAX))
}

/// Interprets a chat/completions chunk or a Responses API event.
pub(crate) fn interpret(event: &Value) -> EventInfo {
    let mut info = EventInfo::default();
    if let Some(choices) = event.get("choices").and_then(Value::as_array) {
        for choice in choices {
            // Completions API: generated text is `choices[].text`.
            info.chars = info.chars.saturating_add(chars(choice.get("text")));
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            // `reasoning_content` (DeepSeek, vLLM) and `reasoning` (newer
            // vLLM, OpenRouter) are both generated text the client waits on.
            for key in ["content", "refusal", "reasoning_content", "reasoning"] {
                info.chars = info.chars.saturating_add(chars(delta.get(key)));
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                // The first tool-call chunk often has only id and name, with
                // empty arguments: it is still the first generated output.
                info.content |= !calls.is_empty();
                for call in calls {
                    let args = call.get("function").and_then(|f| f.get("arguments"));
                    info.chars = info.chars.saturating_add(chars(args));
                }
            }
        }
    }
    if let Some(kind) = event.get("type").and_then(Value::as_str) {
        if RESPONSES_TEXT_DELTAS.contains(&kind) {
            info.chars = info.chars.saturating_add(chars(event.get("delta")));
        }
    }
    info.content |= info.chars > 0;

    // Chat/completions: top-level `usage` (null on all but the last chunk).
    // Responses API: `response.usage` on response.completed / incomplete / failed.
    let usage = event
        .get("usage")
        .filter(|u| !u.is_null())
        .or_else(|| event.get("response")?.get("usage"));
    info.usage = usage.and_then(Usage::from_json);
    info
}

#[cfg(test)]
mod tests {
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
        let e = json!({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}});
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
}
