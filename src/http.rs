//! Per-request HTTP context. Each callback reads what Envoy offers, hands it to the
//! core's [`Request`] once, and carries out the returned plan; `on_log` always runs, so
//! every request leaves its gateway and audit records.

use std::sync::Arc;

use ai_gateway_core::config::Config;
use ai_gateway_core::lifecycle::exchange::ResponseHead;
use ai_gateway_core::lifecycle::{LogSource, Plan, Request, RequestBody, RequestHeaders};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::abi::{self, REQUEST_BODY, REQUEST_HEADERS, RESPONSE_BODY, RESPONSE_HEADERS};
use crate::{effects, grpc, worker};

pub struct Http {
    req: Request,
    /// Nanoseconds spent inside this filter's callbacks (the gateway-side cost).
    busy_ns: u64,
}

impl Http {
    pub fn new(id: u32, cfg: Option<Arc<Config>>) -> Http {
        Http {
            req: Request::new(id, cfg, abi::now_ms()),
            busy_ns: 0,
        }
    }

    /// Runs one callback: `f` reads and asks the core (one clock read serves the whole
    /// callback: each read is a host call); then the plan is carried out.
    fn run(&mut self, body_size: usize, f: impl FnOnce(&mut Request, u64) -> Plan) -> Action {
        let t0 = abi::now_nanos();
        let now_ms = t0 / 1_000_000;
        let mut plan = f(&mut self.req, now_ms);
        self.send_call(&mut plan, now_ms, true);
        let action = effects::execute(&plan, body_size);
        let spent = abi::now_nanos().saturating_sub(t0);
        self.busy_ns = self.busy_ns.saturating_add(spent);
        action
    }
}

impl Http {
    /// Sends the plan's call, if it has one. A call that cannot be sent is decided now as
    /// the tenant's policy says: `in_callback`, inside the stream callback that pauses
    /// (the stream simply goes on or is refused), else from a call's answer (the paused
    /// stream is resumed or refused).
    fn send_call(&mut self, plan: &mut Plan, now_ms: u64, in_callback: bool) {
        let Some(call) = plan.grpc_call.take() else {
            return;
        };
        if let Err(failure) = grpc::dispatch(&call) {
            let req = &mut self.req;
            worker::with(|w| req.on_call_not_sent(w, failure, plan, now_ms, in_callback));
        }
    }
}

/// A buffer's bytes, or none when the host has none to give.
fn buffer(kind: u32, size: usize) -> Vec<u8> {
    abi::get_buffer(kind, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl Context for Http {
    /// The answer to this request's strict quota admission: resume it or refuse it.
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        let answer = grpc::answer(status, size);
        let t0 = abi::now_nanos();
        let req = &mut self.req;
        let mut plan = worker::with(|w| req.on_quota_answer(w, answer, t0 / 1_000_000, false));
        self.send_call(&mut plan, t0 / 1_000_000, false);
        effects::execute(&plan, 0);
        self.busy_ns = self
            .busy_ns
            .saturating_add(abi::now_nanos().saturating_sub(t0));
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.run(0, |req, now_ms| {
            let headers = abi::get_headers(REQUEST_HEADERS).ok();
            let peer = req
                .wants_peer_identity()
                .then(|| abi::get_property_string(&["connection", "uri_san_peer_certificate"]))
                .flatten();
            let input = RequestHeaders {
                headers: headers.as_deref(),
                peer_uri_san: peer.as_deref(),
                end_of_stream,
                now_ms,
            };
            worker::with(|w| req.on_request_headers(w, &input))
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(body_size, |req, now_ms| {
            let body = if req.wants_request_body(end_of_stream) {
                buffer(REQUEST_BODY, body_size)
            } else {
                Vec::new()
            };
            let cluster = req
                .wants_cluster(end_of_stream)
                .then(|| abi::get_property_string(&["xds", "cluster_name"]))
                .flatten();
            let input = RequestBody {
                buffered: body_size,
                end_of_stream,
                body: &body,
                cluster: cluster.as_deref(),
                now_ms,
            };
            worker::with(|w| req.on_request_body(w, &input))
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.run(0, |req, now_ms| {
            // One call for the whole map is cheaper than three lookups.
            let headers = if req.wants_response_headers() {
                abi::get_headers(RESPONSE_HEADERS).unwrap_or_default()
            } else {
                Vec::new()
            };
            let head = ResponseHead::from_headers(&headers);
            worker::with(|w| req.on_response_headers(w, &head, end_of_stream, now_ms))
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(0, |req, now_ms| {
            // The chunk is observed, never held: streams reach the client as they arrive.
            let chunk = if req.wants_response_body() {
                buffer(RESPONSE_BODY, body_size)
            } else {
                Vec::new()
            };
            req.on_response_body(&chunk, end_of_stream, now_ms)
        })
    }

    fn on_log(&mut self) {
        let (req, busy_ns) = (&mut self.req, self.busy_ns);
        let plan = worker::with(|w| req.on_stream_end(w, &StreamEnd, busy_ns));
        effects::execute(&plan, 0);
    }
}

/// Envoy's properties the records read when the stream is done.
struct StreamEnd;

impl LogSource for StreamEnd {
    fn request_headers(&self) -> Option<Vec<(String, String)>> {
        abi::get_headers(REQUEST_HEADERS).ok()
    }
    fn cluster(&self) -> Option<String> {
        abi::get_property_string(&["xds", "cluster_name"])
    }
    fn upstream_address(&self) -> Option<String> {
        abi::get_property_string(&["upstream", "address"])
    }
    fn response_code(&self) -> Option<u64> {
        abi::get_property_u64(&["response", "code"])
    }
    fn code_details(&self) -> Option<String> {
        abi::get_property_string(&["response", "code_details"])
    }
    fn now_ms(&self) -> u64 {
        abi::now_ms()
    }
}
