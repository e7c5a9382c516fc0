use super::*;

use crate::quota::inflight::Full;

fn json(d: &Denial) -> serde_json::Value {
    serde_json::from_str(&d.body()).unwrap()
}

#[test]
fn openai_shape() {
    let d = Denial::invalid_credentials();
    let v = json(&d);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Incorrect API key provided."));
    assert!(v["error"]["param"].is_null());
    assert_eq!(d.status, 401);
    // Exactly OpenAI's four fields.
    let keys: Vec<&String> = v["error"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
}

#[test]
fn a_missing_key_has_a_json_null_code() {
    let d = Denial::missing_credentials();
    let v = json(&d);
    assert_eq!(d.status, 401);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Present, and null: clients that read `code` see OpenAI's value, not a missing key.
    assert!(v["error"].as_object().unwrap().contains_key("code"));
    assert!(v["error"]["code"].is_null());
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("You didn't provide an API key."), "{msg}");
    for h in crate::contract::header::CREDENTIALS {
        assert!(msg.to_ascii_lowercase().contains(h), "{msg} names {h}");
    }
}

#[test]
fn message_is_escaped() {
    let b = render("a \"quoted\" \n msg", "t", None, Some("c"));
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["message"], "a \"quoted\" \n msg");
}

#[test]
fn rate_limits_are_typed_by_their_bucket() {
    for (kind, t) in [
        (BucketKind::Requests, "requests"),
        (BucketKind::Tokens, "tokens"),
    ] {
        let d = Denial::quota(kind, "m".to_string());
        assert_eq!(
            (d.status, d.error_type, d.code),
            (429, t, Some("rate_limit_exceeded"))
        );
        assert_eq!(d.reason, kind.reason());
    }
    for full in [Full::InFlight, Full::Streams] {
        let d = Denial::concurrency(full, 2);
        assert_eq!((d.status, d.error_type), (429, "requests"));
        assert_eq!(d.reason, full.reason());
    }
}

#[test]
fn the_model_is_repeated_only_when_it_is_harmless() {
    let generic = "The model does not exist or you do not have access to it.";
    let named =
        |m: &str| format!("The model `{m}` does not exist or you do not have access to it.");
    for ok in [
        "gpt-4o",
        "meta-llama/Llama-3.1-8B-Instruct",
        "a b",
        &"m".repeat(128),
    ] {
        assert_eq!(Denial::model_forbidden(ok).message, named(ok));
    }
    for bad in [
        "",
        &"m".repeat(129),
        "a`b",
        "a\"b",
        "a'b",
        "a\\b",
        "a\nb",
        "a\u{7f}b",
        "modèle",
        "a\u{202e}b",
    ] {
        let d = Denial::model_forbidden(bad);
        assert_eq!(d.message, generic, "{bad:?}");
        assert_eq!((d.status, d.code), (404, Some("model_not_found")));
    }
}

#[test]
fn body_errors_name_the_field_in_param() {
    let d = Denial::invalid_body("invalid_type", Some("stream"), "`stream` must be a boolean");
    let v = json(&d);
    assert_eq!(v["error"]["param"], "stream");
    assert_eq!(v["error"]["code"], "invalid_type");
}

/// Every refusal, one sample of each.
fn every_refusal() -> Vec<Denial> {
    vec![
        Denial::missing_credentials(),
        Denial::invalid_credentials(),
        Denial::conflicting_credentials(),
        Denial::host_mismatch(),
        Denial::route_forbidden(),
        Denial::model_forbidden("m"),
        Denial::route_not_found(),
        Denial::invalid_path(),
        Denial::invalid_body("invalid_json", None, "m"),
        Denial::body_too_large(1),
        Denial::quota(BucketKind::Requests, "m".to_string()),
        Denial::quota(BucketKind::Tokens, "m".to_string()),
        Denial::quota_too_large(BucketKind::Requests, "m".to_string()),
        Denial::quota_too_large(BucketKind::Tokens, "m".to_string()),
        Denial::method_not_allowed(&["POST".to_string()]),
        Denial::body_timeout(1),
        Denial::model_not_on_route(),
        Denial::concurrency(Full::InFlight, 1),
        Denial::concurrency(Full::Streams, 1),
        Denial::not_configured(),
        Denial::budget_exceeded("m".to_string()),
        Denial::quota_unavailable(),
    ]
}

/// docs/contract.md's refusal table has a row for each: status, `type`, `code` and the
/// audit reason, so the page cannot drift from what the filter sends.
#[test]
fn every_refusal_is_in_the_contract_table() {
    let doc = include_str!("../../../docs/contract.md");
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with("| "))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    for d in every_refusal() {
        let code = d.code.map_or("null".to_string(), |c| format!("`{c}`"));
        let found = rows.iter().any(|r| {
            r.iter().any(|c| c == &d.status.to_string())
                && r.iter().any(|c| c == &format!("`{}`", d.error_type))
                && r.iter().any(|c| c.split(", ").any(|x| x == code))
                && r.iter().any(|c| c.contains(&format!("`{}`", d.reason)))
        });
        assert!(
            found,
            "docs/contract.md has no refusal row {} `{}` {code} (reason `{}`)",
            d.status, d.error_type, d.reason
        );
    }
}
