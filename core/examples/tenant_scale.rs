//! Tenant-count benchmark (not a test): how parse + validate time and per-request
//! authentication cost grow with the number of tenants and keys.
//!
//!     cargo run --release --example tenant_scale
//!     cargo run --release --example tenant_scale -- --tenants 10000 --keys-per-tenant 10 \
//!         --write-config /tmp/tenants-10k.json
//!
//! Prints one line per measurement. `--write-config` also writes the large configuration,
//! so `benches/envoy_tenant_load.py` can load it into a real Envoy Wasm VM.
//!
//! Plain `std::time::Instant` with `black_box`, medians over repeated runs: the quantities
//! are large (milliseconds for parsing, ~1 µs per request) and a harness such as criterion
//! would add a dependency without changing the conclusion.

// A measurement script, not module code: the function-length limit does not apply.
#![allow(clippy::too_many_lines)]

use std::hint::black_box;
use std::time::Instant;

use ai_gateway_core::config::digest::sha256;
use ai_gateway_core::config::{parse_spec, Config};
use ai_gateway_core::identity::{check_host, identify};

struct Args {
    tenants: usize,
    keys_per_tenant: usize,
    write_config: Option<String>,
    parse_runs: usize,
    lookups: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        tenants: 10_000,
        keys_per_tenant: 10,
        write_config: None,
        parse_runs: 7,
        lookups: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tenants" => a.tenants = value()?.parse().map_err(|e| format!("{e}"))?,
            "--keys-per-tenant" => {
                a.keys_per_tenant = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--write-config" => a.write_config = Some(value()?),
            "--parse-runs" => a.parse_runs = value()?.parse().map_err(|e| format!("{e}"))?,
            "--lookups" => a.lookups = value()?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(t: usize, k: usize) -> String {
    format!("sk-bench-{t}-{k}")
}

fn host(t: usize) -> String {
    format!("t{t}.ai.example.com")
}

/// A configuration shaped like the demo's, with `tenants` tenants of `keys` keys each;
/// every tenant bound to a hostname, with a JWT claim value, a SPIFFE id, a route and a
/// model allowlist, so every index the filter builds is as large as it gets.
fn config_json(tenants: usize, keys: usize) -> String {
    let mut ts = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let api_keys: Vec<serde_json::Value> = (0..keys)
            .map(|k| {
                serde_json::json!({
                    "id": format!("svc:t{t}-k{k}"),
                    "sha256": hex(&sha256(key(t, k).as_bytes())),
                })
            })
            .collect();
        ts.push(serde_json::json!({
            "name": format!("tenant-{t}"),
            "hosts": [host(t)],
            "api_keys": api_keys,
            "jwt_claim_values": [format!("org-{t}")],
            "spiffe_ids": [format!("spiffe://cluster.local/ns/t{t}/sa/app")],
            "routes": ["/v1/chat/completions", "/v1/embeddings", "/v1/models"],
            "models": ["llama3-8b", "bge-small"],
        }));
    }
    serde_json::json!({
        "routes": [
            { "prefix": "/v1/chat/completions", "api": "chat_completions" },
            { "prefix": "/v1/completions", "api": "completions" },
            { "prefix": "/v1/embeddings", "api": "embeddings" },
            { "prefix": "/v1/models", "api": "none" }
        ],
        "models": [
            { "name": "llama3-8b", "input_usd_per_million": 0.2, "output_usd_per_million": 0.6 },
            { "name": "bge-small", "input_usd_per_million": 0.02 }
        ],
        "identity": { "jwt": {} },
        "tenants": ts,
    })
    .to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn parse(json: &str) -> Result<Config, String> {
    Config::parse(json.as_bytes(), &|_| None)
}

/// Median ms of parse + validate over `runs` runs.
fn time_parse(json: &str, runs: usize) -> Result<f64, String> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let cfg = parse(black_box(json))?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        black_box(cfg);
    }
    Ok(median(times))
}

/// ns per request for identify + check_host over the request list, as (min, median) of
/// 5 passes of `lookups` requests each. The minimum is the figure least disturbed by
/// other processes on a shared machine.
fn time_auth(
    cfg: &Config,
    presented: &[(Vec<(String, String)>, String)],
    lookups: usize,
) -> (f64, f64) {
    let mut passes = Vec::new();
    let mut ok = 0usize;
    for _ in 0..5 {
        let t0 = Instant::now();
        for i in 0..lookups {
            let Some((headers, authority)) = presented.get(i % presented.len()) else {
                continue;
            };
            if let Ok(id) = identify(cfg, black_box(headers), None) {
                if check_host(cfg, &id, authority).is_ok() {
                    ok += 1;
                }
            }
        }
        passes.push(t0.elapsed().as_secs_f64() * 1e9 / lookups as f64);
    }
    black_box(ok);
    let min = passes.iter().copied().fold(f64::INFINITY, f64::min);
    (min, median(passes))
}

/// `n` requests cycling through the first `distinct` keys of the key space (spread over
/// all tenants), each as `Authorization: Bearer` on its tenant's hostname. Every run uses
/// the same `n`, so walking the request list itself costs the same in every case and the
/// difference between cases is the configuration's size alone.
fn requests(
    tenants: usize,
    keys: usize,
    distinct: usize,
    n: usize,
) -> Vec<(Vec<(String, String)>, String)> {
    let total = (tenants * keys).max(1);
    let distinct = distinct.clamp(1, total);
    (0..n)
        .map(|i| {
            let i = i % distinct;
            // Stride through the key space so consecutive requests hit unrelated buckets.
            let j = (i * 7919) % total;
            let (t, k) = (j / keys, j % keys);
            (
                vec![
                    ("authorization".to_string(), format!("Bearer {}", key(t, k))),
                    ("content-type".to_string(), "application/json".to_string()),
                    ("user-agent".to_string(), "bench".to_string()),
                ],
                host(t),
            )
        })
        .collect()
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let big = config_json(a.tenants, a.keys_per_tenant);
    if let Some(path) = &a.write_config {
        std::fs::write(path, &big).map_err(|e| format!("{path}: {e}"))?;
        println!("wrote {path} ({} bytes)", big.len());
    }
    // Where the large configuration's load time goes: JSON into the user-facing spec
    // (serde, with field paths for errors), then checks and indexes.
    let mut spec_ms = Vec::new();
    let mut build_ms = Vec::new();
    for _ in 0..a.parse_runs {
        let t0 = Instant::now();
        let spec = parse_spec(black_box(big.as_bytes()))?;
        let t1 = Instant::now();
        let cfg = Config::from_spec(spec, &|_| None)?;
        let t2 = Instant::now();
        black_box(cfg);
        spec_ms.push((t1 - t0).as_secs_f64() * 1e3);
        build_ms.push((t2 - t1).as_secs_f64() * 1e3);
    }
    println!(
        "large config ({} bytes): JSON -> spec {:.1} ms, validate + index {:.1} ms (medians of {})",
        big.len(),
        median(spec_ms),
        median(build_ms),
        a.parse_runs
    );

    let n = a.tenants * a.keys_per_tenant;
    println!(
        "identify + check_host per request (Bearer key on its tenant's hostname), ns as \
         min/median of 5 passes x {} requests; 'cold' = every request a different key (all \
         keys in turn), 'hot' = the same 2 keys",
        a.lookups
    );
    println!(
        "{:>8} {:>8} {:>12} {:>14} {:>16} {:>16} {:>16}",
        "tenants",
        "keys",
        "config bytes",
        "parse+validate",
        "auth cold ns",
        "auth hot ns",
        "unknown key ns"
    );
    let mut sizes: Vec<(usize, usize)> = vec![(1, 2)];
    let mut t = 10;
    while t < a.tenants {
        sizes.push((t, a.keys_per_tenant));
        t *= 10;
    }
    sizes.push((a.tenants, a.keys_per_tenant));
    for (tenants, keys) in sizes {
        let json = if tenants == a.tenants && keys == a.keys_per_tenant {
            big.clone()
        } else {
            config_json(tenants, keys)
        };
        let runs = if json.len() > 1_000_000 {
            a.parse_runs
        } else {
            a.parse_runs * 5
        };
        let parse_ms = time_parse(&json, runs)?;
        let cfg = parse(&json)?;
        let total = tenants * keys;
        // The request list is as long in every row (`n`), so walking it costs the same.
        let cold = time_auth(&cfg, &requests(tenants, keys, total, n), a.lookups);
        let hot = time_auth(&cfg, &requests(tenants, keys, 2, n), a.lookups);
        let miss = vec![(
            vec![("x-api-key".to_string(), "sk-not-configured".to_string())],
            host(0),
        )];
        let unknown = time_auth(&cfg, &miss, a.lookups);
        println!(
            "{tenants:>8} {total:>8} {:>12} {:>11.3} ms {:>7.0}/{:<8.0} {:>7.0}/{:<8.0} {:>7.0}/{:<8.0}",
            json.len(),
            parse_ms,
            cold.0,
            cold.1,
            hot.0,
            hot.1,
            unknown.0,
            unknown.1
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("tenant_scale: {e}");
        std::process::exit(2);
    }
}
