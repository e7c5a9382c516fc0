//! Deterministic token accounting, the error-rate rule and fake embeddings.
//!
//! Integration tests recompute these numbers on their side, so every rule here
//! is documented in README.md and must stay exactly as written.

use serde_json::Value;

/// Upper bound for the completion length of one choice.
pub const MAX_COMPLETION_TOKENS: u64 = 4096;

/// Number of floats in every fake embedding vector.
pub const EMBEDDING_DIMS: usize = 8;

/// Whitespace-separated words of one string (Unicode whitespace, like Python's `str.split()`).
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Words of a `prompt` / `input` value: a string, an integer (a token id, counted as one),
/// or an array of those (arrays may nest, as token-id batches do). Anything else counts 0.
pub fn prompt_value_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => words(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => 1,
        Value::Array(items) => items.iter().map(prompt_value_tokens).sum(),
        _ => 0,
    }
}

/// Words of chat `messages[].content`: a string, or the `text` of each part when an array.
pub fn chat_prompt_tokens(body: &Value) -> u64 {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return 1;
    };
    let n: u64 = messages
        .iter()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => words(s),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(words)
                .sum(),
            _ => 0,
        })
        .sum();
    n.max(1)
}

/// Words of a legacy completions `prompt` or an embeddings `input`, minimum 1.
pub fn field_prompt_tokens(body: &Value, field: &str) -> u64 {
    body.get(field).map(prompt_value_tokens).unwrap_or(0).max(1)
}

/// How many tokens one choice generates, and whether that is a "length" stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionPlan {
    /// Tokens generated for one choice (what is streamed / returned as content).
    pub per_choice: u64,
    /// `n` from the request (>= 1); usage.completion_tokens = per_choice * n.
    pub n: u64,
    /// "length" when the request set a token limit (or the cap applied), else "stop".
    pub finish_reason: &'static str,
}

impl CompletionPlan {
    pub fn completion_tokens(&self) -> u64 {
        self.per_choice.saturating_mul(self.n)
    }
}

/// A JSON value usable as a count: a non-negative integer. `null`, floats,
/// negatives and strings count as "absent".
fn count_field(body: &Value, field: &str) -> Option<u64> {
    body.get(field).and_then(Value::as_u64)
}

/// `max_completion_tokens`, else `max_tokens`, else the server default; capped at 4096.
pub fn completion_plan(body: &Value, default_tokens: u64) -> CompletionPlan {
    let requested =
        count_field(body, "max_completion_tokens").or_else(|| count_field(body, "max_tokens"));
    let wanted = requested.unwrap_or(default_tokens);
    let per_choice = wanted.min(MAX_COMPLETION_TOKENS);
    let finish_reason = if requested.is_some() || wanted > MAX_COMPLETION_TOKENS {
        "length"
    } else {
        "stop"
    };
    let n = count_field(body, "n").unwrap_or(1).max(1);
    CompletionPlan {
        per_choice,
        n,
        finish_reason,
    }
}

/// `stream_options.include_usage == true`.
pub fn include_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Error-rate rule: request `i` (1-based) fails iff floor(i*p) > floor((i-1)*p).
/// This spreads failures evenly (p = 0.25 fails requests 4, 8, 12, ...) with no randomness.
pub fn request_fails(i: u64, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 || i == 0 {
        return false;
    }
    let p = p.min(1.0);
    (i as f64 * p).floor() > ((i - 1) as f64 * p).floor()
}

/// Non-streaming completion text: `tok0 tok1 ... tok<n-1>`.
pub fn completion_text(tokens: u64) -> String {
    let mut s = String::with_capacity(tokens as usize * 6);
    for i in 0..tokens {
        if i > 0 {
            s.push(' ');
        }
        s.push_str("tok");
        s.push_str(&i.to_string());
    }
    s
}

/// One embeddings input item per vector: a string or a token-id array is one item;
/// an array of strings / of token-id arrays is one item per element.
pub fn embedding_items(input: Option<&Value>) -> Vec<&Value> {
    match input {
        Some(Value::Array(items))
            if !items.is_empty() && items.iter().all(|v| v.is_string() || v.is_array()) =>
        {
            items.iter().collect()
        }
        Some(v) => vec![v],
        None => Vec::new(),
    }
}

/// A deterministic unit-length vector derived from the item's JSON text
/// (FNV-1a seed, splitmix64 stream), so equal inputs give equal embeddings.
pub fn embedding(item: &Value) -> [f32; EMBEDDING_DIMS] {
    let text = item.to_string();
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        seed ^= u64::from(b);
        seed = seed.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut raw = [0f64; EMBEDDING_DIMS];
    for slot in raw.iter_mut() {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        *slot = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    }
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    let mut out = [0f32; EMBEDDING_DIMS];
    for (o, r) in out.iter_mut().zip(raw) {
        // Round to 6 decimals so the JSON stays short and stable.
        *o = ((r / norm) * 1e6).round() as f32 / 1e6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_counts_string_and_part_text() {
        let body = json!({"messages": [
            {"role": "system", "content": "You are  helpful."},
            {"role": "user", "content": [
                {"type": "text", "text": "hello\tthere\nworld"},
                {"type": "image_url", "image_url": {"url": "http://x"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": []}
        ]});
        assert_eq!(chat_prompt_tokens(&body), 6);
    }

    #[test]
    fn chat_minimum_is_one() {
        assert_eq!(
            chat_prompt_tokens(&json!({"messages": [{"role": "user", "content": "   "}]})),
            1
        );
        assert_eq!(chat_prompt_tokens(&json!({"messages": []})), 1);
        assert_eq!(chat_prompt_tokens(&json!({})), 1);
    }

    #[test]
    fn prompt_and_input_forms() {
        assert_eq!(
            field_prompt_tokens(&json!({"prompt": "a b c"}), "prompt"),
            3
        );
        assert_eq!(
            field_prompt_tokens(&json!({"prompt": ["a b", "c"]}), "prompt"),
            3
        );
        assert_eq!(
            field_prompt_tokens(&json!({"input": [1, 2, 3, 4]}), "input"),
            4
        );
        assert_eq!(
            field_prompt_tokens(&json!({"input": [[1, 2], [3]]}), "input"),
            3
        );
        assert_eq!(field_prompt_tokens(&json!({"input": ""}), "input"), 1);
        assert_eq!(field_prompt_tokens(&json!({}), "input"), 1);
        // Unicode whitespace separates words too (U+3000 ideographic space).
        assert_eq!(words("a\u{3000}b"), 2);
    }

    #[test]
    fn completion_plan_precedence_and_cap() {
        let p = completion_plan(&json!({}), 16);
        assert_eq!((p.per_choice, p.n, p.finish_reason), (16, 1, "stop"));
        let p = completion_plan(&json!({"max_tokens": 5}), 16);
        assert_eq!((p.per_choice, p.finish_reason), (5, "length"));
        let p = completion_plan(&json!({"max_tokens": 5, "max_completion_tokens": 7}), 16);
        assert_eq!(p.per_choice, 7);
        let p = completion_plan(&json!({"max_tokens": null}), 16);
        assert_eq!((p.per_choice, p.finish_reason), (16, "stop"));
        let p = completion_plan(&json!({"max_tokens": 100000, "n": 3}), 16);
        assert_eq!((p.per_choice, p.completion_tokens()), (4096, 3 * 4096));
        let p = completion_plan(&json!({}), 5000);
        assert_eq!((p.per_choice, p.finish_reason), (4096, "length"));
        let p = completion_plan(&json!({"n": 0}), 16);
        assert_eq!(p.n, 1);
    }

    #[test]
    fn include_usage_only_when_true() {
        assert!(include_usage(
            &json!({"stream_options": {"include_usage": true}})
        ));
        assert!(!include_usage(
            &json!({"stream_options": {"include_usage": false}})
        ));
        assert!(!include_usage(
            &json!({"stream_options": {"include_usage": "true"}})
        ));
        assert!(!include_usage(&json!({})));
    }

    #[test]
    fn error_rate_rule() {
        let fails = |p: f64, n: u64| (1..=n).filter(|&i| request_fails(i, p)).collect::<Vec<_>>();
        assert_eq!(fails(0.0, 10), Vec::<u64>::new());
        assert_eq!(fails(0.25, 12), vec![4, 8, 12]);
        assert_eq!(fails(0.5, 6), vec![2, 4, 6]);
        assert_eq!(fails(1.0, 3), vec![1, 2, 3]);
        assert_eq!(fails(2.0, 3), vec![1, 2, 3]);
        assert_eq!(fails(0.1, 100).len(), 10);
        assert!(!request_fails(5, f64::NAN));
    }

    #[test]
    fn completion_text_words() {
        assert_eq!(completion_text(0), "");
        assert_eq!(completion_text(3), "tok0 tok1 tok2");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding(&json!("hello"));
        assert_eq!(a, embedding(&json!("hello")));
        assert_ne!(a, embedding(&json!("hello!")));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(embedding_items(Some(&json!(["a", "b"]))).len(), 2);
        assert_eq!(embedding_items(Some(&json!([1, 2, 3]))).len(), 1);
        assert_eq!(embedding_items(Some(&json!([[1], [2]]))).len(), 2);
        assert_eq!(embedding_items(Some(&json!("x"))).len(), 1);
    }
}
