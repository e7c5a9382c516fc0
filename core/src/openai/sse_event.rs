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
mod tests;
