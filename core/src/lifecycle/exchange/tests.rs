//! Unit tests of one request's journey through [`Exchange`], with a configuration parsed
//! from JSON exactly as the host parses it.

use serde_json::{json, Value};

use super::*;
use crate::config::digest::sha256;
use crate::lifecycle::exchange::ResponseHead;

const KEY_A: &str = "sk-tenant-a-unit";
const KEY_B: &str = "sk-tenant-b-unit";
const HOST_A: &str = "tenant-a.ai.example.com";
const HOST_B: &str = "tenant-b.ai.example.com";
const SALT: &str = "unit-test-salt-0123456789";

fn hex(key: &str) -> String {
    sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The demo's shape: tenant-a may use both models on every route; tenant-b only
/// `bge-small` and only embeddings. Every route kind is configured.
fn base_spec() -> Value {
    json!({
        "routes": [
            { "prefix": "/v1/chat/completions", "api": "chat_completions", "traffic_class": "interactive" },
            { "prefix": "/v1/completions", "api": "completions" },
            { "prefix": "/v1/embeddings", "api": "embeddings" },
            { "prefix": "/v1/responses", "api": "responses" },
            { "prefix": "/v1/batch/chat/completions", "api": "chat_completions", "traffic_class": "batch" },
            { "prefix": "/v1/models", "api": "none" }
        ],
        "models": [
            { "name": "llama3-8b", "input_usd_per_million": 0.20, "output_usd_per_million": 0.60 },
            { "name": "bge-small", "input_usd_per_million": 0.02, "output_usd_per_million": 0.0 }
        ],
        "tenants": [
            {
                "name": "tenant-a",
                "hosts": [HOST_A],
                "api_keys": [{ "id": "svc:agent-platform", "sha256": hex(KEY_A) }],
                "models": ["llama3-8b", "bge-small"]
            },
            {
                "name": "tenant-b",
                "hosts": [HOST_B],
                "api_keys": [{ "id": "svc:batch-jobs", "sha256": hex(KEY_B) }],
                "routes": ["/v1/embeddings"],
                "models": ["bge-small"]
            }
        ],
        "limits": { "max_request_body_bytes": 1024 },
        "redaction": { "fingerprint_salt": SALT }
    })
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn config(spec: &Value) -> Config {
    Config::parse(spec.to_string().as_bytes(), &no_env).unwrap()
}

fn cfg() -> Config {
    config(&base_spec())
}

/// `base_spec()` with `f` applied.
fn cfg_with(f: impl FnOnce(&mut Value)) -> Config {
    let mut spec = base_spec();
    f(&mut spec);
    config(&spec)
}

struct Req<'a> {
    key: &'a str,
    host: &'a str,
    path: &'a str,
    method: &'a str,
    content_length: Option<usize>,
    has_body: bool,
}

impl<'a> Req<'a> {
    fn post(path: &'a str) -> Req<'a> {
        Req {
            key: KEY_A,
            host: HOST_A,
            path,
            method: "POST",
            content_length: None,
            has_body: true,
        }
    }
}

fn headers_of(r: &Req) -> Vec<(String, String)> {
    let mut h = vec![
        (":authority".to_string(), r.host.to_string()),
        (":path".to_string(), r.path.to_string()),
        (":method".to_string(), r.method.to_string()),
        ("authorization".to_string(), format!("Bearer {}", r.key)),
    ];
    if let Some(n) = r.content_length {
        h.push(("content-length".to_string(), n.to_string()));
    }
    h
}

fn on_headers(cfg: &Config, ex: &mut Exchange, r: &Req) -> HeadersAction {
    let headers = headers_of(r);
    let head = RequestHead {
        headers: &headers,
        authority: r.host,
        path: r.path,
        method: r.method,
        request_id: None,
        peer_uri_san: None,
        has_body: r.has_body,
    };
    // The id the lifecycle chooses before the headers are looked at.
    ex.request_id = Some("req-unit-1".to_string());
    ex.on_request_headers(cfg, &head)
}

/// Headers then the whole body (headers held), as the host does with the demo bootstrap.
fn send(cfg: &Config, r: &Req, body: &[u8]) -> (Exchange, BodyAction) {
    let mut ex = Exchange::new(1_000);
    let action = on_headers(cfg, &mut ex, r);
    assert!(
        matches!(action, HeadersAction::ReadBody { hold: true }),
        "{action:?}"
    );
    let out = ex.on_request_body(cfg, body, true, None);
    if matches!(out, BodyAction::Continue(_)) {
        // Admitted: the lifecycle releases it upstream.
        ex.on_forwarded(1_000);
    }
    (ex, out)
}

fn send_json(cfg: &Config, path: &str, body: &Value) -> (Exchange, BodyAction) {
    send(cfg, &Req::post(path), body.to_string().as_bytes())
}

fn decision(action: BodyAction) -> BodyDecision {
    match action {
        BodyAction::Continue(d) => d,
        BodyAction::Deny(d) => panic!("unexpected denial {d:?}"),
    }
}

fn denial(action: BodyAction) -> Denial {
    match action {
        BodyAction::Deny(d) => d,
        BodyAction::Continue(d) => panic!("unexpected pass {d:?}"),
    }
}

fn header<'d>(d: &'d BodyDecision, name: &str) -> Option<&'d str> {
    d.set_headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

fn chat(model: &str, extra: Value) -> Value {
    let mut v = json!({
        "model": model,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": [{ "type": "text", "text": "hello   gateway" }] }
        ]
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            o.insert(k.clone(), val.clone());
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Headers stage

#[test]
fn headers_decide_whether_and_how_the_body_is_read() {
    let c = cfg();
    let mut ex = Exchange::new(0);
    assert_eq!(
        on_headers(&c, &mut ex, &Req::post("/v1/chat/completions")),
        HeadersAction::ReadBody { hold: true }
    );
    assert_eq!(ex.api, Some(Api::ChatCompletions));
    assert_eq!(ex.traffic_class, Some(TrafficClass::Interactive));
    assert_eq!(ex.hostname.as_deref(), Some(HOST_A));
    assert_eq!(ex.request_id.as_deref(), Some("req-unit-1"));

    // A body-less API route serves any method without reading a body.
    let mut ex = Exchange::new(0);
    let get = Req {
        method: "GET",
        has_body: false,
        ..Req::post("/v1/models")
    };
    assert_eq!(on_headers(&c, &mut ex, &get), HeadersAction::Continue);
    // A body route serves POST only (by default).
    let mut ex = Exchange::new(0);
    let get_chat = Req {
        method: "GET",
        has_body: false,
        ..Req::post("/v1/chat/completions")
    };
    let HeadersAction::Deny(d) = on_headers(&c, &mut ex, &get_chat) else {
        panic!("expected 405")
    };
    assert_eq!((d.status, d.reason), (405, "method_not_allowed"));
    // Configured methods are served; one carrying a body has it read, one without not.
    let c3 = cfg_with(|s| s["routes"][0]["methods"] = json!(["post", "GET", "DELETE"]));
    let mut ex = Exchange::new(0);
    assert_eq!(on_headers(&c3, &mut ex, &get_chat), HeadersAction::Continue);
    let delete_with_body = Req {
        method: "DELETE",
        ..Req::post("/v1/chat/completions")
    };
    let mut ex = Exchange::new(0);
    assert_eq!(
        on_headers(&c3, &mut ex, &delete_with_body),
        HeadersAction::ReadBody { hold: true }
    );

    // Without header hold the body is still read and enforced, but headers go on.
    let c2 = cfg_with(|s| s["routing"] = json!({ "hold_headers_for_body": false }));
    let mut ex = Exchange::new(0);
    assert_eq!(
        on_headers(&c2, &mut ex, &Req::post("/v1/embeddings")),
        HeadersAction::ReadBody { hold: false }
    );
}

#[test]
fn post_without_body_is_400_empty_body() {
    let c = cfg();
    let mut ex = Exchange::new(0);
    let r = Req {
        has_body: false,
        ..Req::post("/v1/chat/completions")
    };
    let HeadersAction::Deny(d) = on_headers(&c, &mut ex, &r) else {
        panic!("expected a denial")
    };
    assert_eq!((d.status, d.code), (400, Some("empty_body")));
    assert_eq!(ex.denial, Some(d));
}

#[test]
fn content_length_over_the_limit_is_413_before_buffering() {
    let c = cfg();
    let mut ex = Exchange::new(0);
    let r = Req {
        content_length: Some(1025),
        ..Req::post("/v1/chat/completions")
    };
    let HeadersAction::Deny(d) = on_headers(&c, &mut ex, &r) else {
        panic!("expected a denial")
    };
    assert_eq!((d.status, d.reason), (413, "body_too_large"));
    assert_eq!(d.code, Some("request_too_large"));

    // Exactly at the limit is fine.
    let mut ex = Exchange::new(0);
    let r = Req {
        content_length: Some(1024),
        ..Req::post("/v1/chat/completions")
    };
    assert_eq!(
        on_headers(&c, &mut ex, &r),
        HeadersAction::ReadBody { hold: true }
    );
}

#[test]
fn chunked_body_is_refused_as_soon_as_it_crosses_the_limit() {
    let c = cfg();
    let mut ex = Exchange::new(0);
    on_headers(&c, &mut ex, &Req::post("/v1/chat/completions"));
    assert_eq!(ex.on_partial_body(&c, 512), None);
    assert_eq!(ex.on_partial_body(&c, 1024), None);
    let d = ex.on_partial_body(&c, 1025).unwrap();
    assert_eq!(d.status, 413);
    assert_eq!(ex.denial.as_ref().map(|d| d.status), Some(413));

    // A whole body over the limit (no Content-Length, one chunk) is refused too.
    let mut ex = Exchange::new(0);
    on_headers(&c, &mut ex, &Req::post("/v1/chat/completions"));
    let big = vec![b' '; 2000];
    assert_eq!(denial(ex.on_request_body(&c, &big, true, None)).status, 413);
}

#[test]
fn identity_and_route_checks_come_before_the_body() {
    let c = cfg();
    let mut ex = Exchange::new(0);
    let r = Req {
        key: KEY_B,
        host: HOST_B,
        ..Req::post("/v1/chat/completions")
    };
    let HeadersAction::Deny(d) = on_headers(&c, &mut ex, &r) else {
        panic!("expected a denial")
    };
    assert_eq!((d.status, d.reason), (403, "route_forbidden"));
}

// ---------------------------------------------------------------------------------------
// Body decisions per route kind

#[test]
fn chat_body_sets_model_headers_and_clears_the_route_cache() {
    let c = cfg();
    let (ex, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
    let d = decision(out);
    assert_eq!(header(&d, header::MODEL), Some("llama3-8b"));
    assert_eq!(header(&d, header::GATEWAY_MODEL_NAME), Some("llama3-8b"));
    assert_eq!(header(&d, header::TRAFFIC_CLASS), Some("interactive"));
    assert_eq!(header(&d, header::ENVOY_MAX_RETRIES), None);
    assert_eq!(header(&d, "content-length"), None);
    assert!(d.clear_route_cache);
    assert!(d.new_body.is_none());
    assert_eq!(ex.model.as_deref(), Some("llama3-8b"));
    assert_eq!(ex.stream, Some(false));
    assert!(ex.known_model);
    // "You are terse." = 14 chars -> 4; "hello   gateway" = 15 chars -> 4.
    assert_eq!(ex.estimated_prompt_tokens, Some(8));
    assert_eq!(ex.max_completion_tokens, None);
}

#[test]
fn each_route_kind_reads_its_own_prompt_field() {
    let c = cfg();
    let cases = [
        (
            "/v1/completions",
            json!({"model":"llama3-8b","prompt":["abcd","efgh"],"max_tokens":7}),
            Some(Api::Completions),
            Some(2 * 7), // two prompts, a completion each
        ),
        (
            "/v1/embeddings",
            json!({"model":"bge-small","input":["abcdefgh", [1, 2, 3]]}),
            Some(Api::Embeddings),
            None,
        ),
        (
            "/v1/responses",
            json!({"model":"llama3-8b","input":"abcd","instructions":"efgh","max_output_tokens":9}),
            Some(Api::Responses),
            Some(9),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"llama3-8b","messages":[{"role":"user","content":"abcdefgh"}],
                   "max_tokens":3,"max_completion_tokens":5}),
            Some(Api::ChatCompletions),
            Some(5),
        ),
    ];
    for (path, body, api, limit) in cases {
        let (ex, out) = send_json(&c, path, &body);
        let d = decision(out);
        assert_eq!(ex.api, api, "{path}");
        assert_eq!(ex.max_completion_tokens, limit, "{path}");
        assert!(d.clear_route_cache, "{path}");
        assert!(d.new_body.is_none(), "{path}");
        let expect = if api == Some(Api::Embeddings) {
            5 // 2 for "abcdefgh" + 3 token ids
        } else {
            2
        };
        assert_eq!(ex.estimated_prompt_tokens, Some(expect), "{path}");
    }
}

#[test]
fn body_less_api_route_reads_nothing() {
    let c = cfg();
    let mut ex = Exchange::new(0);
    let r = Req {
        method: "GET",
        has_body: false,
        ..Req::post("/v1/models")
    };
    on_headers(&c, &mut ex, &r);
    // Even if a host hands a body over, a `none` route makes no decision from it.
    assert_eq!(
        ex.on_request_body(&c, b"not json", true, None),
        BodyAction::Continue(BodyDecision::default())
    );
    assert_eq!(ex.model, None);
}

#[test]
fn without_header_hold_the_body_is_still_enforced_but_no_header_is_set() {
    let c = cfg_with(|s| s["routing"] = json!({ "hold_headers_for_body": false }));
    let mut ex = Exchange::new(0);
    let action = on_headers(&c, &mut ex, &Req::post("/v1/chat/completions"));
    assert_eq!(action, HeadersAction::ReadBody { hold: false });
    let body = chat("llama3-8b", json!({"stream": true})).to_string();
    let d = decision(ex.on_request_body(&c, body.as_bytes(), false, None));
    assert_eq!(d, BodyDecision::default());
    assert_eq!(ex.traffic_class, Some(TrafficClass::Streaming));

    // ...and the model allowlist still applies.
    let mut ex = Exchange::new(0);
    on_headers(&c, &mut ex, &Req::post("/v1/chat/completions"));
    let body = chat("gpt-4o", json!({})).to_string();
    let d = denial(ex.on_request_body(&c, body.as_bytes(), false, None));
    assert_eq!(d.reason, "model_forbidden");
}

#[test]
fn model_header_can_be_turned_off() {
    let c = cfg_with(|s| s["routing"] = json!({ "model_header": false }));
    let (_, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
    let d = decision(out);
    assert_eq!(header(&d, header::MODEL), None);
    assert_eq!(header(&d, header::GATEWAY_MODEL_NAME), None);
    assert!(!d.clear_route_cache);
    assert_eq!(header(&d, header::TRAFFIC_CLASS), Some("interactive"));
}

// ---------------------------------------------------------------------------------------
// 400 / 403 / 404 decisions

#[test]
fn malformed_bodies_are_400_with_a_precise_code() {
    let c = cfg();
    let cases: [(&str, &[u8], &str); 9] = [
        ("/v1/chat/completions", b"{bad", "invalid_json"),
        ("/v1/chat/completions", b"", "empty_body"),
        ("/v1/chat/completions", b"  \n ", "empty_body"),
        ("/v1/chat/completions", b"[1,2]", "invalid_body"),
        (
            "/v1/chat/completions",
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
            "missing_model",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"llama3-8b","stream":"yes","messages":[]}"#,
            "invalid_type",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"llama3-8b","messages":"hi"}"#,
            "invalid_type",
        ),
        (
            "/v1/completions",
            br#"{"model":"llama3-8b","prompt":"hi","max_tokens":-1}"#,
            "invalid_type",
        ),
        (
            "/v1/embeddings",
            br#"{"model":42,"input":"hi"}"#,
            "invalid_type",
        ),
    ];
    for (path, body, code) in cases {
        let (ex, out) = send(&c, &Req::post(path), body);
        let d = denial(out);
        assert_eq!((d.status, d.code), (400, Some(code)), "{path} {body:?}");
        assert_eq!(d.reason, "invalid_body");
        assert_eq!(ex.denial.as_ref(), Some(&d));
        // The client gets an OpenAI-shaped error that names no body content.
        let v: Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], code);
    }
}

#[test]
fn unknown_model_is_404_model_not_found() {
    let c = cfg();
    let (ex, out) = send_json(&c, "/v1/chat/completions", &chat("gpt-4o", json!({})));
    let d = denial(out);
    assert_eq!((d.status, d.reason), (404, "model_forbidden"));
    assert_eq!(
        (d.error_type, d.code),
        ("invalid_request_error", Some("model_not_found"))
    );
    assert_eq!(
        d.message,
        "The model `gpt-4o` does not exist or you do not have access to it."
    );
    assert!(!ex.known_model);
    // The record still names the (sanitized) model the client asked for.
    assert_eq!(ex.model.as_deref(), Some("gpt-4o"));
}

#[test]
fn tenant_allowlist_is_404_model_not_found_like_an_unknown_model() {
    let c = cfg();
    let r = Req {
        key: KEY_B,
        host: HOST_B,
        ..Req::post("/v1/embeddings")
    };
    let (ex, out) = send(&c, &r, br#"{"model":"llama3-8b","input":"x"}"#);
    let d = denial(out);
    assert_eq!((d.status, d.reason), (404, "model_forbidden"));
    assert!(ex.known_model);
    // The same answer as for a model nobody serves: nothing tells the two apart.
    let (_, unknown) = send(&c, &r, br#"{"model":"llama3-9b","input":"x"}"#);
    let u = denial(unknown);
    assert_eq!(
        d.body().replace("llama3-8b", "M"),
        u.body().replace("llama3-9b", "M")
    );
    assert_eq!((u.status, u.reason, u.code), (d.status, d.reason, d.code));
    let (_, out) = send(&c, &r, br#"{"model":"bge-small","input":"x"}"#);
    assert!(matches!(out, BodyAction::Continue(_)));
}

#[test]
fn without_a_model_table_any_model_passes() {
    // (Tenant allowlists must name configured models, so there are none here either.)
    let c = cfg_with(|s| {
        s["models"] = json!([]);
        for t in s["tenants"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("models");
        }
    });
    let (mut ex, out) = send_json(&c, "/v1/chat/completions", &chat("any-model", json!({})));
    let d = decision(out);
    assert_eq!(header(&d, header::MODEL), Some("any-model"));
    assert!(!ex.known_model);
    // No price: no cost, but tokens are still recorded.
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("application/json"),
            content_encoding: None,
        },
        &c,
    );
    ex.on_response_chunk(
        br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        true,
        1_005,
    );
    let (rec, _) = ex.records(&c, &served_end(1_010));
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens),
        (Some(3), Some(4))
    );
    assert_eq!(rec.estimated_cost_usd, None);
}

// ---------------------------------------------------------------------------------------
// Traffic classes, retries and include_usage

#[test]
fn classification_into_the_four_traffic_classes() {
    let c = cfg();
    let tools = json!([{"type":"function","function":{"name":"f"}}]);
    let cases = [
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({})),
            "interactive",
        ),
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({"stream": true})),
            "streaming",
        ),
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({"tools": tools})),
            "tool_calling_agents",
        ),
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({"tool_choice": "auto"})),
            "tool_calling_agents",
        ),
        // A streamed tool call is first of all a stream (never retried, TTFT matters).
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({"stream": true, "tools": tools})),
            "streaming",
        ),
        // `tools: null` is absent.
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({"tools": null})),
            "interactive",
        ),
        (
            "/v1/embeddings",
            json!({"model":"bge-small","input":"x"}),
            "batch",
        ),
        (
            "/v1/batch/chat/completions",
            chat("llama3-8b", json!({})),
            "batch",
        ),
        (
            "/v1/batch/chat/completions",
            chat("llama3-8b", json!({"stream": true})),
            "streaming",
        ),
        (
            "/v1/completions",
            json!({"model":"llama3-8b","prompt":"x"}),
            "interactive",
        ),
    ];
    for (path, body, class) in cases {
        let (ex, out) = send_json(&c, path, &body);
        let d = decision(out);
        assert_eq!(
            ex.traffic_class.map(TrafficClass::as_str),
            Some(class),
            "{body}"
        );
        assert_eq!(header(&d, header::TRAFFIC_CLASS), Some(class), "{body}");
    }
}

#[test]
fn streams_are_never_retried_by_the_gateway() {
    let c = cfg();
    for (path, body) in [
        (
            "/v1/chat/completions",
            chat("llama3-8b", json!({"stream": true})),
        ),
        (
            "/v1/completions",
            json!({"model":"llama3-8b","prompt":"x","stream":true}),
        ),
        (
            "/v1/responses",
            json!({"model":"llama3-8b","input":"x","stream":true}),
        ),
    ] {
        let (_, out) = send_json(&c, path, &body);
        assert_eq!(
            header(&decision(out), header::ENVOY_MAX_RETRIES),
            Some("0"),
            "{path}"
        );
    }
    let (_, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
    assert_eq!(header(&decision(out), header::ENVOY_MAX_RETRIES), None);
}

#[test]
fn include_usage_is_injected_with_a_correct_content_length() {
    let c = cfg();
    let body = chat("llama3-8b", json!({"stream": true, "temperature": 0.5}));
    let (_, out) = send_json(&c, "/v1/chat/completions", &body);
    let d = decision(out);
    let new_body = d.new_body.clone().unwrap();
    assert_eq!(
        header(&d, "content-length"),
        Some(new_body.len().to_string().as_str())
    );
    let v: Value = serde_json::from_slice(&new_body).unwrap();
    let mut expected = body.clone();
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(v, expected);

    // Completions streams get it too; existing stream_options members are kept.
    let body = json!({"model":"llama3-8b","prompt":"x","stream":true,
                      "stream_options":{"include_usage":false,"other":1}});
    let (_, out) = send_json(&c, "/v1/completions", &body);
    let v: Value = serde_json::from_slice(&decision(out).new_body.unwrap()).unwrap();
    assert_eq!(
        v["stream_options"],
        json!({"include_usage": true, "other": 1})
    );
}

#[test]
fn include_usage_is_left_alone_when_not_needed() {
    let c = cfg();
    let cases = [
        // Already asked for.
        (
            "/v1/chat/completions",
            chat(
                "llama3-8b",
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            ),
        ),
        // Not a stream: usage is always in the JSON body.
        ("/v1/chat/completions", chat("llama3-8b", json!({}))),
        // The Responses API always reports usage in `response.completed`.
        (
            "/v1/responses",
            json!({"model":"llama3-8b","input":"x","stream":true}),
        ),
    ];
    for (path, body) in cases {
        let (_, out) = send_json(&c, path, &body);
        let d = decision(out);
        assert!(d.new_body.is_none(), "{body}");
        assert_eq!(header(&d, "content-length"), None, "{body}");
    }
}

// ---------------------------------------------------------------------------------------
// Responses: usage, estimation, TTFT

fn sse_body(with_usage: bool) -> Vec<u8> {
    let mut s = String::new();
    let null_usage = if with_usage { r#","usage":null"# } else { "" };
    s.push_str(&format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}}}]{null_usage}}}\n\n"
    ));
    for i in 0..4 {
        s.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]{null_usage}}}\n\n"
        ));
    }
    s.push_str(&format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]{null_usage}}}\n\n"
    ));
    if with_usage {
        s.push_str(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":612,\"completion_tokens\":238,\
             \"total_tokens\":850,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        );
    }
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

/// A served streaming request, its response fed in `pieces` (each at its own time).
fn stream_exchange(c: &Config, pieces: &[(&[u8], u64)]) -> Exchange {
    let (mut ex, out) = send_json(
        c,
        "/v1/chat/completions",
        &chat("llama3-8b", json!({"stream": true})),
    );
    decision(out);
    ex.on_forwarded(1_002);
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("text/event-stream; charset=utf-8"),
            content_encoding: None,
        },
        c,
    );
    let last = pieces.len().saturating_sub(1);
    for (i, (chunk, at)) in pieces.iter().enumerate() {
        ex.on_response_chunk(chunk, i == last, *at);
    }
    ex
}

#[test]
fn streamed_usage_is_reported_and_ttft_is_the_first_content_chunk() {
    let c = cfg();
    let body = sse_body(true);
    // Split after the role chunk: TTFT is the arrival of the first generated token,
    // not of the role chunk.
    let role_end = body.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let (role, rest) = body.split_at(role_end);
    let ex = stream_exchange(&c, &[(role, 1_010), (rest, 1_050), (b"", 1_100)]);
    assert_eq!(ex.ttft_ms, Some(50));
    let (u, estimated) = usage_of(&ex, &c, 200).unwrap();
    assert!(!estimated);
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (612, 238, 850)
    );
    assert_eq!(ex.stream_complete(), Some(true));
}

#[test]
fn usage_split_at_every_byte_position_is_still_found() {
    let c = cfg();
    let body = sse_body(true);
    for cut in 0..=body.len() {
        let (a, b) = body.split_at(cut);
        let ex = stream_exchange(&c, &[(a, 1_010), (b, 1_020)]);
        let (u, estimated) = usage_of(&ex, &c, 200).unwrap();
        assert!(!estimated, "cut {cut}");
        assert_eq!(u.total_tokens, 850, "cut {cut}");
        assert!(ex.ttft_ms.is_some(), "cut {cut}");
        assert_eq!(ex.stream_complete(), Some(true), "cut {cut}");
    }
    // And seven bytes at a time, as the mock's x-mock-chunk-bytes: 7 sends it.
    let chunks: Vec<(&[u8], u64)> = body.chunks(7).map(|ch| (ch, 1_030)).collect();
    let ex = stream_exchange(&c, &chunks);
    assert_eq!(
        usage_of(&ex, &c, 200).map(|(u, e)| (u.total_tokens, e)),
        Some((850, false))
    );
}

#[test]
fn stream_without_usage_is_estimated_from_the_streamed_content() {
    let c = cfg();
    let body = sse_body(false);
    let ex = stream_exchange(&c, &[(&body, 1_020)]);
    let (u, estimated) = usage_of(&ex, &c, 200).unwrap();
    assert!(estimated);
    // "tok0 " .. "tok3 " = 20 characters -> 5 tokens; the prompt estimate is 8.
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (8, 5, 13)
    );
    let (rec, _) = ex.records(&c, &served_end(1_030));
    assert_eq!(rec.usage_estimated, Some(true));
    assert_eq!(rec.completion_tokens, Some(5));
    assert_eq!(rec.prompt_tokens, Some(8));
}

#[test]
fn json_usage_is_extracted_across_chunks() {
    let c = cfg();
    let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi {\"usage\": 1}"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
    for cut in 0..=body.len() {
        let (mut ex, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
        decision(out);
        ex.on_response_headers(
            &ResponseHead {
                status: Some(200),
                content_type: Some("application/json"),
                content_encoding: None,
            },
            &c,
        );
        let (a, b) = body.split_at(cut);
        ex.on_response_chunk(a, false, 1_010);
        ex.on_response_chunk(b, true, 1_020);
        let (u, estimated) = usage_of(&ex, &c, 200).unwrap();
        assert!(!estimated, "cut {cut}");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 3, 15),
            "cut {cut}"
        );
        assert_eq!((u.cached_tokens, u.reasoning_tokens), (Some(4), Some(2)));
        assert_eq!(ex.ttft_ms, None, "non-streamed responses have no TTFT");
    }
}

#[test]
fn json_without_usage_is_estimated_from_the_prompt() {
    let c = cfg();
    let (mut ex, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
    decision(out);
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("application/json"),
            content_encoding: None,
        },
        &c,
    );
    ex.on_response_chunk(br#"{"choices":[]}"#, true, 1_010);
    let (u, estimated) = usage_of(&ex, &c, 200).unwrap();
    assert!(estimated);
    assert_eq!((u.prompt_tokens, u.completion_tokens), (8, 0));
}

#[test]
fn an_upstream_error_without_usage_has_no_tokens() {
    let c = cfg();
    for status in [400u16, 429, 500, 503] {
        let (mut ex, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
        decision(out);
        ex.on_forwarded(1_005);
        ex.on_forwarded(1_002);
        ex.on_response_headers(
            &ResponseHead {
                status: Some(status),
                content_type: Some("application/json"),
                content_encoding: None,
            },
            &c,
        );
        ex.on_response_chunk(br#"{"error":{"message":"x"}}"#, true, 1_010);
        assert_eq!(usage_of(&ex, &c, status), None, "{status}");
        let (rec, audit) = ex.records(
            &c,
            &End {
                status: Some(status),
                ..served_end(1_020)
            },
        );
        assert_eq!(rec.http_status, Some(status));
        assert_eq!(
            (
                rec.prompt_tokens,
                rec.completion_tokens,
                rec.usage_estimated
            ),
            (None, None, None)
        );
        assert_eq!(rec.estimated_cost_usd, None);
        assert_eq!(rec.model_route.as_deref(), Some("chat-llama3-8b-v1"));
        assert_eq!(audit.decision, "allow");
    }
}

#[test]
fn a_broken_stream_is_estimated_and_marked_incomplete() {
    let c = cfg();
    let body = sse_body(true);
    let cut = body.len() / 2;
    let (mut ex, out) = send_json(
        &c,
        "/v1/chat/completions",
        &chat("llama3-8b", json!({"stream": true})),
    );
    decision(out);
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("text/event-stream"),
            content_encoding: None,
        },
        &c,
    );
    ex.on_response_chunk(body.get(..cut).unwrap(), false, 1_010);
    // The upstream resets: no end of stream is ever seen.
    assert_eq!(ex.stream_complete(), Some(false));
    let (u, estimated) = usage_of(&ex, &c, 200).unwrap();
    assert!(estimated);
    assert!(u.completion_tokens > 0);
    let (rec, _) = ex.records(&c, &served_end(1_020));
    assert_eq!(rec.stream_complete, Some(false));
    assert_eq!(rec.usage_estimated, Some(true));
}

// ---------------------------------------------------------------------------------------
// Records

fn served_end(now_ms: u64) -> End<'static> {
    End {
        now_ms,
        status: Some(200),
        cluster: Some("chat-llama3-8b-v1"),
        upstream_address: Some("127.0.0.1:18001"),
        code_details: Some("via_upstream"),
    }
}

use crate::contract::GATEWAY_RECORD_FIELDS as CONTRACT_FIELDS;

fn as_json(rec: &GatewayRecord) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_str(&crate::record::to_json(rec)).unwrap();
    let obj = v.as_object().unwrap().clone();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = CONTRACT_FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want);
    obj
}

#[test]
fn record_of_a_served_streaming_request() {
    let c = cfg();
    let body = sse_body(true);
    let ex = stream_exchange(&c, &[(&body, 1_420)]);
    let (rec, audit) = ex.records(&c, &served_end(2_840));
    let v = as_json(&rec);
    assert_eq!(v["timestamp"], "1970-01-01T00:00:01.000Z");
    assert_eq!(v["request_id"], "req-unit-1");
    assert_eq!(v["tenant"], "tenant-a");
    assert_eq!(v["hostname"], HOST_A);
    assert_eq!(v["route"], "/v1/chat/completions");
    assert_eq!(v["model_route"], "chat-llama3-8b-v1");
    assert_eq!(v["stream"], true);
    assert_eq!(v["http_status"], 200);
    assert_eq!(v["latency_ms"], 1_840);
    assert_eq!(v["ttft_ms"], 420);
    assert_eq!(v["prompt_tokens"], 612);
    assert_eq!(v["completion_tokens"], 238);
    // 612 * 0.20 + 238 * 0.60 = 265.2 micro-USD.
    assert_eq!(v["estimated_cost_usd"], 0.0002652);
    assert_eq!(v["gateway_backend"], "127.0.0.1:18001");
    assert_eq!(v["model"], "llama3-8b");
    assert_eq!(v["traffic_class"], "streaming");
    assert_eq!(v["usage_estimated"], false);
    assert_eq!(v["stream_complete"], true);
    assert!(
        v["prompt_sha256"].is_null(),
        "BLAKE3 is the default fingerprint"
    );
    let fp = v["prompt_blake3"].as_str().unwrap();
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!v.contains_key("prompt_preview"));
    assert_eq!(audit.decision, "allow");
    assert_eq!(audit.subject.as_deref(), Some("svc:agent-platform"));
    assert_eq!(audit.model_route.as_deref(), Some("chat-llama3-8b-v1"));
}

#[test]
fn record_of_a_denied_request_has_nulls_for_the_unknown() {
    let c = cfg();
    // Denied at the headers: no credentials.
    let mut ex = Exchange::new(5_000);
    let r = Req {
        key: "",
        ..Req::post("/v1/chat/completions")
    };
    let headers: Vec<(String, String)> = headers_of(&r)
        .into_iter()
        .filter(|(n, _)| n != "authorization")
        .collect();
    let head = RequestHead {
        headers: &headers,
        authority: HOST_A,
        path: "/v1/chat/completions?x=1",
        method: "POST",
        request_id: None,
        peer_uri_san: None,
        has_body: true,
    };
    let HeadersAction::Deny(d) = ex.on_request_headers(&c, &head) else {
        panic!("expected a denial")
    };
    assert_eq!(d.status, 401);
    // Envoy had picked a route (and so a cluster), but a local reply names no backend.
    let end = End {
        now_ms: 5_003,
        status: Some(401),
        cluster: Some("chat-llama3-8b-v1"),
        upstream_address: None,
        code_details: Some("via_upstream"),
    };
    let (rec, audit) = ex.records(&c, &end);
    let v = as_json(&rec);
    assert_eq!(
        v["route"], "/v1/chat/completions",
        "the prefix, never the raw path"
    );
    assert_eq!(v["http_status"], 401);
    assert_eq!(v["latency_ms"], 3);
    for k in [
        "request_id",
        "tenant",
        "model_route",
        "stream",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "estimated_cost_usd",
        "gateway_backend",
        "model",
        "usage_estimated",
        "prompt_sha256",
        "prompt_blake3",
        "stream_complete",
    ] {
        assert!(v[k].is_null(), "{k} = {}", v[k]);
    }
    assert_eq!(audit.decision, "deny");
    assert_eq!(audit.reason, Some("missing_credentials"));

    // Denied at the body: the model is known, no tokens are counted.
    let (ex, out) = send_json(
        &c,
        "/v1/chat/completions",
        &chat("gpt-4o", json!({"stream": true})),
    );
    denial(out);
    let (rec, audit) = ex.records(
        &c,
        &End {
            status: Some(404),
            ..served_end(1_005)
        },
    );
    let v = as_json(&rec);
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["stream"], true);
    assert_eq!(v["tenant"], "tenant-a");
    assert!(v["model_route"].is_null());
    assert!(v["gateway_backend"].is_null());
    assert!(v["prompt_tokens"].is_null());
    assert!(v["estimated_cost_usd"].is_null());
    assert!(
        v["stream_complete"].is_null(),
        "a refused stream never started"
    );
    assert_eq!(audit.reason, Some("model_forbidden"));
}

#[test]
fn record_of_a_request_that_never_reached_a_backend() {
    let c = cfg();
    let (mut ex, out) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
    decision(out);
    ex.on_forwarded(1_001);
    // Envoy's own 503 (no healthy upstream): no cluster address, no usage.
    ex.on_response_headers(
        &ResponseHead {
            status: Some(503),
            content_type: Some("text/plain"),
            content_encoding: None,
        },
        &c,
    );
    ex.on_response_chunk(b"no healthy upstream", true, 1_002);
    let end = End {
        now_ms: 1_003,
        status: Some(503),
        cluster: Some("chat-llama3-8b-v1"),
        upstream_address: None,
        code_details: Some("via_upstream"),
    };
    let (rec, _) = ex.records(&c, &end);
    assert_eq!(rec.http_status, Some(503));
    assert_eq!(rec.prompt_tokens, None);
    assert_eq!(rec.estimated_cost_usd, None);
    assert_eq!(rec.gateway_backend, None);
}

#[test]
fn istio_cluster_names_become_service_names() {
    assert_eq!(
        model_route_from_cluster("outbound|8000||chat-llama3-8b-v1.ai-models.svc.cluster.local"),
        "chat-llama3-8b-v1"
    );
    assert_eq!(
        model_route_from_cluster("outbound|8000|v2|chat.ai-models.svc.cluster.local"),
        "chat"
    );
    assert_eq!(
        model_route_from_cluster("embed-bge-small-v1"),
        "embed-bge-small-v1"
    );
    assert_eq!(model_route_from_cluster("a|b"), "a|b");
}

#[test]
fn classify_prefers_stream_then_tools_then_the_route() {
    let p = crate::openai::parse_request(Api::ChatCompletions, br#"{"model":"m","messages":[]}"#)
        .unwrap();
    assert_eq!(classify(None, &p), TrafficClass::Interactive);
    assert_eq!(classify(Some(TrafficClass::Batch), &p), TrafficClass::Batch);
    let p = crate::openai::parse_request(
        Api::ChatCompletions,
        br#"{"model":"m","messages":[],"tools":[],"stream":true}"#,
    )
    .unwrap();
    assert_eq!(
        classify(Some(TrafficClass::Batch), &p),
        TrafficClass::Streaming
    );
}

// ---------------------------------------------------------------------------------------
// Fingerprint and preview

fn fingerprint_of(c: &Config, body: &Value) -> Option<String> {
    let (ex, out) = send_json(c, "/v1/chat/completions", body);
    decision(out);
    ex.prompt_fingerprint.map(|(_, hex)| hex)
}

#[test]
fn prompt_fingerprint_ignores_whitespace_but_nothing_else() {
    let c = cfg();
    let msg = |text: &str| json!({"model":"llama3-8b","messages":[{"role":"user","content":text}]});
    let a = fingerprint_of(&c, &msg("Summarize  the\n report")).unwrap();
    let b = fingerprint_of(&c, &msg("  Summarize the report ")).unwrap();
    let other = fingerprint_of(&c, &msg("Summarize the reports")).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, other);
    // The same prompt as content parts fingerprints the same as a string.
    let parts = json!({"model":"llama3-8b","messages":[{"role":"user",
        "content":[{"type":"text","text":"Summarize the report"}]}]});
    assert_eq!(fingerprint_of(&c, &parts).unwrap(), a);
    // The model and other parameters are not part of the prompt.
    let streamed = json!({"model":"bge-small","stream":true,
        "messages":[{"role":"user","content":"Summarize the report"}]});
    assert_eq!(fingerprint_of(&c, &streamed).unwrap(), a);
    // A different salt gives a different, unlinkable fingerprint.
    let c2 = cfg_with(|s| s["redaction"] = json!({"fingerprint_salt": "another-salt-0123456789"}));
    assert_ne!(
        fingerprint_of(&c2, &msg("Summarize the report")).unwrap(),
        a
    );
    // It is keyed, not a bare hash of the prompt.
    let bare: String = sha256(b"Summarize the report")
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    assert_ne!(a, bare);
    // Without a salt, no fingerprint is written.
    let c3 = cfg_with(|s| s["redaction"] = json!({}));
    assert_eq!(fingerprint_of(&c3, &msg("Summarize the report")), None);
}

#[test]
fn each_algorithm_is_the_keyed_hash_it_names() {
    let text = "Summarize the report";
    let msg = json!({"model":"llama3-8b","messages":[{"role":"user","content":text}]});
    let key = blake3::derive_key(crate::redact::KEY_CONTEXT, SALT.as_bytes());
    let want = blake3::keyed_hash(&key, text.as_bytes())
        .to_hex()
        .to_string();
    assert_eq!(fingerprint_of(&cfg(), &msg).unwrap(), want);

    let c = cfg_with(|s| {
        s["redaction"] = json!({"fingerprint_salt": SALT, "fingerprint_algorithm": "hmac_sha256"})
    });
    let (ex, out) = send_json(&c, "/v1/chat/completions", &msg);
    decision(out);
    let (gateway, _) = ex.records(&c, &End::default());
    let want = crate::redact::prompt_fingerprint(SALT.as_bytes(), [text]);
    assert_eq!(gateway.prompt_sha256.as_deref(), Some(want.as_str()));
    assert_eq!(gateway.prompt_blake3, None);
}

#[test]
fn preview_is_off_by_default_and_masked_when_on() {
    let c = cfg();
    let secret =
        "mail jane.doe@example.com card 4111 1111 1111 1111 key sk-abcdefghijklmnopqrstuvwx ok";
    let body = json!({"model":"llama3-8b","messages":[{"role":"user","content":secret}]});
    let (ex, _) = send_json(&c, "/v1/chat/completions", &body);
    assert_eq!(ex.prompt_preview, None);

    let c = cfg_with(|s| s["redaction"]["prompt_preview_chars"] = json!(200));
    let (ex, _) = send_json(&c, "/v1/chat/completions", &body);
    let preview = ex.prompt_preview.clone().unwrap();
    assert!(preview.starts_with("mail "), "{preview}");
    for leaked in ["jane.doe", "example.com", "4111", "sk-abcdef"] {
        assert!(!preview.contains(leaked), "{leaked} in {preview}");
    }
    let (rec, _) = ex.records(&c, &served_end(1_010));
    let line = crate::record::to_json(&rec);
    assert!(line.contains("\"prompt_preview\""));
    assert!(!line.contains("jane.doe"));

    // Truncated to the configured length.
    let c = cfg_with(|s| s["redaction"]["prompt_preview_chars"] = json!(4));
    let (ex, _) = send_json(&c, "/v1/chat/completions", &body);
    assert!(ex.prompt_preview.unwrap().chars().count() <= 5);
}

#[test]
fn no_prompt_text_reaches_the_records() {
    let c = cfg_with(|s| s["redaction"]["prompt_preview_chars"] = json!(0));
    let canary = "CANARY-7f3a-prompt-text";
    let body = json!({"model":"llama3-8b","stream":true,"messages":[
        {"role":"user","content":canary},
        {"role":"user","content":[{"type":"text","text":canary}]}]});
    let (mut ex, out) = send_json(&c, "/v1/chat/completions", &body);
    decision(out);
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("text/event-stream"),
            content_encoding: None,
        },
        &c,
    );
    ex.on_response_chunk(&sse_body(true), true, 1_010);
    let (rec, audit) = ex.records(&c, &served_end(1_020));
    let all = format!(
        "{}{}{:?}",
        crate::record::to_json(&rec),
        crate::record::to_json(&audit),
        crate::metrics::observations(&ex.finished(&rec, 1_000))
    );
    assert!(!all.contains("CANARY"));
}

fn end_with(status: Option<u16>, details: Option<&'static str>) -> End<'static> {
    End {
        status,
        code_details: details,
        ..served_end(1_020)
    }
}

fn billed(
    ex: &Exchange,
    c: &Config,
    status: Option<u16>,
    details: Option<&'static str>,
) -> Option<u64> {
    ex.billable(c, &end_with(status, details))
        .map(|(u, _)| u.total_tokens)
}

#[test]
fn billing_once_forwarded_follows_who_ended_the_request() {
    let c = cfg();
    let (mut ex, out) = send_json(
        &c,
        "/v1/chat/completions",
        &chat("llama3-8b", json!({"max_tokens": 50})),
    );
    decision(out);
    let prompt = ex.estimated_prompt_tokens.unwrap();
    // The client went away before any response: the prompt estimate.
    assert_eq!(billed(&ex, &c, None, None), Some(prompt));
    assert!(ex.needs_code_details());
    // Envoy's own upstream timeout or reset: the backend may have worked.
    assert_eq!(
        billed(&ex, &c, Some(504), Some("response_timeout")),
        Some(prompt)
    );
    assert_eq!(
        billed(
            &ex,
            &c,
            Some(503),
            Some("upstream_reset_after_response_started{remote_reset}")
        ),
        Some(prompt)
    );
    // The backend answered an error itself, or none was ever reached: nothing.
    assert_eq!(billed(&ex, &c, Some(500), Some("via_upstream")), None);
    assert_eq!(
        billed(&ex, &c, Some(503), Some("no_healthy_upstream")),
        None
    );
    // A filter after this one answered (Envoy's global rate limit): no backend worked.
    assert_eq!(
        billed(&ex, &c, Some(429), Some("request_rate_limited")),
        None
    );
    assert_eq!(billed(&ex, &c, Some(404), Some("route_not_found")), None);
    assert_eq!(
        billed(
            &ex,
            &c,
            Some(503),
            Some("upstream_reset_before_response_started{remote_connection_failure}")
        ),
        None
    );
    // Reported usage always wins.
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("application/json"),
            content_encoding: None,
        },
        &c,
    );
    ex.on_response_chunk(
        br#"{"usage":{"prompt_tokens":7,"completion_tokens":2}}"#,
        true,
        1_010,
    );
    assert!(!ex.needs_code_details());
    assert_eq!(billed(&ex, &c, Some(200), None), Some(9));
}

#[test]
fn a_refused_or_unforwarded_request_is_billed_nothing() {
    let c = cfg();
    let (ex, out) = send_json(&c, "/v1/chat/completions", &chat("not-a-model", json!({})));
    denial(out);
    assert_eq!(billed(&ex, &c, None, None), None);
    assert!(!ex.needs_code_details());
}

#[test]
fn a_compressed_response_is_charged_the_reservation_bound() {
    let c = cfg();
    let (mut ex, out) = send_json(
        &c,
        "/v1/chat/completions",
        &chat("llama3-8b", json!({"max_tokens": 50})),
    );
    decision(out);
    let prompt = ex.estimated_prompt_tokens.unwrap();
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("application/json"),
            content_encoding: Some("gzip"),
        },
        &c,
    );
    assert!(
        !ex.observes_response_body(),
        "compressed bytes are not scanned"
    );
    let (u, estimated) = ex.billable(&c, &end_with(Some(200), None)).unwrap();
    assert!(estimated);
    assert_eq!((u.prompt_tokens, u.completion_tokens), (prompt, 50));
    // `identity` is no encoding.
    let (mut ex, _) = send_json(&c, "/v1/chat/completions", &chat("llama3-8b", json!({})));
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("application/json"),
            content_encoding: Some("identity"),
        },
        &c,
    );
    assert!(ex.observes_response_body());
}

#[test]
fn a_model_pinned_to_clusters_is_refused_on_another_backend_when_routed_by_path() {
    let c = cfg_with(|s| {
        s["models"][0]["clusters"] = json!(["chat-llama3-8b-v1"]);
        s["routing"] = json!({ "hold_headers_for_body": false });
    });
    assert!(c.pinned_clusters);
    let body = chat("llama3-8b", json!({})).to_string();
    for (cluster, ok) in [
        (Some("chat-llama3-8b-v1"), true),
        (Some("embeddings-bge-v1"), false),
        (None, false),
    ] {
        let mut ex = Exchange::new(1_000);
        assert_eq!(
            on_headers(&c, &mut ex, &Req::post("/v1/chat/completions")),
            HeadersAction::ReadBody { hold: false }
        );
        match ex.on_request_body(&c, body.as_bytes(), false, cluster) {
            BodyAction::Continue(_) => assert!(ok, "{cluster:?}"),
            BodyAction::Deny(d) => {
                assert!(!ok, "{cluster:?}");
                assert_eq!((d.status, d.reason), (400, "model_not_on_route"));
            }
        }
    }
    // A model without clusters goes anywhere.
    let body = chat("bge-small", json!({})).to_string();
    let mut ex = Exchange::new(1_000);
    on_headers(&c, &mut ex, &Req::post("/v1/chat/completions"));
    assert!(matches!(
        ex.on_request_body(&c, body.as_bytes(), false, Some("x")),
        BodyAction::Continue(_)
    ));
}

/// What the request is billed once the backend answered `status`.
fn usage_of(ex: &Exchange, c: &Config, status: u16) -> Option<(Usage, bool)> {
    ex.billable(
        c,
        &End {
            status: Some(status),
            ..served_end(2_000)
        },
    )
}
