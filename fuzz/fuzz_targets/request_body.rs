//! The request-body parser for every API, and the `include_usage` rewrite.
//!
//! Input: the first byte picks the API, the rest is the body. Beyond "never panics":
//! - an accepted body's accessors all work;
//! - `with_include_usage` returns either `None` or a JSON object equal to the input with
//!   `stream_options.include_usage = true` (everything else unchanged);
//! - for a body `parse_request` accepted, `with_include_usage_parsed` gives the same bytes
//!   as `with_include_usage` (as documented).
#![no_main]

use ai_gateway_core::openai::request::{
    parse_request, with_include_usage, with_include_usage_parsed, Api,
};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

const APIS: [Api; 4] = [
    Api::ChatCompletions,
    Api::Completions,
    Api::Embeddings,
    Api::Responses,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let api = APIS[usize::from(selector) % APIS.len()];
    let rewritten = with_include_usage(body);
    match parse_request(api, body) {
        Ok(p) => {
            let _ = p.normalized_prompt_string();
            let _ = p.normalized_pieces();
            let _ = p.prompt_pieces();
            let _ = p.max_completion_tokens();
            let _ = p.output_token_limit();
            let _ = format!("{p:?}");
            assert_eq!(
                with_include_usage_parsed(body, &p),
                rewritten,
                "with_include_usage_parsed differs from with_include_usage"
            );
        }
        Err(e) => {
            let _ = e.code();
            let _ = e.message();
        }
    }
    let Some(out) = rewritten else { return };
    serde_json::from_slice::<IgnoredAny>(&out).expect("rewrite produced invalid JSON");
    // serde_json's Value has a recursion limit and no numbers beyond f64, while the
    // rewrite accepts any valid JSON (1e400, deep nesting): compare only when both parse.
    let (Ok(new), Ok(Value::Object(mut old))) = (
        serde_json::from_slice::<Value>(&out),
        serde_json::from_slice::<Value>(body),
    ) else {
        return;
    };
    let mut options = match old.remove("stream_options") {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => serde_json::Map::new(),
        Some(other) => panic!("rewrite accepted stream_options = {other}"),
    };
    options.insert("include_usage".to_string(), Value::Bool(true));
    let Value::Object(mut new) = new else {
        panic!("rewrite is not an object");
    };
    let new_options = new.remove("stream_options");
    // Outside stream_options the bytes are kept, so the values are identical.
    assert_eq!(old, new, "rewrite changed more than stream_options");
    // Inside, members are re-serialized: serde_json's default float parsing is not
    // round-trip exact, so numbers may move by an ulp (only there).
    let expected = Value::Object(options);
    assert!(
        same(&expected, new_options.as_ref().unwrap_or(&Value::Null)),
        "stream_options: expected {expected}, got {new_options:?}"
    );
});

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || ((x - y) / x.abs().max(y.abs())).abs() < 1e-12,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
