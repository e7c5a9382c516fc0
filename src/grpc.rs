//! Calls to the rate limit service: `proxy_dispatch_grpc_call` and reading its answer.
//!
//! The call goes through the SDK's hostcall because only calls registered there have
//! their answer routed back to the calling context (the host reports answers to the root
//! context's id and the SDK maps the token to the caller). That hostcall panics on a
//! status it does not expect; with a `GrpcService` message as the upstream (never a bare
//! cluster name, whose lookup can fail with another status) Envoy 1.40 returns only Ok,
//! InternalFailure or, when the client cannot be built at all, BadArgument, and the
//! message we build always yields a client (`skip_cluster_check`). A missing cluster or
//! an unreachable service is reported as the call's UNAVAILABLE close.

use std::time::Duration;

use ai_gateway_core::lifecycle::{GrpcCall, RLS_METHOD, RLS_SERVICE};
use ai_gateway_core::quota::global::CallFailure;
use ai_gateway_core::quota::rls;

use crate::abi;

/// gRPC UNAVAILABLE: what a call that could not be sent counts as.
const UNAVAILABLE: u32 = 14;

/// Sends `call`; the answer arrives in the calling context's `on_grpc_call_response`.
pub fn dispatch(call: &GrpcCall) -> Result<u32, CallFailure> {
    let not_sent = CallFailure {
        grpc_status: UNAVAILABLE,
    };
    let upstream = std::str::from_utf8(&call.upstream).map_err(|_| not_sent)?;
    let metadata: Vec<(&str, &[u8])> = call
        .metadata
        .iter()
        .map(|(k, v)| (*k, v.as_bytes()))
        .collect();
    proxy_wasm::hostcalls::dispatch_grpc_call(
        upstream,
        RLS_SERVICE,
        RLS_METHOD,
        metadata,
        Some(&call.message),
        Duration::from_millis(u64::from(call.timeout_ms)),
    )
    .map_err(|s| {
        log::warn!(
            "rate limit service call not sent (host status {})",
            s as u32
        );
        not_sent
    })
}

/// The answer of a call: `status` 0 with a `size`-byte message, or the gRPC status it
/// closed with.
pub fn answer(status: u32, size: usize) -> Result<rls::Response, CallFailure> {
    if status != 0 {
        return Err(CallFailure {
            grpc_status: status,
        });
    }
    abi::get_buffer(abi::GRPC_RECEIVE_BUFFER, 0, size)
        .ok()
        .flatten()
        .and_then(|b| rls::decode_response(&b))
        .ok_or(CallFailure { grpc_status: 0 })
}
