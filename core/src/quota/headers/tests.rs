use super::*;
use crate::quota::reserve::{BucketReport, ReserveOutcome};

fn rep(kind: BucketKind, remaining: u64, reset_ms: u64, denied: bool) -> BucketReport {
    BucketReport {
        kind,
        model_scoped: false,
        limit: 60,
        remaining,
        reset_ms,
        denied,
    }
}

fn outcome(verdict: ReserveVerdict, reports: Vec<BucketReport>) -> ReserveOutcome {
    ReserveOutcome {
        verdict,
        degraded: false,
        reservation: None,
        reports,
        round_trips: 0,
    }
}

#[test]
fn durations_match_go_format() {
    let cases = [
        (0, "0s"),
        (1, "1ms"),
        (20, "20ms"),
        (999, "999ms"),
        (1_000, "1s"),
        (1_500, "1.5s"),
        (8_640, "8.64s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (90_500, "1m30.5s"),
        (360_000, "6m0s"),
        (3_600_000, "1h0m0s"),
        (3_723_004, "1h2m3.004s"),
    ];
    for (ms, want) in cases {
        assert_eq!(format_duration(ms), want, "{ms}");
    }
    assert!(format_duration(u64::MAX).ends_with("s"));
}

#[test]
fn allowed_outcome_headers() {
    let out = outcome(
        ReserveVerdict::Allowed,
        vec![
            rep(BucketKind::Requests, 59, 1_000, false),
            rep(BucketKind::Tokens, 149_984, 360_000, false),
        ],
    );
    let h = rate_limit_headers(&out);
    assert_eq!(
        h,
        vec![
            ("x-ratelimit-limit-requests", "60".to_owned()),
            ("x-ratelimit-remaining-requests", "59".to_owned()),
            ("x-ratelimit-reset-requests", "1s".to_owned()),
            ("x-ratelimit-limit-tokens", "60".to_owned()),
            ("x-ratelimit-remaining-tokens", "149984".to_owned()),
            ("x-ratelimit-reset-tokens", "6m0s".to_owned()),
        ]
    );
}

#[test]
fn denied_outcome_adds_retry_after_rounded_up() {
    let reports = vec![rep(BucketKind::Tokens, 3, 20_000, true)];
    for (ms, secs) in [
        (1, "1"),
        (999, "1"),
        (1_000, "1"),
        (1_001, "2"),
        (7_100, "8"),
    ] {
        let out = outcome(
            ReserveVerdict::Denied {
                kind: BucketKind::Tokens,
                retry_after_ms: ms,
            },
            reports.clone(),
        );
        let h = rate_limit_headers(&out);
        assert_eq!(
            h.len(),
            5,
            "only the configured token bucket plus retry headers"
        );
        assert_eq!(h[3], ("retry-after", secs.to_owned()));
        assert_eq!(h[4], ("retry-after-ms", ms.to_string()));
    }
    let zero = outcome(
        ReserveVerdict::Denied {
            kind: BucketKind::Tokens,
            retry_after_ms: 0,
        },
        vec![],
    );
    assert_eq!(
        rate_limit_headers(&zero),
        vec![
            ("retry-after", "1".to_owned()),
            ("retry-after-ms", "1".to_owned())
        ]
    );
}

#[test]
fn no_retry_after_unless_rate_limited() {
    for v in [
        ReserveVerdict::StoreUnavailable,
        ReserveVerdict::TooLarge {
            kind: BucketKind::Tokens,
            cost: 9,
            max: 5,
        },
    ] {
        let h = rate_limit_headers(&outcome(v, vec![rep(BucketKind::Tokens, 5, 0, true)]));
        assert!(h.iter().all(|(n, _)| !n.starts_with("retry-after")));
    }
    assert!(rate_limit_headers(&outcome(ReserveVerdict::Allowed, vec![])).is_empty());
}

#[test]
fn tightest_or_denying_bucket_wins() {
    let mut model = rep(BucketKind::Tokens, 5, 2_000, false);
    model.model_scoped = true;
    model.limit = 10;
    let tenant = rep(BucketKind::Tokens, 500, 9_000, false);
    let h = headers_for(&[tenant, model], None);
    assert_eq!(h[0], ("x-ratelimit-limit-tokens", "10".to_owned()));
    assert_eq!(h[1], ("x-ratelimit-remaining-tokens", "5".to_owned()));
    let mut denying = tenant;
    denying.denied = true;
    let h = headers_for(&[model, denying], None);
    assert_eq!(h[1], ("x-ratelimit-remaining-tokens", "500".to_owned()));
    // Tie on remaining: the longer reset is reported.
    let a = rep(BucketKind::Requests, 0, 100, false);
    let b = rep(BucketKind::Requests, 0, 700, false);
    assert_eq!(
        headers_for(&[a, b], None)[2],
        ("x-ratelimit-reset-requests", "700ms".to_owned())
    );
}
