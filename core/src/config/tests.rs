//! Configuration parsing and validation: every error names its field.

use super::*;

fn env_none(_: &str) -> Option<String> {
    None
}

const KEY_A: &str = "5c2b0ab0b8fd1b1a6d3b4c2e53dc21a38f4dc0b1d5b9ef1e6fbd9f0b0e4e5e6a";

fn base() -> serde_json::Value {
    serde_json::json!({
        "models": [{"name": "llama3-8b", "input_usd_per_million": 0.2, "output_usd_per_million": 0.6}],
        "tenants": [{
            "name": "tenant-a",
            "hosts": ["Tenant-A.ai.example.com:443"],
            "api_keys": [{"id": "svc:a", "sha256": KEY_A}],
            "models": ["llama3-8b"],
            "routes": ["/v1/chat/completions"]
        }]
    })
}

fn parse(v: &serde_json::Value) -> Result<Config, String> {
    Config::parse(v.to_string().as_bytes(), &env_none)
}

fn err(v: &serde_json::Value) -> String {
    match parse(v) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let cfg = parse(&base()).unwrap();
    assert_eq!(cfg.shared_data_prefix, "ai-gateway-filter");
    assert_eq!(cfg.routes.len(), 5);
    // Longest prefix first, so the most specific route matches first.
    assert!(cfg
        .routes
        .windows(2)
        .all(|w| w[0].prefix.len() >= w[1].prefix.len()));
    assert_eq!(cfg.limits.max_request_body_bytes, 4 * 1024 * 1024);
    assert_eq!(cfg.quota_failure_mode, FailureMode::Open);
    assert!(cfg.routing.hold_headers_for_body);
    assert_eq!(
        cfg.tenants[0].hosts,
        vec!["tenant-a.ai.example.com".to_string()]
    );
    assert_eq!(cfg.keys.len(), 1);
    assert!(cfg.fingerprint_salt.is_none());
}

#[test]
fn istio_json_string_is_accepted() {
    let inner = base().to_string();
    let wrapped = serde_json::to_string(&inner).unwrap();
    assert!(Config::parse(wrapped.as_bytes(), &env_none).is_ok());
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!({}), "missing field `tenants`"),
        (
            serde_json::json!({"tenants": []}),
            "tenants: at least one tenant",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["api_keys"][0]["sha256"] = "sk-plaintext".into();
                v
            },
            "tenants[0].api_keys[0].sha256",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["nmae"] = "x".into();
                v
            },
            "tenants[0].nmae: unknown field `nmae`",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["routes"] = serde_json::json!(["/v2/nope"]);
                v
            },
            "tenants[0].routes[0]",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["models"] = serde_json::json!(["gpt-9"]);
                v
            },
            "tenants[0].models[0]",
        ),
        (
            {
                let mut v = base();
                v["models"][0]["input_usd_per_million"] = (-1.0).into();
                v
            },
            "models[0].input_usd_per_million",
        ),
        (
            {
                let mut v = base();
                v["routes"] = serde_json::json!([{"prefix": "/v1/x", "api": "soap"}]);
                v
            },
            "routes[0].api",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["name"] = "bad name".into();
                v
            },
            "tenants[0].name",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["name"] = "unknown".into();
                v
            },
            "reserved",
        ),
        (
            {
                let mut v = base();
                v["limits"] = serde_json::json!({"max_request_body_bytes": "big"});
                v
            },
            "limits.max_request_body_bytes",
        ),
        (
            {
                let mut v = base();
                v["quota_failure_mode"] = "sideways".into();
                v
            },
            "quota_failure_mode",
        ),
        (
            {
                let mut v = base();
                v["tenants"][0]["jwt_claim_values"] = serde_json::json!(["org-a"]);
                v
            },
            "identity.jwt",
        ),
        (
            {
                let mut v = base();
                v["redaction"] = serde_json::json!({"fingerprint_salt": "short"});
                v
            },
            "redaction.fingerprint_salt",
        ),
        (
            {
                let mut v = base();
                v["redaction"] = serde_json::json!({"fingerprint_salt_env": "NOPE_NOT_SET"});
                v
            },
            "redaction.fingerprint_salt_env",
        ),
    ];
    for (v, want) in cases {
        let e = err(&v);
        assert!(e.contains(want), "error {e:?} should contain {want:?}");
    }
}

#[test]
fn duplicates_are_refused() {
    let mut v = base();
    let t = v["tenants"][0].clone();
    v["tenants"].as_array_mut().unwrap().push(t);
    assert!(err(&v).contains("tenants[1].name: duplicate tenant"));

    let mut v = base();
    let mut t = v["tenants"][0].clone();
    t["name"] = "tenant-b".into();
    t["hosts"] = serde_json::json!([]);
    v["tenants"].as_array_mut().unwrap().push(t);
    assert!(err(&v).contains("tenants[1].api_keys[0].sha256: the same key digest"));

    let mut v = base();
    let mut t = v["tenants"][0].clone();
    t["name"] = "tenant-b".into();
    t["api_keys"] = serde_json::json!([]);
    v["tenants"].as_array_mut().unwrap().push(t);
    assert!(err(&v)
        .contains("tenants[1].hosts[0]: hostname \"tenant-a.ai.example.com\" is already bound"));
}

#[test]
fn salt_from_environment() {
    let mut v = base();
    v["redaction"] = serde_json::json!({"fingerprint_salt_env": "SALT"});
    let env = |k: &str| (k == "SALT").then(|| "0123456789abcdef-salt".to_string());
    let cfg = Config::parse(v.to_string().as_bytes(), &env).unwrap();
    assert_eq!(
        cfg.fingerprint_salt.as_deref(),
        Some(&b"0123456789abcdef-salt"[..])
    );
    // Errors never echo the salt.
    let mut v = base();
    v["redaction"] = serde_json::json!({"fingerprint_salt": "s3cret-but-short"[..6].to_string()});
    assert!(!err(&v).contains("s3cret"));
}

#[test]
fn errors_never_echo_values() {
    let mut v = base();
    v["tenants"][0]["api_keys"] = serde_json::json!(["sk-live-SECRETSECRET"]);
    let e = err(&v);
    assert!(e.starts_with("tenants[0].api_keys[0]: invalid type"), "{e}");
    assert!(!e.contains("SECRETSECRET"), "{e}");
    let mut v = base();
    v["quota_failure_mode"] = "sk-live-SECRETSECRET".into();
    let e = err(&v);
    assert!(e.contains("quota_failure_mode: unknown variant"), "{e}");
    assert!(e.contains("expected `open` or `closed`"), "{e}");
    assert!(!e.contains("SECRETSECRET"), "{e}");
    assert!(!parse(&base()).unwrap().forward_credentials);
}

#[test]
fn empty_and_garbage_inputs() {
    assert!(Config::parse(b"", &env_none).unwrap_err().contains("empty"));
    assert!(Config::parse(b"   ", &env_none)
        .unwrap_err()
        .contains("empty"));
    assert!(Config::parse(b"[1,2]", &env_none).is_err());
    assert!(Config::parse(b"{\"tenants\": ", &env_none).is_err());
    assert!(Config::parse(&[0xff, 0xfe], &env_none).is_err());
}

#[test]
fn demo_configuration_is_valid() {
    let demo = include_str!("../../../filters/demo.json");
    let cfg = Config::parse(demo.as_bytes(), &env_none).unwrap();
    assert_eq!(cfg.tenants.len(), 2);
    assert!(cfg.fingerprint_salt.is_some());
}

#[test]
fn host_normalization() {
    use crate::config::hostname::normalize_host;
    assert_eq!(
        normalize_host("Tenant-A.ai.example.com:8443"),
        "tenant-a.ai.example.com"
    );
    assert_eq!(
        normalize_host("tenant-a.ai.example.com."),
        "tenant-a.ai.example.com"
    );
    assert_eq!(normalize_host("[::1]:80"), "[::1]");
    assert_eq!(normalize_host("[::1]"), "[::1]");
    assert_eq!(normalize_host(""), "");
}

#[test]
fn global_limits_need_the_engine_and_valid_fields() {
    let base = |extra: &str, global: &str| {
        format!(
            r#"{{{extra}"tenants":[{{"name":"a","hosts":["a.example.com"],"quota":{{"global":{global}}}}}]}}"#
        )
    };
    let parse = |s: String| Config::parse(s.as_bytes(), &|_| None);
    let engine = r#""global_quota":{"cluster":"ratelimit","expected_replicas":2},"#;
    let ok = parse(base(
        engine,
        r#"{"requests":100,"unit":"hour","mode":"strict"}"#,
    ))
    .unwrap();
    let e = ok.global.as_ref().unwrap();
    assert_eq!(
        (
            e.spec.domain.as_str(),
            e.spec.sync_interval_ms,
            e.spec.timeout_ms
        ),
        ("ai-gateway", 200, 250)
    );
    assert_eq!(ok.global_tenants().len(), 1);
    let err = |extra: &str, global: &str| parse(base(extra, global)).unwrap_err();
    assert_eq!(
        err("", r#"{"requests":1}"#),
        "tenants[0].quota.global: needs global_quota (the rate limit service)"
    );
    assert_eq!(
        err(engine, "{}"),
        "tenants[0].quota.global: needs requests, tokens or both"
    );
    assert_eq!(
        err(engine, r#"{"tokens":0}"#),
        "tenants[0].quota.global.tokens: must be >= 1"
    );
    assert!(err(engine, r#"{"requests":1,"unit":"week"}"#)
        .starts_with("tenants[0].quota.global.unit: unknown variant"));
    assert_eq!(
        err(
            r#""global_quota":{"cluster":"rl","expected_replicas":0},"#,
            r#"{"requests":1}"#
        ),
        "global_quota.expected_replicas: must be in 1..=1000, got 0"
    );
    assert_eq!(
        err(
            r#""global_quota":{"cluster":"","expected_replicas":2},"#,
            r#"{"requests":1}"#
        ),
        "global_quota.cluster: must name the rate limit service's cluster"
    );
    assert!(
        err(r#""global_quota":{"cluster":"rl"},"#, r#"{"requests":1}"#)
            .contains("expected_replicas")
    );
}

#[test]
fn a_backend_credential_comes_from_the_vm_environment_and_never_prints() {
    let cfg = |cred: &str| {
        format!(
            r#"{{"models":[{{"name":"m","backend_credential":{cred}}}],"tenants":[{{"name":"a"}}]}}"#
        )
    };
    let env = |k: &str| (k == "BACKEND_KEY").then(|| "s3cret-value".to_string());
    let ok = Config::parse(
        cfg(r#"{"header":"Authorization","value_env":"BACKEND_KEY","prefix":"Bearer "}"#)
            .as_bytes(),
        &env,
    )
    .unwrap();
    let (name, value) = ok.models["m"].credential.clone().unwrap();
    assert_eq!(
        (name, value.expose()),
        ("authorization", "Bearer s3cret-value")
    );
    assert!(
        !format!("{:?}", ok.models["m"]).contains("s3cret"),
        "Debug never shows it"
    );
    let err = |c: &str| Config::parse(cfg(c).as_bytes(), &env).unwrap_err();
    assert_eq!(
        err(r#"{"header":"authorization","value_env":"MISSING"}"#),
        "models[0].backend_credential.value_env: environment variable \"MISSING\" is not set in the Wasm VM"
    );
    assert_eq!(
        err(r#"{"header":"x-secret","value_env":"BACKEND_KEY"}"#),
        "models[0].backend_credential.header: must be one of authorization, x-api-key, api-key"
    );
    let bad = err(r#"{"header":"api-key","value_env":"BACKEND_KEY","prefix":"\n"}"#);
    assert!(
        bad.contains("printable") && !bad.contains("s3cret"),
        "{bad}"
    );
}
