//! One request through the filter's functional core, natively, as the host layer
//! (`src/host/http.rs`) drives it: headers (identity, host, route), body (parse, model,
//! fingerprint, include_usage rewrite), quota reserve against an in-memory store,
//! response headers and body (usage scan), records, quota settle, record JSON and
//! metric series names. What it leaves out is the Proxy-Wasm ABI: host calls, copies
//! into and out of the VM, filter state, Envoy's own work.
//!
//!     core-profile CONFIG.json BODY.json chat|stream ITERATIONS
//!
//! `make bench` runs it under `valgrind --tool=callgrind` with 1 and 1+N iterations and
//! divides the difference by N: instructions per request without the setup.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::process::ExitCode;

use ai_gateway_core::config::Config;
use ai_gateway_core::lifecycle::exchange::{BodyAction, End, Exchange, HeadersAction, RequestHead};
use ai_gateway_core::metrics::observations;
use ai_gateway_core::quota::{SharedStore, StoreError};
use ai_gateway_core::lifecycle::quota_step::{QuotaState, Stage};
use ai_gateway_core::record::to_json;

/// Proxy-Wasm shared data semantics (process-wide cas counter starting at 1).
#[derive(Default)]
struct MemStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next: RefCell<u32>,
}

impl SharedStore for MemStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(match self.map.borrow().get(key) {
            Some((v, c)) => (Some(v.clone()), Some(*c)),
            None => (None, None),
        })
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        if let (Some((_, current)), Some(c)) = (map.get(key), cas) {
            if c != 0 && c != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let mut next = self.next.borrow_mut();
        *next += 1;
        map.insert(key.to_owned(), (value.to_owned(), *next));
        Ok(())
    }
}

const CHAT_RESPONSE: &[u8] = br#"{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"llama3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15"},"finish_reason":"length"}],"usage":{"prompt_tokens":163,"completion_tokens":16,"total_tokens":179,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

fn sse_response() -> Vec<u8> {
    let mut out = Vec::new();
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-mock-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama3-8b\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
    };
    out.extend_from_slice(chunk(r#"{"role":"assistant","content":""}"#, "null").as_bytes());
    for i in 0..16 {
        out.extend_from_slice(chunk(&format!(r#"{{"content":"tok{i} "}}"#), "null").as_bytes());
    }
    out.extend_from_slice(chunk("{}", "\"stop\"").as_bytes());
    out.extend_from_slice(b"data: {\"id\":\"chatcmpl-mock-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama3-8b\",\"choices\":[],\"usage\":{\"prompt_tokens\":163,\"completion_tokens\":16,\"total_tokens\":179}}\n\ndata: [DONE]\n\n");
    out
}

fn one_request(cfg: &Config, store: &MemStore, body: &[u8], stream: bool, i: u64) -> usize {
    let now = 1_700_000_000_000 + i;
    let headers: Vec<(String, String)> = [
        (":authority", "tenant-a.ai.example.com"),
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-tenant-a-demo"),
        ("user-agent", "wrk"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b1c7f2e-7a7c-4c55-9a3e-5f2f3c1d2e4f"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .chain(std::iter::once((
        "content-length".to_string(),
        body.len().to_string(),
    )))
    .collect();
    let mut ex = Exchange::new(now);
    let head = RequestHead {
        headers: &headers,
        authority: "tenant-a.ai.example.com",
        path: "/v1/chat/completions",
        method: "POST",
        request_id: Some("0b1c7f2e-7a7c-4c55-9a3e-5f2f3c1d2e4f"),
        peer_uri_san: None,
        has_body: true,
    };
    let mut quota = QuotaState::default();
    let mut produced = 0usize;
    match ex.on_request_headers(cfg, &head) {
        HeadersAction::ReadBody { .. } => {}
        other => {
            eprintln!("unexpected headers action: {other:?}");
            return 0;
        }
    }
    match ex.on_request_body(cfg, body, true) {
        BodyAction::Continue(d) => {
            produced += d.new_body.map_or(0, |b| b.len()) + d.set_headers.len();
        }
        BodyAction::Deny(d) => {
            eprintln!("unexpected denial: {d:?}");
            return 0;
        }
    }
    if quota.reserve(cfg, &ex, store, now, Stage::Body).is_err() {
        eprintln!("quota refused");
        return 0;
    }
    produced += quota.response_headers().len();
    ex.on_forwarded(now);
    if stream {
        ex.on_response_headers(Some(200), Some("text/event-stream"), cfg);
        ex.on_response_chunk(&sse_response(), true, now + 1);
    } else {
        ex.on_response_headers(Some(200), Some("application/json"), cfg);
        ex.on_response_chunk(CHAT_RESPONSE, true, now + 1);
    }
    let end = End {
        now_ms: now + 2,
        status: Some(200),
        cluster: Some("chat-llama3-8b-v1"),
        upstream_address: Some("127.0.0.1:18001"),
    };
    let (gateway, audit) = ex.records(cfg, &end);
    let settled = quota.settle(&ex, store, end.now_ms, gateway.http_status, true);
    produced += to_json(&gateway).len() + to_json(&audit).len() + settled as usize;
    for obs in observations(&ex, &gateway, 1000) {
        produced += obs.name.len();
    }
    produced
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(config_path), Some(body_path), Some(kind), Some(iters)) =
        (args.get(1), args.get(2), args.get(3), args.get(4))
    else {
        eprintln!("usage: core-profile CONFIG.json BODY.json chat|stream ITERATIONS");
        return ExitCode::from(2);
    };
    let (Ok(config), Ok(body), Ok(iters)) = (
        std::fs::read(config_path),
        std::fs::read(body_path),
        iters.parse::<u64>(),
    ) else {
        eprintln!("cannot read the configuration or the body, or ITERATIONS is not a number");
        return ExitCode::from(2);
    };
    let cfg = match Config::parse(&config, &|_| None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let store = MemStore::default();
    let stream = kind == "stream";
    let mut total = 0usize;
    for i in 0..iters {
        let n = one_request(&cfg, &store, black_box(&body), stream, i);
        if n == 0 {
            return ExitCode::FAILURE;
        }
        total = total.wrapping_add(black_box(n));
    }
    println!("ok {iters} requests ({total})");
    ExitCode::SUCCESS
}
