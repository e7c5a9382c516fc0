#![allow(clippy::result_large_err)] // test helpers return the refusal as the core does
//! Budgets through the real quota step: reserve at the maximum cost, refuse with
//! `insufficient_quota`, settle at the billed cost, roll over with the period, and keep
//! the admission's prices when a new configuration arrives.

use serde_json::{json, Value};

use crate::config::Config;
use crate::contract::header as h;
use crate::lifecycle::exchange::Exchange;
use crate::lifecycle::quota_step::tests::{
    config_with, header, request, respond_json, settle_as, usage_body, HOST_A, SHA_A,
};
use crate::lifecycle::quota_step::{QuotaState, Refusal, Stage};
use crate::quota::budget::Period;
use crate::testkit::stores::MemStore;

/// 2026-12-02 10:00:00 UTC.
const NOON: u64 = 1_796_205_600_000;
const DAY: u64 = 86_400_000;

/// llama3-8b at $1 in and $2 out per million tokens: a token in is 1 µ$, out 2 µ$.
fn budget_config(budget: Value, input: f64, output: f64) -> Config {
    config_with(
        vec![json!({
            "name": "tenant-a",
            "hosts": [HOST_A],
            "api_keys": [{"id": "svc:a", "sha256": SHA_A}],
            "budget": budget,
        })],
        json!({"models": [
            {"name": "llama3-8b", "input_usd_per_million": input, "output_usd_per_million": output},
            {"name": "bge-small"}
        ]}),
    )
}

/// "hello gateway" (4 prompt tokens estimated) with `max_tokens` 100: at most
/// 4 × 1 + 100 × 2 = 204 µ$.
fn chat100() -> Value {
    json!({"model": "llama3-8b", "max_tokens": 100,
           "messages": [{"role": "user", "content": "hello gateway"}]})
}
const MAX_COST: u64 = 204;

fn admit(cfg: &Config, store: &MemStore, now: u64) -> (QuotaState, Exchange, Result<(), Refusal>) {
    let (ex, stage) = request(cfg, "/v1/chat/completions", Some(chat100()));
    assert_eq!(stage, Stage::Body);
    let mut q = QuotaState::default();
    let r = q.reserve(cfg, &ex, store, now, stage);
    (q, ex, r)
}

/// Answered with `prompt` in and `completion` out, settled as `on_log` does.
fn finish(
    q: &mut QuotaState,
    cfg: &Config,
    ex: &mut Exchange,
    store: &MemStore,
    prompt: u64,
    completion: u64,
    now: u64,
) {
    respond_json(cfg, ex, 200, &usage_body(prompt, completion));
    settle_as(q, cfg, ex, store, now, Some(200), true);
}

fn spent(q: &QuotaState) -> u64 {
    q.budget.standing.first().map(|s| s.spent_micros).unwrap()
}

#[test]
fn the_reservation_is_the_maximum_cost_and_the_settlement_the_billed_one() {
    let cfg = budget_config(json!({"usd_per_day": 0.001}), 1.0, 2.0);
    let store = MemStore::new();
    let (mut q, mut ex, r) = admit(&cfg, &store, NOON);
    assert!(r.is_ok());
    assert_eq!(q.budget.costs.spend_micros, MAX_COST);
    assert_eq!(spent(&q), MAX_COST, "reserved at admission");
    // Below the reservation: 10 in, 20 out = 50 µ$.
    finish(&mut q, &cfg, &mut ex, &store, 10, 20, NOON + 1);
    assert_eq!(spent(&q), 50);
    // Above the reservation (a backend that ignored max_tokens): 4 in, 300 out = 604 µ$.
    let (mut q, mut ex, r) = admit(&cfg, &store, NOON + 2);
    assert!(r.is_ok());
    finish(&mut q, &cfg, &mut ex, &store, 4, 300, NOON + 3);
    assert_eq!(spent(&q), 50 + 604);
    let b = q.budget.standing.first().unwrap();
    assert_eq!(
        (b.period, b.limit_micros, b.remaining_micros()),
        (Period::Day, 1000, 346)
    );
}

#[test]
fn a_reservation_above_what_is_left_is_refused_with_insufficient_quota() {
    let cfg = budget_config(json!({"usd_per_day": 0.0005}), 1.0, 2.0);
    let store = MemStore::new();
    for _ in 0..2 {
        let (mut q, mut ex, r) = admit(&cfg, &store, NOON);
        assert!(r.is_ok());
        finish(&mut q, &cfg, &mut ex, &store, 4, 100, NOON); // 204 µ$ each
    }
    // 408 spent, 92 left: a 204 µ$ reservation does not fit.
    let (q, _, r) = admit(&cfg, &store, NOON + 5);
    let (d, headers) = r.unwrap_err();
    assert_eq!(
        (d.status, d.reason, d.error_type, d.code.unwrap_or_default()),
        (
            429,
            "budget_exceeded",
            "insufficient_quota",
            "insufficient_quota"
        )
    );
    assert!(d.headers.contains(&(h::SHOULD_RETRY, "false".to_string())));
    assert!(
        d.message.contains("daily budget of 0.000500 USD"),
        "{}",
        d.message
    );
    assert!(d.message.contains("0.000408 USD spent"), "{}", d.message);
    assert!(
        d.message.contains("resets at 2026-12-03T00:00:00Z"),
        "{}",
        d.message
    );
    assert_eq!(header(&headers, h::BUDGET_REMAINING_USD), Some("0.000092"));
    assert_eq!(
        header(&headers, h::BUDGET_RESET_AT),
        Some("2026-12-03T00:00:00Z")
    );
    assert_eq!(spent(&q), 408, "the refusal reserved nothing");
    assert!(
        !d.message.contains("hello"),
        "no request content in the message"
    );
}

#[test]
fn a_new_day_or_month_starts_from_nothing() {
    let cfg = budget_config(
        json!({"usd_per_day": 0.0005, "usd_per_month": 0.0006}),
        1.0,
        2.0,
    );
    let store = MemStore::new();
    let (mut q, mut ex, _) = admit(&cfg, &store, NOON);
    finish(&mut q, &cfg, &mut ex, &store, 4, 100, NOON);
    let (mut q, mut ex, _) = admit(&cfg, &store, NOON);
    finish(&mut q, &cfg, &mut ex, &store, 4, 100, NOON);
    // The day is spent (408 of 500), and the month (408 of 600) binds next.
    assert!(admit(&cfg, &store, NOON).2.is_err());
    let (q, _, r) = admit(&cfg, &store, NOON + DAY);
    let (d, _) = r.unwrap_err();
    assert!(d.message.contains("monthly budget"), "{}", d.message);
    assert!(
        d.message.contains("resets at 2027-01-01T00:00:00Z"),
        "{}",
        d.message
    );
    drop(q);
    // January: both periods are new.
    let jan = NOON + 30 * DAY;
    let (q, _, r) = admit(&cfg, &store, jan);
    assert!(r.is_ok());
    assert!(q.budget.standing.iter().all(|s| s.spent_micros == MAX_COST));
}

#[test]
fn a_reservation_from_an_ended_day_is_not_carried_into_the_next() {
    let cfg = budget_config(json!({"usd_per_day": 0.001}), 1.0, 2.0);
    let store = MemStore::new();
    let (mut q, mut ex, _) = admit(&cfg, &store, NOON);
    // Settled after midnight: the new day does not see the old day's request.
    finish(&mut q, &cfg, &mut ex, &store, 4, 100, NOON + DAY);
    let (q, _, _) = admit(&cfg, &store, NOON + DAY);
    assert_eq!(spent(&q), MAX_COST);
}

#[test]
fn prices_pushed_between_admission_and_settlement_do_not_change_the_charge() {
    let old = budget_config(json!({"usd_per_day": 1.0}), 1.0, 2.0);
    let store = MemStore::new();
    let (mut q, mut ex, _) = admit(&old, &store, NOON);
    // A push doubles the prices; the request settles under the new configuration.
    let new = budget_config(json!({"usd_per_day": 1.0}), 2.0, 4.0);
    finish(&mut q, &new, &mut ex, &store, 10, 20, NOON + 1);
    assert_eq!(spent(&q), 50, "billed at the prices it was admitted with");
    let (q, _, _) = admit(&new, &store, NOON + 2);
    assert_eq!(
        spent(&q),
        50 + 2 * MAX_COST,
        "the next request reserves at the new ones"
    );
}

#[test]
fn model_budgets_apply_to_their_model_only() {
    let cfg = budget_config(
        json!({"models": {"llama3-8b": {"usd_per_day": 0.0003}}}),
        1.0,
        2.0,
    );
    let store = MemStore::new();
    let (mut q, mut ex, _) = admit(&cfg, &store, NOON);
    finish(&mut q, &cfg, &mut ex, &store, 4, 100, NOON);
    let (_, _, r) = admit(&cfg, &store, NOON);
    let (d, _) = r.unwrap_err();
    assert!(
        d.message.contains("daily budget for model llama3-8b"),
        "{}",
        d.message
    );
    let (ex, stage) = request(
        &cfg,
        "/v1/embeddings",
        Some(json!({"model": "bge-small", "input": "abcd"})),
    );
    assert!(QuotaState::default()
        .reserve(&cfg, &ex, &store, NOON, stage)
        .is_ok());
}

#[test]
fn a_failed_upstream_is_not_billed() {
    let cfg = budget_config(json!({"usd_per_day": 0.001}), 1.0, 2.0);
    let store = MemStore::new();
    let (mut q, mut ex, _) = admit(&cfg, &store, NOON);
    settle_as(&mut q, &cfg, &mut ex, &store, NOON, Some(503), false);
    assert_eq!(spent(&q), 0, "the reservation is given back");
}

#[test]
fn budgeted_responses_carry_the_binding_budget() {
    let cfg = budget_config(
        json!({"usd_per_day": 0.01, "usd_per_month": 0.001}),
        1.0,
        2.0,
    );
    let store = MemStore::new();
    let (q, _, _) = admit(&cfg, &store, NOON);
    let headers = q.budget.headers();
    assert_eq!(header(&headers, h::BUDGET_PERIOD), Some("month"));
    assert_eq!(header(&headers, h::BUDGET_REMAINING_USD), Some("0.000796"));
    assert_eq!(
        header(&headers, h::BUDGET_RESET_AT),
        Some("2027-01-01T00:00:00Z")
    );
}

#[test]
fn budgets_validate_their_fields() {
    let parse = |b: Value| {
        let tenant = json!({"name": "a", "budget": b});
        let cfg = json!({"models": [{"name": "m"}], "tenants": [tenant]});
        Config::parse(cfg.to_string().as_bytes(), &|_| None).err()
    };
    assert_eq!(
        parse(json!({})).unwrap(),
        "tenants[0].budget: needs usd_per_day or usd_per_month"
    );
    assert!(parse(json!({"usd_per_day": 0}))
        .unwrap()
        .starts_with("tenants[0].budget.usd_per_day: must be a number above 0"));
    assert!(parse(json!({"usd_per_month": 0.0000001}))
        .unwrap()
        .contains("at least 0.000001"));
    assert_eq!(
        parse(json!({"models": {"x": {"usd_per_day": 1}}})).unwrap(),
        "tenants[0].budget.models: \"x\" is not a configured model"
    );
    assert!(parse(json!({"usd_per_week": 1}))
        .unwrap()
        .contains("unknown field"));
    assert_eq!(
        parse(json!({"usd_per_day": 1, "models": {"m": {"usd_per_month": 2}}})),
        None
    );
}
