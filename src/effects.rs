//! Carries out a [`Plan`] from the core, in the order its fields are listed. A failed
//! host call is logged (never with request content) and the rest of the plan still runs.

use ai_gateway_core::lifecycle::{Flow, LocalReply, Plan};
use proxy_wasm::types::Action;

use crate::abi::{self, REQUEST_BODY, REQUEST_HEADERS, RESPONSE_HEADERS};
use crate::metrics;

/// `body_size` is the size of the buffered request body a replacement overwrites.
pub fn execute(plan: &Plan, body_size: usize) -> Action {
    for name in &plan.remove_request_headers {
        let _ = abi::remove_header(REQUEST_HEADERS, name);
    }
    for (name, value) in &plan.set_request_headers {
        let _ = abi::set_header(REQUEST_HEADERS, name, value);
    }
    for (name, value) in &plan.set_response_headers {
        let _ = abi::set_header(RESPONSE_HEADERS, name, value);
    }
    if let Some(body) = &plan.replace_request_body {
        if abi::set_buffer(REQUEST_BODY, 0, body_size, body).is_err() {
            log::warn!("could not replace the request body");
        }
    }
    if plan.clear_route_cache {
        // Envoy selects the route again now that the routing headers are set.
        if let Err(e) = abi::call_foreign_function("clear_route_cache", &[]) {
            log::warn!("clear_route_cache unavailable (host status {})", e.0);
        }
    }
    if let Some(reply) = &plan.local_reply {
        send(reply);
    }
    for (key, value) in &plan.filter_state {
        // Lands as `wasm.<key>`: `%FILTER_STATE(wasm.ai.record:PLAIN)%` in access logs.
        if let Err(e) = abi::set_property(&[key], value.as_bytes()) {
            log::debug!("filter state {key} not written (host status {})", e.0);
        }
    }
    metrics::record(&plan.metrics);
    if plan.resume && abi::continue_stream(abi::STREAM_REQUEST).is_err() {
        log::debug!("the paused request had already ended");
    }
    match plan.flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

/// The response callbacks and `on_log` still run after a local reply.
fn send(reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let status = u32::from(reply.status);
    if let Err(e) = abi::send_local_response(status, &headers, reply.body.as_bytes()) {
        log::warn!("local reply {} failed (host status {})", reply.status, e.0);
    }
}
