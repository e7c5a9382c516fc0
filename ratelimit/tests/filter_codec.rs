//! The filter's hand-written RLS v3 codec (`ai_gateway_core::quota::rls`) against the
//! protobuf code Envoy's protos generate: what the filter sends decodes as Envoy's
//! `RateLimitRequest`, and Envoy-encoded responses decode as the filter reads them.

use ai_gateway_core::quota::rls::{self, Code, Descriptor};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code as PbCode, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;

#[test]
fn the_filters_request_is_envoys_request() {
    let d = [
        Descriptor {
            entries: vec![("kind", "tokens"), ("tenant", "tenant-a")],
            hits: Some(1234),
            limit: Some(rls::Override {
                requests_per_unit: 50_000,
                unit: 3,
            }),
        },
        Descriptor {
            entries: vec![("kind", "requests"), ("tenant", "tenant-a")],
            hits: Some(0),
            limit: None,
        },
        Descriptor {
            entries: vec![("kind", "requests")],
            hits: None,
            limit: None,
        },
    ];
    let bytes = rls::encode_request("ai-gateway", &d);
    let req = RateLimitRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.domain, "ai-gateway");
    assert_eq!(req.hits_addend, 0);
    assert_eq!(req.descriptors.len(), 3);
    let entries: Vec<Vec<(String, String)>> = req
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        entries[0],
        [
            ("kind".into(), "tokens".into()),
            ("tenant".into(), "tenant-a".into())
        ]
    );
    assert_eq!(req.descriptors[0].hits_addend.map(|h| h.value), Some(1234));
    let limit = req.descriptors[0].limit.unwrap();
    assert_eq!(limit.requests_per_unit, 50_000);
    assert_eq!(limit.unit, Unit::Hour as i32);
    assert_eq!(req.descriptors[1].limit, None);
    assert_eq!(
        req.descriptors[1].hits_addend.map(|h| h.value),
        Some(0),
        "an explicit 0: a pure read"
    );
    assert_eq!(req.descriptors[2].hits_addend, None);
}

#[test]
fn envoys_response_is_read_by_the_filter() {
    let resp = RateLimitResponse {
        overall_code: PbCode::OverLimit as i32,
        statuses: vec![
            DescriptorStatus {
                code: PbCode::Ok as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: 600,
                    unit: Unit::Minute as i32,
                    ..Default::default()
                }),
                limit_remaining: 599,
                duration_until_reset: Some(Duration {
                    seconds: 17,
                    nanos: 250_000_000,
                }),
                ..Default::default()
            },
            DescriptorStatus {
                code: PbCode::OverLimit as i32,
                ..Default::default()
            },
        ],
        raw_body: b"ignored".to_vec(),
        ..Default::default()
    };
    let r = rls::decode_response(&resp.encode_to_vec()).unwrap();
    assert_eq!(r.overall, Code::OverLimit);
    assert_eq!(r.statuses.len(), 2);
    assert_eq!(r.statuses[0].code, Code::Ok);
    assert_eq!(
        (
            r.statuses[0].limit,
            r.statuses[0].unit,
            r.statuses[0].remaining
        ),
        (600, 2, 599)
    );
    assert_eq!(r.statuses[0].reset_ms, 17_250);
    assert_eq!(r.statuses[1].code, Code::OverLimit);
}
