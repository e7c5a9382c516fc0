//! What the core asks the host to do after a callback: one [`Plan`] of effects. The host
//! carries them out in the order of the fields below and changes nothing else.

use crate::metrics::Observation;

/// Whether the stream goes on after the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    /// Let Envoy pass the headers or data on.
    #[default]
    Continue,
    /// Hold them back (buffering a body, holding headers, or after a local reply).
    Pause,
}

/// A response the filter sends instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// A unary gRPC call the host sends for the request (a strict quota admission); its
/// answer goes to `Request::on_quota_answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// `envoy.config.core.v3.GrpcService`, as `proxy_dispatch_grpc_call` takes it.
    pub upstream: Vec<u8>,
    pub message: Vec<u8>,
    pub timeout_ms: u32,
    /// Initial metadata (gRPC request headers).
    pub metadata: Vec<(&'static str, String)>,
}

/// The service and method every call of the filter goes to (RLS v3).
pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const RLS_METHOD: &str = "ShouldRateLimit";

/// The effects of one callback, in execution order.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Request headers to remove (only ones the client actually sent).
    pub remove_request_headers: Vec<&'static str>,
    /// Request headers to set (replacing any value).
    pub set_request_headers: Vec<(&'static str, String)>,
    /// Response headers to set.
    pub set_response_headers: Vec<(&'static str, String)>,
    /// A replacement for the whole buffered request body.
    pub replace_request_body: Option<Vec<u8>>,
    /// Ask Envoy to select the route again (a routing header changed).
    pub clear_route_cache: bool,
    /// Answer the client now; the upstream is not called.
    pub local_reply: Option<LocalReply>,
    /// Filter-state entries (`set_property`), for access logs.
    pub filter_state: Vec<(&'static str, String)>,
    /// Metric series to increment or record.
    pub metrics: Vec<Observation>,
    /// Send this call; the stream stays paused until its answer.
    pub grpc_call: Option<GrpcCall>,
    /// Resume the paused request (after a call's answer admitted it).
    pub resume: bool,
    pub flow: Flow,
}

impl Plan {
    /// Let the stream go on, with no other effect.
    pub fn proceed() -> Plan {
        Plan::default()
    }

    /// Hold the stream back, with no other effect.
    pub fn pause() -> Plan {
        Plan {
            flow: Flow::Pause,
            ..Plan::default()
        }
    }
}
