//! The lifecycle's plans for canonical exchanges: what the host is asked to do.

use std::sync::Arc;

use super::*;
use crate::contract::state;
use crate::lifecycle::exchange::ResponseHead;
use crate::lifecycle::WorkerState;
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
    let err: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(err["error"]["code"].is_null(), "{}", reply.body);
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

fn worker_state() -> WorkerState {
    WorkerState::new((0xfeed, 0xbeef))
}

fn headers_input(headers: &[(String, String)], end_of_stream: bool) -> RequestHeaders<'_> {
    RequestHeaders {
        headers: Some(headers),
        peer_uri_san: None,
        end_of_stream,
        now_ms: NOW_MS,
    }
}

#[test]
fn without_a_configuration_every_request_gets_503_not_configured() {
    let mut state = worker_state();
    let store = MemStore::new();
    let mut w = Worker {
        store: &store,
        state: &mut state,
    };
    let mut req = Request::new(1, None, NOW_MS);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), 10);
    let plan = req.on_request_headers(&mut w, &headers_input(&headers, false));
    let reply = plan.local_reply.unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("not_configured"));
    assert!(reply.headers.iter().any(|(n, _)| *n == "x-request-id"));
    assert!(req.log_needs().is_none());
}

#[test]
fn a_request_answered_before_the_filter_still_has_one_audit_record() {
    let mut state = worker_state();
    let store = MemStore::new();
    let mut w = Worker {
        store: &store,
        state: &mut state,
    };
    let mut req = Request::new(1, Some(demo()), NOW_MS);
    let needs = req.log_needs().unwrap();
    assert!(needs.request_headers && needs.response_code);
    let mut headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), 10);
    headers.push(("x-request-id".to_string(), "chosen-by-client".to_string()));
    let input = LogInput {
        request_headers: Some(&headers),
        response_code: Some(401),
        ..LogInput::nothing()
    };
    let plan = req.on_log(&mut w, &input);
    let audit = record(&plan, state::AUDIT);
    assert_eq!(audit["reason"], "answered_before_filter");
    assert_eq!(audit["http_status"], 401);
    assert_eq!(audit["request_id"].as_str().map(str::len), Some(36));
    assert!(
        req.on_log(&mut w, &input).filter_state.is_empty(),
        "logged once"
    );
}

#[test]
fn a_held_request_whose_body_is_late_is_refused_with_408_never_routed_by_path() {
    let cfg = demo();
    let store = MemStore::new();
    let mut state = worker_state();
    let mut req = Request::new(7, Some(cfg.clone()), NOW_MS);
    let body = chat_body(256, false);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    let mut w = Worker {
        store: &store,
        state: &mut state,
    };
    assert_eq!(
        req.on_request_headers(&mut w, &headers_input(&headers, false))
            .flow,
        Flow::Pause
    );
    let timeout = cfg.routing.hold_timeout_ms;
    let tick = state.tick(&store, &cfg, NOW_MS + timeout);
    assert_eq!(tick.time_out.len(), 1);
    assert_eq!(tick.time_out[0].0, 7);
    // The root sends the 408; Envoy runs it through the response callbacks and on_log.
    let mut w = Worker {
        store: &store,
        state: &mut state,
    };
    let head = ResponseHead {
        status: Some(408),
        content_type: Some("application/json"),
        content_encoding: None,
    };
    let plan = req.on_response_headers(&mut w, &head, false, NOW_MS + timeout);
    assert!(plan.set_response_headers.is_empty());
    assert!(!req.wants_request_body(true), "a late body is not read");
    let log = req.on_log(
        &mut w,
        &LogInput {
            response_code: Some(408),
            ..LogInput::nothing()
        },
    );
    let audit = record(&log, state::AUDIT);
    assert_eq!(audit["decision"], "deny");
    assert_eq!(audit["reason"], "body_timeout");
    assert_eq!(audit["request_id"], tick.time_out[0].1.as_str());
    assert_eq!(
        record(&log, state::RECORD)["model_route"],
        serde_json::Value::Null
    );
}

#[test]
fn ids_are_the_gateways_own_and_reach_upstream_client_and_records() {
    let body = chat_body(256, false);
    let mut headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    headers.push(("x-request-id".to_string(), "same-for-everyone".to_string()));
    let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());
    let id = record(&plans.log, state::RECORD)["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id, "same-for-everyone");
    assert_eq!(record(&plans.log, state::AUDIT)["request_id"], id.as_str());
    assert!(plans
        .request_headers
        .set_request_headers
        .contains(&("x-request-id", id.clone())));
    assert!(plans.response[0]
        .set_response_headers
        .contains(&("x-request-id", id.clone())));
    // A refusal carries it too.
    let headers = post_headers(TENANT_A_HOST, CHAT, Some("sk-wrong"), body.len());
    let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());
    let reply = plans.request_headers.local_reply.unwrap();
    let rid = record(&plans.log, state::AUDIT)["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reply.headers.contains(&("x-request-id", rid)));
}

#[test]
fn a_client_jwt_payload_and_accept_encoding_never_reach_the_backend() {
    let body = chat_body(256, false);
    let mut headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    headers.push((
        "x-jwt-payload".to_string(),
        "eyJ0ZW5hbnQiOiJ0ZW5hbnQtYSJ9".to_string(),
    ));
    headers.push(("accept-encoding".to_string(), "gzip, br".to_string()));
    let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());
    let removed = &plans.request_headers.remove_request_headers;
    assert!(removed.contains(&"x-jwt-payload"), "{removed:?}");
    assert!(removed.contains(&"accept-encoding"), "{removed:?}");
}

#[test]
fn body_routes_refuse_other_methods_with_405_and_parse_any_body() {
    for method in ["PUT", "PATCH", "DELETE", "GET"] {
        let body = chat_body(256, false);
        let mut headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
        headers.retain(|(n, _)| n != ":method");
        headers.push((":method".to_string(), method.to_string()));
        let plans = drive(demo(), &MemStore::new(), &headers, Some(&body), json_200());
        let reply = plans.request_headers.local_reply.unwrap();
        assert_eq!(reply.status, 405, "{method}");
        assert!(reply.headers.contains(&("allow", "POST".to_string())));
        assert_eq!(
            record(&plans.log, state::AUDIT)["reason"],
            "method_not_allowed"
        );
    }
    // A route that serves DELETE still reads a body sent with it.
    let cfg = {
        let mut v: serde_json::Value = serde_json::from_str(DEMO_JSON).unwrap();
        v["routes"][0]["methods"] = serde_json::json!(["POST", "DELETE"]);
        Arc::new(parse(&v.to_string()))
    };
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let mut headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    headers.retain(|(n, _)| n != ":method");
    headers.push((":method".to_string(), "DELETE".to_string()));
    let plans = drive(cfg, &MemStore::new(), &headers, Some(body), json_200());
    let reply = plans.request_body.and_then(|p| p.local_reply).unwrap();
    assert_eq!(reply.status, 404, "the model allowlist applied");
}

#[test]
fn concurrency_slots_are_taken_and_given_back_on_every_end() {
    let cfg = {
        let mut v: serde_json::Value = serde_json::from_str(DEMO_JSON).unwrap();
        v["tenants"][0]["max_in_flight"] = serde_json::json!(1);
        Arc::new(parse(&v.to_string()))
    };
    let store = MemStore::new();
    let key = crate::quota::inflight::key(&cfg.shared_data_prefix, "tenant-a");
    let mut state = worker_state();
    let body = chat_body(256, false);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    let mut first = Request::new(1, Some(cfg.clone()), NOW_MS);
    let mut second = Request::new(2, Some(cfg.clone()), NOW_MS);
    let input = RequestBody {
        buffered: body.len(),
        end_of_stream: true,
        body: &body,
        cluster: None,
        now_ms: NOW_MS,
    };
    let mut w = Worker {
        store: &store,
        state: &mut state,
    };
    first.on_request_headers(&mut w, &headers_input(&headers, false));
    assert!(first.on_request_body(&mut w, &input).local_reply.is_none());
    second.on_request_headers(&mut w, &headers_input(&headers, false));
    let reply = second.on_request_body(&mut w, &input).local_reply.unwrap();
    assert_eq!(reply.status, 429);
    assert!(reply.body.contains("too_many_requests_in_flight"));
    assert!(reply.headers.contains(&("retry-after", "1".to_string())));
    let log = second.on_log(
        &mut w,
        &LogInput {
            response_code: Some(429),
            ..LogInput::nothing()
        },
    );
    assert_eq!(
        record(&log, state::AUDIT)["reason"],
        "concurrency_in_flight"
    );
    // The first ends by a client abort: no response at all. Its slot comes back.
    first.on_log(&mut w, &LogInput::nothing());
    assert_eq!(
        crate::quota::inflight::in_use(&store, &key, NOW_MS),
        Ok((0, 0))
    );
}

#[test]
fn once_forwarded_an_aborted_request_is_charged_its_prompt_estimate() {
    let body = chat_body(1024, false);
    let headers = post_headers(TENANT_A_HOST, CHAT, Some(TENANT_A_KEY), body.len());
    let plans = drive(
        demo(),
        &MemStore::new(),
        &headers,
        Some(&body),
        Upstream::Nothing,
    );
    let gateway = record(&plans.log, state::RECORD);
    let prompt = gateway["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0);
    assert_eq!(gateway["usage_estimated"], true);
    assert_eq!(
        state_value(&plans.log, state::TOKENS_TOTAL),
        Some(prompt.to_string().as_str())
    );
}
