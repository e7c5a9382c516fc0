use super::*;
use crate::openai::request::{parse_request, Api};
use serde_json::json;

fn rewrite(v: &Value) -> Value {
    let body = serde_json::to_vec(v).unwrap();
    let out = with_include_usage(&body).unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn adds_missing_stream_options() {
    let v = json!({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.5});
    let mut expected = v.clone();
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(rewrite(&v), expected);
}

#[test]
fn keeps_other_stream_options_fields() {
    let v = json!({"model":"m","stream":true,"stream_options":{"include_obfuscation":false,"x":[1,{"y":2}]}});
    let mut expected = v.clone();
    expected["stream_options"]["include_usage"] = json!(true);
    assert_eq!(rewrite(&v), expected);
}

#[test]
fn flips_false_to_true() {
    let v = json!({"model":"m","stream":true,"stream_options":{"include_usage":false},"n":2});
    let mut expected = v.clone();
    expected["stream_options"]["include_usage"] = json!(true);
    assert_eq!(rewrite(&v), expected);
    // Already true: unchanged semantically.
    let v = json!({"model":"m","stream_options":{"include_usage":true}});
    assert_eq!(rewrite(&v), v);
}

#[test]
fn null_stream_options_becomes_object() {
    let out = with_include_usage(br#"{"model":"m","stream_options":null,"stream":true}"#).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"model":"m","stream":true,"stream_options":{"include_usage":true}})
    );
}

#[test]
fn result_reparses_with_include_usage() {
    let body = br#"{"model":"gpt-4o","stream":true,"max_tokens":5,"tools":[{"type":"function"}],"messages":[{"role":"user","content":"Hello   world"}]}"#;
    let out = with_include_usage(body).unwrap();
    let p = parse_request(Api::ChatCompletions, &out).unwrap();
    assert!(p.include_usage);
    assert!(p.stream);
    assert!(p.has_tools);
    assert_eq!(p.model, "gpt-4o");
    assert_eq!(p.max_tokens, Some(5));
    assert_eq!(p.normalized_prompt_string(), "Hello world");
    let before = parse_request(Api::ChatCompletions, body).unwrap();
    assert!(!before.include_usage);
    assert_eq!(p.prompt_chars, before.prompt_chars);
}

#[test]
fn insertion_preserves_bytes_exactly() {
    // Numbers serde_json would round, key order, whitespace: all untouched.
    let body = b"  {\n \"z\": 123456789012345678901234567890, \"a\" : 1.000 }\n";
    let out = with_include_usage(body).unwrap();
    assert_eq!(
        out,
        b"  {\"stream_options\":{\"include_usage\":true},\n \"z\": 123456789012345678901234567890, \"a\" : 1.000 }\n"
    );
    // Skipped members are validated without being converted, so even a
    // number no f64 can hold passes through untouched.
    let body = br#"{"model":"m", "stream_options" : {"include_usage":false} , "z":1e400}"#;
    let out = with_include_usage(body).unwrap();
    assert_eq!(
        out,
        br#"{"model":"m", "stream_options" : {"include_usage":true}, "z":1e400}"#
    );
    let body = br#"{"model":"m", "stream_options" : {"include_usage":false} , "z":12345678901234567890123}"#;
    let out = with_include_usage(body).unwrap();
    assert_eq!(
        out,
        br#"{"model":"m", "stream_options" : {"include_usage":true}, "z":12345678901234567890123}"#
    );
}

#[test]
fn parsed_variant_matches_the_checked_one() {
    for body in [
        &br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"a \" b"}]}"#[..],
        br#" {"stream_options":null,"model":"m","prompt":"x"} "#,
        br#"{"model":"m","stream_options":{"include_usage":false,"k":[1,"}"]},"prompt":["a"]}"#,
        br#"{"model":"m","stream_options":{},"stream_options":{},"prompt":"x"}"#,
    ] {
        let Ok(p) = parse_request(Api::Completions, body) else {
            continue; // duplicates are refused by the parser already
        };
        assert_eq!(
            with_include_usage_parsed(body, &p),
            with_include_usage(body)
        );
        assert!(with_include_usage(body).is_some());
    }
}

#[test]
fn empty_object() {
    assert_eq!(
        with_include_usage(b"{}").unwrap(),
        br#"{"stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        with_include_usage(b" { } ").unwrap(),
        br#" {"stream_options":{"include_usage":true} } "#
    );
}

#[test]
fn escaped_key_is_recognized() {
    let body = br#"{"stream\u005foptions":{"include_usage":false},"model":"m"}"#;
    let out = with_include_usage(body).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"stream_options":{"include_usage":true},"model":"m"})
    );
}

#[test]
fn nested_stream_options_is_not_touched() {
    let v = json!({"metadata":{"stream_options":{"include_usage":false}},"model":"m"});
    let mut expected = v.clone();
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(rewrite(&v), expected);
}

#[test]
fn rejects_unhandleable_bodies() {
    assert!(with_include_usage(b"").is_none());
    assert!(with_include_usage(b"   ").is_none());
    assert!(with_include_usage(b"{").is_none());
    assert!(with_include_usage(b"{\"a\":1}x").is_none());
    assert!(with_include_usage(b"[1,2]").is_none());
    assert!(with_include_usage(b"\"s\"").is_none());
    assert!(with_include_usage(b"{\"a\":\"\xff\"}").is_none());
    assert!(with_include_usage(br#"{"stream_options":true}"#).is_none());
    assert!(with_include_usage(br#"{"stream_options":[]}"#).is_none());
    assert!(with_include_usage(br#"{"stream_options":{},"stream_options":{}}"#).is_none());
}

#[test]
fn deep_nesting_does_not_crash() {
    let deep = format!(
        r#"{{"model":"m","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let out = with_include_usage(deep.as_bytes()).unwrap();
    assert!(out.starts_with(br#"{"stream_options":{"include_usage":true},"model""#));
    let deep_options = format!(
        r#"{{"stream_options":{{"a":{}{}}}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    assert!(with_include_usage(deep_options.as_bytes()).is_none());
}
