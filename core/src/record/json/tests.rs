use super::*;

fn full_gateway() -> GatewayRecord {
    GatewayRecord {
        timestamp: "2026-12-01T21:00:00.000Z".into(),
        request_id: Some("id-\"quoted\"\\back\u{1}".into()),
        client_request_id: Some("client-\u{7f}".into()),
        tenant: Some("tenant-a".into()),
        hostname: Some("tenant-a.ai.example.com".into()),
        route: Some("/v1/chat/completions".into()),
        model_route: Some("chat-llama3-8b-v1".into()),
        stream: Some(true),
        http_status: Some(200),
        latency_ms: Some(12),
        ttft_ms: Some(3),
        prompt_tokens: Some(612),
        completion_tokens: Some(238),
        estimated_cost_usd: Some(0.000_265_2),
        gateway_backend: Some("127.0.0.1:18001".into()),
        model: Some("llama3-8b".into()),
        traffic_class: Some("streaming"),
        usage_estimated: Some(false),
        prompt_sha256: None,
        prompt_blake3: Some("ab".repeat(32)),
        stream_complete: Some(true),
        quota_mode: Some("global"),
        budget_period: Some("month"),
        budget_spent_usd: Some(0.012_345),
        budget_remaining_usd: Some(9.987_655),
        prompt_preview: Some("Hello [EMAIL] ünïcode".into()),
    }
}

#[test]
fn the_hand_written_json_is_serde_jsons_byte_for_byte() {
    let full = full_gateway();
    let empty = GatewayRecord::default();
    let mut odd = full_gateway();
    odd.estimated_cost_usd = Some(f64::NAN);
    odd.prompt_preview = None;
    odd.http_status = Some(u16::MAX);
    odd.latency_ms = Some(u64::MAX);
    for g in [&full, &empty, &odd] {
        assert_eq!(gateway(g), serde_json::to_string(g).unwrap());
    }
    let allow = AuditRecord {
        timestamp: "t".into(),
        tenant: Some("tenant-a".into()),
        subject: Some("svc:agent-platform".into()),
        decision: "allow",
        http_status: Some(200),
        auth_source: Some("api_key"),
        ..AuditRecord::default()
    };
    let deny = AuditRecord {
        decision: "deny",
        reason: Some("missing_credentials"),
        hostname: Some("h\u{7f}\u{1f}".into()),
        ..AuditRecord::default()
    };
    for a in [&allow, &deny, &AuditRecord::default()] {
        assert_eq!(audit(a), serde_json::to_string(a).unwrap());
    }
}
