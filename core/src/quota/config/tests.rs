use super::*;

fn parse(json: &str) -> QuotaConfig {
    serde_json::from_str(json).unwrap()
}

fn err(cfg: &QuotaConfig) -> String {
    cfg.validate("tenants[0].quota").unwrap_err()
}

#[test]
fn parses_full_config_with_defaults() {
    let cfg = parse(
        r#"{"requests_per_minute": 60, "tokens_per_minute": 100000, "token_burst": 20000,
            "interactive_reserve": 0.25,
            "models": {"gpt-4o": {"tokens_per_minute": 5000}}}"#,
    );
    assert_eq!(cfg.requests_per_minute, Some(60.0));
    assert_eq!(cfg.request_burst, None);
    assert_eq!(cfg.models["gpt-4o"].tokens_per_minute, Some(5000.0));
    cfg.validate("q").unwrap();
    let empty = parse("{}");
    assert_eq!(empty, QuotaConfig::default());
    assert_eq!(empty.interactive_reserve, 0.0);
    assert!(empty.is_unlimited());
    assert!(!cfg.is_unlimited());
    empty.validate("q").unwrap();
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(serde_json::from_str::<QuotaConfig>(r#"{"tokens_per_min": 5}"#).is_err());
    assert!(serde_json::from_str::<QuotaConfig>(r#"{"models": {"m": {"burst": 5}}}"#).is_err());
}

#[test]
fn validate_names_the_field() {
    let cfg = QuotaConfig {
        tokens_per_minute: Some(100.0),
        token_burst: Some(0.0),
        ..Default::default()
    };
    assert_eq!(
        err(&cfg),
        "tenants[0].quota.token_burst: must be >= 1, got 0"
    );
    let cfg = QuotaConfig {
        requests_per_minute: Some(-5.0),
        ..Default::default()
    };
    assert_eq!(
        err(&cfg),
        "tenants[0].quota.requests_per_minute: must be >= 0.001, got -5"
    );
    let cfg = QuotaConfig {
        tokens_per_minute: Some(f64::NAN),
        ..Default::default()
    };
    assert!(err(&cfg).starts_with("tenants[0].quota.tokens_per_minute: must be a finite number"));
    let cfg = QuotaConfig {
        tokens_per_minute: Some(1e9),
        token_burst: Some(f64::INFINITY),
        ..Default::default()
    };
    assert!(err(&cfg).starts_with("tenants[0].quota.token_burst: must be a finite number"));
    let cfg = QuotaConfig {
        tokens_per_minute: Some(2e12),
        ..Default::default()
    };
    assert!(err(&cfg).starts_with("tenants[0].quota.tokens_per_minute: must be <= "));
}

#[test]
fn burst_without_rate_is_an_error() {
    let cfg = QuotaConfig {
        request_burst: Some(10.0),
        ..Default::default()
    };
    assert_eq!(
        err(&cfg),
        "tenants[0].quota.request_burst: requires tenants[0].quota.requests_per_minute"
    );
}

#[test]
fn fractional_rate_needs_explicit_burst() {
    let cfg = QuotaConfig {
        requests_per_minute: Some(0.5),
        ..Default::default()
    };
    assert!(err(&cfg).contains("needs an explicit request_burst"));
    let ok = QuotaConfig {
        requests_per_minute: Some(0.5),
        request_burst: Some(1.0),
        ..Default::default()
    };
    ok.validate("q").unwrap();
}

#[test]
fn reserve_must_be_in_unit_interval() {
    for bad in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
        let cfg = QuotaConfig {
            interactive_reserve: bad,
            ..Default::default()
        };
        assert!(
            err(&cfg)
                .starts_with("tenants[0].quota.interactive_reserve: must be a number in [0, 1)"),
            "{bad}"
        );
    }
    let cfg = QuotaConfig {
        interactive_reserve: 0.99,
        ..Default::default()
    };
    cfg.validate("q").unwrap();
}

#[test]
fn model_errors_name_the_model() {
    let mut cfg = QuotaConfig::default();
    cfg.models.insert(
        "gpt-4o".into(),
        ModelQuota {
            token_burst: Some(5.0),
            ..Default::default()
        },
    );
    assert_eq!(
        err(&cfg),
        r#"tenants[0].quota.models["gpt-4o"].token_burst: requires tenants[0].quota.models["gpt-4o"].tokens_per_minute"#
    );
    let mut cfg = QuotaConfig::default();
    cfg.models.insert(String::new(), ModelQuota::default());
    assert_eq!(
        err(&cfg),
        "tenants[0].quota.models: model name must not be empty"
    );
}

#[test]
fn buckets_in_charge_order_with_defaulted_burst() {
    let cfg = parse(
        r#"{"requests_per_minute": 60, "tokens_per_minute": 1000, "interactive_reserve": 0.5,
            "models": {"m:1": {"requests_per_minute": 6, "request_burst": 2, "tokens_per_minute": 100}}}"#,
    );
    let b = cfg.buckets("gw", "acme", Some("m:1"));
    let keys: Vec<_> = b.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "gw:q:acme:req",
            "gw:q:acme:req:m%3A1",
            "gw:q:acme:tok",
            "gw:q:acme:tok:m%3A1"
        ]
    );
    assert_eq!(
        b.iter().map(|s| s.model_scoped).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    assert_eq!(
        b[0].limit,
        Limit::new(60.0, 60.0, 0.0).unwrap(),
        "burst defaults to the rate"
    );
    assert_eq!(b[1].limit, Limit::new(6.0, 2.0, 0.0).unwrap());
    assert_eq!(
        b[2].limit,
        Limit::new(1000.0, 1000.0, 0.5).unwrap(),
        "reserve on token buckets"
    );
    assert_eq!(b[3].limit, Limit::new(100.0, 100.0, 0.5).unwrap());
    // Unknown or absent model: tenant buckets only.
    assert_eq!(cfg.buckets("gw", "acme", Some("other")).len(), 2);
    assert_eq!(cfg.buckets("gw", "acme", None).len(), 2);
    assert!(QuotaConfig::default()
        .buckets("gw", "acme", Some("m:1"))
        .is_empty());
}

#[test]
fn keys_cannot_alias_across_tenants() {
    let a = bucket_key("p", "a:tok", BucketKind::Requests, None);
    let b = bucket_key("p", "a", BucketKind::Tokens, Some("req"));
    assert_eq!(a, "p:q:a%3Atok:req");
    assert_eq!(b, "p:q:a:tok:req");
    assert_ne!(
        bucket_key("p", "a%3A", BucketKind::Tokens, None),
        bucket_key("p", "a:", BucketKind::Tokens, None)
    );
}
