use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as ProtoUnit;
use envoy_types::pb::google::protobuf::UInt64Value;

use super::*;

const CONFIG: &str = "
domain: ai-gateway
descriptors:
  - key: kind
    value: tokens
    descriptors:
      - key: tenant
        rate_limit: { unit: minute, requests_per_unit: 100, name: tokens }
  - key: kind
    value: requests
    descriptors:
      - key: tenant
        rate_limit: { unit: hour, requests_per_unit: 3 }
  - key: internal
    rate_limit: { unlimited: true }
";

// 2026-12-01T23:37:00.250Z
const NOW: u64 = 1_796_168_220_250;
const MINUTE: u64 = 1_796_168_220;
const HOUR: u64 = 1_796_166_000;

fn config() -> Config {
    let mut c = Config::default();
    c.add_yaml("t.yaml", CONFIG).unwrap();
    c
}

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn with_hits(mut d: RateLimitDescriptor, hits: u64) -> RateLimitDescriptor {
    d.hits_addend = Some(UInt64Value { value: hits });
    d
}

fn request(hits_addend: u32, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "ai-gateway".into(),
        descriptors,
        hits_addend,
    }
}

fn tokens(tenant: &str) -> RateLimitDescriptor {
    desc(&[("kind", "tokens"), ("tenant", tenant)])
}

fn refund(tenant: &str) -> RateLimitDescriptor {
    desc(&[
        ("kind", "tokens"),
        ("tenant", tenant),
        (REFUND_KEY, REFUND_VALUE),
    ])
}

fn key(tenant: &str) -> String {
    format!("p:ai-gateway|kind=tokens|tenant={tenant}|minute:{MINUTE}")
}

fn plan_of(req: &RateLimitRequest) -> Plan {
    plan(&config(), "p:", req, NOW, &[]).unwrap()
}

fn op(key: String, kind: OpKind, hits: u64) -> Op {
    Op {
        key,
        kind,
        hits,
        ttl_seconds: 61,
        once: None,
    }
}

#[test]
fn request_hits_addend_zero_means_one_and_descriptor_hits_override_it() {
    let p = plan_of(&request(0, vec![tokens("a")]));
    assert_eq!(p.ops, vec![op(key("a"), OpKind::Charge, 1)]);
    let p = plan_of(&request(40, vec![tokens("a"), with_hits(tokens("b"), 7)]));
    assert_eq!(
        p.ops,
        vec![
            op(key("a"), OpKind::Charge, 40),
            op(key("b"), OpKind::Charge, 7)
        ]
    );
    // An explicit per-descriptor 0 is a pure read.
    let p = plan_of(&request(40, vec![with_hits(tokens("a"), 0)]));
    assert_eq!(p.ops, vec![op(key("a"), OpKind::Read, 0)]);
    // Huge hits are capped (still over any u32 limit).
    let p = plan_of(&request(0, vec![with_hits(tokens("a"), u64::MAX)]));
    assert_eq!(p.ops[0].hits, MAX_HITS);
}

#[test]
fn over_limit_when_the_value_after_the_increment_exceeds_the_limit() {
    let p = plan_of(&request(10, vec![tokens("a")]));
    let r = p.respond(&[100]);
    assert_eq!(r.overall_code, Code::Ok as i32);
    let s = &r.statuses[0];
    assert_eq!((s.code, s.limit_remaining), (Code::Ok as i32, 0));
    let limit = s.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit, limit.name.as_str()),
        (100, ProtoUnit::Minute as i32, "tokens")
    );
    // 23:37:00.250: 59.75 s to the next minute.
    let reset = s.duration_until_reset.as_ref().unwrap();
    assert_eq!((reset.seconds, reset.nanos), (59, 750_000_000));
    let r = p.respond(&[101]);
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(
        (r.statuses[0].code, r.statuses[0].limit_remaining),
        (Code::OverLimit as i32, 0)
    );
    let r = p.respond(&[37]);
    assert_eq!(r.statuses[0].limit_remaining, 63);
}

#[test]
fn a_pure_read_is_over_only_past_the_limit() {
    let p = plan_of(&request(0, vec![with_hits(tokens("a"), 0)]));
    assert_eq!(p.respond(&[100]).overall_code, Code::Ok as i32);
    assert_eq!(p.respond(&[101]).overall_code, Code::OverLimit as i32);
}

#[test]
fn descriptors_without_a_limit_are_ok_and_touch_nothing() {
    let unknown = desc(&[("kind", "other"), ("tenant", "a")]);
    let unlimited = desc(&[("internal", "x")]);
    let p = plan_of(&request(5, vec![unknown, unlimited, desc(&[])]));
    assert!(p.ops.is_empty());
    let r = p.respond(&[]);
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 3);
    assert!(r
        .statuses
        .iter()
        .all(|s| s.code == Code::Ok as i32 && s.current_limit.is_none()));
    assert_eq!(r.statuses[0].limit_remaining, 0);
    assert_eq!(r.statuses[1].limit_remaining, u32::MAX);
    // An unknown domain limits nothing, overrides included.
    let mut req = request(1, vec![tokens("a")]);
    req.domain = "elsewhere".into();
    assert!(plan(&config(), "p:", &req, NOW, &[])
        .unwrap()
        .ops
        .is_empty());
}

#[test]
fn one_over_limit_descriptor_makes_the_response_over_limit() {
    let requests = desc(&[("kind", "requests"), ("tenant", "a")]);
    let p = plan_of(&request(
        1,
        vec![tokens("a"), requests, desc(&[("internal", "y")])],
    ));
    assert_eq!(p.ops.len(), 2);
    assert_eq!(
        p.ops[1].key,
        format!("p:ai-gateway|kind=requests|tenant=a|hour:{HOUR}")
    );
    assert_eq!(p.ops[1].ttl_seconds, 3_600 - 2_220 + 1);
    let r = p.respond(&[1, 4]);
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let codes: Vec<i32> = r.statuses.iter().map(|s| s.code).collect();
    assert_eq!(
        codes,
        vec![Code::Ok as i32, Code::OverLimit as i32, Code::Ok as i32]
    );
}

#[test]
fn the_refund_extension_decrements_the_counter_of_the_other_entries() {
    let p = plan_of(&request(30, vec![refund("a")]));
    assert_eq!(p.ops, vec![op(key("a"), OpKind::Refund, 30)]);
    // Never over the limit, and it reports the counter's remaining budget.
    let r = p.respond(&[150]);
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(
        (r.statuses[0].code, r.statuses[0].limit_remaining),
        (Code::Ok as i32, 0)
    );
    assert_eq!(p.respond(&[20]).statuses[0].limit_remaining, 80);
    // The per-descriptor hits apply to refunds too; a refund of a descriptor with no limit
    // (or a marker alone) is OK and touches nothing.
    let p = plan_of(&request(30, vec![with_hits(refund("a"), 12)]));
    assert_eq!(p.ops[0].hits, 12);
    let nothing = desc(&[("kind", "other"), (REFUND_KEY, REFUND_VALUE)]);
    let p = plan_of(&request(
        30,
        vec![nothing, desc(&[(REFUND_KEY, REFUND_VALUE)])],
    ));
    assert!(p.ops.is_empty());
    // The marker counts only as the last entry with the value `true`.
    let not_marker = desc(&[("kind", "tokens"), ("tenant", "a"), (REFUND_KEY, "yes")]);
    assert!(plan_of(&request(1, vec![not_marker])).ops.is_empty());
}

#[test]
fn is_negative_hits_refunds_the_descriptor_itself() {
    let mut d = tokens("a");
    d.is_negative_hits = true;
    let p = plan_of(&request(9, vec![d]));
    assert_eq!(p.ops, vec![op(key("a"), OpKind::Refund, 9)]);
}

#[test]
fn a_charge_and_a_refund_of_one_counter_run_in_request_order() {
    let p = plan_of(&request(5, vec![tokens("a"), refund("a")]));
    assert_eq!(
        p.ops,
        vec![
            op(key("a"), OpKind::Charge, 5),
            op(key("a"), OpKind::Refund, 5)
        ]
    );
    let r = p.respond(&[101, 96]);
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[1].limit_remaining, 4);
}

#[test]
fn limit_overrides_replace_the_configured_limit() {
    let mut d = desc(&[("kind", "unconfigured")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: ProtoUnit::Second as i32,
    });
    let p = plan_of(&request(1, vec![d.clone()]));
    assert_eq!(
        p.ops[0].key,
        format!("p:ai-gateway|kind=unconfigured|second:{MINUTE}")
    );
    assert_eq!(p.ops[0].ttl_seconds, 2);
    let s = &p.respond(&[3]).statuses[0];
    assert_eq!(s.code, Code::OverLimit as i32);
    assert_eq!(s.current_limit.as_ref().unwrap().requests_per_unit, 2);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: ProtoUnit::Week as i32,
    });
    let e = plan(&config(), "p:", &request(1, vec![d]), NOW, &[]).unwrap_err();
    assert_eq!(
        e,
        Invalid("descriptors[0]: limit override unit 7 is not implemented".into())
    );
}

// 2026-12-01T00:00:00Z and 2027-01-01T00:00:00Z: NOW's calendar month.
const DECEMBER: u64 = 1_796_083_200;
const JANUARY: u64 = 1_798_761_600;

#[test]
fn month_overrides_count_the_utc_calendar_month() {
    // A spend budget in micro-dollars: 10 USD a month, this call charges 0.25 USD.
    let mut d = with_hits(desc(&[("kind", "spend_month"), ("tenant", "a")]), 250_000);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 10_000_000,
        unit: ProtoUnit::Month as i32,
    });
    let p = plan_of(&request(1, vec![d]));
    assert_eq!(
        p.ops,
        vec![Op {
            key: format!("p:ai-gateway|kind=spend_month|tenant=a|month:{DECEMBER}"),
            kind: OpKind::Charge,
            hits: 250_000,
            ttl_seconds: JANUARY - NOW / 1_000 + 1,
            once: None,
        }]
    );
    let r = p.respond(&[9_750_000]);
    assert_eq!(r.overall_code, Code::Ok as i32);
    let s = &r.statuses[0];
    assert_eq!(s.limit_remaining, 250_000);
    let limit = s.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (10_000_000, ProtoUnit::Month as i32)
    );
    let reset = s.duration_until_reset.as_ref().unwrap();
    let until_ms = JANUARY * 1_000 - NOW;
    assert_eq!(
        (reset.seconds, reset.nanos),
        (
            (until_ms / 1_000) as i64,
            (until_ms % 1_000) as i32 * 1_000_000
        )
    );
    assert_eq!(
        p.respond(&[10_000_001]).overall_code,
        Code::OverLimit as i32
    );
}

#[test]
fn configured_month_limits_and_day_limits_keep_separate_counters() {
    let mut c = Config::default();
    c.add_yaml(
        "m.yaml",
        "domain: m\ndescriptors:\n  - key: kind\n    value: spend_month\n    descriptors:\n      - key: tenant\n        rate_limit: { unit: MONTH, requests_per_unit: 5 }\n  - key: kind\n    value: spend_day\n    descriptors:\n      - key: tenant\n        rate_limit: { unit: day, requests_per_unit: 5 }\n",
    )
    .unwrap();
    let req = RateLimitRequest {
        domain: "m".into(),
        descriptors: vec![
            desc(&[("kind", "spend_month"), ("tenant", "a")]),
            desc(&[("kind", "spend_day"), ("tenant", "a")]),
        ],
        hits_addend: 1,
    };
    let p = plan(&c, "p:", &req, NOW, &[]).unwrap();
    assert_eq!(
        p.ops[0].key,
        format!("p:m|kind=spend_month|tenant=a|month:{DECEMBER}")
    );
    // NOW is on December 1st: the day's window starts with the month's, and ends sooner.
    assert_eq!(
        p.ops[1].key,
        format!("p:m|kind=spend_day|tenant=a|day:{DECEMBER}")
    );
    assert_eq!(p.ops[1].ttl_seconds, DECEMBER + 86_400 - NOW / 1_000 + 1);
    assert_eq!(p.ops[0].ttl_seconds, JANUARY - NOW / 1_000 + 1);
}

#[test]
fn empty_domains_and_descriptor_lists_are_invalid() {
    let c = config();
    let mut req = request(1, vec![]);
    assert!(plan(&c, "p:", &req, NOW, &[]).is_err());
    req.descriptors.push(tokens("a"));
    req.domain.clear();
    assert!(plan(&c, "p:", &req, NOW, &[]).is_err());
}

#[test]
fn counter_keys_cannot_alias() {
    let k = |d: &str, e: &[(&str, &str)]| counter_key("p:", d, e.iter().copied(), Unit::Minute, 60);
    assert_eq!(k("d", &[("a", "b")]), "p:d|a=b|minute:60");
    assert_ne!(k("d", &[("a", "b|c=d")]), k("d", &[("a", "b"), ("c", "d")]));
    assert_ne!(k("d|a=b", &[]), k("d", &[("a", "b")]));
    assert_ne!(k("d", &[("a=b", "")]), k("d", &[("a", "b=")]));
    assert_eq!(k("d", &[("a", "100%|=")]), "p:d|a=100%25%7C%3D|minute:60");
    assert_ne!(
        counter_key("p:", "d", [("a", "b")], Unit::Minute, 60),
        counter_key("p:", "d", [("a", "b")], Unit::Second, 60)
    );
}

#[test]
fn missing_or_negative_values_from_the_store_count_as_zero() {
    let p = plan_of(&request(1, vec![tokens("a")]));
    assert_eq!(p.respond(&[-5]).statuses[0].limit_remaining, 100);
    assert_eq!(p.respond(&[]).statuses[0].limit_remaining, 100);
}

#[test]
fn report_ids_make_charges_and_refunds_run_once() {
    assert_eq!(
        report_ids(Some("00ff, ,zz,ABC")),
        vec![Some("00ff".into()), None, None, Some("abc".into())]
    );
    assert!(report_ids(None).is_empty());
    assert_eq!(report_ids(Some(&"a".repeat(33))), vec![None]);
    let c = config();
    let req = request(
        1,
        vec![with_hits(tokens("a"), 5), with_hits(tokens("a"), 0)],
    );
    let ids = report_ids(Some("1f,2f"));
    let p = plan(&c, "p:", &req, NOW, &ids).unwrap();
    assert_eq!(p.ops[0].once.as_deref(), Some("p:report|1f"));
    assert_eq!(p.ops[1].once, None, "a read needs no id");
    assert!(plan(&c, "p:", &req, NOW, &[])
        .unwrap()
        .ops
        .iter()
        .all(|o| o.once.is_none()));
}
