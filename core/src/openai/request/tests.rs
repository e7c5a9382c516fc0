//! Unit tests for `request.rs` (kept apart to keep that file small).

use super::*;

fn ok(api: Api, body: &str) -> ParsedRequest<'_> {
    match parse_request(api, body.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("{body}: {e:?}"),
    }
}

fn err(api: Api, body: &[u8]) -> BodyError {
    match parse_request(api, body) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

fn wrong(api: Api, body: &str, field: &str) {
    let e = err(api, body.as_bytes());
    assert_eq!(e.kind, BodyErrorKind::WrongType, "{body}");
    assert_eq!(e.field, Some(field), "{body}");
    assert_eq!(e.code(), "invalid_type");
}

const CHAT: Api = Api::ChatCompletions;

#[test]
fn chat_minimal() {
    let p = ok(
        CHAT,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}"#,
    );
    assert_eq!(p.api, CHAT);
    assert_eq!(p.model, "gpt-4o");
    assert!(matches!(p.model, Cow::Borrowed(_)));
    assert!(!p.stream);
    assert!(!p.include_usage);
    assert_eq!(
        (p.max_tokens, p.max_completion_tokens, p.n),
        (None, None, None)
    );
    assert!(!p.has_tools);
    assert_eq!(p.prompt_chars, 5);
    assert_eq!(p.estimated_prompt_tokens, 2);
    assert_eq!(p.prompt_token_ids, 0);
    assert_eq!(p.prompt_pieces(), 1);
    assert_eq!(p.normalized_prompt_string(), "Hello");
    assert_eq!(p.output_token_limit(), None);
}

#[test]
fn chat_all_fields() {
    let body = r#"{
        "model": "gpt-4o-mini", "stream": true,
        "stream_options": {"include_usage": true, "other": [1]},
        "max_tokens": 100, "max_completion_tokens": 50, "n": 2,
        "temperature": 0.2, "unknown": {"deep": [[[{"x": null}]]]},
        "messages": [
            {"role": "system", "content": "  You are\t helpful.  ", "name": "sys"},
            {"role": "user", "name": "bob", "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"text": "in this\n\n image?", "type": "input_text"},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "refusal", "refusal": "no"}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "42"}
        ]
    }"#;
    let p = ok(CHAT, body);
    assert!(p.stream);
    assert!(p.include_usage);
    assert_eq!(p.max_tokens, Some(100));
    assert_eq!(p.max_completion_tokens, Some(50));
    assert_eq!(p.output_token_limit(), Some(50));
    assert_eq!(p.n, Some(2));
    assert!(!p.has_tools);
    assert_eq!(p.prompt_pieces(), 4);
    assert_eq!(
        p.normalized_prompt_string(),
        "You are helpful.\nWhat is\nin this image?\n42"
    );
    // Raw (untrimmed) characters; tokens per piece: 6 + 2 + 4 + 1.
    assert_eq!(p.prompt_chars, 21 + 7 + 16 + 2);
    assert_eq!(p.estimated_prompt_tokens, 6 + 2 + 4 + 1);
}

#[test]
fn chat_max_tokens_alone_is_the_limit() {
    let p = ok(CHAT, r#"{"model":"m","max_tokens":7}"#);
    assert_eq!(p.output_token_limit(), Some(7));
}

#[test]
fn tools_presence() {
    for body in [
        r#"{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#,
        r#"{"model":"m","tool_choice":"auto"}"#,
        r#"{"model":"m","tool_choice":{"type":"function","function":{"name":"f"}}}"#,
        r#"{"model":"m","functions":[{"name":"f"}]}"#,
        r#"{"model":"m","tools":[]}"#,
        r#"{"model":"m","tools":null,"tool_choice":"none"}"#,
    ] {
        assert!(ok(CHAT, body).has_tools, "{body}");
    }
    for body in [
        r#"{"model":"m"}"#,
        r#"{"model":"m","tools":null}"#,
        r#"{"model":"m","tools":null,"tool_choice":null,"functions":null}"#,
    ] {
        assert!(!ok(CHAT, body).has_tools, "{body}");
    }
    assert!(
        ok(
            Api::Responses,
            r#"{"model":"m","tools":[{"type":"web_search"}]}"#
        )
        .has_tools
    );
    // Legacy `functions` is a chat-only field.
    assert!(!ok(Api::Responses, r#"{"model":"m","functions":[1]}"#).has_tools);
}

#[test]
fn nulls_are_absent() {
    let p = ok(
        CHAT,
        r#"{"model":"m","stream":null,"stream_options":null,"max_tokens":null,"max_completion_tokens":null,"n":null,"messages":null}"#,
    );
    assert!(!p.stream);
    assert!(!p.include_usage);
    assert_eq!(p.max_tokens, None);
    assert_eq!(p.estimated_prompt_tokens, 1);
    let p = ok(
        CHAT,
        r#"{"model":"m","stream_options":{"include_usage":null}}"#,
    );
    assert!(!p.include_usage);
    let p = ok(
        CHAT,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":null},{"type":null,"text":"x"}]}]}"#,
    );
    assert_eq!(p.prompt_pieces(), 0);
}

#[test]
fn stream_options_include_usage_false() {
    let p = ok(
        CHAT,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
    );
    assert!(p.stream);
    assert!(!p.include_usage);
}

#[test]
fn escaped_strings_are_decoded() {
    let p = ok(
        CHAT,
        r#"{"m\u006fdel":"gpt\u002d4","messages":[{"content":"a\"b\n\u00e9 \ud83c\udf0d"}]}"#,
    );
    assert_eq!(p.model, "gpt-4");
    assert!(matches!(p.model, Cow::Owned(_)));
    assert_eq!(p.normalized_prompt_string(), "a\"b é 🌍");
    assert_eq!(p.prompt_chars, 7);
}

#[test]
fn completions_prompt_shapes() {
    let api = Api::Completions;
    let p = ok(
        api,
        r#"{"model":"m","prompt":"Say this is a test","max_tokens":7,"n":3,"stream":true}"#,
    );
    assert_eq!(p.prompt_chars, 18);
    assert_eq!(p.estimated_prompt_tokens, 5);
    assert_eq!(p.output_token_limit(), Some(7));
    assert_eq!(p.n, Some(3));
    assert!(p.stream);

    let p = ok(api, r#"{"model":"m","prompt":["abcd","efgh i"]}"#);
    assert_eq!(p.prompt_chars, 10);
    assert_eq!(p.estimated_prompt_tokens, 1 + 2);
    assert_eq!(p.normalized_prompt_string(), "abcd\nefgh i");

    let p = ok(api, r#"{"model":"m","prompt":[1212, 318, 257]}"#);
    assert_eq!(p.prompt_token_ids, 3);
    assert_eq!(p.prompt_chars, 0);
    assert_eq!(p.estimated_prompt_tokens, 3);
    assert_eq!(p.normalized_prompt_string(), "");

    let p = ok(api, r#"{"model":"m","prompt":[[1,2],[3],[]]}"#);
    assert_eq!(p.prompt_token_ids, 3);
    assert_eq!(p.estimated_prompt_tokens, 3);

    let p = ok(api, r#"{"model":"m","prompt":["ab",[1,2]]}"#);
    assert_eq!(p.estimated_prompt_tokens, 1 + 2);

    let p = ok(api, r#"{"model":"m","prompt":[]}"#);
    assert_eq!(p.estimated_prompt_tokens, 1);
    let p = ok(api, r#"{"model":"m"}"#);
    assert_eq!(p.estimated_prompt_tokens, 1);

    // `max_completion_tokens` / `messages` are not completions fields.
    let p = ok(
        api,
        r#"{"model":"m","max_completion_tokens":"x","messages":5}"#,
    );
    assert_eq!(p.max_completion_tokens, None);
}

#[test]
fn embeddings_input_shapes() {
    let api = Api::Embeddings;
    let p = ok(
        api,
        r#"{"model":"text-embedding-3-small","input":"The food was delicious","encoding_format":"float"}"#,
    );
    assert_eq!(p.prompt_chars, 22);
    assert_eq!(p.estimated_prompt_tokens, 6);
    assert_eq!(p.output_token_limit(), None);
    let p = ok(api, r#"{"model":"m","input":["a","bb","ccccc"]}"#);
    assert_eq!(p.estimated_prompt_tokens, 1 + 1 + 2);
    let p = ok(api, r#"{"model":"m","input":[9906, 1917]}"#);
    assert_eq!(p.estimated_prompt_tokens, 2);
    let p = ok(api, r#"{"model":"m","input":[[9906, 1917],[1]]}"#);
    assert_eq!(p.prompt_token_ids, 3);
    // Embeddings do not stream; those fields are not read.
    let p = ok(
        api,
        r#"{"model":"m","input":"x","stream":"yes","max_tokens":-1}"#,
    );
    assert!(!p.stream);
    assert_eq!(p.max_tokens, None);
}

#[test]
fn responses_input_shapes() {
    let api = Api::Responses;
    let p = ok(
        api,
        r#"{"model":"gpt-4.1","input":"Tell me a story.","max_output_tokens":256,"stream":true}"#,
    );
    assert_eq!(p.prompt_chars, 16);
    assert_eq!(p.output_token_limit(), Some(256));
    assert!(p.stream);

    let body = r#"{
        "model": "o4-mini",
        "input": [
            {"role": "user", "content": "What is in   this image?"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Describe"},
                {"type": "input_image", "image_url": "https://example.com/x.png"},
                {"type": "input_file", "file_id": "file-1"}
            ]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
            {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "hmm"}]}
        ],
        "instructions": "Be   brief.",
        "tools": [{"type": "function", "name": "f"}]
    }"#;
    let p = ok(api, body);
    assert!(p.has_tools);
    assert_eq!(
        p.normalized_prompt_string(),
        "Be brief.\nWhat is in this image?\nDescribe\nA cat."
    );
    assert_eq!(p.prompt_chars, 11 + 24 + 8 + 6);
    assert_eq!(p.estimated_prompt_tokens, 3 + 6 + 2 + 2);

    let p = ok(api, r#"{"model":"m","instructions":null,"input":null}"#);
    assert_eq!(p.estimated_prompt_tokens, 1);
    // `messages`/`max_tokens`/`n` are not Responses fields.
    let p = ok(api, r#"{"model":"m","messages":1,"max_tokens":"x","n":-1}"#);
    assert_eq!((p.max_tokens, p.n), (None, None));
}

#[test]
fn normalized_prompt_fragments_and_blank_pieces() {
    let p = ok(
        CHAT,
        r#"{"model":"m","messages":[{"content":"  a \t b  "},{"content":"   "},{"content":""},{"content":"c\r\nd"}]}"#,
    );
    let parts: Vec<&str> = p.normalized_prompt().collect();
    assert_eq!(parts, vec!["a", " ", "b", "\n", "c", " ", "d"]);
    assert_eq!(p.prompt_pieces(), 4);
    // Same prompt, different whitespace: same fingerprint input.
    let q = ok(
        CHAT,
        r#"{"model":"other","messages":[{"content":"a b"},{"content":"c d"}]}"#,
    );
    assert_eq!(p.normalized_prompt_string(), q.normalized_prompt_string());
}

#[test]
fn api_from_path() {
    for (path, api) in [
        ("/v1/chat/completions", Some(Api::ChatCompletions)),
        (
            "/openai/v1/chat/completions?api-version=1",
            Some(Api::ChatCompletions),
        ),
        ("/v1/chat/completions/", Some(Api::ChatCompletions)),
        ("/v1/completions", Some(Api::Completions)),
        ("/v1/embeddings#x", Some(Api::Embeddings)),
        ("/v1/responses", Some(Api::Responses)),
        ("/v1/responses/resp_1", None),
        ("/v1/models", None),
        ("/v1/chat/completionsx", None),
        ("", None),
        ("?", None),
    ] {
        assert_eq!(Api::from_path(path), api, "{path}");
    }
    assert_eq!(Api::ChatCompletions.as_str(), "chat_completions");
    assert_eq!(Api::Responses.as_str(), "responses");
}

#[test]
fn estimate_tokens() {
    assert_eq!(estimate_tokens_from_chars(0), 0);
    assert_eq!(estimate_tokens_from_chars(1), 1);
    assert_eq!(estimate_tokens_from_chars(4), 1);
    assert_eq!(estimate_tokens_from_chars(5), 2);
    assert_eq!(estimate_tokens_from_chars(u64::MAX), u64::MAX / 4 + 1);
}

#[test]
fn debug_output_has_no_prompt_text() {
    let p = ok(
        CHAT,
        r#"{"model":"m","messages":[{"content":"SECRET-PROMPT"}]}"#,
    );
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("SECRET"));
    assert!(dbg.contains("prompt_pieces: 1"));
    let e = err(CHAT, br#"{"model":"m","messages":[{"content":12345678}]}"#);
    assert!(!format!("{e:?}{e}").contains("12345678"));
    let e = err(
        CHAT,
        br#"{"model":"m","messages":[{"content":"SECRET" 1}]}"#,
    );
    assert!(!format!("{e:?}{e}").contains("SECRET"));
}

#[test]
fn rejects_empty_body() {
    for body in [&b""[..], b"   ", b"\n\r\t "] {
        let e = err(CHAT, body);
        assert_eq!(e.kind, BodyErrorKind::EmptyBody);
        assert_eq!(e.code(), "empty_body");
        assert_eq!(e.message(), "request body is empty");
    }
}

#[test]
fn rejects_invalid_json() {
    for body in [
        &b"not json"[..],
        b"{",
        b"{\"model\":\"m\"",
        b"{\"model\":\"m\",}",
        b"{\"model\":\"m\"} trailing",
        b"{\"model\":\"m\"}{}",
        b"{'model':'m'}",
        b"{\"model\":\"m\",\"messages\":[{\"content\":\"x\"]}",
        b"\xef\xbb\xbf{\"model\":\"m\"}",
    ] {
        let e = err(CHAT, body);
        assert_eq!(
            e.kind,
            BodyErrorKind::InvalidJson,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(e.code(), "invalid_json");
        assert_eq!(e.message(), "request body is not valid JSON");
    }
}

#[test]
fn rejects_invalid_utf8() {
    for body in [
        &b"{\"model\":\"m\xff\"}"[..],
        b"{\"model\":\"m\",\"x\":\"\xc3\x28\"}",
        b"{\"model\":\"m\",\"messages\":[{\"content\":\"\xed\xa0\x80\"}]}",
    ] {
        assert_eq!(err(CHAT, body).code(), "invalid_json");
    }
    // A lone surrogate escape is not valid either.
    assert_eq!(
        err(CHAT, br#"{"model":"m","messages":[{"content":"\ud800"}]}"#).code(),
        "invalid_json"
    );
}

#[test]
fn rejects_non_objects() {
    for body in [
        "[]",
        "[{\"model\":\"m\"}]",
        "\"model\"",
        "42",
        "null",
        "true",
    ] {
        let e = err(CHAT, body.as_bytes());
        assert_eq!(e.kind, BodyErrorKind::NotAnObject, "{body}");
        assert_eq!(e.code(), "invalid_body");
        assert_eq!(e.message(), "request body must be a JSON object");
    }
}

#[test]
fn rejects_missing_or_empty_model() {
    for body in [
        r#"{}"#,
        r#"{"messages":[]}"#,
        r#"{"model":null}"#,
        r#"{"Model":"m"}"#,
    ] {
        let e = err(CHAT, body.as_bytes());
        assert_eq!(e.kind, BodyErrorKind::MissingField, "{body}");
        assert_eq!(e.field, Some("model"));
        assert_eq!(e.code(), "missing_model");
        assert_eq!(e.message(), "`model` is required");
    }
    for body in [r#"{"model":""}"#, r#"{"model":"  "}"#] {
        let e = err(CHAT, body.as_bytes());
        assert_eq!(e.kind, BodyErrorKind::EmptyValue);
        assert_eq!(e.code(), "invalid_value");
        assert_eq!(e.message(), "`model` must not be empty");
    }
    for api in [Api::Completions, Api::Embeddings, Api::Responses] {
        assert_eq!(err(api, b"{\"input\":\"x\"}").code(), "missing_model");
    }
}

#[test]
fn rejects_wrong_types() {
    wrong(CHAT, r#"{"model":42}"#, "model");
    wrong(CHAT, r#"{"model":["m"]}"#, "model");
    wrong(CHAT, r#"{"model":{"name":"m"}}"#, "model");
    wrong(CHAT, r#"{"model":"m","stream":"true"}"#, "stream");
    wrong(CHAT, r#"{"model":"m","stream":1}"#, "stream");
    wrong(
        CHAT,
        r#"{"model":"m","stream_options":true}"#,
        "stream_options",
    );
    wrong(
        CHAT,
        r#"{"model":"m","stream_options":{"include_usage":"yes"}}"#,
        "stream_options.include_usage",
    );
    wrong(CHAT, r#"{"model":"m","max_tokens":-1}"#, "max_tokens");
    wrong(CHAT, r#"{"model":"m","max_tokens":1.5}"#, "max_tokens");
    wrong(CHAT, r#"{"model":"m","max_tokens":10.0}"#, "max_tokens");
    wrong(CHAT, r#"{"model":"m","max_tokens":"10"}"#, "max_tokens");
    wrong(CHAT, r#"{"model":"m","max_tokens":1e3}"#, "max_tokens");
    wrong(
        CHAT,
        r#"{"model":"m","max_completion_tokens":true}"#,
        "max_completion_tokens",
    );
    wrong(CHAT, r#"{"model":"m","n":-2}"#, "n");
    wrong(CHAT, r#"{"model":"m","messages":"hi"}"#, "messages");
    wrong(
        CHAT,
        r#"{"model":"m","messages":{"content":"hi"}}"#,
        "messages",
    );
    wrong(CHAT, r#"{"model":"m","messages":["hi"]}"#, "messages[]");
    wrong(
        CHAT,
        r#"{"model":"m","messages":[{"content":5}]}"#,
        "messages[].content",
    );
    wrong(
        CHAT,
        r#"{"model":"m","messages":[{"content":{"text":"x"}}]}"#,
        "messages[].content",
    );
    wrong(
        CHAT,
        r#"{"model":"m","messages":[{"content":["x"]}]}"#,
        "messages[].content[]",
    );
    wrong(
        CHAT,
        r#"{"model":"m","messages":[{"content":[{"type":1}]}]}"#,
        "messages[].content[].type",
    );
    wrong(
        CHAT,
        r#"{"model":"m","messages":[{"content":[{"type":"text","text":[]}]}]}"#,
        "messages[].content[].text",
    );
    wrong(Api::Completions, r#"{"model":"m","prompt":5}"#, "prompt");
    wrong(
        Api::Completions,
        r#"{"model":"m","prompt":{"a":1}}"#,
        "prompt",
    );
    wrong(
        Api::Completions,
        r#"{"model":"m","prompt":[true]}"#,
        "prompt[]",
    );
    wrong(
        Api::Completions,
        r#"{"model":"m","prompt":[-1]}"#,
        "prompt[]",
    );
    wrong(
        Api::Completions,
        r#"{"model":"m","prompt":[[1,"a"]]}"#,
        "prompt[][]",
    );
    wrong(
        Api::Completions,
        r#"{"model":"m","prompt":[[1,[2]]]}"#,
        "prompt[][]",
    );
    wrong(Api::Embeddings, r#"{"model":"m","input":1.5}"#, "input");
    wrong(
        Api::Embeddings,
        r#"{"model":"m","input":[null]}"#,
        "input[]",
    );
    wrong(
        Api::Embeddings,
        r#"{"model":"m","input":[[0.5]]}"#,
        "input[][]",
    );
    wrong(Api::Responses, r#"{"model":"m","input":5}"#, "input");
    wrong(Api::Responses, r#"{"model":"m","input":["x"]}"#, "input[]");
    wrong(
        Api::Responses,
        r#"{"model":"m","input":[{"content":7}]}"#,
        "input[].content",
    );
    wrong(
        Api::Responses,
        r#"{"model":"m","input":[{"content":[{"type":"input_text","text":7}]}]}"#,
        "input[].content[].text",
    );
    wrong(
        Api::Responses,
        r#"{"model":"m","instructions":["x"]}"#,
        "instructions",
    );
    wrong(
        Api::Responses,
        r#"{"model":"m","max_output_tokens":-5}"#,
        "max_output_tokens",
    );
}

#[test]
fn wrong_type_messages() {
    let msg = |body: &str| err(CHAT, body.as_bytes()).message();
    assert_eq!(msg(r#"{"model":1}"#), "`model` must be a string");
    assert_eq!(
        msg(r#"{"model":"m","stream":"x"}"#),
        "`stream` must be a boolean"
    );
    assert_eq!(
        msg(r#"{"model":"m","max_tokens":-1}"#),
        "`max_tokens` must be a non-negative integer"
    );
    assert_eq!(
        msg(r#"{"model":"m","messages":1}"#),
        "`messages` must be an array"
    );
    assert_eq!(
        msg(r#"{"model":"m","messages":[{"content":1}]}"#),
        "`messages[].content` must be a string or an array of content parts"
    );
}

#[test]
fn rejects_duplicate_read_fields() {
    let e = err(CHAT, br#"{"model":"a","model":"b"}"#);
    assert_eq!(e.kind, BodyErrorKind::DuplicateField);
    assert_eq!(e.field, Some("model"));
    assert_eq!(e.code(), "duplicate_field");
    assert_eq!(e.message(), "`model` must not appear more than once");
    let e = err(CHAT, br#"{"model":"a","stream":false,"stream":true}"#);
    assert_eq!(e.field, Some("stream"));
    // Escaped duplicates are the same key.
    assert_eq!(
        err(CHAT, br#"{"model":"a","m\u006fdel":"b"}"#).code(),
        "duplicate_field"
    );
    // Unread fields may repeat.
    assert!(parse_request(CHAT, br#"{"model":"a","x":1,"x":2}"#).is_ok());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    for (body, field) in [
        (
            format!(r#"{{"model":"m","x":{}}}"#, deep("[", "]", 200)),
            None,
        ),
        (
            format!(
                r#"{{"model":"m","x":{}1{}}}"#,
                r#"{"a":"#.repeat(200),
                "}".repeat(200)
            ),
            None,
        ),
        (
            format!(r#"{{"model":"m","tools":{}}}"#, deep("[", "]", 200)),
            None,
        ),
        (
            format!(
                r#"{{"model":"m","messages":[{{"content":[{{"type":"image","x":{}}}]}}]}}"#,
                deep("[", "]", 200)
            ),
            None,
        ),
        (
            format!(r#"{{"model":"m","x":{}}}"#, deep("[", "]", 100_000)),
            None,
        ),
        (
            format!(r#"{{"model":"m","messages":{}}}"#, deep("[", "]", 200)),
            Some("messages[]"),
        ),
    ] {
        let e = err(CHAT, body.as_bytes());
        match field {
            None => {
                assert_eq!(e.kind, BodyErrorKind::TooDeep);
                assert_eq!(e.code(), "nesting_too_deep");
                assert_eq!(e.message(), "request body is nested too deeply");
            }
            Some(f) => assert_eq!(e.field, Some(f)),
        }
    }
    // The top-level body itself.
    assert_eq!(
        err(CHAT, deep("[", "]", 100_000).as_bytes()).kind,
        BodyErrorKind::NotAnObject
    );
    let body = format!("{}{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    assert_eq!(err(CHAT, body.as_bytes()).kind, BodyErrorKind::TooDeep);
    // Moderate nesting (a JSON schema in tools) is fine.
    let body = format!(r#"{{"model":"m","tools":{}}}"#, deep("[", "]", 90));
    assert!(ok(CHAT, &body).has_tools);
}

#[test]
fn huge_numbers() {
    wrong(
        CHAT,
        r#"{"model":"m","max_tokens":18446744073709551616}"#,
        "max_tokens",
    );
    // Beyond f64: serde_json rejects the number itself (a syntax error).
    assert_eq!(
        err(CHAT, br#"{"model":"m","max_tokens":1e400}"#).code(),
        "invalid_json"
    );
    assert_eq!(
        err(CHAT, br#"{"model":"m","temperature":-1e400}"#).code(),
        "invalid_json"
    );
    let p = ok(CHAT, r#"{"model":"m","max_tokens":18446744073709551615}"#);
    assert_eq!(p.max_tokens, Some(u64::MAX));
    // Unread numeric fields of any size are skipped.
    assert!(parse_request(
        CHAT,
        br#"{"model":"m","seed":123456789012345678901234567890,"temperature":1e300}"#
    )
    .is_ok());
    let p = ok(
        Api::Completions,
        r#"{"model":"m","prompt":[18446744073709551615]}"#,
    );
    assert_eq!(p.prompt_token_ids, 1);
}

#[test]
fn huge_strings() {
    let text = "word ".repeat(400_000);
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    let p = ok(CHAT, &body);
    assert_eq!(p.prompt_chars, 2_000_000);
    assert_eq!(p.estimated_prompt_tokens, 500_000);
    let normalized = p.normalized_prompt_string();
    assert_eq!(normalized.len(), 2_000_000 - 1);
    let huge_model = "m".repeat(1_000_000);
    let body = format!(r#"{{"model":"{huge_model}"}}"#);
    assert_eq!(ok(CHAT, &body).model.len(), 1_000_000);
}

#[test]
fn many_messages() {
    let msgs = vec![r#"{"role":"user","content":"abcd"}"#; 10_000].join(",");
    let body = format!(r#"{{"model":"m","messages":[{msgs}]}}"#);
    let p = ok(CHAT, &body);
    assert_eq!(p.prompt_pieces(), 10_000);
    assert_eq!(p.estimated_prompt_tokens, 10_000);
}

#[test]
fn worst_case_nesting_fits_a_small_stack() {
    // Wasm stacks are small (1 MiB by default); the deepest accepted
    // nesting must parse within a fraction of that even in debug builds.
    let body = format!(
        r#"{{"model":"m","x":{}1{}}}"#,
        r#"{"a":"#.repeat(99),
        "}".repeat(99)
    );
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let ok = parse_request(CHAT, body.as_bytes()).is_ok();
            let deeper = format!(
                r#"{{"model":"m","x":{}{}}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            );
            let too_deep = parse_request(CHAT, deeper.as_bytes())
                .map(|_| ())
                .map_err(|e| e.kind);
            (ok, too_deep)
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), (true, Err(BodyErrorKind::TooDeep)));
}

#[test]
fn nesting_limit_is_exact_everywhere() {
    // Total depth counts every container, the body object included.
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let cases = [
        (CHAT, r#"{"model":"m","x":"#, "}", 1),
        (CHAT, r#"{"model":"m","stream_options":{"x":"#, "}}", 2),
        (CHAT, r#"{"model":"m","messages":[{"x":"#, "}]}", 3),
        (
            CHAT,
            r#"{"model":"m","messages":[{"content":[{"type":"image_url","x":"#,
            "}]}]}",
            5,
        ),
        (
            Api::Responses,
            r#"{"model":"m","input":[{"content":[{"type":"input_file","x":"#,
            "}]}]}",
            5,
        ),
    ];
    for (api, head, tail, enclosing) in cases {
        let fits = format!("{head}{}{tail}", nest(100 - enclosing));
        assert!(parse_request(api, fits.as_bytes()).is_ok(), "{enclosing}");
        let too_deep = format!("{head}{}{tail}", nest(101 - enclosing));
        assert_eq!(
            err(api, too_deep.as_bytes()).kind,
            BodyErrorKind::TooDeep,
            "{enclosing}"
        );
    }
}

#[test]
fn normalized_pieces_match_the_fragments() {
    let p = ok(
        CHAT,
        r#"{"model":"m","messages":[{"content":"clean text"},{"content":"  a \t b  "},{"content":" "},{"content":"x\u00a0\u00a0y"},{"content":"trail "},{"content":"é  ü"}]}"#,
    );
    let pieces = p.normalized_pieces();
    assert_eq!(pieces, vec!["clean text", "a b", "x y", "trail", "é ü"]);
    assert!(matches!(pieces[0], Cow::Borrowed(_)));
    assert!(
        matches!(pieces[3], Cow::Borrowed(_)),
        "trimming alone borrows"
    );
    assert!(matches!(pieces[1], Cow::Owned(_)));
    assert_eq!(pieces.join("\n"), p.normalized_prompt_string());
    let none = ok(CHAT, r#"{"model":"m","messages":[{"content":"  "}]}"#);
    assert!(none.normalized_pieces().is_empty());
    assert_eq!(none.normalized_prompt_string(), "");
}

#[test]
fn max_completion_tokens_method_is_the_effective_limit() {
    let p = ok(CHAT, r#"{"model":"m","max_tokens":9}"#);
    assert_eq!(p.max_completion_tokens, None);
    assert_eq!(p.max_completion_tokens(), Some(9));
    let p = ok(Api::Responses, r#"{"model":"m","max_output_tokens":3}"#);
    assert_eq!(p.max_completion_tokens(), Some(3));
}

#[test]
fn fed_blocks_are_the_normalized_prompt() {
    let long_word = "x".repeat(3 * NORMALIZED_BLOCK + 7);
    let texts = [
        "  Summarize \t the\n\n report  ".to_string(),
        "\u{a0}non\u{2003}ascii\u{3000}spaces\u{85}and\u{b}vt ".to_string(),
        "   ".to_string(),
        format!("a {long_word} b"),
        "é ü".repeat(700),
    ];
    let messages: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| serde_json::json!({"role": "user", "content": t}))
        .collect();
    let body =
        serde_json::to_vec(&serde_json::json!({"model": "m", "messages": messages})).unwrap();
    let p = parse_request(Api::ChatCompletions, &body).unwrap();
    let mut fed = Vec::new();
    let mut calls = 0;
    p.feed_normalized(&mut |b| {
        calls += 1;
        fed.extend_from_slice(b);
    });
    assert_eq!(
        String::from_utf8(fed).unwrap(),
        p.normalized_prompt_string()
    );
    assert!(calls < 12, "{calls} sink calls");
}

#[test]
fn the_normal_form_check_knows_every_unicode_space() {
    for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
        let s = format!("a{c}b");
        assert_eq!(
            is_normalized(&s),
            !c.is_whitespace() || c == ' ',
            "U+{:04X}",
            u32::from(c)
        );
    }
    assert!(!is_normalized("a  b") && !is_normalized(" a") && !is_normalized("a "));
    assert!(!is_normalized("") && is_normalized("a b"));
}

#[test]
fn the_normal_form_check_agrees_with_the_definition_at_every_offset() {
    let reference =
        |s: &str| !s.is_empty() && s.split_whitespace().collect::<Vec<_>>().join(" ") == s;
    let samples = [
        "abcdefgh ijklmnop",
        "abcdefg  hijklmnop",
        "abcdefgh  ijk",
        "a\tbcdefghijklmnop",
        "é ü ñ — ’quoted’ text",
        "x\u{a0}y",
        "tab\u{b}bed",
        "many words in a row here ok",
        "\u{1f}control but not space",
        "trailing space in word8 ",
    ];
    for base in samples {
        for pad in 0..9 {
            let s = format!("{}{base}", "p".repeat(pad));
            assert_eq!(is_normalized(&s), reference(&s), "{s:?}");
            let s = format!("{}{base}z", "q ".repeat(pad));
            assert_eq!(is_normalized(&s), reference(&s), "{s:?}");
        }
    }
}
