//! Cost of the filter's core per request, by body size.
//!
//! - `request/parse_fingerprint`: parse a chat body (model, flags, prompt pieces) and
//!   compute the salted prompt fingerprint: what every chat request pays.
//! - `request/exchange`: the whole body decision in `Exchange` (parse, fingerprint, model
//!   allowlist, classification, headers) for a streaming request, which also rewrites the
//!   body to add `stream_options.include_usage`: the most expensive path.
//! - `response/sse`: observing a streamed response in 1 KiB frames (TTFT, usage, content
//!   characters for estimation).
//! - `response/json_usage`: finding `usage` in a non-streamed response in 16 KiB frames.
//!
//! Each is measured at 1 KiB, 64 KiB and 1 MiB with `Throughput::Bytes`, so a constant
//! MiB/s across sizes shows the cost is linear in the size.
//!
//! Run: `cargo bench -p ai-gateway-filter --bench openai` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use ai_gateway_core::config::Config;
use ai_gateway_core::lifecycle::exchange::{BodyAction, Exchange, HeadersAction, RequestHead};
use ai_gateway_core::openai::{parse_request, Api, JsonUsageScanner, SseScanner};
use ai_gateway_core::redact::prompt_fingerprint;

const SIZES: [(&str, usize); 3] = [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)];
const SALT: &[u8] = b"benchmark-salt-0123456789";
const KEY: &str = "sk-bench-key";

/// Varied prose so normalization has work to do (double spaces, newlines, unicode).
const PROSE: &str = "The gateway  reads the model from the body, then routes;\n\
    it never logs the prompt. Ünïcödé text, numbers 12345 and e-mail-like bits: a@b.c. ";

/// A chat body of about `size` bytes: a system message and user/assistant turns.
fn chat_body(size: usize, stream: bool) -> Vec<u8> {
    let mut messages = vec![serde_json::json!({"role": "system", "content": "You are terse."})];
    let mut len = 120;
    let mut turn = 0usize;
    while len < size {
        let want = (size - len).min(2048);
        let mut text = String::with_capacity(want + PROSE.len());
        while text.len() < want.saturating_sub(40) {
            text.push_str(PROSE);
        }
        len += text.len() + 40;
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": text}));
        turn += 1;
    }
    let body = serde_json::json!({
        "model": "llama3-8b",
        "stream": stream,
        "max_tokens": 256,
        "temperature": 0.2,
        "messages": messages,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A streamed chat response of about `size` bytes, ending with usage and `[DONE]`.
fn sse_body(size: usize) -> Vec<u8> {
    let mut out = String::with_capacity(size + 512);
    let mut i = 0u64;
    while out.len() < size {
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\
             \"model\":\"llama3-8b\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\
             \"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
        i += 1;
    }
    out.push_str(
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\
         \"completion_tokens\":34,\"total_tokens\":46}}\n\ndata: [DONE]\n\n",
    );
    out.into_bytes()
}

/// A non-streamed chat response of about `size` bytes, `usage` last (as OpenAI sends it).
fn json_response(size: usize) -> Vec<u8> {
    let content: String = PROSE
        .chars()
        .cycle()
        .take(size.saturating_sub(300))
        .collect();
    let body = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "llama3-8b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn config() -> Config {
    let key_hex: String = ai_gateway_core::config::digest::sha256(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let spec = serde_json::json!({
        "models": [{"name": "llama3-8b", "input_usd_per_million": 0.2, "output_usd_per_million": 0.6}],
        "tenants": [{"name": "t", "api_keys": [{"id": "svc", "sha256": key_hex}],
                     "models": ["llama3-8b"]}],
        "limits": {"max_request_body_bytes": 4 << 20},
        "redaction": {"fingerprint_salt": String::from_utf8_lossy(SALT)},
    });
    match Config::parse(spec.to_string().as_bytes(), &|_| None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("benchmark configuration is invalid: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_and_fingerprint(body: &[u8]) -> Option<String> {
    let parsed = parse_request(Api::ChatCompletions, body).ok()?;
    Some(prompt_fingerprint(SALT, parsed.normalized_pieces()))
}

fn exchange_body(cfg: &Config, headers: &[(String, String)], body: &[u8]) -> bool {
    let mut ex = Exchange::new(0);
    let head = RequestHead {
        headers,
        authority: "gw.example.com",
        path: "/v1/chat/completions",
        method: "POST",
        request_id: None,
        peer_uri_san: None,
        has_body: true,
    };
    if !matches!(
        ex.on_request_headers(cfg, &head),
        HeadersAction::ReadBody { .. }
    ) {
        return false;
    }
    matches!(
        ex.on_request_body(cfg, body, true, None),
        BodyAction::Continue(d) if d.new_body.is_some()
    )
}

fn request(c: &mut Criterion) {
    let cfg = config();
    let headers = vec![("authorization".to_string(), format!("Bearer {KEY}"))];
    let mut g = c.benchmark_group("request");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(30);
    for (name, size) in SIZES {
        let plain = chat_body(size, false);
        if parse_and_fingerprint(&plain).is_none() {
            eprintln!("body of {name} does not parse");
            std::process::exit(1);
        }
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_fingerprint", name),
            &plain,
            |b, body| b.iter(|| parse_and_fingerprint(black_box(body))),
        );
        let stream = chat_body(size, true);
        if !exchange_body(&cfg, &headers, &stream) {
            eprintln!("the exchange refused the {name} body");
            std::process::exit(1);
        }
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_with_input(BenchmarkId::new("exchange", name), &stream, |b, body| {
            b.iter(|| exchange_body(&cfg, &headers, black_box(body)))
        });
    }
    g.finish();
}

fn response(c: &mut Criterion) {
    let mut g = c.benchmark_group("response");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(30);
    for (name, size) in SIZES {
        let sse = sse_body(size);
        g.throughput(Throughput::Bytes(sse.len() as u64));
        g.bench_with_input(BenchmarkId::new("sse", name), &sse, |b, body| {
            b.iter(|| {
                let mut s = SseScanner::new(64 * 1024);
                for chunk in body.chunks(1024) {
                    s.feed(black_box(chunk));
                }
                s.finish();
                s.summary().usage.map(|u| u.total_tokens)
            })
        });
        let json = json_response(size);
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_with_input(BenchmarkId::new("json_usage", name), &json, |b, body| {
            b.iter(|| {
                let mut s = JsonUsageScanner::new(4096);
                for chunk in body.chunks(16 * 1024) {
                    s.feed(black_box(chunk));
                }
                s.usage().map(|u| u.total_tokens)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, request, response);
criterion_main!(benches);
