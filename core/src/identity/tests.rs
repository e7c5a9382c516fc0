//! Identity, host binding, route authorization and the anti-spoofing rule.
//!
//! Tenants of the test configuration:
//! - `tenant-a`: bound to `tenant-a.ai.example.com`; key `sk-a` (`svc:a`), JWT `org=org-a`,
//!   SPIFFE `spiffe://cluster.local/ns/team-a/sa/agent`; all routes; model `llama3-8b`.
//! - `tenant-b`: bound to `tenant-b.ai.example.com`; key `sk-b` (`svc:b`), JWT `org=org-b`,
//!   SPIFFE `.../team-b/...`; only `/v1/embeddings`; model `bge-small`.
//! - `tenant-c`: no hostname; key `sk-c`; only `/v1/chat/completions`.

use base64::Engine;

use super::*;
use crate::config::Config;
use crate::lifecycle::exchange::{BodyAction, End, Exchange, HeadersAction, RequestHead};

const HOST_A: &str = "tenant-a.ai.example.com";
const HOST_B: &str = "tenant-b.ai.example.com";
const SPIFFE_A: &str = "spiffe://cluster.local/ns/team-a/sa/agent";
const SPIFFE_B: &str = "spiffe://cluster.local/ns/team-b/sa/batch";

fn hex(key: &str) -> String {
    sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config_json(with_jwt: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "routes": [
            { "prefix": "/v1/chat/completions", "api": "chat_completions" },
            { "prefix": "/v1/embeddings", "api": "embeddings" },
            { "prefix": "/v1/models", "api": "none" }
        ],
        "models": [ { "name": "llama3-8b" }, { "name": "bge-small" } ],
        "tenants": [
            {
                "name": "tenant-a",
                "hosts": [HOST_A],
                "api_keys": [ { "id": "svc:a", "sha256": hex("sk-a") } ],
                "jwt_claim_values": ["org-a"],
                "spiffe_ids": [SPIFFE_A],
                "models": ["llama3-8b"]
            },
            {
                "name": "tenant-b",
                "hosts": [HOST_B],
                "api_keys": [ { "id": "svc:b", "sha256": hex("sk-b").to_uppercase() } ],
                "jwt_claim_values": ["org-b"],
                "spiffe_ids": [SPIFFE_B],
                "routes": ["/v1/embeddings"],
                "models": ["bge-small"]
            },
            {
                "name": "tenant-c",
                "api_keys": [ { "id": "svc:c", "sha256": hex("sk-c") } ],
                "routes": ["/v1/chat/completions"]
            }
        ],
        "identity": { "jwt": { "tenant_claim": "org" } }
    });
    if !with_jwt {
        let obj = v.as_object_mut().unwrap();
        obj.remove("identity");
        for t in obj["tenants"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("jwt_claim_values");
        }
    }
    v
}

fn cfg() -> Config {
    Config::parse(config_json(true).to_string().as_bytes(), &|_| None).unwrap()
}

fn cfg_without_jwt() -> Config {
    Config::parse(config_json(false).to_string().as_bytes(), &|_| None).unwrap()
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// base64url (unpadded) JSON, as `jwt_authn` forwards a verified payload.
fn payload(claims: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
}

fn jwt_header(org: &str, sub: &str) -> (String, String) {
    let p = payload(&serde_json::json!({ "iss": "https://issuer", "org": org, "sub": sub }));
    ("x-jwt-payload".to_string(), p)
}

fn tenant_name(c: &Config, id: &Identity) -> String {
    c.tenant(id.tenant).unwrap().name.clone()
}

/// Identify with headers only (no peer certificate).
fn who(c: &Config, headers: &[(&str, &str)]) -> Result<(String, String, Source), Denial> {
    who_peer(c, headers, None)
}

fn who_peer(
    c: &Config,
    headers: &[(&str, &str)],
    peer: Option<&str>,
) -> Result<(String, String, Source), Denial> {
    let id = identify(c, &h(headers), peer)?;
    Ok((tenant_name(c, &id), id.subject.clone(), id.source))
}

fn reason(r: Result<(String, String, Source), Denial>) -> &'static str {
    match r {
        Ok(ok) => panic!("expected a denial, got {ok:?}"),
        Err(d) => d.reason,
    }
}

// ---------------------------------------------------------------------------------------
// Each identity source on its own.

#[test]
fn api_key_in_each_header() {
    let c = cfg();
    for headers in [
        vec![("authorization", "Bearer sk-a")],
        vec![("x-api-key", "sk-a")],
        vec![("api-key", "sk-a")],
    ] {
        let (t, s, src) = who(&c, &headers).unwrap();
        assert_eq!(
            (t.as_str(), s.as_str(), src),
            ("tenant-a", "svc:a", Source::ApiKey)
        );
    }
    // Digests are configured in either case.
    assert_eq!(who(&c, &[("x-api-key", "sk-b")]).unwrap().0, "tenant-b");
}

#[test]
fn unknown_key_is_invalid_and_no_credentials_is_missing() {
    let c = cfg();
    assert_eq!(
        reason(who(&c, &[("x-api-key", "sk-nope")])),
        "invalid_credentials"
    );
    assert_eq!(reason(who(&c, &[])), "missing_credentials");
    assert_eq!(
        reason(who(&c, &[("x-other", "sk-a")])),
        "missing_credentials"
    );
    // OpenAI's answers: a missing key has `code: null`, an unknown one `invalid_api_key`,
    // and neither repeats any part of what was sent.
    let d = who(&c, &[]).unwrap_err();
    assert_eq!(
        (d.status, d.error_type, d.code),
        (401, "invalid_request_error", None)
    );
    let d = who(&c, &[("x-api-key", "sk-nope")]).unwrap_err();
    assert_eq!(
        (d.status, d.error_type, d.code),
        (401, "invalid_request_error", Some("invalid_api_key"))
    );
    assert!(!d.body().contains("nope"), "{}", d.body());
}

#[test]
fn jwt_payload_maps_claim_to_tenant_and_sub_to_subject() {
    let c = cfg();
    let (n, v) = jwt_header("org-b", "alice@example.com");
    let (t, s, src) = who(&c, &[(&n, &v)]).unwrap();
    assert_eq!(t, "tenant-b");
    assert_eq!(s, "jwt:alice@example.com");
    assert_eq!(src, Source::Jwt);
}

#[test]
fn jwt_payload_padded_or_not() {
    // `pad_forward_payload_header: true` adds '=' padding; both spellings are accepted.
    let c = cfg();
    let raw = serde_json::json!({ "org": "org-a", "sub": "x" }).to_string();
    let padded = base64::engine::general_purpose::URL_SAFE.encode(&raw);
    assert!(
        padded.ends_with('='),
        "pick claims whose encoding needs padding"
    );
    assert_eq!(
        who(&c, &[("x-jwt-payload", &padded)]).unwrap().0,
        "tenant-a"
    );
}

#[test]
fn jwt_subject_missing_or_odd() {
    let c = cfg();
    let p = payload(&serde_json::json!({ "org": "org-a" }));
    assert_eq!(who(&c, &[("x-jwt-payload", &p)]).unwrap().1, "jwt:unknown");
    let p = payload(&serde_json::json!({ "org": "org-a", "sub": "" }));
    assert_eq!(who(&c, &[("x-jwt-payload", &p)]).unwrap().1, "jwt:unknown");
    let p = payload(&serde_json::json!({ "org": "org-a", "sub": 42 }));
    assert_eq!(who(&c, &[("x-jwt-payload", &p)]).unwrap().1, "jwt:unknown");
    // A subject goes into a request header and the audit log: printable and bounded.
    let p = payload(&serde_json::json!({ "org": "org-a", "sub": "a\r\nx-ai-tenant: b" }));
    let s = who(&c, &[("x-jwt-payload", &p)]).unwrap().1;
    assert_eq!(s, "jwt:a??x-ai-tenant:?b");
    let p = payload(&serde_json::json!({ "org": "org-a", "sub": "s".repeat(5000) }));
    assert_eq!(
        who(&c, &[("x-jwt-payload", &p)]).unwrap().1.len(),
        4 + MAX_SUBJECT
    );
}

#[test]
fn jwt_custom_payload_header_and_subject_claim() {
    let mut v = config_json(true);
    v["identity"]["jwt"] = serde_json::json!({
        "payload_header": "x-verified-claims", "tenant_claim": "org", "subject_claim": "email"
    });
    let c = Config::parse(v.to_string().as_bytes(), &|_| None).unwrap();
    let p = payload(&serde_json::json!({ "org": "org-a", "email": "e@x", "sub": "s" }));
    assert_eq!(who(&c, &[("x-verified-claims", &p)]).unwrap().1, "jwt:e@x");
    // The default header name means nothing under this configuration.
    assert_eq!(
        reason(who(&c, &[("x-jwt-payload", &p)])),
        "missing_credentials"
    );
}

#[test]
fn mtls_spiffe_id_maps_to_tenant() {
    let c = cfg();
    let (t, s, src) = who_peer(&c, &[], Some(SPIFFE_A)).unwrap();
    assert_eq!(
        (t.as_str(), s.as_str(), src),
        ("tenant-a", SPIFFE_A, Source::Mtls)
    );
    assert_eq!(who_peer(&c, &[], Some(SPIFFE_B)).unwrap().0, "tenant-b");
}

#[test]
fn source_names_are_stable() {
    assert_eq!(Source::Mtls.as_str(), "mtls");
    assert_eq!(Source::Jwt.as_str(), "jwt");
    assert_eq!(Source::ApiKey.as_str(), "api_key");
}

// ---------------------------------------------------------------------------------------
// Order between sources: all must agree; the first in mTLS, JWT, API-key order names the
// subject.

#[test]
fn order_mtls_then_jwt_then_api_key() {
    let c = cfg();
    let (n, v) = jwt_header("org-a", "alice");
    let all = [(n.as_str(), v.as_str()), ("x-api-key", "sk-a")];
    assert_eq!(
        who_peer(&c, &all, Some(SPIFFE_A)).unwrap(),
        ("tenant-a".into(), SPIFFE_A.into(), Source::Mtls)
    );
    assert_eq!(
        who(&c, &all).unwrap(),
        ("tenant-a".into(), "jwt:alice".into(), Source::Jwt)
    );
    assert_eq!(
        who_peer(&c, &[("x-api-key", "sk-a")], Some(SPIFFE_A)).unwrap(),
        ("tenant-a".into(), SPIFFE_A.into(), Source::Mtls)
    );
}

#[test]
fn sources_naming_different_tenants_conflict() {
    let c = cfg();
    let (n, vb) = jwt_header("org-b", "bob");
    // mTLS a + key b, JWT b + key a, mTLS a + JWT b: never "first one wins".
    assert_eq!(
        reason(who_peer(&c, &[("x-api-key", "sk-b")], Some(SPIFFE_A))),
        "conflicting_credentials"
    );
    assert_eq!(
        reason(who(&c, &[(&n, &vb), ("x-api-key", "sk-a")])),
        "conflicting_credentials"
    );
    assert_eq!(
        reason(who_peer(&c, &[(&n, &vb)], Some(SPIFFE_A))),
        "conflicting_credentials"
    );
}

#[test]
fn an_invalid_credential_next_to_a_valid_one_is_refused() {
    let c = cfg();
    assert_eq!(
        reason(who_peer(&c, &[("x-api-key", "sk-wrong")], Some(SPIFFE_A))),
        "invalid_credentials"
    );
    let (n, v) = jwt_header("org-a", "alice");
    assert_eq!(
        reason(who(&c, &[(&n, &v), ("api-key", "sk-wrong")])),
        "invalid_credentials"
    );
    let garbage = [("x-jwt-payload", "!!"), ("x-api-key", "sk-a")];
    assert_eq!(reason(who(&c, &garbage)), "invalid_credentials");
}

#[test]
fn jwt_shaped_bearer_is_the_jwt_itself_only_next_to_a_verified_payload() {
    let c = cfg();
    let (n, v) = jwt_header("org-a", "alice");
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJvcmciOiJvcmctYSJ9.c2lnbmF0dXJl";
    let bearer = format!("Bearer {token}");
    // jwt_authn with `forward: true` leaves the verified token in Authorization.
    assert_eq!(
        who(&c, &[(&n, &v), ("authorization", &bearer)]).unwrap().2,
        Source::Jwt
    );
    // Without a verified payload, the same token is just an unknown key.
    assert_eq!(
        reason(who(&c, &[("authorization", &bearer)])),
        "invalid_credentials"
    );
    // Next to a verified payload, a bearer that is not JWT-shaped is still an API key and
    // must agree with it.
    assert_eq!(
        reason(who(&c, &[(&n, &v), ("authorization", "Bearer sk-b")])),
        "conflicting_credentials"
    );
    assert_eq!(
        who(&c, &[(&n, &v), ("authorization", "Bearer sk-a")])
            .unwrap()
            .2,
        Source::Jwt
    );
    assert_eq!(
        reason(who(&c, &[(&n, &v), ("authorization", "Basic dTpw")])),
        "invalid_credentials"
    );
}

#[test]
fn looks_like_jwt_shapes() {
    assert!(looks_like_jwt("a.b.c"));
    assert!(looks_like_jwt("eyJ-_0.eyJ.sig-_"));
    assert!(!looks_like_jwt("a.b"));
    assert!(!looks_like_jwt("a.b.c.d"));
    assert!(!looks_like_jwt("a..c"));
    assert!(!looks_like_jwt("a.b+/.c"));
    assert!(!looks_like_jwt("sk-a"));
    assert!(!looks_like_jwt(""));
}

// ---------------------------------------------------------------------------------------
// Spoofing cases.

#[test]
fn duplicate_key_headers_must_carry_the_same_key() {
    let c = cfg();
    let same = [("x-api-key", "sk-a"), ("x-api-key", "sk-a")];
    assert_eq!(who(&c, &same).unwrap().0, "tenant-a");
    let all_three = [
        ("authorization", "Bearer sk-a"),
        ("x-api-key", "sk-a"),
        ("api-key", "sk-a"),
    ];
    assert_eq!(who(&c, &all_three).unwrap().1, "svc:a");
    for pair in [
        [("x-api-key", "sk-a"), ("x-api-key", "sk-b")],
        [("authorization", "Bearer sk-a"), ("x-api-key", "sk-b")],
        [("api-key", "sk-b"), ("authorization", "Bearer sk-a")],
        [("x-api-key", "sk-a"), ("api-key", "sk-c")],
        // An unknown second key does not hide behind a valid first one, and vice versa.
        [("x-api-key", "sk-a"), ("x-api-key", "sk-unknown")],
        [("x-api-key", "sk-unknown"), ("x-api-key", "sk-a")],
    ] {
        assert_eq!(
            reason(who(&c, &pair)),
            "conflicting_credentials",
            "{pair:?}"
        );
    }
}

#[test]
fn header_name_case_is_ignored() {
    let c = cfg();
    for name in ["X-API-KEY", "X-Api-Key", "API-KEY", "Api-Key"] {
        assert_eq!(who(&c, &[(name, "sk-a")]).unwrap().0, "tenant-a", "{name}");
    }
    assert_eq!(
        who(&c, &[("AUTHORIZATION", "Bearer sk-a")]).unwrap().0,
        "tenant-a"
    );
    // A second key under another spelling of the same name still conflicts.
    assert_eq!(
        reason(who(&c, &[("x-api-key", "sk-a"), ("X-API-KEY", "sk-b")])),
        "conflicting_credentials"
    );
    let (_, v) = jwt_header("org-b", "bob");
    assert_eq!(who(&c, &[("X-JWT-Payload", &v)]).unwrap().0, "tenant-b");
}

#[test]
fn whitespace_variations() {
    let c = cfg();
    for (name, value) in [
        ("authorization", "Bearer  sk-a"),
        ("authorization", "Bearer\tsk-a"),
        ("authorization", "  Bearer sk-a  "),
        ("x-api-key", " sk-a"),
        ("x-api-key", "sk-a\t"),
        ("api-key", "  sk-a  "),
    ] {
        assert_eq!(
            who(&c, &[(name, value)]).unwrap().0,
            "tenant-a",
            "{value:?}"
        );
    }
    // Trimmed values compare equal, so padding does not make a "different" key.
    assert_eq!(
        who(
            &c,
            &[("x-api-key", "sk-a "), ("authorization", "Bearer  sk-a")]
        )
        .unwrap()
        .0,
        "tenant-a"
    );
    for (name, value) in [
        ("authorization", "Bearer sk-a extra"),
        ("authorization", "Bearer sk-a sk-b"),
        ("authorization", "Bearersk-a"),
        ("x-api-key", "sk-a sk-b"),
        ("x-api-key", "s k-a"),
    ] {
        assert_eq!(
            reason(who(&c, &[(name, value)])),
            "invalid_credentials",
            "{value:?}"
        );
    }
}

#[test]
fn bearer_scheme_is_case_insensitive_but_must_be_bearer() {
    let c = cfg();
    for v in ["bearer sk-a", "BEARER sk-a", "BeArEr sk-a"] {
        assert_eq!(
            who(&c, &[("authorization", v)]).unwrap().0,
            "tenant-a",
            "{v}"
        );
    }
    for v in [
        "Basic c2stYTo=",
        "Token sk-a",
        "sk-a",
        "Bearer: sk-a",
        "Bearer, sk-a",
        "Digest username=sk-a",
    ] {
        assert_eq!(
            reason(who(&c, &[("authorization", v)])),
            "invalid_credentials",
            "{v}"
        );
    }
    // A non-Bearer Authorization is never ignored in favour of a valid key elsewhere.
    assert_eq!(
        reason(who(
            &c,
            &[("authorization", "Basic c2stYTo="), ("x-api-key", "sk-a")]
        )),
        "invalid_credentials"
    );
}

#[test]
fn empty_values_are_invalid_not_missing() {
    let c = cfg();
    for (name, value) in [
        ("authorization", ""),
        ("authorization", "Bearer"),
        ("authorization", "Bearer   "),
        ("authorization", "   "),
        ("x-api-key", ""),
        ("x-api-key", "  "),
        ("api-key", ""),
        ("x-jwt-payload", ""),
    ] {
        assert_eq!(
            reason(who(&c, &[(name, value)])),
            "invalid_credentials",
            "{name}={value:?}"
        );
    }
    // Not even next to a valid key.
    assert_eq!(
        reason(who(&c, &[("x-api-key", "sk-a"), ("api-key", "")])),
        "invalid_credentials"
    );
}

#[test]
fn comma_joined_authorization_is_invalid() {
    // Envoy joins repeated inline headers such as Authorization with ','.
    let c = cfg();
    for v in [
        "Bearer sk-a,Bearer sk-a",
        "Bearer sk-a, Bearer sk-b",
        "Bearer sk-a,sk-b",
    ] {
        assert_eq!(
            reason(who(&c, &[("authorization", v)])),
            "invalid_credentials",
            "{v}"
        );
    }
}

#[test]
fn key_bytes_are_compared_exactly() {
    let c = cfg();
    for k in ["SK-A", "sk-a\u{0}", "sk-a\u{200b}", "sk-", "sk-aa"] {
        assert_eq!(
            reason(who(&c, &[("x-api-key", k)])),
            "invalid_credentials",
            "{k:?}"
        );
    }
}

#[test]
fn jwt_payload_header_duplicated() {
    let c = cfg();
    let (n, a) = jwt_header("org-a", "alice");
    let (_, b) = jwt_header("org-b", "bob");
    // A forged copy next to the one jwt_authn adds is never resolved by picking one.
    assert_eq!(
        reason(who(&c, &[(&n, &a), (&n, &a)])),
        "conflicting_credentials"
    );
    assert_eq!(
        reason(who(&c, &[(&n, &b), (&n, &a)])),
        "conflicting_credentials"
    );
    assert_eq!(
        reason(who(&c, &[(&n, &a), ("X-Jwt-Payload", &a)])),
        "conflicting_credentials"
    );
}

#[test]
fn jwt_payload_forged_to_another_tenant_than_the_key() {
    let c = cfg();
    let (n, b) = jwt_header("org-b", "bob");
    assert_eq!(
        reason(who(&c, &[(&n, &b), ("authorization", "Bearer sk-a")])),
        "conflicting_credentials"
    );
}

#[test]
fn jwt_payload_garbage() {
    let c = cfg();
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for bad in [
        "not base64 at all!".to_string(),
        "e30.e30".to_string(), // dots: a whole JWT, not a payload
        base64::engine::general_purpose::STANDARD.encode("{\"org\":\"org-a\"}??>"), // '+' '/'
        enc("not json"),
        enc("[\"org-a\"]"),
        enc("\"org-a\""),
        enc("{}"), // no tenant claim
        enc("{\"org\":null}"),
        enc("{\"org\":[\"org-a\"]}"), // not a string
        enc("{\"org\":7}"),
        enc("{\"org\":\"org-unknown\"}"), // claim value of no tenant
        enc("{\"org\":\"ORG-A\"}"),       // claim values are exact
        enc("{\"tenant\":\"org-a\"}"),    // wrong claim name
    ] {
        assert_eq!(
            reason(who(&c, &[("x-jwt-payload", &bad)])),
            "invalid_credentials",
            "{bad}"
        );
    }
}

#[test]
fn jwt_payload_header_is_ignored_when_no_jwt_is_configured() {
    // Without identity.jwt there is no jwt_authn in front to trust, so the header is just
    // another client header: it neither grants nor denies.
    let c = cfg_without_jwt();
    let (n, b) = jwt_header("org-b", "bob");
    assert_eq!(reason(who(&c, &[(&n, &b)])), "missing_credentials");
    let (t, s, src) = who(&c, &[(&n, &b), ("x-api-key", "sk-a")]).unwrap();
    assert_eq!(
        (t.as_str(), s.as_str(), src),
        ("tenant-a", "svc:a", Source::ApiKey)
    );
    // And a JWT-shaped bearer is an ordinary (unknown) key.
    assert_eq!(
        reason(who(&c, &[(&n, &b), ("authorization", "Bearer a.b.c")])),
        "invalid_credentials"
    );
}

#[test]
fn jwt_claim_values_without_identity_jwt_is_a_config_error() {
    let mut v = config_json(true);
    v.as_object_mut().unwrap().remove("identity");
    let err = Config::parse(v.to_string().as_bytes(), &|_| None).unwrap_err();
    assert!(err.contains("identity.jwt"), "{err}");
}

#[test]
fn mtls_san_unknown_neither_grants_nor_denies() {
    let c = cfg();
    for san in [
        "spiffe://cluster.local/ns/istio-system/sa/ingress",
        "SPIFFE://cluster.local/ns/team-a/sa/agent", // SANs are compared exactly
        "spiffe://cluster.local/ns/team-a/sa/agent/",
        "",
    ] {
        assert_eq!(
            reason(who_peer(&c, &[], Some(san))),
            "missing_credentials",
            "{san}"
        );
        assert_eq!(
            who_peer(&c, &[("x-api-key", "sk-b")], Some(san)).unwrap(),
            ("tenant-b".into(), "svc:b".into(), Source::ApiKey)
        );
    }
}

#[test]
fn trusted_headers_from_the_client_do_not_select_an_identity() {
    let c = cfg();
    let spoof = [
        ("x-ai-tenant", "tenant-b"),
        ("x-ai-subject", "svc:root"),
        ("x-api-key", "sk-a"),
    ];
    assert_eq!(who(&c, &spoof).unwrap().0, "tenant-a");
    assert_eq!(
        reason(who(&c, &[("x-ai-tenant", "tenant-a")])),
        "missing_credentials"
    );
    // The host layer strips these before the filter sets its own.
    for name in [
        "x-ai-tenant",
        "x-ai-subject",
        "x-ai-model",
        "x-gateway-model-name",
    ] {
        assert!(crate::contract::header::TRUSTED.contains(&name), "{name}");
    }
}

#[test]
fn denials_never_echo_credentials() {
    let c = cfg();
    let canary = "sk-CANARY-7f3a9";
    let (_, forged) = jwt_header("org-b", canary);
    for headers in [
        vec![("x-api-key", canary)],
        vec![("authorization", "Basic sk-CANARY-7f3a9")],
        vec![("x-api-key", "sk-a"), ("api-key", canary)],
        vec![("x-jwt-payload", forged.as_str()), ("x-api-key", "sk-a")],
    ] {
        let d = who(&c, &headers).unwrap_err();
        assert!(!d.body().contains("CANARY"), "{}", d.body());
        assert!(!d.message.contains("CANARY"));
    }
}

// ---------------------------------------------------------------------------------------
// Host binding.

fn host_check(c: &Config, key: &str, authority: &str) -> Result<(), &'static str> {
    let id = identify(c, &h(&[("x-api-key", key)]), None).unwrap();
    check_host(c, &id, authority).map_err(|d| d.reason)
}

#[test]
fn bound_tenant_on_its_own_host() {
    let c = cfg();
    for authority in [
        HOST_A,
        "tenant-a.ai.example.com:443",
        "TENANT-A.AI.EXAMPLE.COM",
        "tenant-a.ai.example.com.",
        "tenant-a.ai.example.com.:8080",
    ] {
        assert_eq!(host_check(&c, "sk-a", authority), Ok(()), "{authority}");
    }
}

#[test]
fn valid_key_on_another_tenants_host_is_refused() {
    let c = cfg();
    assert_eq!(host_check(&c, "sk-a", HOST_B), Err("host_mismatch"));
    assert_eq!(
        host_check(&c, "sk-b", "Tenant-A.ai.example.com:10000"),
        Err("host_mismatch")
    );
    // An unbound tenant may not use a hostname another tenant owns ...
    assert_eq!(host_check(&c, "sk-c", HOST_A), Err("host_mismatch"));
    // Look-alikes of a tenant hostname are other, unowned, hostnames.
    assert_eq!(
        host_check(&c, "sk-b", "tenant-a.ai.example.com.evil.com"),
        Ok(())
    );
    let d = {
        let id = identify(&c, &h(&[("x-api-key", "sk-a")]), None).unwrap();
        check_host(&c, &id, HOST_B).unwrap_err()
    };
    assert_eq!(
        (d.status, d.error_type, d.code),
        (403, "request_forbidden", Some("host_mismatch"))
    );
}

#[test]
fn unbound_tenant_on_unbound_host() {
    let c = cfg();
    assert_eq!(host_check(&c, "sk-c", "gateway.example.com"), Ok(()));
    assert_eq!(host_check(&c, "sk-c", ""), Ok(()));
}

#[test]
fn a_bound_tenant_is_served_on_hostnames_no_tenant_owns_by_default() {
    let c = cfg();
    for host in [
        "api.ai.example.com",
        "127.0.0.1:10000",
        "",
        "evil.tenant-a.ai.example.com",
    ] {
        assert_eq!(host_check(&c, "sk-a", host), Ok(()), "{host}");
    }
}

fn with_hosts(edit: impl FnOnce(&mut serde_json::Value)) -> Config {
    let mut v = config_json(false);
    edit(&mut v);
    Config::parse(v.to_string().as_bytes(), &|_| None).unwrap()
}

#[test]
fn unowned_hosts_refuse_serves_only_tenant_and_shared_hostnames() {
    let c = with_hosts(|v| {
        v["identity"] = serde_json::json!({
            "shared_hosts": ["API.ai.example.com."], "unowned_hosts": "refuse"
        });
    });
    for key in ["sk-a", "sk-b", "sk-c"] {
        assert_eq!(
            host_check(&c, key, "api.ai.example.com:443"),
            Ok(()),
            "{key}"
        );
        assert_eq!(
            host_check(&c, key, "other.example.com"),
            Err("host_mismatch"),
            "{key}"
        );
        assert_eq!(host_check(&c, key, ""), Err("host_mismatch"), "{key}");
    }
    assert_eq!(host_check(&c, "sk-a", HOST_A), Ok(()));
    assert_eq!(host_check(&c, "sk-c", HOST_A), Err("host_mismatch"));
}

#[test]
fn own_hosts_only_keeps_a_tenant_on_its_hostnames() {
    let c = with_hosts(|v| {
        v["tenants"][0]["own_hosts_only"] = serde_json::json!(true);
        v["identity"] = serde_json::json!({ "shared_hosts": ["api.ai.example.com"] });
    });
    assert_eq!(host_check(&c, "sk-a", HOST_A), Ok(()));
    assert_eq!(
        host_check(&c, "sk-a", "api.ai.example.com"),
        Err("host_mismatch")
    );
    assert_eq!(host_check(&c, "sk-a", "127.0.0.1"), Err("host_mismatch"));
    assert_eq!(host_check(&c, "sk-b", "api.ai.example.com"), Ok(()));
}

#[test]
fn host_settings_are_validated() {
    let parse = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = config_json(false);
        edit(&mut v);
        Config::parse(v.to_string().as_bytes(), &|_| None)
            .map(|_| ())
            .unwrap_err()
    };
    let e = parse(&|v| v["identity"] = serde_json::json!({ "shared_hosts": [HOST_A] }));
    assert!(e.starts_with("identity.shared_hosts[0]: "), "{e}");
    let e = parse(&|v| v["tenants"][2]["own_hosts_only"] = serde_json::json!(true));
    assert!(e.starts_with("tenants[2].own_hosts_only: "), "{e}");
    let e = parse(&|v| v["identity"] = serde_json::json!({ "unowned_hosts": "nobody" }));
    assert!(e.starts_with("identity.unowned_hosts: "), "{e}");
}

#[test]
fn host_binding_applies_to_every_source() {
    let c = cfg();
    let id = identify(&c, &[], Some(SPIFFE_A)).unwrap();
    assert_eq!(
        check_host(&c, &id, HOST_B).map_err(|d| d.reason),
        Err("host_mismatch")
    );
    let (n, v) = jwt_header("org-a", "alice");
    let id = identify(&c, &[(n, v)], None).unwrap();
    assert_eq!(
        check_host(&c, &id, HOST_B).map_err(|d| d.reason),
        Err("host_mismatch")
    );
    assert!(check_host(&c, &id, HOST_A).is_ok());
}

#[test]
fn a_hostname_bound_twice_is_a_config_error() {
    let mut v = config_json(true);
    v["tenants"][2]["hosts"] = serde_json::json!(["TENANT-A.ai.example.com:443"]);
    let err = Config::parse(v.to_string().as_bytes(), &|_| None).unwrap_err();
    assert!(err.contains("already bound"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Route and model authorization, through the per-request core.

struct Req<'a> {
    path: &'a str,
    host: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    method: &'a str,
    has_body: bool,
}

fn req<'a>(path: &'a str, host: &'a str, key: &'a str) -> Req<'a> {
    Req {
        path,
        host,
        headers: vec![("x-api-key", key)],
        method: "POST",
        has_body: true,
    }
}

fn run(c: &Config, r: &Req) -> (Exchange, HeadersAction) {
    let headers = h(&r.headers);
    let head = RequestHead {
        headers: &headers,
        authority: r.host,
        path: r.path,
        method: r.method,
        request_id: None,
        peer_uri_san: None,
        has_body: r.has_body,
    };
    let mut ex = Exchange::new(1_700_000_000_000);
    ex.request_id = Some("req-1".to_string());
    let action = ex.on_request_headers(c, &head);
    (ex, action)
}

fn denied(c: &Config, r: &Req) -> &'static str {
    match run(c, r).1 {
        HeadersAction::Deny(d) => d.reason,
        other => panic!("expected a denial for {}, got {other:?}", r.path),
    }
}

#[test]
fn route_allowlist() {
    let c = cfg();
    // tenant-b: embeddings only.
    assert_eq!(
        run(&c, &req("/v1/embeddings", HOST_B, "sk-b")).1,
        HeadersAction::ReadBody { hold: true }
    );
    assert_eq!(
        denied(&c, &req("/v1/chat/completions", HOST_B, "sk-b")),
        "route_forbidden"
    );
    let mut get = req("/v1/models", HOST_B, "sk-b");
    get.method = "GET";
    get.has_body = false;
    assert_eq!(denied(&c, &get), "route_forbidden");
    // A path no route matches is refused for every tenant, with or without an allowlist
    // (deny by default: it would reach a backend without any body or model check).
    for (path, host, key) in [
        ("/v1/files", HOST_B, "sk-b"),
        ("/v1/embeddingsX", HOST_B, "sk-b"),
        ("/v1/files", HOST_A, "sk-a"),
        ("/v1/chat/completionsX", HOST_A, "sk-a"),
    ] {
        assert_eq!(
            denied(&c, &req(path, host, key)),
            "route_not_found",
            "{path}"
        );
    }
    // tenant-c: chat only, any host it does not conflict with.
    assert_eq!(
        denied(&c, &req("/v1/embeddings", "gw.example.com", "sk-c")),
        "route_forbidden"
    );
    assert!(matches!(
        run(&c, &req("/v1/chat/completions", "gw.example.com", "sk-c")).1,
        HeadersAction::ReadBody { .. }
    ));
    let d = match run(&c, &req("/v1/chat/completions", HOST_B, "sk-b")).1 {
        HeadersAction::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    };
    assert_eq!(
        (d.status, d.error_type, d.code),
        (403, "request_forbidden", Some("route_forbidden"))
    );
}

#[test]
fn route_matching_variants() {
    let c = cfg();
    // Sub-paths, a trailing slash and a query string stay on the route.
    for p in [
        "/v1/embeddings/",
        "/v1/embeddings?api-version=2024-02-01",
        "/v1/embeddings/sub",
    ] {
        assert!(
            matches!(
                run(&c, &req(p, HOST_B, "sk-b")).1,
                HeadersAction::ReadBody { .. }
            ),
            "{p}"
        );
    }
    // Case does not move a path to another route or out of the allowlist.
    assert!(matches!(
        run(&c, &req("/V1/Embeddings", HOST_B, "sk-b")).1,
        HeadersAction::ReadBody { .. }
    ));
    assert_eq!(
        denied(&c, &req("/V1/CHAT/COMPLETIONS", HOST_B, "sk-b")),
        "route_forbidden"
    );
    // tenant-a has no route list: an upper-case chat path is still read as chat, so the
    // model allowlist applies.
    let (ex, action) = run(&c, &req("/V1/Chat/Completions", HOST_A, "sk-a"));
    assert!(matches!(action, HeadersAction::ReadBody { .. }));
    assert_eq!(ex.route_prefix(&c), Some("/v1/chat/completions"));
}

#[test]
fn non_canonical_paths_are_refused_after_authentication() {
    let c = cfg();
    for p in [
        "/v1/embeddings/../chat/completions",
        "/v1/embeddings/./x",
        "/v1//chat/completions",
        "/v1/chat%2Fcompletions",
        "/v1/chat/%63ompletions",
        "/v1/%65mbeddings",
        "/v1/embeddings%2e%2e/x",
        "/v1/embeddings/%2E%2E/chat/completions",
        "/v1/embeddings%5cx",
        "/v1/embeddings%25",
        "/v1/embeddings%",
        "/v1/embeddings%zz",
        "/v1\\chat",
        "v1/embeddings",
    ] {
        assert_eq!(denied(&c, &req(p, HOST_B, "sk-b")), "invalid_path", "{p}");
    }
    // Encodings of reserved characters other than separators are canonical.
    assert!(crate::lifecycle::route::is_canonical(
        "/v1/embeddings?q=%2F"
    ));
    assert!(crate::lifecycle::route::is_canonical("/v1/files/a%20b"));
    // Authentication first: an unauthenticated odd path is a 401, not a 400.
    assert_eq!(
        denied(&c, &req("/v1/../x", HOST_B, "sk-wrong")),
        "invalid_credentials"
    );
}

#[test]
fn checks_run_in_order_identity_host_path_route() {
    let c = cfg();
    // Wrong host and forbidden route: the host answers first.
    assert_eq!(
        denied(&c, &req("/v1/chat/completions", HOST_A, "sk-b")),
        "host_mismatch"
    );
    // Conflicting credentials on the right host.
    let mut r = req("/v1/embeddings", HOST_B, "sk-b");
    r.headers.push(("api-key", "sk-a"));
    assert_eq!(denied(&c, &r), "conflicting_credentials");
    let mut r = req("/v1/embeddings", HOST_B, "sk-b");
    r.headers.clear();
    assert_eq!(denied(&c, &r), "missing_credentials");
}

fn body_action(c: &Config, path: &str, host: &str, key: &str, body: &str) -> BodyAction {
    let (mut ex, action) = run(c, &req(path, host, key));
    assert!(
        matches!(action, HeadersAction::ReadBody { .. }),
        "{action:?}"
    );
    ex.on_request_body(c, body.as_bytes(), true, None)
}

#[test]
fn model_allowlist() {
    let c = cfg();
    let emb = |m: &str| format!("{{\"model\":\"{m}\",\"input\":\"hi\"}}");
    let chat = |m: &str| {
        format!("{{\"model\":\"{m}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}")
    };
    assert!(matches!(
        body_action(&c, "/v1/embeddings", HOST_B, "sk-b", &emb("bge-small")),
        BodyAction::Continue(_)
    ));
    for (path, host, key, body) in [
        ("/v1/embeddings", HOST_B, "sk-b", emb("llama3-8b")),
        ("/v1/chat/completions", HOST_A, "sk-a", chat("bge-small")),
        ("/v1/chat/completions", HOST_A, "sk-a", chat("gpt-unknown")),
        ("/v1/chat/completions", HOST_A, "sk-a", chat("LLAMA3-8B")),
    ] {
        match body_action(&c, path, host, key, &body) {
            BodyAction::Deny(d) => {
                assert_eq!((d.status, d.reason), (404, "model_forbidden"), "{body}");
                assert_eq!(d.code, Some("model_not_found"));
                // Unknown or not allowed, the answer has the same shape.
                assert!(
                    d.message.starts_with("The model `")
                        && d.message
                            .ends_with("` does not exist or you do not have access to it."),
                    "{}",
                    d.message
                );
            }
            other => panic!("expected model_forbidden for {body}, got {other:?}"),
        }
    }
    // tenant-c has no model list: any configured model, never an unknown one.
    assert!(matches!(
        body_action(
            &c,
            "/v1/chat/completions",
            "gw.example.com",
            "sk-c",
            &chat("bge-small")
        ),
        BodyAction::Continue(_)
    ));
    assert!(matches!(
        body_action(
            &c,
            "/v1/chat/completions",
            "gw.example.com",
            "sk-c",
            &chat("nope")
        ),
        BodyAction::Deny(_)
    ));
}

// ---------------------------------------------------------------------------------------
// The audit record of each outcome.

fn audit_of(ex: &Exchange, c: &Config, cluster: Option<&str>, status: u16) -> serde_json::Value {
    let end = End {
        now_ms: 1_700_000_000_050,
        status: Some(status),
        cluster,
        upstream_address: None,
        code_details: Some("via_upstream"),
    };
    let (_, audit) = ex.records(c, &end);
    serde_json::from_str(&crate::record::to_json(&audit)).unwrap()
}

#[test]
fn audit_record_for_allow_and_each_denial() {
    let c = cfg();
    let (mut ex, _) = run(&c, &req("/v1/embeddings", HOST_B, "sk-b"));
    ex.on_forwarded(1_700_000_000_010);
    let a = audit_of(&ex, &c, Some("embed-bge-small-v1"), 200);
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["tenant"], "tenant-b");
    assert_eq!(a["subject"], "svc:b");
    assert_eq!(a["route"], "/v1/embeddings");
    assert_eq!(a["model_route"], "embed-bge-small-v1");
    assert_eq!(a["request_id"], "req-1");
    assert_eq!(a["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(a["sensitive_payload_logged"], false);
    assert_eq!(a["auth_source"], "api_key");
    assert!(a.get("reason").is_none());

    // Authenticated but refused: who it was is recorded.
    let (ex, _) = run(&c, &req("/v1/chat/completions", HOST_B, "sk-b"));
    let a = audit_of(&ex, &c, Some("chat-llama3-8b-v1"), 403);
    assert_eq!(
        (a["decision"].as_str(), a["reason"].as_str()),
        (Some("deny"), Some("route_forbidden"))
    );
    assert_eq!(a["tenant"], "tenant-b");
    assert_eq!(a["subject"], "svc:b");
    assert!(a["model_route"].is_null(), "a local reply names no backend");

    let (ex, _) = run(&c, &req("/v1/embeddings", HOST_A, "sk-b"));
    let a = audit_of(&ex, &c, None, 403);
    assert_eq!(a["reason"], "host_mismatch");
    assert_eq!(a["tenant"], "tenant-b");

    // Not authenticated: nobody is named.
    let (ex, _) = run(&c, &req("/v1/embeddings", HOST_B, "sk-unknown"));
    let a = audit_of(&ex, &c, None, 401);
    assert_eq!(a["reason"], "invalid_credentials");
    assert!(a["tenant"].is_null() && a["subject"].is_null());
    let text = a.to_string();
    assert!(!text.contains("sk-unknown") && !text.contains(&hex("sk-unknown")));
}

#[test]
fn audit_record_when_another_filter_answered_first() {
    // jwt_authn (without allow_missing_or_failed) or Envoy answered before this filter saw
    // the headers: on_log still produces the one record, as a denial.
    let c = cfg();
    let mut ex = Exchange::new(1_700_000_000_000);
    let head = RequestHead {
        headers: &[],
        authority: HOST_A,
        path: "/v1/chat/completions",
        method: "POST",
        request_id: None,
        peer_uri_san: None,
        has_body: false,
    };
    ex.request_id = Some("req-early".to_string());
    ex.on_unseen_request(&c, &head);
    let a = audit_of(&ex, &c, Some("chat-llama3-8b-v1"), 401);
    assert_eq!(a["decision"], "deny");
    assert_eq!(a["reason"], "answered_before_filter");
    assert_eq!(a["request_id"], "req-early");
    assert_eq!(a["route"], "/v1/chat/completions");
    assert!(a["model_route"].is_null());
    assert_eq!(a["http_status"], 401);
}
