//! One request through the filter's functional core, natively, driven through
//! `lifecycle::Request` exactly as the host layer (`src/http.rs`) drives it: headers (identity, host, route), body (parse, model,
//! fingerprint, include_usage rewrite), quota reserve against an in-memory store,
//! response headers and body (usage scan), records, quota settle, record JSON and
//! metric series names. What it leaves out is the Proxy-Wasm ABI: host calls, copies
//! into and out of the VM, filter state, Envoy's own work.
//!
//!     core-profile CONFIG.json BODY.json chat|stream ITERATIONS
//!
//! `make bench` runs it under `valgrind --tool=callgrind` with 1 and 1+N iterations and
//! divides the difference by N: instructions per request without the setup.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use ai_gateway_core::config::Config;
use ai_gateway_core::testkit::stores::MemStore;
use ai_gateway_core::testkit::traffic::{
    drive, post_headers, sse_events, Upstream, CHAT, CHAT_RESPONSE, TENANT_A_HOST, TENANT_A_KEY,
};

/// One request through the core's lifecycle, as the host drives it; returns the bytes the
/// plans hand back (0 when the request was refused), so nothing is optimised away.
fn one_request(cfg: &Arc<Config>, store: &MemStore, body: &[u8], stream: bool) -> usize {
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    let upstream = if stream {
        Upstream::Answers(200, "text/event-stream", sse_events(16))
    } else {
        Upstream::Answers(200, "application/json", vec![CHAT_RESPONSE.to_vec()])
    };
    let plans = drive(cfg.clone(), store, &headers, Some(body), upstream);
    if plans.request_headers.local_reply.is_some()
        || plans.request_body.as_ref().is_some_and(|p| p.local_reply.is_some())
    {
        eprintln!("the request was refused");
        return 0;
    }
    let state: usize = plans.log.filter_state.iter().map(|(_, v)| v.len()).sum();
    let names: usize = plans.log.metrics.iter().map(|o| o.name.len()).sum();
    state + names
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
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let store = MemStore::new();
    let stream = kind == "stream";
    let mut total = 0usize;
    for _ in 0..iters {
        let n = one_request(&cfg, &store, black_box(&body), stream);
        if n == 0 {
            return ExitCode::FAILURE;
        }
        total = total.wrapping_add(black_box(n));
    }
    println!("ok {iters} requests ({total})");
    ExitCode::SUCCESS
}
