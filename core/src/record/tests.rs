use super::*;

use crate::contract::GATEWAY_RECORD_FIELDS as GATEWAY_FIELDS;

#[test]
fn gateway_record_has_every_contract_field() {
    let v: serde_json::Value = serde_json::from_str(&to_json(&GatewayRecord::default())).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    let mut want = GATEWAY_FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want);
}

#[test]
fn audit_record_fields() {
    let a = AuditRecord {
        decision: "deny",
        reason: Some("invalid_credentials"),
        ..Default::default()
    };
    let v: serde_json::Value = serde_json::from_str(&to_json(&a)).unwrap();
    for k in [
        "timestamp",
        "tenant",
        "subject",
        "route",
        "model_route",
        "decision",
        "request_id",
        "client_request_id",
        "sensitive_payload_logged",
        "reason",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["sensitive_payload_logged"], false);
    let allow = AuditRecord {
        decision: "allow",
        ..Default::default()
    };
    assert!(!to_json(&allow).contains("reason"));
}

#[test]
fn state_entries_by_mode() {
    let g = GatewayRecord {
        tenant: Some("tenant-a".into()),
        http_status: Some(200),
        ttft_ms: None,
        ..Default::default()
    };
    let a = AuditRecord {
        decision: "allow",
        ..Default::default()
    };
    let keys = |mode| {
        state_entries(&g, &a, 42, mode)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(FilterStateMode::Records),
        vec!["ai.record", "ai.audit", "ai.tenant", "ai.tokens_total"]
    );
    let full = keys(FilterStateMode::Full);
    assert!(full.contains(&"ai.http_status") && full.contains(&"ai.decision"));
    assert!(!full.contains(&"ai.ttft_ms"), "unknown values are not set");
    let entries = state_entries(&g, &a, 42, FilterStateMode::Full);
    assert!(entries.contains(&("ai.tokens_total", "42".to_string())));
    assert!(entries.contains(&("ai.http_status", "200".to_string())));
}

#[test]
fn sanitize_caps_and_masks() {
    assert_eq!(sanitize("llama3-8b", 64), "llama3-8b");
    assert_eq!(sanitize("a\nb\"c", 64), "a?b\"c");
    assert_eq!(sanitize(&"x".repeat(500), 10).len(), 10);
}
