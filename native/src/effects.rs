//! Carries out a [`Plan`] from the core, in the order its fields are listed. A failed
//! call is logged (never with request content) and the rest of the plan still runs.

use ai_gateway_core::lifecycle::{LocalReply, Plan};

use crate::abi::{BUFFERED_REQUEST_BODY, RECEIVED_REQUEST_BODY, REQUEST_HEADERS, RESPONSE_HEADERS};
use crate::host::Stream;
use crate::FilterConfig;

/// Filter-state keys carry the prefix Envoy gives a Proxy-Wasm module's properties, so
/// access logs read `%FILTER_STATE(wasm.ai.record:PLAIN)%` whichever module runs.
pub const FILTER_STATE_PREFIX: &str = "wasm.";

pub fn execute(s: Stream, config: &FilterConfig, plan: &Plan) {
    for name in &plan.remove_request_headers {
        s.remove_header(REQUEST_HEADERS, name);
    }
    for (name, value) in &plan.set_request_headers {
        s.set_header(REQUEST_HEADERS, name, value);
    }
    for (name, value) in &plan.set_response_headers {
        s.set_header(RESPONSE_HEADERS, name, value);
    }
    if let Some(body) = &plan.replace_request_body {
        replace_request_body(s, body);
    }
    if plan.clear_route_cache {
        // Envoy selects the route again now that the routing headers are set.
        s.clear_route_cache();
    }
    if let Some(reply) = &plan.local_reply {
        send(s, reply);
    }
    for (key, value) in &plan.filter_state {
        let full = format!("{FILTER_STATE_PREFIX}{key}");
        if !s.set_filter_state(&full, value) {
            log::debug!("filter state {full} not written");
        }
    }
    config.metrics.record(s.0, &plan.metrics);
    if plan.resume {
        s.continue_decoding();
    }
}

/// The whole request body becomes `body`: what earlier hooks buffered is drained, and
/// the current chunk is replaced.
fn replace_request_body(s: Stream, body: &[u8]) {
    if !s.received_is_buffered() {
        let held = s.body_len(BUFFERED_REQUEST_BODY);
        if held > 0 {
            s.drain_body(BUFFERED_REQUEST_BODY, held);
        }
    }
    let chunk = s.body_len(RECEIVED_REQUEST_BODY);
    let drained = chunk == 0 || s.drain_body(RECEIVED_REQUEST_BODY, chunk);
    if !drained || !s.append_body(RECEIVED_REQUEST_BODY, body) {
        log::warn!("could not replace the request body");
    }
}

/// After the module's own local reply Envoy skips the module's response hooks (it would
/// otherwise re-enter the module inside this call); the stream's end still runs.
fn send(s: Stream, reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    s.send_response(reply.status, &headers, reply.body.as_bytes(), "");
}
