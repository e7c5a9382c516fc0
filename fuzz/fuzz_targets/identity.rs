//! The credential-header parser: `identify` over arbitrary header lists (and an
//! optional mTLS peer URI SAN) against a small configuration with two tenants, API keys,
//! a JWT claim mapping and a SPIFFE ID; then `check_host` on any identity found.
//!
//! Header values may contain `$a`, `$b` or `$j`, replaced by tenant A's key, tenant B's
//! key or a valid JWT payload, so the fuzzer reaches valid and conflicting credentials.
//! Beyond "never panics": an API-key identity is only granted when that key was
//! presented, an mTLS one only for the configured SPIFFE ID.
#![no_main]

use std::sync::OnceLock;

use ai_gateway_core::config::Config;
use ai_gateway_core::identity::{check_host, identify, Source};
use base64::Engine;
use libfuzzer_sys::fuzz_target;

const KEY_A: &str = "sk-tenant-a-demo";
const KEY_B: &str = "sk-tenant-b-demo";

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let json = r#"{
          "identity": { "jwt": {} },
          "tenants": [
            { "name": "tenant-a", "hosts": ["a.example.com"],
              "api_keys": [{ "id": "svc:a", "sha256": "6ca02907df2f5fadb8026da4b8c2fa39ce44b71e131a02039d96bf4de4b91e61" }],
              "jwt_claim_values": ["a"],
              "spiffe_ids": ["spiffe://cluster.local/ns/a/sa/client"] },
            { "name": "tenant-b",
              "api_keys": [{ "id": "svc:b", "sha256": "de827505af654561d6f104f27714f55808e170c322bf253692f7f3215c8575df" }],
              "jwt_claim_values": ["b"] }
          ]
        }"#;
        Config::parse(json.as_bytes(), &|_| None).expect("fuzz configuration")
    })
}

fn jwt_payload() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"tenant":"a","sub":"fuzz"}"#)
}

/// Lines of `name:value`; the first line is the peer URI SAN when it starts with `@`.
fn decode(data: &[u8]) -> (Option<String>, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(data);
    let mut peer = None;
    let mut headers = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if i == 0 {
            if let Some(san) = line.strip_prefix('@') {
                peer = Some(san.replace("$s", "spiffe://cluster.local/ns/a/sa/client"));
                continue;
            }
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value
            .replace("$a", KEY_A)
            .replace("$b", KEY_B)
            .replace("$j", &jwt_payload());
        headers.push((name.to_string(), value));
    }
    (peer, headers)
}

fuzz_target!(|data: &[u8]| {
    let cfg = config();
    let (peer, headers) = decode(data);
    let Ok(id) = identify(cfg, &headers, peer.as_deref()) else {
        return;
    };
    let all = format!("{headers:?}");
    match id.source {
        // A key is only accepted when its SHA-256 is configured: the key must be there.
        Source::ApiKey => assert!(
            all.contains(if id.tenant == 0 { KEY_A } else { KEY_B }),
            "API-key identity without its key"
        ),
        // Any well-formed payload naming a configured claim value is valid (Envoy has
        // verified the token), so only the tenant range is checked.
        Source::Jwt => assert!(id.tenant < 2),
        Source::Mtls => assert_eq!(
            peer.as_deref(),
            Some("spiffe://cluster.local/ns/a/sa/client"),
            "mTLS identity for an unknown peer"
        ),
    }
    for authority in ["a.example.com", "A.EXAMPLE.COM:443", "b.example.com", ""] {
        let _ = check_host(cfg, &id, authority);
    }
});
