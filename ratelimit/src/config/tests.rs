use super::*;

fn load(text: &str) -> Result<Config, String> {
    let mut c = Config::default();
    c.add_yaml("test.yaml", text)?;
    Ok(c)
}

fn limited(n: u32, unit: Unit) -> Limit {
    Limit::Limited {
        requests_per_unit: n,
        unit,
        name: String::new(),
    }
}

/// The service configuration of docs/quotas.md (global limits per tenant).
const QUOTAS_DOC: &str = "
domain: ai-gateway
descriptors:
  - key: kind
    value: requests
    descriptors:
      - key: tenant
        rate_limit: { unit: minute, requests_per_unit: 6000 }
  - key: kind
    value: tokens
    descriptors:
      - key: tenant
        rate_limit: { unit: minute, requests_per_unit: 2000000 }
";

#[test]
fn nested_descriptors_match_level_by_level() {
    let c = load(QUOTAS_DOC).unwrap();
    assert_eq!(c.domains(), vec!["ai-gateway"]);
    let tokens = [("kind", "tokens"), ("tenant", "tenant-a")];
    assert_eq!(
        c.find("ai-gateway", tokens),
        Some(&limited(2_000_000, Unit::Minute))
    );
    let requests = [("kind", "requests"), ("tenant", "anyone")];
    assert_eq!(
        c.find("ai-gateway", requests),
        Some(&limited(6000, Unit::Minute))
    );
    // The placeholder level has no limit of its own; deeper or unknown paths have none.
    assert_eq!(c.find("ai-gateway", [("kind", "tokens")]), None);
    assert_eq!(
        c.find("ai-gateway", [("kind", "other"), ("tenant", "a")]),
        None
    );
    assert_eq!(
        c.find(
            "ai-gateway",
            [("kind", "tokens"), ("tenant", "a"), ("x", "y")]
        ),
        None
    );
    assert_eq!(c.find("ai-gateway", [("tenant", "a")]), None);
    assert_eq!(c.find("ai-gateway", []), None);
    assert_eq!(c.find("other-domain", tokens), None);
}

#[test]
fn a_value_match_is_tried_before_the_key_alone() {
    let c = load(
        "
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: second, requests_per_unit: 10 }
  - key: remote_address
    value: 50.0.0.5
    rate_limit: { unit: second, requests_per_unit: 0 }
  - key: database
    value: users
    rate_limit: { unit: HOUR, requests_per_unit: 500, name: users-db }
",
    )
    .unwrap();
    let any = [("remote_address", "50.0.0.1")];
    assert_eq!(c.find("edge", any), Some(&limited(10, Unit::Second)));
    let listed = [("remote_address", "50.0.0.5")];
    assert_eq!(c.find("edge", listed), Some(&limited(0, Unit::Second)));
    let named = Limit::Limited {
        requests_per_unit: 500,
        unit: Unit::Hour,
        name: "users-db".into(),
    };
    assert_eq!(c.find("edge", [("database", "users")]), Some(&named));
    assert_eq!(c.find("edge", [("database", "orders")]), None);
}

#[test]
fn intermediate_levels_can_have_their_own_limit() {
    let c = load(
        "
domain: d
descriptors:
  - key: tenant
    rate_limit: { unit: day, requests_per_unit: 100 }
    descriptors:
      - key: model
        value: big
        rate_limit: { unit: day, requests_per_unit: 5 }
",
    )
    .unwrap();
    assert_eq!(
        c.find("d", [("tenant", "t")]),
        Some(&limited(100, Unit::Day))
    );
    assert_eq!(
        c.find("d", [("tenant", "t"), ("model", "big")]),
        Some(&limited(5, Unit::Day))
    );
    assert_eq!(c.find("d", [("tenant", "t"), ("model", "small")]), None);
}

#[test]
fn months_are_a_unit_in_any_case() {
    let c = load(
        "
domain: d
descriptors:
  - key: kind
    value: spend_month
    descriptors:
      - key: tenant
        rate_limit: { unit: month, requests_per_unit: 10000000 }
  - key: kind
    value: shouting
    rate_limit: { unit: Month, requests_per_unit: 1 }
",
    )
    .unwrap();
    assert_eq!(
        c.find("d", [("kind", "spend_month"), ("tenant", "t")]),
        Some(&limited(10_000_000, Unit::Month))
    );
    assert_eq!(
        c.find("d", [("kind", "shouting")]),
        Some(&limited(1, Unit::Month))
    );
    let e = load("domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: week, requests_per_unit: 1 }\n")
        .unwrap_err();
    assert!(e.contains("\"week\" is not one of"), "{e}");
}

#[test]
fn unlimited_and_metrics_only_keys_are_accepted() {
    let c = load(
        "
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true
  - key: azure
    detailed_metric: true
    value_to_metric: false
    shadow_mode: false
    rate_limit:
      unit: minute
      requests_per_unit: 100
",
    )
    .unwrap();
    assert_eq!(c.find("internal", [("ldap", "x")]), Some(&Limit::Unlimited));
    assert_eq!(
        c.find("internal", [("azure", "x")]),
        Some(&limited(100, Unit::Minute))
    );
}

#[test]
fn a_domain_without_descriptors_limits_nothing() {
    let c = load("domain: empty\n").unwrap();
    assert!(c.has_domain("empty"));
    assert_eq!(c.find("empty", [("k", "v")]), None);
}

fn error_of(text: &str) -> String {
    load(text).unwrap_err()
}

#[test]
fn errors_name_the_file_and_the_field() {
    let e = error_of("domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: minutes, requests_per_unit: 1 }\n");
    assert_eq!(
        e,
        "test.yaml: descriptors[0].rate_limit.unit: \"minutes\" is not one of second, minute, hour, day, month"
    );
    let e = error_of("domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: { requests_per_unit: 1 }\n");
    assert_eq!(
        e,
        "test.yaml: descriptors[0].descriptors[0].rate_limit.unit: required (second, minute, hour, day or month)"
    );
    let e = error_of("domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: day }\n");
    assert_eq!(
        e,
        "test.yaml: descriptors[0].rate_limit.requests_per_unit: required"
    );
    let e = error_of("domain: d\ndescriptors:\n  - key: ''\n");
    assert_eq!(e, "test.yaml: descriptors[0].key: must not be empty");
    assert_eq!(
        error_of("domain: ''\n"),
        "test.yaml: domain: must not be empty"
    );
}

#[test]
fn duplicates_are_refused() {
    let e =
        error_of("domain: d\ndescriptors:\n  - key: a\n    value: v\n  - key: a\n    value: v\n");
    assert!(
        e.starts_with("test.yaml: descriptors[1]: a descriptor with this key"),
        "{e}"
    );
    let e = error_of("domain: d\ndescriptors:\n  - key: a\n  - key: a\n    value: ''\n");
    assert!(e.starts_with("test.yaml: descriptors[1]:"), "{e}");
    let mut c = load("domain: d\n").unwrap();
    let e = c.add_yaml("second.yaml", "domain: d\n").unwrap_err();
    assert_eq!(
        e,
        "second.yaml: domain \"d\" is already configured by another file"
    );
}

#[test]
fn decision_changing_features_this_service_lacks_are_refused() {
    let cases = [
        ("  - key: a\n    shadow_mode: true\n", "descriptors[0].shadow_mode: not supported"),
        ("  - key: a\n    quota_mode: true\n", "descriptors[0].quota_mode: not supported"),
        ("  - key: a\n    value: 'f*'\n    share_threshold: true\n", "descriptors[0].share_threshold: not supported"),
        ("  - key: a\n    value: 'files*'\n", "descriptors[0].value: wildcard values are not supported"),
        ("  - key: a\n    metadata: { team: x }\n", "descriptors[0].metadata: not supported"),
        (
            "  - key: a\n    rate_limit: { unit: day, requests_per_unit: 1, replaces: [{ name: x }] }\n",
            "descriptors[0].rate_limit.replaces: not supported",
        ),
        (
            "  - key: a\n    rate_limit: { unlimited: true, unit: day }\n",
            "descriptors[0].rate_limit: an unlimited rate limit has no unit",
        ),
    ];
    for (descriptors, expected) in cases {
        let e = error_of(&format!("domain: d\ndescriptors:\n{descriptors}"));
        assert!(e.starts_with(&format!("test.yaml: {expected}")), "{e}");
    }
}

#[test]
fn malformed_yaml_and_unknown_fields_are_errors_not_panics() {
    for text in [
        "",
        "domain: [",
        "domain: d\ndescriptors: 3\n",
        "domain: d\ndescriptors:\n  - key: a\n    rate_limt: { unit: day, requests_per_unit: 1 }\n",
        "domain: d\nextra: 1\n",
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: day, requests_per_unit: -1 }\n",
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: day, requests_per_unit: 4294967296 }\n",
        "domain: d\ndomain: e\n",
        "- just\n- a list\n",
    ] {
        let e = error_of(text);
        assert!(e.starts_with("test.yaml: "), "{text:?}: {e}");
    }
}

#[test]
fn the_largest_limit_fits() {
    let c = load("domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 4294967295 }\n")
        .unwrap();
    assert_eq!(
        c.find("d", [("a", "")]),
        Some(&limited(u32::MAX, Unit::Second))
    );
}
