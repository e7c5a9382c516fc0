//! One stream. Each event hook reads what Envoy offers, hands it to the core's
//! [`Request`] once, and carries out the returned plan (`effects`); the stream's end
//! (`on_stream_complete`, before access logs are written) always runs, so every request
//! leaves its gateway and audit records.

use std::sync::Arc;
use std::time::Instant;

use ai_gateway_core::lifecycle::exchange::ResponseHead;
use ai_gateway_core::lifecycle::{Flow, LogSource, Plan, Request, RequestBody, RequestHeaders};

use ai_gateway_core::quota::global::CallFailure;
use ai_gateway_core::quota::rls;

use crate::abi::{
    self, SchedulerPtr, BUFFERED_REQUEST_BODY, RECEIVED_REQUEST_BODY, RECEIVED_RESPONSE_BODY,
};
use crate::grpc::{self, From};
use crate::host::{copy_chunks, Stream};
use crate::{clock, effects, worker, FilterConfig};

pub struct Filter {
    pub req: Request,
    pub config: Arc<FilterConfig>,
    /// Nanoseconds spent inside this filter's hooks (the gateway-side cost).
    busy_ns: u64,
    /// The stream's number in the process, while it carries its worker's ticks.
    pub tick_serial: Option<u64>,
    /// The stream's scheduler, while it carries ticks (null otherwise).
    pub scheduler: SchedulerPtr,
    id: u32,
}

impl Filter {
    pub fn new(id: u32, config: Arc<FilterConfig>) -> Filter {
        Filter {
            req: Request::new(id, config.core.clone(), clock::now_ms()),
            config,
            busy_ns: 0,
            tick_serial: None,
            scheduler: std::ptr::null_mut(),
            id,
        }
    }

    pub fn req_id(&self) -> u32 {
        self.id
    }

    /// Runs one hook: `f` reads and asks the core (one clock read serves the hook); then
    /// the plan is carried out.
    fn run(&mut self, s: Stream, f: impl FnOnce(&mut Request, u64) -> Plan) -> Flow {
        let t0 = Instant::now();
        let now_ms = clock::now_ms();
        let mut plan = f(&mut self.req, now_ms);
        self.send_call(s, &mut plan, now_ms, true);
        effects::execute(s, &self.config, &plan);
        self.busy_ns = self
            .busy_ns
            .saturating_add(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        plan.flow
    }

    /// Sends the plan's call, if it has one. A call that cannot be sent is decided now as
    /// the tenant's policy says: `in_hook`, inside the hook that pauses (the stream
    /// simply goes on or is refused), else from a call's answer (the paused stream is
    /// resumed or refused).
    fn send_call(&mut self, s: Stream, plan: &mut Plan, now_ms: u64, in_hook: bool) {
        let Some(call) = plan.grpc_call.take() else {
            return;
        };
        let sent = match self.config.cluster() {
            Some(cluster) => grpc::send(From::Stream(s.0), cluster, &call).map(|_| ()),
            None => Err(CallFailure {
                grpc_status: grpc::UNAVAILABLE,
            }),
        };
        if let Err(failure) = sent {
            let req = &mut self.req;
            worker::with(|w| req.on_call_not_sent(w, failure, plan, now_ms, in_hook));
        }
    }

    /// The answer to this stream's strict quota admission: resume it or refuse it.
    pub fn on_quota_answer(&mut self, s: Stream, answer: Result<rls::Response, CallFailure>) {
        let t0 = Instant::now();
        let now_ms = clock::now_ms();
        let req = &mut self.req;
        let mut plan = worker::with(|w| req.on_quota_answer(w, answer, now_ms, false));
        self.send_call(s, &mut plan, now_ms, false);
        effects::execute(s, &self.config, &plan);
        self.busy_ns = self
            .busy_ns
            .saturating_add(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn on_request_headers(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        let flow = self.run(s, |req, now_ms| {
            let headers = s.headers(abi::REQUEST_HEADERS);
            let peer = req
                .wants_peer_identity()
                .then(|| s.attribute_string(abi::ATTR_CONNECTION_URI_SAN_PEER_CERTIFICATE))
                .flatten();
            let input = RequestHeaders {
                headers: Some(&headers),
                peer_uri_san: peer.as_deref(),
                end_of_stream,
                now_ms,
            };
            worker::with(|w| req.on_request_headers(w, &input))
        });
        match flow {
            Flow::Continue => abi::HEADERS_CONTINUE,
            Flow::Pause => abi::HEADERS_STOP_ITERATION,
        }
    }

    pub fn on_request_body(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        let flow = self.run(s, |req, now_ms| {
            // The body so far: what earlier hooks buffered, then this chunk (unless the
            // chunk is the buffer itself, handed on by a filter that buffered it).
            // Each body is asked for once: its size and its bytes come from one read.
            let whole = s.received_is_buffered();
            let received = s.chunks(RECEIVED_REQUEST_BODY);
            let held = if whole {
                Vec::new()
            } else {
                s.chunks(BUFFERED_REQUEST_BODY)
            };
            let buffered = held.iter().chain(&received).map(|c| c.length).sum();
            let mut body = Vec::new();
            if req.wants_request_body(end_of_stream) {
                body.reserve(buffered);
                copy_chunks(&held, &mut body);
                copy_chunks(&received, &mut body);
            }
            let cluster = req
                .wants_cluster(end_of_stream)
                .then(|| s.attribute_string(abi::ATTR_XDS_CLUSTER_NAME))
                .flatten();
            let input = RequestBody {
                buffered,
                end_of_stream,
                body: &body,
                cluster: cluster.as_deref(),
                now_ms,
            };
            worker::with(|w| req.on_request_body(w, &input))
        });
        match flow {
            Flow::Continue => abi::BODY_CONTINUE,
            Flow::Pause => abi::BODY_STOP_AND_BUFFER,
        }
    }

    pub fn on_response_headers(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        let flow = self.run(s, |req, now_ms| {
            let headers = if req.wants_response_headers() {
                s.headers(abi::RESPONSE_HEADERS)
            } else {
                Vec::new()
            };
            let head = ResponseHead::from_headers(&headers);
            worker::with(|w| req.on_response_headers(w, &head, end_of_stream, now_ms))
        });
        match flow {
            Flow::Continue => abi::HEADERS_CONTINUE,
            Flow::Pause => abi::HEADERS_STOP_ITERATION,
        }
    }

    pub fn on_response_body(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        let flow = self.run(s, |req, now_ms| {
            // The chunk is observed, never held: streams reach the client as they arrive.
            let mut chunk = Vec::new();
            if req.wants_response_body() {
                s.read_body(RECEIVED_RESPONSE_BODY, &mut chunk);
            }
            req.on_response_body(&chunk, end_of_stream, now_ms)
        });
        match flow {
            Flow::Continue => abi::BODY_CONTINUE,
            Flow::Pause => abi::BODY_STOP_AND_BUFFER,
        }
    }

    /// The stream is done: both records, the quota settled, the metrics.
    pub fn on_stream_complete(&mut self, s: Stream) {
        let (req, busy_ns) = (&mut self.req, self.busy_ns);
        let plan = worker::with(|w| req.on_stream_end(w, &s, busy_ns));
        effects::execute(s, &self.config, &plan);
    }
}

/// Envoy's attributes the records read when the stream is done.
impl LogSource for Stream {
    fn request_headers(&self) -> Option<Vec<(String, String)>> {
        Some(self.headers(abi::REQUEST_HEADERS))
    }
    fn cluster(&self) -> Option<String> {
        self.attribute_string(abi::ATTR_XDS_CLUSTER_NAME)
    }
    fn upstream_address(&self) -> Option<String> {
        self.attribute_string(abi::ATTR_UPSTREAM_ADDRESS)
    }
    fn response_code(&self) -> Option<u64> {
        self.attribute_int(abi::ATTR_RESPONSE_CODE)
    }
    fn code_details(&self) -> Option<String> {
        self.attribute_string(abi::ATTR_RESPONSE_CODE_DETAILS)
    }
    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }
}
