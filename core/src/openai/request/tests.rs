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
    // Plus what is not prompt text: the names `"sys"` and `"bob"` (5 characters of JSON
    // each: 2 tokens), a low-detail image (85), 3 bytes of audio (1), the refusal (1)
    // and the tool calls' 71 characters of JSON (18).
    assert_eq!(
        p.estimated_prompt_tokens,
        (6 + 2 + 4 + 1) + (2 + 2) + 85 + 1 + 1 + 18
    );
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
    // Plus an image of unknown detail (1445), the file by id (not visible: 0), the
    // function call's name and arguments (1 + 1), its output (1) and the tools' 32
    // characters of JSON (8); the reasoning summary is not read.
    assert_eq!(
        p.estimated_prompt_tokens,
        (3 + 6 + 2 + 2) + 1445 + 1 + 1 + 1 + 8
    );

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

// ---------------------------------------------------------------------------------------
// Every billable input counts toward the estimate (rules in `estimate.rs`)

/// The estimate of a chat body with these `messages` and top-level `extra` fields.
fn chat_estimate(messages: serde_json::Value, extra: serde_json::Value) -> u64 {
    let mut body = serde_json::json!({"model": "m", "messages": messages});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    ok(CHAT, &body.to_string()).estimated_prompt_tokens
}

/// Characters of `v`'s minified JSON.
fn json_chars(v: &serde_json::Value) -> u64 {
    v.to_string().chars().count() as u64
}

const HELLO: &str = r#"[{"role":"user","content":"Hello"}]"#;

fn hello() -> serde_json::Value {
    serde_json::from_str(HELLO).unwrap()
}

#[test]
fn definitions_count_as_their_json_text() {
    let base = chat_estimate(hello(), serde_json::json!({}));
    assert_eq!(base, 2);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 16, "nullable": null},
            "strict": {"type": "boolean", "default": false, "x": true, "offset": -12}
        },
        "required": ["city"],
        "additionalProperties": false
    });
    let tools = serde_json::json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather", "parameters": schema}}]);
    let functions = serde_json::json!([{"name": "get_weather", "parameters": schema}]);
    let choice = serde_json::json!({"type": "function", "function": {"name": "get_weather"}});
    let format = serde_json::json!({"type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": true}});
    for (field, value) in [
        ("tools", tools),
        ("functions", functions),
        ("tool_choice", choice),
        ("response_format", format),
    ] {
        // Exactly the minified length (no escapes, no fractions), four characters a token.
        let expect = base + json_chars(&value).div_ceil(4);
        let got = chat_estimate(hello(), serde_json::json!({ field: value }));
        assert_eq!(got, expect, "{field}");
    }
    // `"auto"` is 6 characters of JSON: 2 tokens.
    assert_eq!(
        chat_estimate(hello(), serde_json::json!({"tool_choice": "auto"})),
        base + 2
    );
    // Pretty-printing does not change the count; escapes and fractions are approximate.
    let pretty = format!(
        r#"{{"model":"m","messages":{HELLO},"tools":
        [ {{ "type" : "function" }} ]}}"#
    );
    assert_eq!(
        ok(CHAT, &pretty).estimated_prompt_tokens,
        base + json_chars(&serde_json::json!([{"type": "function"}])).div_ceil(4)
    );
    // Null is absent.
    assert_eq!(
        chat_estimate(hello(), serde_json::json!({"tools": null})),
        base
    );
    // A big definition is not `ceil(1/4)`: 40,000 characters of description.
    let big = serde_json::json!([{"type": "function", "function": {"name": "f",
        "description": "d".repeat(40_000)}}]);
    assert!(chat_estimate(hello(), serde_json::json!({"tools": big})) > 10_000);
}

#[test]
fn responses_definitions_count_too() {
    let api = Api::Responses;
    let base = ok(api, r#"{"model":"m","input":"Hello"}"#).estimated_prompt_tokens;
    let tools = r#"[{"type":"function","name":"get_weather","parameters":{"type":"object"}}]"#;
    let text = r#"{"format":{"type":"json_schema","name":"w","schema":{"type":"object"}}}"#;
    let body = format!(r#"{{"model":"m","input":"Hello","tools":{tools},"text":{text}}}"#);
    let p = ok(api, &body);
    assert_eq!(
        p.estimated_prompt_tokens,
        base + (tools.len() as u64).div_ceil(4) + (text.len() as u64).div_ceil(4)
    );
    // Embeddings and completions have no definitions the model reads.
    let body = format!(r#"{{"model":"m","input":"Hello","tools":{tools}}}"#);
    let e = ok(Api::Embeddings, &body);
    assert_eq!(e.estimated_prompt_tokens, 2);
}

#[test]
fn names_tool_calls_and_results_count() {
    let base = chat_estimate(hello(), serde_json::json!({}));
    let args = serde_json::json!({"location": "Paris", "notes": "x".repeat(400)}).to_string();
    let calls = serde_json::json!([{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": args}}]);
    let mut msgs = hello();
    msgs.as_array_mut().unwrap().extend([
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": calls}),
        serde_json::json!({"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"}),
    ]);
    // The arguments string counts decoded (its escaped quotes are not doubled).
    let calls_chars = json_chars(&calls) - (json_chars(&serde_json::json!(args)) - 2)
        + args.chars().count() as u64;
    assert_eq!(
        chat_estimate(msgs, serde_json::json!({})),
        base + calls_chars.div_ceil(4) + 3 // "22 degrees"
    );
    // Legacy `function_call` and a function result message.
    let call = serde_json::json!({"name": "f", "arguments": "{\"a\":1}"});
    let msgs = serde_json::json!([
        {"role": "assistant", "content": null, "function_call": call},
        {"role": "function", "name": "f", "content": "done"}
    ]);
    // `{"name":"f","arguments":"{"a":1}"}`: 34 characters (9 tokens); `"f"` 3 (1);
    // "done" 1.
    assert_eq!(chat_estimate(msgs, serde_json::json!({})), 9 + 1 + 1);
    // A message name and a refusal.
    let msgs = serde_json::json!([
        {"role": "user", "name": "a-rather-long-user-name", "content": "Hello"},
        {"role": "assistant", "refusal": "I cannot help with that.", "content": null}
    ]);
    assert_eq!(chat_estimate(msgs, serde_json::json!({})), 2 + 7 + 7);
}

#[test]
fn extra_inputs_leave_the_fingerprinted_prompt_alone() {
    let plain = ok(
        CHAT,
        r#"{"model":"m","messages":[{"role":"user","content":"Hi  there"}]}"#,
    );
    let rich = ok(
        CHAT,
        r#"{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],
            "response_format":{"type":"json_object"},
            "messages":[{"role":"user","name":"bob","content":[
                {"type":"text","text":"Hi  there"},
                {"type":"image_url","image_url":{"url":"https://x/y.png"}}]},
              {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#,
    );
    assert_eq!(
        rich.normalized_prompt_string(),
        plain.normalized_prompt_string()
    );
    assert_eq!(rich.prompt_pieces(), plain.prompt_pieces());
    assert_eq!(rich.prompt_chars, plain.prompt_chars);
    assert!(rich.estimated_prompt_tokens > plain.estimated_prompt_tokens + 1445);
}

#[test]
fn images_cost_by_detail() {
    let image = |part: serde_json::Value| {
        let msgs = serde_json::json!([{"role": "user", "content": [part]}]);
        chat_estimate(msgs, serde_json::json!({}))
    };
    let url = "data:image/png;base64,".to_string() + &"A".repeat(100_000);
    assert_eq!(
        image(serde_json::json!({"type": "image_url", "image_url": {"url": url, "detail": "low"}})),
        85
    );
    for detail in [
        serde_json::json!("high"),
        serde_json::json!("auto"),
        serde_json::Value::Null,
    ] {
        let part = serde_json::json!({"type": "image_url",
            "image_url": {"detail": detail, "url": "https://example.com/a.png"}});
        assert_eq!(image(part), 1445, "{detail}");
    }
    // No detail at all, and `type` after the image.
    assert_eq!(
        image(serde_json::json!({"image_url": {"url": "https://x/a.png"}, "type": "image_url"})),
        1445
    );
    // Responses: `input_image` with a URL string and a part-level detail.
    let api = Api::Responses;
    let body = r#"{"model":"m","input":[{"role":"user","content":[
        {"type":"input_image","image_url":"https://x/a.png","detail":"low"},
        {"type":"input_image","file_id":"file-1"},
        {"type":"input_image","detail":"high","image_url":"https://x/b.png"}]}]}"#;
    assert_eq!(ok(api, body).estimated_prompt_tokens, 85 + 1445 + 1445);
    // An image without the image type (or a part without type) costs nothing of the kind.
    assert_eq!(
        image(serde_json::json!({"type": "text", "text": "abcd", "image_url": {"detail": "low"}})),
        1
    );
}

#[test]
fn audio_costs_by_duration() {
    use base64::Engine;
    // One second of 24 kHz 16-bit mono WAV (the 44-byte header and 48,000 bytes).
    let mut wav = b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\xc0\x5d\x00\x00\x80\xbb\x00\x00\x02\x00\x10\x00data".to_vec();
    wav.extend_from_slice(&48_000u32.to_le_bytes());
    wav.resize(44 + 48_000, 0);
    let data = base64::engine::general_purpose::STANDARD.encode(&wav);
    let part =
        serde_json::json!({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}});
    let msgs = serde_json::json!([{"role": "user", "content": [part]}]);
    assert_eq!(chat_estimate(msgs, serde_json::json!({})), 33);
    // 40,000 bytes of MP3: ten seconds at 32 kbit/s at most.
    let mp3 = base64::engine::general_purpose::STANDARD.encode(vec![0xffu8; 40_000]);
    let part =
        serde_json::json!({"input_audio": {"format": "mp3", "data": mp3}, "type": "input_audio"});
    let msgs = serde_json::json!([{"role": "user", "content": [part]}]);
    assert_eq!(chat_estimate(msgs, serde_json::json!({})), 320);
}

#[test]
fn inline_files_cost_by_size() {
    use base64::Engine;
    let pdf = "data:application/pdf;base64,".to_string()
        + &base64::engine::general_purpose::STANDARD.encode(vec![b'%'; 8_000]);
    let msgs = serde_json::json!([{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": pdf}},
        {"type": "file", "file": {"file_id": "file-abc"}}
    ]}]);
    assert_eq!(chat_estimate(msgs, serde_json::json!({})), 2_000);
    let body = serde_json::json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "a.pdf", "file_data": pdf},
        {"type": "input_file", "file_url": "https://x/a.pdf"}
    ]}]});
    assert_eq!(
        ok(Api::Responses, &body.to_string()).estimated_prompt_tokens,
        2_000
    );
}

#[test]
fn responses_tool_outputs_count() {
    let body = serde_json::json!({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "c", "output": "x".repeat(400)},
        {"type": "function_call_output", "call_id": "d", "output": [
            {"type": "input_text", "text": "abcdefgh"},
            {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"}]},
        {"type": "computer_call_output", "call_id": "e",
         "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"}},
        {"type": "custom_tool_call", "call_id": "f", "name": "sql", "input": "SELECT 1"}
    ]});
    let body = body.to_string();
    let p = ok(Api::Responses, &body);
    // 100 + (2 + 85) + 1445 + (`"sql"` 2 + `"SELECT 1"` 3); none of it is fingerprinted.
    assert_eq!(p.estimated_prompt_tokens, 100 + 2 + 85 + 1445 + 2 + 3);
    assert_eq!(p.prompt_pieces(), 0);
}

#[test]
fn completions_count_every_prompt_and_the_suffix() {
    let api = Api::Completions;
    let p = ok(api, r#"{"model":"m","prompt":"abcd"}"#);
    assert_eq!((p.prompts, p.estimated_prompt_tokens), (1, 1));
    let p = ok(
        api,
        r#"{"model":"m","prompt":["abcd","efgh","ijkl","mnopq"]}"#,
    );
    assert_eq!((p.prompts, p.estimated_prompt_tokens), (4, 1 + 1 + 1 + 2));
    // One tokenized prompt; a list of tokenized prompts; token arrays count exactly.
    let p = ok(api, r#"{"model":"m","prompt":[1,2,3,4,5,6,7]}"#);
    assert_eq!((p.prompts, p.estimated_prompt_tokens), (1, 7));
    let p = ok(api, r#"{"model":"m","prompt":[[1,2,3],[4],[5,6,7,8,9]]}"#);
    assert_eq!((p.prompts, p.estimated_prompt_tokens), (3, 9));
    let p = ok(api, r#"{"model":"m","prompt":["abcd",[1,2]]}"#);
    assert_eq!((p.prompts, p.estimated_prompt_tokens), (2, 1 + 2));
    // Absent or empty: the model still completes one (empty) prompt.
    for body in [
        r#"{"model":"m"}"#,
        r#"{"model":"m","prompt":[]}"#,
        r#"{"model":"m","prompt":null}"#,
    ] {
        assert_eq!(ok(api, body).prompts, 1, "{body}");
    }
    // `suffix` is input too.
    let p = ok(api, r#"{"model":"m","prompt":"abcd","suffix":"efghijkl"}"#);
    assert_eq!(p.estimated_prompt_tokens, 1 + 2);
    assert_eq!(p.normalized_prompt_string(), "abcd");
    let p = ok(api, r#"{"model":"m","prompt":"abcd","suffix":null}"#);
    assert_eq!(p.estimated_prompt_tokens, 1);
    // Other APIs: one prompt, and `suffix` / `best_of` are not theirs.
    let p = ok(CHAT, r#"{"model":"m","suffix":"efghijkl","best_of":"x"}"#);
    assert_eq!(
        (p.prompts, p.best_of, p.estimated_prompt_tokens),
        (1, None, 1)
    );
    let p = ok(Api::Embeddings, r#"{"model":"m","input":["a","b","c"]}"#);
    assert_eq!((p.prompts, p.generated_choices()), (1, 1));
}

#[test]
fn generated_choices_multiply_prompts_by_choices() {
    let api = Api::Completions;
    let choices = |body: &str| ok(api, body).generated_choices();
    assert_eq!(choices(r#"{"model":"m","prompt":"a"}"#), 1);
    assert_eq!(choices(r#"{"model":"m","prompt":"a","n":3}"#), 3);
    assert_eq!(choices(r#"{"model":"m","prompt":"a","best_of":5}"#), 5);
    assert_eq!(
        choices(r#"{"model":"m","prompt":"a","n":2,"best_of":3}"#),
        3
    );
    assert_eq!(
        choices(r#"{"model":"m","prompt":"a","n":3,"best_of":3}"#),
        3
    );
    assert_eq!(
        choices(r#"{"model":"m","prompt":["a","b","c","d"],"n":2,"best_of":3}"#),
        12
    );
    assert_eq!(choices(r#"{"model":"m","prompt":[[1],[2]],"n":4}"#), 8);
    // `n: 0` still generates one.
    assert_eq!(choices(r#"{"model":"m","prompt":"a","n":0}"#), 1);
    assert_eq!(
        choices(r#"{"model":"m","prompt":["a","b"],"n":18446744073709551615}"#),
        u64::MAX
    );
    assert_eq!(ok(CHAT, r#"{"model":"m","n":4}"#).generated_choices(), 4);
    assert_eq!(ok(CHAT, r#"{"model":"m"}"#).generated_choices(), 1);
    assert_eq!(
        ok(Api::Responses, r#"{"model":"m","input":"x"}"#).generated_choices(),
        1
    );
}

#[test]
fn best_of_is_validated_as_openai_does() {
    let api = Api::Completions;
    let e = err(api, br#"{"model":"m","prompt":"a","n":3,"best_of":2}"#);
    assert_eq!(
        (e.kind, e.field, e.code()),
        (
            BodyErrorKind::InvalidValue,
            Some("best_of"),
            "invalid_value"
        )
    );
    assert_eq!(
        e.message(),
        "`best_of` must be greater than or equal to `n`"
    );
    // Against the default n of 1.
    assert_eq!(
        err(api, br#"{"model":"m","best_of":0}"#).code(),
        "invalid_value"
    );
    let e = err(
        api,
        br#"{"model":"m","prompt":"a","best_of":2,"stream":true}"#,
    );
    assert_eq!((e.field, e.code()), (Some("best_of"), "invalid_value"));
    assert_eq!(e.message(), "`best_of` must be 1 when `stream` is true");
    // best_of 1 streams; null is absent.
    assert_eq!(
        ok(api, r#"{"model":"m","best_of":1,"stream":true}"#).best_of,
        Some(1)
    );
    assert_eq!(
        ok(api, r#"{"model":"m","best_of":null,"n":4}"#).best_of,
        None
    );
    wrong(api, r#"{"model":"m","best_of":1.5}"#, "best_of");
    wrong(api, r#"{"model":"m","best_of":"3"}"#, "best_of");
    wrong(api, r#"{"model":"m","best_of":-1}"#, "best_of");
    wrong(api, r#"{"model":"m","suffix":1}"#, "suffix");
    assert_eq!(
        err(api, br#"{"model":"m","best_of":2,"best_of":3}"#).code(),
        "duplicate_field"
    );
    // Token arrays hold non-negative integers only.
    wrong(api, r#"{"model":"m","prompt":[1.5]}"#, "prompt[]");
    wrong(api, r#"{"model":"m","prompt":[[1,2.0]]}"#, "prompt[][]");
    wrong(api, r#"{"model":"m","prompt":[[1,-2]]}"#, "prompt[][]");
    wrong(api, r#"{"model":"m","prompt":[[1,null]]}"#, "prompt[][]");
}

#[test]
fn media_fields_are_type_checked() {
    let part =
        |p: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":[{p}]}}]}}"#);
    wrong(
        CHAT,
        &part(r#"{"type":"image_url","image_url":5}"#),
        "messages[].content[].image_url",
    );
    wrong(
        CHAT,
        &part(r#"{"type":"image_url","image_url":{"url":"u","detail":1}}"#),
        "messages[].content[].image_url.detail",
    );
    wrong(
        CHAT,
        &part(r#"{"type":"input_audio","input_audio":"AAAA"}"#),
        "messages[].content[].input_audio",
    );
    wrong(
        CHAT,
        &part(r#"{"type":"input_audio","input_audio":{"data":[1]}}"#),
        "messages[].content[].input_audio.data",
    );
    wrong(
        CHAT,
        &part(r#"{"type":"file","file":{"file_data":7}}"#),
        "messages[].content[].file.file_data",
    );
    wrong(
        CHAT,
        &part(r#"{"type":"refusal","refusal":{}}"#),
        "messages[].content[].refusal",
    );
    wrong(
        Api::Responses,
        r#"{"model":"m","input":[{"content":[{"type":"input_image","detail":false}]}]}"#,
        "input[].content[].detail",
    );
    wrong(
        Api::Responses,
        r#"{"model":"m","input":[{"type":"function_call_output","output":[{"type":"input_text","text":3}]}]}"#,
        "input[].output[].text",
    );
    // Unread shapes stay unchecked: other keys of an image, any `name` / `tool_calls`.
    assert!(parse_request(
        CHAT,
        part(r#"{"type":"image_url","image_url":{"url":7,"x":[]}}"#).as_bytes()
    )
    .is_ok());
    assert!(parse_request(
        CHAT,
        br#"{"model":"m","messages":[{"role":"user","name":7,"tool_calls":{"a":[1.5,true]}}]}"#
    )
    .is_ok());
}

#[test]
fn new_fields_keep_the_nesting_limit_exact() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let cases = [
        (CHAT, r#"{"model":"m","tools":"#, "}", 1),
        (CHAT, r#"{"model":"m","response_format":{"x":"#, "}}", 2),
        (CHAT, r#"{"model":"m","messages":[{"tool_calls":"#, "}]}", 3),
        (
            CHAT,
            r#"{"model":"m","messages":[{"content":[{"type":"image_url","image_url":{"x":"#,
            "}}]}]}",
            6,
        ),
        (
            CHAT,
            r#"{"model":"m","messages":[{"content":[{"type":"input_audio","input_audio":{"x":"#,
            "}}]}]}",
            6,
        ),
        (
            Api::Responses,
            r#"{"model":"m","input":[{"output":{"type":"x","x":"#,
            "}}]}",
            4,
        ),
        (
            Api::Responses,
            r#"{"model":"m","input":[{"output":[{"type":"x","x":"#,
            "}]}]}",
            5,
        ),
    ];
    for (api, head, tail, enclosing) in cases {
        let fits = format!("{head}{}{tail}", nest(100 - enclosing));
        assert!(parse_request(api, fits.as_bytes()).is_ok(), "{head}");
        let too_deep = format!("{head}{}{tail}", nest(101 - enclosing));
        assert_eq!(
            err(api, too_deep.as_bytes()).kind,
            BodyErrorKind::TooDeep,
            "{head}"
        );
    }
}
