//! The lifecycle's plans for canonical exchanges: what the host is asked to do.

use std::sync::Arc;

use super::*;
use crate::contract::state;
use crate::testkit::stores::MemStore;
use crate::testkit::traffic::*;

fn demo() -> Arc<Config> {
    Arc::new(demo_config())
}

fn json_200() -> Upstream<'static> {
    Upstream::Answers(200, "application/json", vec![CHAT_RESPONSE.to_vec()])
}

fn state_value<'p>(plan: &'p Plan, key: &str) -> Option<&'p str> {
    plan.filter_state
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

fn record(plan: &Plan, key: &str) -> serde_json::Value {
    serde_json::from_str(state_value(plan, key).unwrap()).unwrap()
}

#[test]
fn chat_is_read_held_routed_by_model_and_recorded_once() {
    let body = chat_body(1024, false);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());

    let h = &plans.request_headers;
    assert_eq!(
        h.flow,
        Flow::Pause,
        "headers are held until the body is read"
    );
    assert_eq!(h.remove_request_headers, vec!["authorization"]);
    assert!(h
        .set_request_headers
        .contains(&("x-ai-tenant", "tenant-a".to_string())));
    assert!(h.local_reply.is_none());

    let b = plans.request_body.as_ref().unwrap();
    assert_eq!(b.flow, Flow::Continue);
    assert!(b.clear_route_cache);
    assert!(b
        .set_request_headers
        .contains(&("x-ai-model", "llama3-8b".to_string())));

    let response_headers = &plans.response[0].set_response_headers;
    assert!(response_headers
        .iter()
        .any(|(n, _)| *n == "x-ratelimit-remaining-requests"));

    let log = &plans.log;
    let gateway = record(log, state::RECORD);
    assert_eq!(gateway["tenant"], "tenant-a");
    assert_eq!(gateway["http_status"], 200);
    assert_eq!(gateway["model_route"], "chat-llama3-8b-v1");
    assert_eq!(gateway["prompt_tokens"], 163);
    assert_eq!(record(log, state::AUDIT)["decision"], "allow");
    assert_eq!(state_value(log, state::TOKENS_TOTAL), Some("179"));
    assert!(log
        .metrics
        .iter()
        .any(|o| o.name.starts_with("ai_gateway_requests_total")));
}

#[test]
fn missing_key_is_a_401_reply_with_its_audit_record() {
    let body = chat_body(256, false);
    let headers = post_headers(TENANT_A_HOST, CHAT, None, body.len());
    let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());

    let reply = plans.request_headers.local_reply.as_ref().unwrap();
    assert_eq!(reply.status, 401);
    assert!(reply.headers.iter().any(|(n, _)| *n == "www-authenticate"));
    assert!(reply.body.contains("\"missing_credentials\""));
    assert!(
        plans.request_body.is_none(),
        "a refused request's body is not read"
    );
    assert!(
        plans.response[0].set_response_headers.is_empty(),
        "no rate-limit headers on the filter's own reply"
    );
    let audit = record(&plans.log, state::AUDIT);
    assert_eq!(audit["decision"], "deny");
    assert_eq!(audit["reason"], "missing_credentials");
    assert_eq!(
        record(&plans.log, state::RECORD)["model_route"],
        serde_json::Value::Null
    );
}

#[test]
fn a_client_copy_of_the_filters_headers_is_removed() {
    let body = chat_body(256, false);
    let mut headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    headers.push(("x-ai-tenant".to_string(), "tenant-b".to_string()));
    let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());
    let removed = &plans.request_headers.remove_request_headers;
    assert!(removed.contains(&"x-ai-tenant") && removed.contains(&"authorization"));
}

#[test]
fn without_a_configuration_every_request_gets_503_not_configured() {
    let mut hold = HoldWatch::default();
    let store = MemStore::new();
    let mut w = Worker {
        store: &store,
        hold: &mut hold,
    };
    let mut req = Request::new(1, None, NOW_MS);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), 10);
    let input = RequestHeaders {
        headers: Some(&headers),
        peer_uri_san: None,
        end_of_stream: false,
        now_ms: NOW_MS,
    };
    let plan = req.on_request_headers(&mut w, &input);
    let reply = plan.local_reply.unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("not_configured"));
    assert!(req.log_needs().is_none());
}

#[test]
fn a_request_answered_before_the_filter_still_has_one_audit_record() {
    let mut hold = HoldWatch::default();
    let store = MemStore::new();
    let mut w = Worker {
        store: &store,
        hold: &mut hold,
    };
    let mut req = Request::new(1, Some(demo()), NOW_MS);
    let needs = req.log_needs().unwrap();
    assert!(needs.request_headers && needs.response_code);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), 10);
    let input = LogInput {
        request_headers: Some(&headers),
        response_code: Some(401),
        ..LogInput::nothing()
    };
    let plan = req.on_log(&mut w, &input);
    let audit = record(&plan, state::AUDIT);
    assert_eq!(audit["reason"], "answered_before_filter");
    assert_eq!(audit["http_status"], 401);
    assert!(
        req.on_log(&mut w, &input).filter_state.is_empty(),
        "logged once"
    );
}

#[test]
fn a_held_request_rescued_by_the_tick_routes_by_path() {
    let cfg = demo();
    let store = MemStore::new();
    let mut hold = HoldWatch::default();
    let mut req = Request::new(7, Some(cfg), NOW_MS);
    let body = chat_body(256, false);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    let input = RequestHeaders {
        headers: Some(&headers),
        peer_uri_san: None,
        end_of_stream: false,
        now_ms: NOW_MS,
    };
    let mut w = Worker {
        store: &store,
        hold: &mut hold,
    };
    assert_eq!(req.on_request_headers(&mut w, &input).flow, Flow::Pause);
    assert_eq!(hold.tick(NOW_MS + 1_000, 500).resume, vec![7]);
    let mut w = Worker {
        store: &store,
        hold: &mut hold,
    };
    let plan = req.on_request_body(&mut w, body.len(), true, &body, NOW_MS + 1_001);
    assert!(!plan.clear_route_cache, "the headers already went upstream");
    assert!(plan.set_request_headers.is_empty());
}
