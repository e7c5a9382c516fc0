#![allow(clippy::result_large_err)] // test helpers return the refusal as the core does
//! The quota step of a request, driven through the real `Exchange` (headers, body,
//! response) against the in-memory shared-data store with Envoy's semantics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use crate::lifecycle::exchange::{BodyAction, HeadersAction, RequestHead};
use crate::lifecycle::exchange::{End, ResponseHead};
use crate::quota::bucket::BucketState;
use crate::quota::{bucket_key, BucketKind};
use crate::testkit::stores::{BrokenStore, MemStore};

pub(crate) const PREFIX: &str = "ai-gateway-filter";
pub(crate) const HOST_A: &str = "tenant-a.ai.example.com";
pub(crate) const KEY_A: &str = "sk-tenant-a-demo";
pub(crate) const SHA_A: &str = "6ca02907df2f5fadb8026da4b8c2fa39ce44b71e131a02039d96bf4de4b91e61";
const HOST_B: &str = "tenant-b.ai.example.com";
const KEY_B: &str = "sk-tenant-b-demo";
const SHA_B: &str = "de827505af654561d6f104f27714f55808e170c322bf253692f7f3215c8575df";
/// `limits.default_completion_tokens` in these tests.
pub(crate) const DEFAULT_COMPLETION: u64 = 100;

fn env_none(_: &str) -> Option<String> {
    None
}

fn tenant(name: &str, host: &str, sha: &str, quota: Value) -> Value {
    json!({
        "name": name,
        "hosts": [host],
        "api_keys": [{"id": format!("svc:{name}"), "sha256": sha}],
        "quota": quota,
    })
}

pub(crate) fn config_with(tenants: Vec<Value>, extra: Value) -> Config {
    let mut v = json!({
        "routes": [
            {"prefix": "/v1/chat/completions", "api": "chat_completions", "traffic_class": "interactive"},
            {"prefix": "/v1/completions", "api": "completions", "traffic_class": "interactive"},
            {"prefix": "/v1/embeddings", "api": "embeddings", "traffic_class": "batch"},
            {"prefix": "/v1/models", "api": "none"}
        ],
        "models": [{"name": "llama3-8b"}, {"name": "bge-small"}],
        "tenants": tenants,
        "limits": {"default_completion_tokens": DEFAULT_COMPLETION},
    });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    Config::parse(v.to_string().as_bytes(), &env_none).unwrap()
}

/// tenant-a with `quota`, tenant-b unlimited.
fn config(quota: Value) -> Config {
    config_with(
        vec![
            tenant("tenant-a", HOST_A, SHA_A, quota),
            tenant("tenant-b", HOST_B, SHA_B, Value::Null),
        ],
        json!({}),
    )
}

fn key(kind: BucketKind) -> String {
    bucket_key(PREFIX, "tenant-a", kind, None)
}

/// Whole units in a bucket (None: never touched).
fn level(store: &MemStore, kind: BucketKind) -> Option<i64> {
    let raw = store.raw(&key(kind))?;
    Some(BucketState::decode(&raw).unwrap().level_milli / 1000)
}

/// A request through the exchange up to the point where the host reserves. Returns the
/// exchange and the stage the host would reserve at.
pub(crate) fn request_as(
    cfg: &Config,
    host: &str,
    api_key: &str,
    path: &str,
    body: Option<Value>,
) -> (Exchange, Stage) {
    let mut ex = Exchange::new(0);
    let headers = vec![("authorization".to_string(), format!("Bearer {api_key}"))];
    let method = if body.is_some() { "POST" } else { "GET" };
    let head = RequestHead {
        headers: &headers,
        authority: host,
        path,
        method,
        request_id: None,
        peer_uri_san: None,
        has_body: body.is_some(),
    };
    match ex.on_request_headers(cfg, &head) {
        HeadersAction::Deny(d) => panic!("denied at headers: {d:?}"),
        HeadersAction::Continue => {
            assert!(body.is_none(), "a body route must read the body");
            (ex, Stage::Headers)
        }
        HeadersAction::ReadBody { .. } => {
            let body = body.expect("body").to_string();
            match ex.on_request_body(cfg, body.as_bytes(), true, None) {
                BodyAction::Continue(_) => (ex, Stage::Body),
                BodyAction::Deny(d) => panic!("denied at body: {d:?}"),
            }
        }
    }
}

pub(crate) fn request(cfg: &Config, path: &str, body: Option<Value>) -> (Exchange, Stage) {
    request_as(cfg, HOST_A, KEY_A, path, body)
}

/// "hello gateway" is 13 characters: the prompt estimate is ceil(13 / 4) = 4 tokens.
pub(crate) const PROMPT_EST: u64 = 4;

pub(crate) fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "llama3-8b",
        "messages": [{"role": "user", "content": "hello gateway"}],
    });
    if let (Some(obj), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    body
}

/// `n` embedding inputs of 4 characters each: estimate exactly `n` tokens.
fn embeddings(n: usize) -> Value {
    json!({"model": "bge-small", "input": vec!["abcd"; n]})
}

fn reserve(
    q: &mut QuotaState,
    cfg: &Config,
    ex: &Exchange,
    store: &MemStore,
    stage: Stage,
) -> Result<(), Refusal> {
    q.reserve(cfg, ex, store, 1_000, stage)
}

pub(crate) fn respond_json(cfg: &Config, ex: &mut Exchange, status: u16, body: &Value) {
    ex.on_response_headers(
        &ResponseHead {
            status: Some(status),
            content_type: Some("application/json"),
            content_encoding: None,
        },
        cfg,
    );
    ex.on_response_chunk(body.to_string().as_bytes(), true, 5);
}

pub(crate) fn usage_body(prompt: u64, completion: u64) -> Value {
    json!({
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    })
}

pub(crate) fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

fn limited() -> Value {
    json!({
        "requests_per_minute": 60, "request_burst": 10,
        "tokens_per_minute": 600, "token_burst": 1000,
    })
}

// --- token estimate -------------------------------------------------------------------

#[test]
fn estimate_is_prompt_plus_max_tokens() {
    let cfg = config(limited());
    let (ex, _) = request(
        &cfg,
        "/v1/chat/completions",
        Some(chat(json!({"max_tokens": 50}))),
    );
    assert_eq!(ex.estimated_prompt_tokens, Some(PROMPT_EST));
    assert_eq!(estimated_tokens(&cfg, &ex), PROMPT_EST + 50);
}

#[test]
fn estimate_prefers_max_completion_tokens() {
    let cfg = config(limited());
    let body = chat(json!({"max_tokens": 50, "max_completion_tokens": 70}));
    let (ex, _) = request(&cfg, "/v1/chat/completions", Some(body));
    assert_eq!(estimated_tokens(&cfg, &ex), PROMPT_EST + 70);
}

#[test]
fn estimate_without_limit_uses_configured_default() {
    let cfg = config(limited());
    let (ex, _) = request(&cfg, "/v1/chat/completions", Some(chat(json!({}))));
    assert_eq!(estimated_tokens(&cfg, &ex), PROMPT_EST + DEFAULT_COMPLETION);
}

#[test]
fn estimate_covers_every_choice() {
    let cfg = config(limited());
    let body = chat(json!({"max_tokens": 10, "n": 3}));
    let (ex, _) = request(&cfg, "/v1/chat/completions", Some(body));
    assert_eq!(estimated_tokens(&cfg, &ex), PROMPT_EST + 30);
    let (ex, _) = request(&cfg, "/v1/chat/completions", Some(chat(json!({"n": 2}))));
    assert_eq!(
        estimated_tokens(&cfg, &ex),
        PROMPT_EST + 2 * DEFAULT_COMPLETION
    );
}

/// A completions body with four 4-character prompts (1 token each).
fn four_prompts(extra: Value) -> Value {
    let mut body = json!({"model": "llama3-8b", "prompt": ["abcd", "efgh", "ijkl", "mnop"]});
    if let (Some(obj), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    body
}

#[test]
fn estimate_covers_every_prompt_and_best_of_candidate() {
    let cfg = config(limited());
    let path = "/v1/completions";
    let (ex, _) = request(&cfg, path, Some(four_prompts(json!({"max_tokens": 10}))));
    assert_eq!(estimated_tokens(&cfg, &ex), 4 + 4 * 10);
    // Each prompt gets max(n, best_of) = 3 candidates, all generated and billed.
    let body = four_prompts(json!({"max_tokens": 10, "n": 2, "best_of": 3}));
    let (ex, _) = request(&cfg, path, Some(body));
    assert_eq!(estimated_tokens(&cfg, &ex), 4 + 4 * 3 * 10);
    let (ex, _) = request(&cfg, path, Some(four_prompts(json!({"best_of": 2}))));
    assert_eq!(estimated_tokens(&cfg, &ex), 4 + 4 * 2 * DEFAULT_COMPLETION);
    // One tokenized prompt is one prompt.
    let body = json!({"model": "llama3-8b", "prompt": [1, 2, 3, 4, 5], "max_tokens": 10, "n": 2});
    let (ex, _) = request(&cfg, path, Some(body));
    assert_eq!(estimated_tokens(&cfg, &ex), 5 + 2 * 10);
}

#[test]
fn the_true_upper_bound_is_refused_outright_when_over_the_burst() {
    let cfg = config(limited()); // token burst 1000
    let store = MemStore::new();
    let path = "/v1/completions";
    // 4 + 4 x 3 x 50 = 604 fits; one prompt with the same limit would cost 4 + 150.
    let fits = four_prompts(json!({"max_tokens": 50, "n": 2, "best_of": 3}));
    try_one(&cfg, &store, path, fits).unwrap();
    // 4 + 4 x 3 x 90 = 1084 can never fit: 400, not a 429.
    let body = four_prompts(json!({"max_tokens": 90, "n": 2, "best_of": 3}));
    let (d, headers) = try_one(&cfg, &store, path, body).unwrap_err();
    assert_eq!((d.status, d.reason), (400, "quota_tokens"));
    assert_eq!(d.code, Some("quota_exceeds_burst"));
    assert!(
        d.message.contains("1084") && d.message.contains("1000"),
        "{}",
        d.message
    );
    assert!(header(&headers, "x-ratelimit-limit-tokens").is_some());
}

#[test]
fn tool_definitions_and_images_are_reserved() {
    let cfg = config(limited());
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "description": "x".repeat(1_000), "parameters": {"type": "object"}}}]);
    let chars = tools.to_string().len() as u64;
    let (ex, _) = request(
        &cfg,
        "/v1/chat/completions",
        Some(chat(json!({"max_tokens": 50, "tools": tools}))),
    );
    assert_eq!(
        estimated_tokens(&cfg, &ex),
        PROMPT_EST + chars.div_ceil(4) + 50
    );
    let image = json!([{"role": "user", "content": [
        {"type": "text", "text": "hello gateway"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]);
    let (ex, _) = request(
        &cfg,
        "/v1/chat/completions",
        Some(chat(json!({"max_tokens": 50, "messages": image}))),
    );
    assert_eq!(estimated_tokens(&cfg, &ex), PROMPT_EST + 1445 + 50);
}

#[test]
fn embeddings_reserve_no_completion() {
    let cfg = config(limited());
    let (ex, _) = request(&cfg, "/v1/embeddings", Some(embeddings(7)));
    assert_eq!(estimated_tokens(&cfg, &ex), 7);
}

// --- stage choice ---------------------------------------------------------------------

#[test]
fn bodyless_route_reserves_at_headers_one_request_no_tokens() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, stage) = request(&cfg, "/v1/models", None);
    assert_eq!(stage, Stage::Headers);
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap();
    assert_eq!(level(&store, BucketKind::Requests), Some(9));
    // The token bucket is only read (created on first use, never charged).
    assert_eq!(level(&store, BucketKind::Tokens), Some(1000));
    let h = q.response_headers();
    assert_eq!(header(h, "x-ratelimit-remaining-requests"), Some("9"));
    assert_eq!(header(h, "x-ratelimit-remaining-tokens"), Some("1000"));
    // Nothing to settle: no usage, nothing reserved.
    let trips = q.round_trips;
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 2_000, Some(200), true),
        0
    );
    assert_eq!(q.round_trips, trips);
}

#[test]
fn body_route_reserves_the_estimate_after_the_body() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (ex, stage) = request(
        &cfg,
        "/v1/chat/completions",
        Some(chat(json!({"max_tokens": 50}))),
    );
    assert_eq!(stage, Stage::Body);
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap();
    assert_eq!(level(&store, BucketKind::Requests), Some(9));
    assert_eq!(level(&store, BucketKind::Tokens), Some(1000 - 54));
    let h = q.response_headers();
    // The limit is what a full bucket holds (the burst), so remaining <= limit.
    assert_eq!(header(h, "x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(header(h, "x-ratelimit-remaining-tokens"), Some("946"));
    assert_eq!(header(h, "x-ratelimit-limit-tokens"), Some("1000"));
    assert!(header(h, "x-ratelimit-reset-tokens").is_some());
    assert!(
        header(h, "retry-after").is_none(),
        "only refusals carry retry-after"
    );
}

#[test]
fn reserve_happens_once_per_request() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (ex, stage) = request(
        &cfg,
        "/v1/chat/completions",
        Some(chat(json!({"max_tokens": 50}))),
    );
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap();
    let trips = store.trips();
    // A second call (any stage) is a no-op: no double charge, no store traffic.
    reserve(&mut q, &cfg, &ex, &store, Stage::Headers).unwrap();
    reserve(&mut q, &cfg, &ex, &store, Stage::Body).unwrap();
    assert_eq!(store.trips(), trips);
    assert_eq!(level(&store, BucketKind::Requests), Some(9));
    assert_eq!(level(&store, BucketKind::Tokens), Some(946));
}

#[test]
fn tenant_without_quota_costs_nothing() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (ex, stage) = request_as(
        &cfg,
        HOST_B,
        KEY_B,
        "/v1/chat/completions",
        Some(chat(json!({}))),
    );
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap();
    assert!(q.response_headers().is_empty());
    assert_eq!(store.trips(), 0);
    assert_eq!(q.round_trips, 0);
}

#[test]
fn unauthenticated_exchange_is_not_charged() {
    let cfg = config(limited());
    let store = MemStore::new();
    let ex = Exchange::new(0);
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, Stage::Headers).unwrap();
    assert_eq!(store.trips(), 0);
}

// --- traffic classes ------------------------------------------------------------------

fn reserved_quota() -> Value {
    json!({
        "requests_per_minute": 600, "request_burst": 100,
        "tokens_per_minute": 0.001, "token_burst": 100,
        "interactive_reserve": 0.5,
    })
}

fn try_one(cfg: &Config, store: &MemStore, path: &str, body: Value) -> Result<(), Refusal> {
    let (ex, stage) = request(cfg, path, Some(body));
    QuotaState::default().reserve(cfg, &ex, store, 1_000, stage)
}

#[test]
fn batch_cannot_take_the_interactive_share() {
    let cfg = config(reserved_quota());
    let store = MemStore::new();
    // Embeddings (batch route): 3 x 15 fit above the floor of 50; the 4th would dip below.
    for _ in 0..3 {
        try_one(&cfg, &store, "/v1/embeddings", embeddings(15)).unwrap();
    }
    let (d, h) = try_one(&cfg, &store, "/v1/embeddings", embeddings(15)).unwrap_err();
    assert_eq!((d.status, d.reason), (429, "quota_tokens"));
    // As seen by the batch class: it may hold 50 of the 100, and 55 - 50 are left.
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), Some("50"));
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), Some("5"));
    // Chat (interactive) may use the reserve.
    try_one(
        &cfg,
        &store,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 46})),
    )
    .unwrap();
    assert_eq!(level(&store, BucketKind::Tokens), Some(5));
}

#[test]
fn streaming_chat_is_interactive_tool_calls_are_not() {
    let cfg = config(reserved_quota());
    let store = MemStore::new();
    // Drain to exactly the floor with batch traffic.
    for _ in 0..5 {
        try_one(&cfg, &store, "/v1/embeddings", embeddings(10)).unwrap();
    }
    assert_eq!(level(&store, BucketKind::Tokens), Some(50));
    // Tool-calling agents are not latency-class: they may not dip into the reserve.
    let tools = chat(json!({"max_tokens": 6, "tools": [{"type": "function",
        "function": {"name": "f", "parameters": {}}}]}));
    let (d, _) = try_one(&cfg, &store, "/v1/chat/completions", tools).unwrap_err();
    assert_eq!(d.reason, "quota_tokens");
    // A stream is interactive.
    try_one(
        &cfg,
        &store,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 6, "stream": true})),
    )
    .unwrap();
    assert_eq!(level(&store, BucketKind::Tokens), Some(40));
}

#[test]
fn batch_request_larger_than_its_share_is_refused_outright() {
    let cfg = config(reserved_quota());
    let store = MemStore::new();
    // 60 > the 50 batch may ever hold: a 400, not a 429 to retry forever.
    let (d, _) = try_one(&cfg, &store, "/v1/embeddings", embeddings(60)).unwrap_err();
    assert_eq!((d.status, d.reason), (400, "quota_tokens"));
    assert_eq!(d.code, Some("quota_exceeds_burst"));
    assert!(
        d.message.contains("60") && d.message.contains("50"),
        "{}",
        d.message
    );
    // The same cost as interactive traffic fits.
    try_one(
        &cfg,
        &store,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 56})),
    )
    .unwrap();
}

// --- refusals -------------------------------------------------------------------------

#[test]
fn request_bucket_refusal_is_a_429_with_retry_after() {
    // 60/min: one request per second.
    let cfg = config(json!({"requests_per_minute": 60, "request_burst": 2}));
    let store = MemStore::new();
    let (mut ex, stage) = request(&cfg, "/v1/models", None);
    for _ in 0..2 {
        QuotaState::default()
            .reserve(&cfg, &ex, &store, 1_000, stage)
            .unwrap();
    }
    let mut q = QuotaState::default();
    let (d, h) = q.reserve(&cfg, &ex, &store, 1_250, stage).unwrap_err();
    assert_eq!(d.status, 429);
    assert_eq!(d.reason, "quota_requests");
    assert_eq!(d.error_type, "requests");
    assert_eq!(d.code, Some("rate_limit_exceeded"));
    assert!(
        d.message.contains("requests") && d.message.contains("tenant-a"),
        "{}",
        d.message
    );
    let body: Value = serde_json::from_str(&d.body()).unwrap();
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // 250 ms of the 1000 ms per request already elapsed.
    assert_eq!(header(&h, "retry-after-ms"), Some("750"));
    assert_eq!(header(&h, "retry-after"), Some("1"));
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), Some("2"));
    // A refused request holds no reservation: settling it touches nothing.
    let trips = store.trips();
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 2_000, Some(429), false),
        0
    );
    assert_eq!(store.trips(), trips);
}

#[test]
fn token_bucket_refusal_names_tokens_and_refunds_the_request() {
    let cfg = config(limited());
    let store = MemStore::new();
    try_one(
        &cfg,
        &store,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 896})),
    )
    .unwrap();
    assert_eq!(level(&store, BucketKind::Tokens), Some(100));
    let (d, h) = try_one(
        &cfg,
        &store,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 100})),
    )
    .unwrap_err();
    assert_eq!((d.status, d.reason), (429, "quota_tokens"));
    assert!(d.message.contains("tokens"), "{}", d.message);
    // 104 tokens needed, 100 there, 10 per second: 400 ms.
    assert_eq!(header(&h, "retry-after-ms"), Some("400"));
    assert_eq!(header(&h, "retry-after"), Some("1"));
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), Some("100"));
    // The request bucket got its unit back: all-or-nothing.
    assert_eq!(level(&store, BucketKind::Requests), Some(9));
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), Some("9"));
}

#[test]
fn store_failure_fails_open_by_default_and_closed_on_request() {
    let broken = BrokenStore {
        gets_work: false,
        calls: AtomicU32::new(0),
    };
    let cfg = config(limited());
    let (ex, stage) = request(&cfg, "/v1/chat/completions", Some(chat(json!({}))));
    let mut q = QuotaState::default();
    q.reserve(&cfg, &ex, &broken, 1_000, stage).unwrap();
    assert!(q.degraded);

    let closed = config_with(
        vec![tenant("tenant-a", HOST_A, SHA_A, limited())],
        json!({"quota_failure_mode": "closed"}),
    );
    let (ex, stage) = request(&closed, "/v1/chat/completions", Some(chat(json!({}))));
    let mut q = QuotaState::default();
    let (d, h) = q.reserve(&closed, &ex, &broken, 1_000, stage).unwrap_err();
    assert_eq!((d.status, d.reason), (503, "quota_unavailable"));
    assert!(h.is_empty());
    assert!(q.degraded);
    assert!(broken.calls.load(Ordering::SeqCst) > 0);
}

// --- settle ---------------------------------------------------------------------------

/// Reserves a chat request with `max_tokens` (estimate PROMPT_EST + max_tokens).
fn reserved_chat(cfg: &Config, store: &MemStore, body: Value) -> (Exchange, QuotaState) {
    let (ex, stage) = request(cfg, "/v1/chat/completions", Some(body));
    let mut q = QuotaState::default();
    reserve(&mut q, cfg, &ex, store, stage).unwrap();
    (ex, q)
}

#[test]
fn settle_charges_real_usage() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(&cfg, &store, chat(json!({"max_tokens": 96})));
    assert_eq!(level(&store, BucketKind::Tokens), Some(900));
    respond_json(&cfg, &mut ex, 200, &usage_body(3, 37));
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        40
    );
    // 60 of the 100 reserved came back.
    assert_eq!(level(&store, BucketKind::Tokens), Some(960));
    // Requests are never refunded: the request happened.
    assert_eq!(level(&store, BucketKind::Requests), Some(9));
}

#[test]
fn settle_under_reservation_leaves_debt_that_later_requests_wait_out() {
    let cfg = config(json!({"tokens_per_minute": 600, "token_burst": 100}));
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(&cfg, &store, chat(json!({"max_tokens": 16})));
    respond_json(&cfg, &mut ex, 200, &usage_body(100, 150));
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        250
    );
    assert_eq!(level(&store, BucketKind::Tokens), Some(-150));
    let (d, h) = try_one(
        &cfg,
        &store,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 6})),
    )
    .unwrap_err();
    assert_eq!(d.reason, "quota_tokens");
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), Some("0"));
    // (150 debt + 10 needed) at 10 tokens/s.
    assert_eq!(header(&h, "retry-after-ms"), Some("16000"));
    assert_eq!(header(&h, "retry-after"), Some("16"));
}

#[test]
fn failed_upstream_refunds_everything() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(&cfg, &store, chat(json!({"max_tokens": 96})));
    let err = json!({"error": {"message": "down", "type": "server_error", "code": "backend_unavailable"}});
    respond_json(&cfg, &mut ex, 503, &err);
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(503), true),
        0
    );
    assert_eq!(level(&store, BucketKind::Tokens), Some(1000));
}

#[test]
fn upstream_client_error_without_usage_refunds_everything() {
    // The backend refused the request (e.g. its own 400 or 429): nothing was generated.
    for status in [400, 429] {
        let cfg = config(limited());
        let store = MemStore::new();
        let (mut ex, mut q) = reserved_chat(&cfg, &store, chat(json!({"max_tokens": 96})));
        let err = json!({"error": {"message": "no", "type": "invalid_request_error", "code": "x"}});
        respond_json(&cfg, &mut ex, status, &err);
        assert_eq!(
            settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(status), true),
            0
        );
        assert_eq!(level(&store, BucketKind::Tokens), Some(1000));
    }
}

#[test]
fn upstream_never_reached_refunds_everything() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(&cfg, &store, chat(json!({"max_tokens": 96})));
    // No cluster / no response (e.g. connect failure or no route): not served.
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, None, false),
        0
    );
    assert_eq!(level(&store, BucketKind::Tokens), Some(1000));
}

fn sse_event(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": content}}]})
    )
}

#[test]
fn client_abort_mid_stream_charges_the_estimated_usage() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(
        &cfg,
        &store,
        chat(json!({"max_tokens": 96, "stream": true})),
    );
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("text/event-stream"),
            content_encoding: None,
        },
        &cfg,
    );
    // 8 characters of content streamed (estimate ceil(8/4) = 2), then the client left.
    ex.on_response_chunk(sse_event("abcd").as_bytes(), false, 3);
    ex.on_response_chunk(sse_event("efgh").as_bytes(), false, 4);
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        PROMPT_EST + 2
    );
    assert_eq!(level(&store, BucketKind::Tokens), Some(1000 - 6));
}

#[test]
fn stream_settles_on_the_final_usage_chunk() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(
        &cfg,
        &store,
        chat(json!({"max_tokens": 96, "stream": true})),
    );
    ex.on_response_headers(
        &ResponseHead {
            status: Some(200),
            content_type: Some("text/event-stream"),
            content_encoding: None,
        },
        &cfg,
    );
    ex.on_response_chunk(sse_event("abcd").as_bytes(), false, 3);
    let usage = json!({"object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}});
    ex.on_response_chunk(
        format!("data: {usage}\n\ndata: [DONE]\n\n").as_bytes(),
        true,
        5,
    );
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        3
    );
    assert_eq!(level(&store, BucketKind::Tokens), Some(997));
}

#[test]
fn settle_runs_once() {
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, mut q) = reserved_chat(&cfg, &store, chat(json!({"max_tokens": 96})));
    respond_json(&cfg, &mut ex, 200, &usage_body(3, 37));
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        40
    );
    let trips = store.trips();
    // A second settle reports the same count but changes nothing.
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        40
    );
    assert_eq!(store.trips(), trips);
    assert_eq!(level(&store, BucketKind::Tokens), Some(960));
}

#[test]
fn tokens_total_counts_for_unlimited_tenants_too() {
    // The global rate limit composition reads wasm.ai.tokens_total for every tenant.
    let cfg = config(limited());
    let store = MemStore::new();
    let (mut ex, stage) = request_as(
        &cfg,
        HOST_B,
        KEY_B,
        "/v1/chat/completions",
        Some(chat(json!({}))),
    );
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap();
    respond_json(&cfg, &mut ex, 200, &usage_body(5, 16));
    assert_eq!(
        settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true),
        21
    );
    assert_eq!(store.trips(), 0);
}

// --- configuration reload -------------------------------------------------------------

#[test]
fn new_configuration_keeps_buckets_and_applies_new_limits_next_decision() {
    let store = MemStore::new();
    let v1 = config(json!({"requests_per_minute": 0.001, "request_burst": 5}));
    for _ in 0..3 {
        let (ex, stage) = request(&v1, "/v1/models", None);
        QuotaState::default()
            .reserve(&v1, &ex, &store, 1_000, stage)
            .unwrap();
    }
    assert_eq!(level(&store, BucketKind::Requests), Some(2));

    // Push: larger burst, different rate, tenants in another order (buckets are keyed by
    // tenant name, not position). The stored level (2) is kept, not reset to the new 10.
    let v2 = config_with(
        vec![
            tenant("tenant-b", HOST_B, SHA_B, Value::Null),
            tenant(
                "tenant-a",
                HOST_A,
                SHA_A,
                json!({"requests_per_minute": 120, "request_burst": 10}),
            ),
        ],
        json!({}),
    );
    let (ex, stage) = request(&v2, "/v1/models", None);
    let mut q = QuotaState::default();
    q.reserve(&v2, &ex, &store, 1_000, stage).unwrap();
    let h = q.response_headers();
    assert_eq!(header(h, "x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(
        header(h, "x-ratelimit-limit-requests"),
        Some("10"),
        "new limit applies"
    );
    // The new rate refills from here: 2 per second.
    let (ex, stage) = request(&v2, "/v1/models", None);
    let mut q = QuotaState::default();
    q.reserve(&v2, &ex, &store, 2_000, stage).unwrap();
    assert_eq!(
        header(q.response_headers(), "x-ratelimit-remaining-requests"),
        Some("2")
    );

    // Push: smaller burst clamps the stored level down from the next decision.
    let v3 = config(json!({"requests_per_minute": 0.001, "request_burst": 1}));
    let (ex, stage) = request(&v3, "/v1/models", None);
    let mut q = QuotaState::default();
    q.reserve(&v3, &ex, &store, 2_000, stage).unwrap();
    assert_eq!(
        header(q.response_headers(), "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let (ex, stage) = request(&v3, "/v1/models", None);
    let (d, _) = QuotaState::default()
        .reserve(&v3, &ex, &store, 2_000, stage)
        .unwrap_err();
    assert_eq!(d.reason, "quota_requests");
}

#[test]
fn removing_the_quota_stops_charging_and_restoring_it_finds_the_old_bucket() {
    let store = MemStore::new();
    let limited_cfg = config(json!({"requests_per_minute": 0.001, "request_burst": 3}));
    let (ex, stage) = request(&limited_cfg, "/v1/models", None);
    QuotaState::default()
        .reserve(&limited_cfg, &ex, &store, 1_000, stage)
        .unwrap();
    let unlimited = config(Value::Null);
    let (ex, stage) = request(&unlimited, "/v1/models", None);
    QuotaState::default()
        .reserve(&unlimited, &ex, &store, 1_000, stage)
        .unwrap();
    assert_eq!(level(&store, BucketKind::Requests), Some(2));
    let (ex, stage) = request(&limited_cfg, "/v1/models", None);
    QuotaState::default()
        .reserve(&limited_cfg, &ex, &store, 1_000, stage)
        .unwrap();
    assert_eq!(level(&store, BucketKind::Requests), Some(1));
}

// --- cost of a decision (shared-data round trips) -------------------------------------

#[test]
fn round_trips_per_request() {
    let cfg = config(limited());
    let store = MemStore::new();
    let body = || chat(json!({"max_tokens": 96}));

    // First request ever: both keys are created (+2 each), then get+set each; the settle
    // (usage differs from the estimate) is one get+set on the token bucket.
    let (mut ex, mut q) = reserved_chat(&cfg, &store, body());
    assert_eq!(q.round_trips, 8);
    respond_json(&cfg, &mut ex, 200, &usage_body(3, 37));
    settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true);
    assert_eq!(q.round_trips, 10);

    // Steady state: 4 to reserve, 2 to settle.
    let (mut ex, mut q) = reserved_chat(&cfg, &store, body());
    assert_eq!(q.round_trips, 4);
    respond_json(&cfg, &mut ex, 200, &usage_body(3, 37));
    settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true);
    assert_eq!(q.round_trips, 6);

    // Usage equal to the estimate: nothing to settle.
    let (mut ex, mut q) = reserved_chat(&cfg, &store, body());
    respond_json(&cfg, &mut ex, 200, &usage_body(4, 96));
    settle_as(&mut q, &cfg, &mut ex, &store, 1_000, Some(200), true);
    assert_eq!(q.round_trips, 4);

    // Body-less request: get+set on requests, one get on tokens.
    let (ex, stage) = request(&cfg, "/v1/models", None);
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap();
    assert_eq!(q.round_trips, 3);

    // Refused by the token bucket: requests get+set, tokens get, refund get+set.
    let (ex, stage) = request(
        &cfg,
        "/v1/chat/completions",
        Some(chat(json!({"max_tokens": 990}))),
    );
    let mut q = QuotaState::default();
    reserve(&mut q, &cfg, &ex, &store, stage).unwrap_err();
    assert_eq!(q.round_trips, 5);

    // Refused by the request bucket: one get, plus one get to read the token bucket the
    // request never reached, so the 429 carries the token headers too.
    let cfg1 = config(json!({"requests_per_minute": 0.001, "request_burst": 1,
                             "tokens_per_minute": 600, "token_burst": 1000}));
    let store1 = MemStore::new();
    try_one(&cfg1, &store1, "/v1/chat/completions", body()).unwrap();
    let (ex, stage) = request(&cfg1, "/v1/chat/completions", Some(body()));
    let mut q = QuotaState::default();
    let (d, h) = reserve(&mut q, &cfg1, &ex, &store1, stage).unwrap_err();
    assert_eq!(d.reason, "quota_requests");
    assert_eq!(q.round_trips, 2);
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), Some("900"));
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), Some("1000"));
}

/// Four threads (as Envoy's four workers) race for one tenant's buckets through one
/// shared store: exactly the burst is granted, and the CAS retries this costs are counted.
#[test]
fn four_workers_racing_grant_exactly_the_burst() {
    const WORKERS: usize = 4;
    const PER_WORKER: usize = 250;
    const BURST: usize = 613;
    let cfg = Arc::new(config(json!({
        "requests_per_minute": 0.001, "request_burst": BURST,
        "tokens_per_minute": 0.001, "token_burst": 1_000_000,
    })));
    let store = Arc::new(MemStore::new());
    let barrier = Arc::new(std::sync::Barrier::new(WORKERS));
    let handles: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (cfg, store, barrier) = (cfg.clone(), store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut granted = 0;
                let mut trips = 0u64;
                for _ in 0..PER_WORKER {
                    let (ex, stage) = request(
                        &cfg,
                        "/v1/chat/completions",
                        Some(chat(json!({"max_tokens": 6}))),
                    );
                    let mut q = QuotaState::default();
                    if q.reserve(&cfg, &ex, &*store, 1_000, stage).is_ok() {
                        granted += 1;
                    }
                    trips += u64::from(q.round_trips);
                }
                (granted, trips)
            })
        })
        .collect();
    let (granted, trips) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(g, t), (g1, t1)| (g + g1, t + t1));
    assert_eq!(granted, BURST);
    assert_eq!(level(&store, BucketKind::Requests), Some(0));
    assert_eq!(
        level(&store, BucketKind::Tokens),
        Some(1_000_000 - 10 * BURST as i64)
    );
    // Uncontended: granted 4 each (+4 creations), refused 1 each. Anything above is CAS
    // retries (2 per retry).
    let total = (WORKERS * PER_WORKER) as u64;
    let uncontended = 4 * BURST as u64 + 4 + (total - BURST as u64);
    assert!(trips >= uncontended);
    eprintln!(
        "four_workers_racing: {total} decisions, {trips} round trips ({:.2}/decision), \
         {} CAS retries",
        trips as f64 / total as f64,
        (trips - uncontended) / 2
    );
}

/// Settle as `on_log` does: `served` = forwarded and answered by a backend.
pub(crate) fn settle_as(
    q: &mut QuotaState,
    cfg: &Config,
    ex: &mut Exchange,
    store: &dyn SharedStore,
    now_ms: u64,
    status: Option<u16>,
    served: bool,
) -> u64 {
    if served {
        ex.on_forwarded(0);
    }
    let end = End {
        now_ms,
        status,
        cluster: served.then_some("chat"),
        upstream_address: None,
        code_details: served.then_some("via_upstream"),
    };
    let billed = ex.billable(cfg, &end).map(|(u, _)| u);
    q.settle(cfg, store, billed.as_ref(), now_ms)
}
