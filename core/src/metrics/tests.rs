use super::*;

#[test]
fn name_encoding() {
    assert_eq!(
        series_name(
            "ai_gateway_requests_total",
            &[("tenant", "a"), ("status", "200")]
        ),
        "ai_gateway_requests_total.tenant=.=a;.;.status=.=200;.;"
    );
}

#[test]
fn status_bounded() {
    assert_eq!(status_label(Some(200)), "200");
    assert_eq!(status_label(Some(0)), "unknown");
    assert_eq!(status_label(Some(999)), "unknown");
    assert_eq!(status_label(None), "unknown");
}

#[test]
fn split_inverts_series_name() {
    let name = series_name(
        "ai_gateway_requests_total",
        &[("tenant", "a.b"), ("status", "200")],
    );
    let (base, labels) = split_series(&name).unwrap();
    assert_eq!(base, "ai_gateway_requests_total");
    assert_eq!(labels, vec![("tenant", "a.b"), ("status", "200")]);
    assert_eq!(split_series("plain"), Some(("plain", vec![])));
    assert_eq!(split_series("x.broken"), None);
}

/// Every series a finished request can emit is in the catalogue, with its labels in
/// order (hosts that declare metrics up front rely on it).
#[test]
fn observations_match_the_catalogue() {
    let rec = GatewayRecord {
        tenant: Some("t".into()),
        http_status: Some(200),
        latency_ms: Some(5),
        ttft_ms: Some(2),
        prompt_tokens: Some(3),
        completion_tokens: Some(4),
        estimated_cost_usd: Some(0.5),
        ..GatewayRecord::default()
    };
    let f = Finished {
        record: &rec,
        upstream_ms: Some(4),
        denial_reason: Some("quota_tokens"),
        busy_ns: 1000,
        unreachable: Some("local_fallback"),
        budgets: vec![("day", 10, 5)],
        operation: Some("chat"),
        request_model: Some("m"),
    };
    let mut all = observations(&f);
    all.push(sync_observation(true));
    let f2 = Finished {
        denial_reason: Some("invalid_credentials"),
        ..f
    };
    all.extend(observations(&f2));
    for obs in &all {
        let (base, labels) = split_series(&obs.name).unwrap();
        let entry = CATALOGUE.iter().find(|(b, _, _)| *b == base);
        let (_, kind, names) = entry.unwrap_or_else(|| panic!("{base} not in the catalogue"));
        assert_eq!(*kind, obs.kind, "{base}");
        let got: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        assert_eq!(&got[..], *names, "{base}");
    }
}
