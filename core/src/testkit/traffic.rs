//! Canonical traffic: the demo configuration, its tenants' requests, the mock backend's
//! answers, and a driver that runs a whole exchange through [`Request`] the way the host
//! does (one call per callback, the plans collected).

use crate::config::digest::sha256;
use crate::config::Config;
use crate::lifecycle::exchange::ResponseHead;
use crate::lifecycle::{LogInput, Plan, Request, RequestBody, RequestHeaders, Worker, WorkerState};
use crate::quota::SharedStore;

/// `filters/demo.json`, the configuration the demo and the benchmarks run.
pub const DEMO_JSON: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../filters/demo.json"));
pub const TENANT_A_HOST: &str = "tenant-a.ai.example.com";
pub const TENANT_A_KEY: &str = "sk-tenant-a-demo";
pub const TENANT_B_HOST: &str = "tenant-b.ai.example.com";
pub const TENANT_B_KEY: &str = "sk-tenant-b-demo";
pub const CHAT: &str = "/v1/chat/completions";
pub const NOW_MS: u64 = 1_700_000_000_000;

/// Lower-case hex SHA-256, the form the configuration stores keys in.
pub fn sha256_hex(key: &str) -> String {
    sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn parse(json: &str) -> Config {
    Config::parse(json.as_bytes(), &|_| None).unwrap()
}

pub fn demo_config() -> Config {
    parse(DEMO_JSON)
}

/// The request headers Envoy hands over for a POST from `key` to `host` (names lower case,
/// as Envoy's header map has them).
pub fn post_headers(
    host: &str,
    path: &str,
    key: Option<&str>,
    body_len: usize,
) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        (":authority", host),
        (":path", path),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("user-agent", "testkit"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b1c7f2e-7a7c-4c55-9a3e-5f2f3c1d2e4f"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    if let Some(k) = key {
        h.push(("authorization".to_string(), format!("Bearer {k}")));
    }
    h.push(("content-length".to_string(), body_len.to_string()));
    h
}

/// A chat completion body of about `size` bytes (one user message of words).
pub fn chat_body(size: usize, stream: bool) -> Vec<u8> {
    let words = "the quick brown fox jumps over a lazy dog while the gateway reads the body ";
    let overhead = 96;
    let text: String = words
        .chars()
        .cycle()
        .take(size.saturating_sub(overhead))
        .collect();
    let body = serde_json::json!({
        "model": "llama3-8b",
        "stream": stream,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    });
    serde_json::to_vec(&body).unwrap()
}

/// The mock backend's non-streamed answer, with usage.
pub const CHAT_RESPONSE: &[u8] = br#"{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"llama3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15"},"finish_reason":"length"}],"usage":{"prompt_tokens":163,"completion_tokens":16,"total_tokens":179,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

/// The mock backend's stream of `tokens` content chunks, one SSE event per element, with
/// the usage chunk and `[DONE]`.
pub fn sse_events(tokens: usize) -> Vec<Vec<u8>> {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-mock-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama3-8b\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
        .into_bytes()
    };
    let mut out = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    for i in 0..tokens {
        out.push(chunk(&format!(r#"{{"content":"tok{i} "}}"#), "null"));
    }
    out.push(chunk("{}", "\"stop\""));
    out.push(format!("data: {{\"id\":\"chatcmpl-mock-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama3-8b\",\"choices\":[],\"usage\":{{\"prompt_tokens\":163,\"completion_tokens\":{tokens},\"total_tokens\":{}}}}}\n\n", 163 + tokens).into_bytes());
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

/// What the upstream answers in a driven exchange.
pub enum Upstream<'a> {
    /// A status, a content type and the body chunks (each one body callback).
    Answers(u16, &'a str, Vec<Vec<u8>>),
    /// The client went away after the request was forwarded: no response at all.
    Nothing,
}

/// The plans of one exchange, by callback.
#[derive(Debug, Default)]
pub struct Plans {
    pub request_headers: Plan,
    pub request_body: Option<Plan>,
    pub response: Vec<Plan>,
    pub log: Plan,
}

/// Runs one exchange through [`Request`] as the Proxy-Wasm host does. The body is offered
/// in one callback with end of stream, as Envoy does when the filter buffers it.
pub fn drive(
    cfg: std::sync::Arc<Config>,
    store: &dyn SharedStore,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    upstream: Upstream,
) -> Plans {
    let mut state = WorkerState::new((0x5eed, 0x1d));
    let mut w = Worker {
        store,
        state: &mut state,
    };
    let mut req = Request::new(1, Some(cfg), NOW_MS);
    let mut plans = Plans::default();
    let input = RequestHeaders {
        headers: Some(headers),
        peer_uri_san: None,
        end_of_stream: body.is_none(),
        now_ms: NOW_MS,
    };
    plans.request_headers = req.on_request_headers(&mut w, &input);
    let mut reply = plans.request_headers.local_reply.clone();
    if let (Some(b), None) = (body, &reply) {
        let offered: &[u8] = if req.wants_request_body(true) { b } else { &[] };
        let input = RequestBody {
            buffered: b.len(),
            end_of_stream: true,
            body: offered,
            cluster: None,
            now_ms: NOW_MS + 1,
        };
        let p = req.on_request_body(&mut w, &input);
        reply = p.local_reply.clone();
        plans.request_body = Some(p);
    }
    // Envoy runs a local reply through the response callbacks too.
    let answers = match (reply, upstream) {
        (Some(r), _) => Some((r.status, "application/json", vec![r.body.into_bytes()])),
        (None, Upstream::Answers(status, content_type, chunks)) => {
            Some((status, content_type, chunks))
        }
        (None, Upstream::Nothing) => None,
    };
    let status = answers.as_ref().map(|(status, _, _)| *status);
    if let Some((status, content_type, chunks)) = answers {
        let last = chunks.len().saturating_sub(1);
        let head = ResponseHead {
            status: Some(status),
            content_type: Some(content_type),
            content_encoding: None,
        };
        plans
            .response
            .push(req.on_response_headers(&mut w, &head, chunks.is_empty(), NOW_MS + 2));
        for (i, c) in chunks.iter().enumerate() {
            let offered: &[u8] = if req.wants_response_body() { c } else { &[] };
            plans
                .response
                .push(req.on_response_body(offered, i == last, NOW_MS + 3 + i as u64));
        }
    }
    // Envoy picked the route's cluster even when the filter answered.
    let cluster = Some("chat-llama3-8b-v1");
    let log = LogInput {
        now_ms: NOW_MS + 100,
        response_code: status,
        cluster,
        upstream_address: Some("127.0.0.1:18001"),
        request_headers: Some(headers),
        busy_ns: 1_000,
        code_details: status.map(|_| "via_upstream"),
    };
    plans.log = req.on_log(&mut w, &log);
    plans
}
