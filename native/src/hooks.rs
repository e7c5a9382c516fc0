//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`). Each turns Envoy's
//! pointers back into the module's objects and hands over to `filter`; hooks for events
//! the module never starts (callouts, streams, watermarks) do nothing.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ai_gateway_core::config::Config;
use ai_gateway_core::lifecycle::hold::tick_period_ms;

use crate::abi::{self, ConfigPtr, EnvoyBuffer, EnvoyHttpHeader, FilterPtr, SchedulerPtr};
use crate::filter::Filter;
use crate::host::Stream;
use crate::{grpc, logger, metrics, sync, ticker, timeouts, FilterConfig};

/// The ABI version this module was written against (Envoy 1.40's
/// `ENVOY_DYNAMIC_MODULES_ABI_VERSION`); Envoy warns when it differs from its own.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    logger::init();
    crate::pin::keep_loaded();
    ABI_VERSION.as_ptr().cast()
}

/// Parses and validates the configuration once; a refusal (null) makes Envoy reject
/// this filter configuration, and a listener update carrying it, so the previous one
/// keeps serving.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    // SAFETY: Envoy lends the configuration bytes for this hook.
    let bytes = unsafe { config.bytes() };
    let env = |name: &str| std::env::var(name).ok();
    match Config::parse(bytes, &env) {
        Ok(cfg) => {
            log::info!("configuration loaded: {}", cfg.summary());
            for w in cfg.warnings() {
                log::warn!("{w}");
            }
            let ticks = tick_period_ms(&cfg) > 0;
            let sync = cfg
                .global
                .is_some()
                .then(|| sync_scheduler(config_envoy))
                .flatten();
            let fc = FilterConfig {
                core: Some(Arc::new(cfg)),
                metrics: metrics::Ids::define(config_envoy),
                ticks,
                sync,
            };
            Arc::into_raw(Arc::new(fc)).cast()
        }
        Err(msg) => {
            log::error!("invalid plugin configuration: {msg}");
            std::ptr::null()
        }
    }
}

/// A main-thread scheduler for the configuration's sync checks, registered with the
/// tick thread.
fn sync_scheduler(config_envoy: ConfigPtr) -> Option<(u64, usize)> {
    // SAFETY: `config_envoy` is the configuration being created; deleted in destroy.
    let sched = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy)
    };
    if sched.is_null() {
        log::error!("no scheduler: global limits cannot sync with the rate limit service");
        return None;
    }
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    ticker::register_config(serial, sched);
    Some((serial, sched as usize))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if config.is_null() {
        return;
    }
    // SAFETY: made by Arc::into_raw in config_new; Envoy destroys it once. Streams still
    // running keep their own references.
    let fc = unsafe { Arc::from_raw(config.cast::<FilterConfig>()) };
    if let Some((serial, sched)) = fc.sync {
        ticker::unregister_config(serial);
        // SAFETY: unregistered above, so the tick thread no longer posts to it.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                sched as SchedulerPtr,
            )
        };
    }
}

/// Envoy's filter pointer of each stream, by its serial (to post ticks and time-outs).
static SERIAL: AtomicU64 = AtomicU64::new(1);

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter_envoy: FilterPtr,
) -> *const c_void {
    if config.is_null() {
        return std::ptr::null();
    }
    // SAFETY: `config` is a live Arc made by config_new; this adds one owner.
    let fc = unsafe {
        Arc::increment_strong_count(config.cast::<FilterConfig>());
        Arc::from_raw(config.cast::<FilterConfig>())
    };
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let id = timeouts::context_id(serial);
    let ticks = fc.ticks;
    let mut f = Box::new(Filter::new(id, fc));
    if ticks {
        // SAFETY: the filter pointer is live; the scheduler is deleted in destroy.
        let sched =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter_envoy) };
        if !sched.is_null() {
            timeouts::track(id, filter_envoy);
            ticker::register(serial, sched);
            f.tick_serial = Some(serial);
            f.scheduler = sched;
        }
    }
    Box::into_raw(f).cast()
}

/// # Safety
/// `module` is null or a live `Filter` made by `on_http_filter_new`.
unsafe fn filter<'a>(module: *const c_void) -> Option<&'a mut Filter> {
    module.cast::<Filter>().cast_mut().as_mut()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterPtr,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes the pointer it got from on_http_filter_new.
    match unsafe { filter(module) } {
        Some(f) => f.on_request_headers(Stream(filter_envoy), end_of_stream),
        None => abi::HEADERS_CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: FilterPtr,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: as above.
    match unsafe { filter(module) } {
        Some(f) => f.on_request_body(Stream(filter_envoy), end_of_stream),
        None => abi::BODY_CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterPtr,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: as above.
    match unsafe { filter(module) } {
        Some(f) => f.on_response_headers(Stream(filter_envoy), end_of_stream),
        None => abi::HEADERS_CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: FilterPtr,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: as above.
    match unsafe { filter(module) } {
        Some(f) => f.on_response_body(Stream(filter_envoy), end_of_stream),
        None => abi::BODY_CONTINUE,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: FilterPtr,
    module: *const c_void,
) {
    // SAFETY: as above.
    if let Some(f) = unsafe { filter(module) } {
        f.on_stream_complete(Stream(filter_envoy));
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: *const c_void) {
    if module.is_null() {
        return;
    }
    // SAFETY: made by Box::into_raw in on_http_filter_new; Envoy destroys it once.
    let f = unsafe { Box::from_raw(module.cast::<Filter>().cast_mut()) };
    if let Some(serial) = f.tick_serial {
        ticker::unregister(serial);
        timeouts::untrack(f.req_id());
        // SAFETY: unregistered above, so the ticker no longer posts to it.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(f.scheduler) };
    }
}

/// A tick posted by the ticker thread, run on this stream's worker for the whole worker.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: FilterPtr,
    module: *const c_void,
    event_id: u64,
) {
    // SAFETY: as above.
    if let Some(f) = unsafe { filter(module) } {
        if event_id == ticker::EVENT_TICK {
            timeouts::tick(&f.config);
        }
    }
}

/// A sync check posted by the tick thread, on the main thread.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigPtr,
    config: *const c_void,
    event_id: u64,
) {
    // SAFETY: the configuration pointer made by config_new, alive until its destroy.
    if let Some(fc) = unsafe { config.cast::<FilterConfig>().as_ref() } {
        if event_id == ticker::EVENT_SYNC {
            sync::check(fc, config_envoy);
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
    _response_code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    0
}

/// The answer to this stream's strict admission.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: FilterPtr,
    module: *const c_void,
    _callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body: *mut EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: Envoy lends the answer for this hook; the filter is the one it created.
    let answer = unsafe { grpc::answer(result, headers, headers_size, body, body_size) };
    if let Some(f) = unsafe { filter(module) } {
        f.on_quota_answer(Stream(filter_envoy), answer);
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
) {
}

// Streamed callouts: never started by this module, but Envoy resolves every hook.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: FilterPtr,
    _module: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _config_envoy: ConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _config_envoy: ConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _config_envoy: ConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _config_envoy: ConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _config_envoy: ConfigPtr,
    _config: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

/// The answer to a configuration's sync call, on the main thread.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigPtr,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body: *mut EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: as above; the configuration lives until its destroy.
    let answer = unsafe { grpc::answer(result, headers, headers_size, body, body_size) };
    if let Some(fc) = unsafe { config.cast::<FilterConfig>().as_ref() } {
        sync::answered(fc, config_envoy, Some(callout_id), answer);
    }
}
