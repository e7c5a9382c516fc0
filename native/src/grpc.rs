//! Calls to the rate limit service (strict admissions, the global sync) as Envoy HTTP
//! callouts. A unary gRPC call is one HTTP/2 POST to `/<service>/<method>` whose body is
//! the message behind a 5-byte prefix (a compression flag, the length big-endian); the
//! answer's body is framed the same way. A failed call names its gRPC status in
//! `grpc-status`, which a server that answers at once sends with the headers.
#![allow(unsafe_code)]

use ai_gateway_core::lifecycle::{GrpcCall, RLS_METHOD, RLS_SERVICE};
use ai_gateway_core::quota::global::CallFailure;
use ai_gateway_core::quota::rls;

use crate::abi::{
    self, ConfigPtr, EnvoyBuffer, EnvoyHttpHeader, FilterPtr, ModuleBuffer, ModuleHttpHeader,
};

/// gRPC UNAVAILABLE: a call that could not be sent, or got no answer.
pub const UNAVAILABLE: u32 = 14;

const NOT_SENT: CallFailure = CallFailure {
    grpc_status: UNAVAILABLE,
};

/// Where a callout starts: a stream (on its worker) or a configuration (main thread).
pub enum From {
    Stream(FilterPtr),
    Config(ConfigPtr),
}

/// Sends `call` to `cluster`; the answer arrives in the matching `*_http_callout_done`
/// hook with the returned id.
pub fn send(from: From, cluster: &str, call: &GrpcCall) -> Result<u64, CallFailure> {
    let path = format!("/{RLS_SERVICE}/{RLS_METHOD}");
    let timeout = format!("{}m", call.timeout_ms);
    let mut pairs: Vec<(&str, &str)> = vec![
        (":method", "POST"),
        (":path", &path),
        ("host", cluster),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", &timeout),
    ];
    pairs.extend(call.metadata.iter().map(|(k, v)| (*k, v.as_str())));
    let mut headers: Vec<ModuleHttpHeader> = pairs
        .iter()
        .map(|(k, v)| ModuleHttpHeader::of(k, v))
        .collect();
    let body = frame(&call.message).ok_or(NOT_SENT)?;
    let mut id = 0u64;
    let (cl, b, t) = (
        ModuleBuffer::of(cluster.as_bytes()),
        ModuleBuffer::of(&body),
        u64::from(call.timeout_ms),
    );
    let (hp, hn) = (headers.as_mut_ptr(), headers.len());
    // SAFETY: the pointer is the live stream's or configuration's; every buffer outlives
    // the call, and Envoy copies them.
    let r = unsafe {
        match from {
            From::Stream(f) => abi::envoy_dynamic_module_callback_http_filter_http_callout(
                f, &mut id, cl, hp, hn, b, t,
            ),
            From::Config(c) => abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                c, &mut id, cl, hp, hn, b, t,
            ),
        }
    };
    if r == abi::CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        log::warn!("rate limit service call not sent (callout result {r})");
        Err(NOT_SENT)
    }
}

/// The message behind its gRPC prefix (uncompressed, length big-endian).
fn frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(message.len()).ok()?;
    let mut body = Vec::with_capacity(message.len() + 5);
    body.push(0);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(message);
    Some(body)
}

/// The answer of a callout, from what `*_http_callout_done` was given.
///
/// # Safety
/// The pointers are null or hold the given number of entries, lent by Envoy for the
/// current hook.
pub unsafe fn answer(
    result: u32,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) -> Result<rls::Response, CallFailure> {
    if result != abi::CALLOUT_SUCCESS {
        return Err(NOT_SENT);
    }
    let headers = if headers.is_null() {
        &[][..]
    } else {
        std::slice::from_raw_parts(headers, headers_size)
    };
    for h in headers {
        let k = EnvoyBuffer {
            ptr: h.key_ptr,
            length: h.key_length,
        }
        .bytes();
        if k == b"grpc-status" {
            let v = EnvoyBuffer {
                ptr: h.value_ptr,
                length: h.value_length,
            }
            .bytes();
            let status = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok());
            match status {
                Some(0) => {}
                Some(s) => return Err(CallFailure { grpc_status: s }),
                None => return Err(CallFailure { grpc_status: 2 }),
            }
        }
    }
    let chunks = if body.is_null() {
        &[][..]
    } else {
        std::slice::from_raw_parts(body, body_size)
    };
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c.bytes());
    }
    decode_frame(&bytes)
}

/// The one message of a unary answer (`NOT_SENT` when there is none: its status went
/// in trailers, which a callout does not see, so the call counts as unanswered).
fn decode_frame(bytes: &[u8]) -> Result<rls::Response, CallFailure> {
    let (head, rest) = bytes.split_at_checked(5).ok_or(NOT_SENT)?;
    let len = head
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or(NOT_SENT)?;
    let msg = rest.get(..len).ok_or(NOT_SENT)?;
    rls::decode_response(msg).ok_or(CallFailure { grpc_status: 0 })
}

#[cfg(test)]
mod tests;
