//! The Proxy-Wasm ABI calls this filter makes, declared here with raw `u32` statuses.
//!
//! The SDK's `hostcalls` wrappers `panic!` on any status they do not expect (for example
//! `set_property` outside an HTTP context, or `send_http_response` after the response
//! started), and a panic aborts the VM for every request on the worker. These wrappers
//! turn every status into a `Result` instead. Memory the host returns was allocated
//! through the SDK's exported `proxy_on_memory_allocate` (a boxed byte slice), so it is
//! reclaimed as a `Vec` of the same length.

use std::ptr::{null, null_mut};

use crate::wire;

pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const GRPC_RECEIVE_BUFFER: u32 = 5;
pub const PLUGIN_CONFIGURATION: u32 = 7;
/// `proxy_continue_stream`'s stream type of the request.
pub const STREAM_REQUEST: u32 = 0;

pub const METRIC_COUNTER: u32 = 0;
pub const METRIC_GAUGE: u32 = 1;
pub const METRIC_HISTOGRAM: u32 = 2;

/// A host status other than OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

pub type HostResult<T> = Result<T, HostError>;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        kind: u32,
        start: usize,
        size: usize,
        data: *const u8,
        len: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(kind: u32, out: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(kind: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, out_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

fn check(status: u32) -> HostResult<()> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Take ownership of host-allocated bytes.
///
/// # Safety
/// `ptr` must be null or the result of `proxy_on_memory_allocate(len)`.
unsafe fn take(ptr: *mut u8, len: usize) -> Option<Vec<u8>> {
    if ptr.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(ptr, len, len))
    }
}

pub fn log(level: u32, msg: &str) {
    // Logging must never fail the request; a status is ignored.
    unsafe {
        proxy_log(level, msg.as_ptr(), msg.len());
    }
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the host refuses).
pub fn now_nanos() -> u64 {
    let mut t: u64 = 0;
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t
    } else {
        0
    }
}

pub fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

pub fn get_buffer(kind: u32, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    let status = unsafe { proxy_get_buffer_bytes(kind, start, max, &mut ptr, &mut len) };
    match status {
        OK => Ok(unsafe { take(ptr, len) }),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

pub fn set_buffer(kind: u32, start: usize, size: usize, data: &[u8]) -> HostResult<()> {
    check(unsafe { proxy_set_buffer_bytes(kind, start, size, data.as_ptr(), data.len()) })
}

pub fn get_headers(kind: u32) -> HostResult<Vec<(String, String)>> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    check(unsafe { proxy_get_header_map_pairs(kind, &mut ptr, &mut len) })?;
    Ok(unsafe { take(ptr, len) }
        .map(|b| wire::deserialize_map(&b))
        .unwrap_or_default())
}

pub fn set_header(kind: u32, name: &str, value: &str) -> HostResult<()> {
    check(unsafe {
        proxy_replace_header_map_value(kind, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Removes every value of the header.
pub fn remove_header(kind: u32, name: &str) -> HostResult<()> {
    match unsafe { proxy_remove_header_map_value(kind, name.as_ptr(), name.len()) } {
        OK | NOT_FOUND => Ok(()),
        s => Err(HostError(s)),
    }
}

pub fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let p = wire::serialize_path(path);
    let mut ptr = null_mut();
    let mut len = 0usize;
    match unsafe { proxy_get_property(p.as_ptr(), p.len(), &mut ptr, &mut len) } {
        OK => Ok(unsafe { take(ptr, len) }),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

pub fn get_property_string(path: &[&str]) -> Option<String> {
    get_property(path)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Envoy encodes integer attributes as 8 little-endian bytes.
pub fn get_property_u64(path: &[&str]) -> Option<u64> {
    let b = get_property(path).ok().flatten()?;
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// Filter state: `set_property(["ai.tenant"], v)` becomes `wasm.ai.tenant`.
pub fn set_property(path: &[&str], value: &[u8]) -> HostResult<()> {
    let p = wire::serialize_path(path);
    check(unsafe { proxy_set_property(p.as_ptr(), p.len(), value.as_ptr(), value.len()) })
}

pub fn get_shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    let mut cas = 0u32;
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut ptr, &mut len, &mut cas) } {
        OK => Ok((unsafe { take(ptr, len) }, (cas != 0).then_some(cas))),
        NOT_FOUND => Ok((None, None)),
        s => Err(HostError(s)),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let h = wire::serialize_map(headers);
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            h.as_ptr(),
            h.len(),
            -1,
        )
    })
}

pub fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    check(unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut ptr,
            &mut len,
        )
    })?;
    Ok(unsafe { take(ptr, len) })
}

/// Resumes a stream this filter paused (Envoy's `continueDecoding`).
pub fn continue_stream(stream_type: u32) -> HostResult<()> {
    check(unsafe { proxy_continue_stream(stream_type) })
}

pub fn set_tick_period_ms(period: u32) -> HostResult<()> {
    check(unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Make `context_id` the context later calls apply to (from a root-context tick).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    check(unsafe { proxy_set_effective_context(context_id) })
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
}

/// A random u64 from the host (WASI `random_get`); 0 if the host refuses.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let status = unsafe { random_get(b.as_mut_ptr(), b.len()) };
    if status == 0 {
        u64::from_le_bytes(b)
    } else {
        0
    }
}

pub fn define_metric(kind: u32, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) {
    unsafe {
        proxy_increment_metric(id, offset);
    }
}

pub fn record_metric(id: u32, value: u64) {
    unsafe {
        proxy_record_metric(id, value);
    }
}
