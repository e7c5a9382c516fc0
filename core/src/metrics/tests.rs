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
