use super::*;

fn pattern(p: &str, r: Option<&str>) -> UserPattern {
    UserPattern {
        pattern: p.to_owned(),
        replacement: r.map(str::to_owned),
    }
}

#[test]
fn finds_non_empty_matches_with_tag() {
    let rule = UserRule::compile(0, &pattern(r"ACME-\d{4}", Some("[TICKET]"))).unwrap();
    let mut spans = Vec::new();
    rule.find("a ACME-1234 b ACME-99 c ACME-0001", &mut spans);
    assert_eq!(
        spans,
        vec![Span::new(2, 11, "[TICKET]"), Span::new(24, 33, "[TICKET]")]
    );
    // A pattern that can match empty only yields its non-empty matches.
    let rule = UserRule::compile(1, &pattern(r"x*", None)).unwrap();
    let mut spans = Vec::new();
    rule.find("abxxc", &mut spans);
    assert_eq!(spans, vec![Span::new(2, 4, TAG_DEFAULT)]);
}

#[test]
fn errors_name_the_index() {
    let err = UserRule::compile(2, &pattern("(unclosed", None))
        .err()
        .unwrap();
    assert!(
        err.starts_with("redaction.patterns[2]: invalid regex"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    let err = UserRule::compile(0, &pattern("", None)).err().unwrap();
    assert_eq!(err, "redaction.patterns[0]: pattern must not be empty");
    let long = "a".repeat(MAX_PATTERN_BYTES + 1);
    let err = UserRule::compile(5, &pattern(&long, None)).err().unwrap();
    assert!(
        err.starts_with("redaction.patterns[5]: pattern longer"),
        "{err}"
    );
    let err = UserRule::compile(3, &pattern(r"\w{1000}{1000}", None))
        .err()
        .unwrap();
    assert!(
        err.starts_with("redaction.patterns[3]: invalid regex"),
        "{err}"
    );
}
