//! Cost of the core's non-parsing hot paths, per request. The OpenAI
//! body, SSE and usage parsers are in `benches/openai.rs`.
//!
//! - `identify/*`: resolving the caller from `Authorization: Bearer`: SHA-256 of the
//!   presented key and a lookup among 2 or 100,000 configured key digests (a valid key,
//!   an unknown key, and two headers carrying the same key).
//! - `quota/try_take`: the token-bucket arithmetic alone (refill, take) on one bucket.
//! - `quota/reserve_settle`: what a chat request costs the quota code: reserve against 2
//!   or 4 buckets (tenant and per-model, requests and tokens) in an in-memory store with
//!   Proxy-Wasm shared-data semantics (CAS), then settle against real usage.
//! - `redact/preview`: a redacted, truncated prompt preview (256 characters) of a prompt
//!   full of secrets (e-mails, keys, a JWT, card and phone numbers, IPs), at 1 KiB and
//!   64 KiB (only a bounded window is scanned, so the cost should not grow with size).
//! - `redact/fingerprint`: the salted prompt fingerprint (HMAC-SHA-256) at 1 KiB, 64 KiB
//!   and 1 MiB, with `Throughput::Bytes` (constant MiB/s = linear cost).
//!
//! Run: `cargo bench -p ai-gateway-filter --bench core_hot_paths` (`-- --quick` for a
//! short run).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use ai_gateway_core::config::digest::sha256;
use ai_gateway_core::config::Config;
use ai_gateway_core::config::{FailureMode, TrafficClass};
use ai_gateway_core::identity::identify;
use ai_gateway_core::quota::{
    reserve, settle, try_take, BucketState, Limit, QuotaConfig, QuotaRequest,
};
use ai_gateway_core::redact::{prompt_fingerprint, redacted_preview, RedactionConfig, Redactor};
use ai_gateway_core::testkit::stores::MemStore;

const SALT: &[u8] = b"benchmark-salt-0123456789";
const NOW: u64 = 1_700_000_000_000;

/// A benchmark input that cannot be built is a bug in the benchmark: say so and stop.
fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("core_hot_paths: {what}: {e}");
            std::process::exit(2);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn key(i: usize) -> String {
    format!("sk-bench-{i:08}-0123456789abcdef")
}

/// `keys` API keys spread over tenants of 1,000 keys each (at least one tenant).
fn config_with_keys(keys: usize) -> Config {
    let tenants: Vec<serde_json::Value> = (0..keys.div_ceil(1000).max(1))
        .map(|t| {
            let api_keys: Vec<serde_json::Value> = (t * 1000..((t + 1) * 1000).min(keys))
                .map(|i| {
                    serde_json::json!({
                        "id": format!("svc:{i}"),
                        "sha256": hex(&sha256(key(i).as_bytes())),
                    })
                })
                .collect();
            serde_json::json!({ "name": format!("tenant-{t}"), "api_keys": api_keys })
        })
        .collect();
    let cfg = serde_json::json!({ "tenants": tenants });
    must(
        Config::parse(cfg.to_string().as_bytes(), &|_| None),
        "configuration",
    )
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn bench_identify(c: &mut Criterion) {
    let mut g = c.benchmark_group("identify");
    for keys in [2usize, 100_000] {
        let cfg = config_with_keys(keys);
        let good = format!("Bearer {}", key(keys - 1));
        let common = [
            (":authority", "tenant.ai.example.com"),
            (":path", "/v1/chat/completions"),
            (":method", "POST"),
            ("content-type", "application/json"),
            ("user-agent", "bench"),
        ];
        let mut valid = headers(&common);
        valid.push(("authorization".to_string(), good.clone()));
        let mut unknown = headers(&common);
        unknown.push((
            "authorization".to_string(),
            "Bearer sk-not-configured-anywhere".to_string(),
        ));
        let mut both = valid.clone();
        both.push(("x-api-key".to_string(), key(keys - 1)));
        for (name, h) in [
            ("valid", &valid),
            ("unknown", &unknown),
            ("two_headers", &both),
        ] {
            g.bench_with_input(BenchmarkId::new(name, format!("{keys}_keys")), h, |b, h| {
                b.iter(|| identify(black_box(&cfg), black_box(h), None).is_ok())
            });
        }
    }
    g.finish();
}

fn quota_config(per_model: bool) -> QuotaConfig {
    let mut q = serde_json::json!({
        "requests_per_minute": 1e9, "request_burst": 1e9,
        "tokens_per_minute": 1e12, "token_burst": 1e12,
        "interactive_reserve": 0.2,
    });
    if let (true, Some(obj)) = (per_model, q.as_object_mut()) {
        obj.insert(
            "models".to_string(),
            serde_json::json!({
                "llama3-8b": { "requests_per_minute": 1e9, "tokens_per_minute": 1e12 }
            }),
        );
    }
    must(serde_json::from_value(q), "quota configuration")
}

fn bench_quota(c: &mut Criterion) {
    let mut g = c.benchmark_group("quota");
    let Some(limit) = Limit::new(1e9, 1e9, 0.2) else {
        eprintln!("core_hot_paths: invalid limit");
        std::process::exit(2);
    };
    let mut state = BucketState::full(&limit, NOW);
    let mut now = NOW;
    g.bench_function("try_take", |b| {
        b.iter(|| {
            now += 1;
            try_take(
                black_box(&mut state),
                black_box(300),
                now,
                &limit,
                TrafficClass::Interactive,
            )
        })
    });
    for (name, per_model) in [("2_buckets", false), ("4_buckets", true)] {
        let cfg = quota_config(per_model);
        let store = MemStore::default();
        let mut now = NOW;
        g.bench_function(BenchmarkId::new("reserve_settle", name), |b| {
            b.iter(|| {
                now += 1;
                let req = QuotaRequest {
                    prefix: "ai-gateway-filter",
                    tenant: "tenant-a",
                    model: Some("llama3-8b"),
                    estimated_tokens: 512,
                    class: TrafficClass::Interactive,
                    on_store_error: FailureMode::Open,
                };
                let out = reserve(&store, black_box(&cfg), &req, now);
                match out.reservation {
                    Some(r) => settle(&store, r, black_box(179), now).round_trips,
                    None => 0,
                }
            })
        });
    }
    g.finish();
}

/// About `size` bytes of prose with a secret of every built-in kind every ~600 bytes.
fn secret_prompt(size: usize) -> String {
    const CHUNK: &str = "Please summarise the ticket from jane.doe@example.com about key \
        sk-proj-AbCdEf0123456789AbCdEf0123456789 and the token \
        eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U \
        sent from 10.20.30.40; she paid with 4111 1111 1111 1111 and can be reached at \
        +1 (415) 555-0100. The rest is ordinary text about the gateway, the model and the \
        weather, long enough to look like a real prompt with several sentences in it. ";
    let mut s = String::with_capacity(size + CHUNK.len());
    while s.len() < size {
        s.push_str(CHUNK);
    }
    s
}

fn bench_redact(c: &mut Criterion) {
    let mut g = c.benchmark_group("redact");
    let cfg = RedactionConfig {
        prompt_preview_chars: 256,
        ..RedactionConfig::default()
    };
    let rules = must(Redactor::from_config(&cfg), "redaction rules");
    for (label, size) in [("1KiB", 1usize << 10), ("64KiB", 64 << 10)] {
        let text = secret_prompt(size);
        g.bench_with_input(BenchmarkId::new("preview_256", label), &text, |b, t| {
            b.iter(|| redacted_preview(black_box(t), 256, &rules))
        });
    }
    for (label, size) in [
        ("1KiB", 1usize << 10),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ] {
        let text = secret_prompt(size);
        let pieces: Vec<&str> = text.split_inclusive(". ").collect();
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("fingerprint", label), &pieces, |b, p| {
            b.iter(|| prompt_fingerprint(SALT, black_box(p.iter())))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_identify, bench_quota, bench_redact
}
criterion_main!(benches);
