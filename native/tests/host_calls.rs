//! The native module driven by a fake Envoy: every callback the module imports
//! (`native/src/abi.rs`) is defined here, on a per-thread fake stream, and counted by
//! name; the module's exported hooks are called in the order Envoy 1.40 calls them for
//! one HTTP stream. The counts are deterministic, so they are asserted exactly, as the
//! meter does for the Proxy-Wasm module.
//!
//! What the fake does as Envoy does (the parts a test depends on):
//! - a buffer Envoy lends (headers, body chunks, attributes) stays valid until the end of
//!   the hook it was lent in, and is copied out of the fake's state when lent;
//! - a body chunk for which the hook returned StopIterationAndBuffer moves to the
//!   buffered body, and the next body hook gets only the new chunk as received;
//! - after the module's own local reply Envoy stops decoding (no more request body
//!   hooks) and does not call the module's response hooks for its reply (the dynamic
//!   module filter's `sent_local_reply_`), but calls `on_http_filter_local_reply` from
//!   inside `send_response` and still completes and destroys the stream;
//! - metrics can be defined only inside `on_http_filter_config_new`;
//! - scheduler commits may come from any thread (the module's tick thread): they are
//!   recorded in process-wide state under a mutex, never in the thread-local one, and
//!   are not part of a request's counts (how many land depends on time).

// Tests may unwrap and index freely (native/clippy.toml); clippy only sees that in
// `#[test]` functions, so the driver and its assertions say so here. The fake Envoy
// (`mod envoy`) keeps the module's rules: its callbacks run inside the module's hooks,
// where a panic cannot unwind through `extern "C"` and aborts the whole test process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};

use ai_gateway_native::abi;
use serde_json::Value;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../filters/demo.json");
const HOST_A: &str = "tenant-a.ai.example.com";
const KEY_A: &str = "sk-tenant-a-demo";
/// In every prompt: must never reach Envoy through a callback.
const PROMPT_CANARY: &str = "zebracanary7prompt";
const CLUSTER: &str = "chat-llama3-8b-v1";
const UPSTREAM_ADDRESS: &str = "127.0.0.1:18001";

/// The fake Envoy: its state, and every callback the module imports.
mod envoy {
    #![deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]

    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use ai_gateway_native::abi::{
        self, ConfigPtr, EnvoyBuffer, EnvoyHttpHeader, FilterPtr, ModuleBuffer, ModuleHttpHeader,
        SchedulerPtr,
    };

    /// Body types of the 1.40 ABI (`envoy_dynamic_module_type_http_body_type`).
    pub const BUFFERED_RESPONSE_BODY: u32 = 3;
    // envoy_dynamic_module_type_metrics_result: not found, invalid labels, frozen.
    const METRIC_NOT_FOUND: u32 = 1;
    const METRIC_INVALID_LABELS: u32 = 2;
    const METRIC_FROZEN: u32 = 3;
    /// envoy_dynamic_module_type_http_callout_init_result_ClusterNotFound.
    const CALLOUT_CLUSTER_NOT_FOUND: u32 = 1;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    #[derive(Debug, Clone)]
    pub struct Metric {
        pub kind: Kind,
        pub name: String,
        pub labels: Vec<String>,
    }

    /// One metric update: the series' base name, its labels and the value.
    #[derive(Debug, Clone)]
    pub struct Update {
        pub hook: &'static str,
        pub kind: Kind,
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: u64,
    }

    #[derive(Debug, Clone)]
    pub struct Reply {
        pub hook: &'static str,
        pub status: u32,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub details: String,
    }

    /// A header map change: `None` removes the header.
    #[derive(Debug, Clone)]
    pub struct HeaderOp {
        pub hook: &'static str,
        pub map: u32,
        pub name: String,
        pub value: Option<String>,
    }

    /// What went upstream when Envoy let the request go on.
    #[derive(Debug, Clone)]
    pub struct Forwarded {
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    /// One HTTP stream as Envoy holds it.
    #[derive(Debug, Default)]
    pub struct Stream {
        pub filter: usize,
        pub module: usize,
        pub request_headers: Vec<(String, String)>,
        /// `None` until a response started.
        pub response_headers: Option<Vec<(String, String)>>,
        /// The chunk of the current request body hook (slices), `None` outside it.
        pub received: Option<Vec<Vec<u8>>>,
        /// The received chunk is the buffered body itself (an earlier filter buffered).
        pub received_is_buffered: bool,
        pub buffered: Option<Vec<Vec<u8>>>,
        pub received_response: Option<Vec<Vec<u8>>>,
        pub buffered_response: Option<Vec<Vec<u8>>>,
        pub filter_state: Vec<(&'static str, String, String)>,
        pub header_ops: Vec<HeaderOp>,
        pub replies: Vec<Reply>,
        pub updates: Vec<Update>,
        pub route_cache_clears: Vec<&'static str>,
        pub continues: Vec<&'static str>,
        pub response_code: Option<u64>,
        pub code_details: Option<String>,
        pub upstream: bool,
        pub forwarded: Option<Forwarded>,
        /// Hooks Envoy called from inside a callback (`local_reply`).
        pub nested_hooks: Vec<(&'static str, u32)>,
        /// Scheduled events run on the stream, by id.
        pub scheduled: Vec<u64>,
    }

    /// Envoy on one thread: the configuration being created or served, the stream, and
    /// the record of every callback.
    #[derive(Debug, Default)]
    pub struct Envoy {
        pub hook: &'static str,
        depth: usize,
        /// (hook, callback) of every call, in order.
        pub calls: Vec<(&'static str, &'static str)>,
        /// Buffers lent for the current hook.
        lent: Vec<Box<[u8]>>,
        /// Anything the module did that Envoy would refuse or that a test must fail on.
        pub problems: Vec<String>,
        pub logs: Vec<(u32, String)>,
        /// Every string the module handed to Envoy (keys, values, replies, labels, logs;
        /// not a request body it rewrote).
        pub received_text: Vec<String>,
        pub config: usize,
        pub metrics: Vec<Metric>,
        pub stream: Stream,
        pub schedulers_made: Vec<usize>,
        pub schedulers_deleted: Vec<usize>,
    }

    thread_local! {
        static ENVOY: RefCell<Envoy> = RefCell::new(Envoy::default());
    }

    /// Runs `f` on this thread's Envoy (`None` if it is borrowed: a callback made while
    /// the fake itself is running, which the fake never allows).
    pub fn with<T>(f: impl FnOnce(&mut Envoy) -> T) -> Option<T> {
        ENVOY.with(|e| e.try_borrow_mut().ok().map(|mut e| f(&mut e)))
    }

    /// Takes this thread's Envoy, leaving a fresh one.
    pub fn take() -> Envoy {
        with(std::mem::take).unwrap_or_default()
    }

    /// Takes what one stream left, keeping the configuration it was made from (its
    /// pointer and the metrics it defined) for the next stream.
    pub fn take_stream() -> Envoy {
        with(|e| {
            let out = std::mem::take(e);
            e.config = out.config;
            e.metrics.clone_from(&out.metrics);
            out
        })
        .unwrap_or_default()
    }

    /// Fake addresses for Envoy's objects: never dereferenced, only compared.
    pub fn address() -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0x1000);
        NEXT.fetch_add(0x10, Ordering::Relaxed)
    }

    /// Envoy calls hook `name`: the calls made meanwhile are counted under it, and what
    /// Envoy lent for it is released at the end of the outermost hook.
    pub fn hook<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
        let outer = with(|e| {
            e.depth += 1;
            std::mem::replace(&mut e.hook, name)
        })
        .unwrap_or("");
        let r = f();
        with(|e| {
            e.hook = outer;
            e.depth -= 1;
            if e.depth == 0 {
                e.lent.clear();
            }
        });
        r
    }

    impl Envoy {
        fn lend(&mut self, bytes: &[u8]) -> EnvoyBuffer {
            let b: Box<[u8]> = bytes.into();
            let buf = EnvoyBuffer {
                ptr: b.as_ptr(),
                length: b.len(),
            };
            self.lent.push(b);
            buf
        }

        fn problem(&mut self, what: String) {
            self.problems.push(what);
        }

        /// Counts callback `name` made on `filter`, which must be this thread's stream.
        fn call(&mut self, name: &'static str, filter: FilterPtr) {
            self.calls.push((self.hook, name));
            if filter as usize != self.stream.filter || self.stream.filter == 0 {
                self.problem(format!("{name}: not the live stream's filter pointer"));
            }
        }

        fn call_config(&mut self, name: &'static str, config: ConfigPtr) {
            self.calls.push((self.hook, name));
            if config as usize != self.config || self.config == 0 {
                self.problem(format!("{name}: not the configuration's pointer"));
            }
        }

        fn text(&mut self, bytes: &[u8]) -> String {
            let s = String::from_utf8_lossy(bytes).into_owned();
            self.received_text.push(s.clone());
            s
        }

        fn header_map(&mut self, header_type: u32) -> Option<&mut Vec<(String, String)>> {
            match header_type {
                abi::REQUEST_HEADERS => Some(&mut self.stream.request_headers),
                abi::RESPONSE_HEADERS => self.stream.response_headers.as_mut(),
                _ => None,
            }
        }

        fn body(&mut self, body_type: u32) -> Option<&mut Vec<Vec<u8>>> {
            let s = &mut self.stream;
            match body_type {
                abi::RECEIVED_REQUEST_BODY if s.received_is_buffered => s.buffered.as_mut(),
                abi::RECEIVED_REQUEST_BODY => s.received.as_mut(),
                abi::BUFFERED_REQUEST_BODY => s.buffered.as_mut(),
                abi::RECEIVED_RESPONSE_BODY => s.received_response.as_mut(),
                BUFFERED_RESPONSE_BODY => s.buffered_response.as_mut(),
                _ => None,
            }
        }
    }

    /// The bytes of a module buffer (`None` for a null one).
    ///
    /// # Safety
    /// A non-null `b.ptr` points to `b.length` readable bytes (the module's promise).
    unsafe fn bytes(b: ModuleBuffer) -> Option<Vec<u8>> {
        if b.ptr.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(b.ptr, b.length).to_vec())
    }

    /// # Safety
    /// `p` is null or points to `n` readable values.
    unsafe fn slice<'a, T>(p: *const T, n: usize) -> &'a [T] {
        if p.is_null() || n == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(p, n)
        }
    }

    /// # Safety
    /// As [`slice`]; every buffer is readable.
    unsafe fn buffers(p: *const ModuleBuffer, n: usize) -> Vec<Vec<u8>> {
        slice(p, n)
            .iter()
            .map(|b| bytes(*b).unwrap_or_default())
            .collect()
    }

    /// # Safety
    /// As [`slice`]; every header's pointers are readable.
    unsafe fn module_headers(p: *const ModuleHttpHeader, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        slice(p, n)
            .iter()
            .map(|h| {
                (
                    slice(h.key_ptr, h.key_length).to_vec(),
                    slice(h.value_ptr, h.value_length).to_vec(),
                )
            })
            .collect()
    }

    // ----- logging -----

    /// Envoy's default level: info and above.
    fn enabled(level: u32) -> bool {
        level >= abi::LOG_INFO
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer) {
        // SAFETY: the module passes a readable buffer.
        let msg = unsafe { bytes(message) }.unwrap_or_default();
        with(|e| {
            e.calls.push((e.hook, "log"));
            if !enabled(level) {
                e.problem("log: a message at a level Envoy does not print".to_string());
            }
            let m = e.text(&msg);
            e.logs.push((level, m));
        });
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool {
        with(|e| e.calls.push((e.hook, "log_enabled")));
        enabled(level)
    }

    // ----- headers -----

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool {
        // SAFETY: the module passes a readable key.
        let key = unsafe { bytes(key) }.unwrap_or_default();
        let found = with(|e| {
            e.call("http_get_header", filter);
            let name = e.text(&key).to_ascii_lowercase();
            let values: Vec<String> = e
                .header_map(header_type)?
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .collect();
            let value = values.get(index).map(|v| e.lend(v.as_bytes()));
            Some((values.len(), value))
        })
        .flatten();
        let (count, value) = found.unwrap_or((0, None));
        // SAFETY: the out-parameters are the module's, writable or null.
        unsafe {
            if !optional_size.is_null() {
                optional_size.write(count);
            }
            if !result.is_null() {
                result.write(value.unwrap_or(EnvoyBuffer::empty()));
            }
        }
        value.is_some()
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterPtr,
        header_type: u32,
    ) -> usize {
        with(|e| {
            e.call("http_get_headers_size", filter);
            e.header_map(header_type).map_or(0, |m| m.len())
        })
        .unwrap_or(0)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterPtr,
        header_type: u32,
        result: *mut EnvoyHttpHeader,
    ) -> bool {
        let lent = with(|e| {
            e.call("http_get_headers", filter);
            let pairs = e.header_map(header_type)?.clone();
            let lent: Vec<EnvoyHttpHeader> = pairs
                .iter()
                .map(|(k, v)| {
                    let (k, v) = (e.lend(k.as_bytes()), e.lend(v.as_bytes()));
                    EnvoyHttpHeader {
                        key_ptr: k.ptr,
                        key_length: k.length,
                        value_ptr: v.ptr,
                        value_length: v.length,
                    }
                })
                .collect();
            Some(lent)
        })
        .flatten();
        let Some(lent) = lent else {
            return false;
        };
        // SAFETY: the module sized `result` with get_headers_size, which nothing changed
        // since (no other callback ran in between).
        unsafe { std::ptr::copy_nonoverlapping(lent.as_ptr(), result, lent.len()) };
        true
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool {
        // SAFETY: the module passes readable buffers; a null value removes.
        let (key, value) = unsafe { (bytes(key).unwrap_or_default(), bytes(value)) };
        with(|e| {
            e.call("http_set_header", filter);
            let name = e.text(&key).to_ascii_lowercase();
            let value = value.map(|v| e.text(&v));
            let hook = e.hook;
            let Some(map) = e.header_map(header_type) else {
                return false;
            };
            map.retain(|(k, _)| *k != name);
            if let Some(v) = &value {
                map.push((name.clone(), v.clone()));
            }
            let op = HeaderOp {
                hook,
                map: header_type,
                name,
                value,
            };
            e.stream.header_ops.push(op);
            true
        })
        .unwrap_or(false)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterPtr,
        status: u32,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    ) {
        // SAFETY: the module passes `headers_size` readable headers and readable buffers.
        let (pairs, body, details) = unsafe {
            (
                module_headers(headers, headers_size),
                bytes(body).unwrap_or_default(),
                bytes(details).unwrap_or_default(),
            )
        };
        let Some(Some(reply)) = with(|e| record_reply(e, filter, status, &pairs, &body, &details))
        else {
            return;
        };
        // Envoy's sendLocalReply tells every filter first, inline.
        let module = with(|e| e.stream.module).unwrap_or(0);
        let d = reply.details.clone();
        let reset = false;
        let code = reply.status;
        super::local_reply_hook(filter, module, code, &d, reset);
    }

    /// The local reply as Envoy records it; `None` (and a problem) for a second one.
    fn record_reply(
        e: &mut Envoy,
        filter: FilterPtr,
        status: u32,
        pairs: &[(Vec<u8>, Vec<u8>)],
        body: &[u8],
        details: &[u8],
    ) -> Option<Reply> {
        e.call("http_send_response", filter);
        let headers: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (e.text(k).to_ascii_lowercase(), e.text(v)))
            .collect();
        let body_text = e.text(body);
        let mut details = e.text(details);
        if details.is_empty() {
            details = "dynamic_module".to_string();
        }
        if !e.stream.replies.is_empty() {
            e.problem("http_send_response: a second local reply".to_string());
            return None;
        }
        let reply = Reply {
            hook: e.hook,
            status,
            headers,
            body: body_text.into_bytes(),
            details,
        };
        e.stream.response_code = Some(u64::from(status));
        e.stream.code_details = Some(reply.details.clone());
        e.stream.replies.push(reply.clone());
        Some(reply)
    }

    // ----- bodies -----

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterPtr,
        body_type: u32,
    ) -> usize {
        with(|e| {
            e.call("http_get_body_chunks_size", filter);
            e.body(body_type)
                .map_or(0, |b| b.iter().filter(|c| !c.is_empty()).count())
        })
        .unwrap_or(0)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterPtr,
        body_type: u32,
        result: *mut EnvoyBuffer,
    ) -> bool {
        let lent = with(|e| {
            e.call("http_get_body_chunks", filter);
            let chunks: Vec<Vec<u8>> = e.body(body_type)?.clone();
            let lent: Vec<EnvoyBuffer> = chunks
                .iter()
                .filter(|c| !c.is_empty())
                .map(|c| e.lend(c))
                .collect();
            Some(lent)
        })
        .flatten();
        let Some(lent) = lent else {
            return false;
        };
        // SAFETY: sized by get_body_chunks_size, unchanged since.
        unsafe { std::ptr::copy_nonoverlapping(lent.as_ptr(), result, lent.len()) };
        true
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_append_body(
        filter: FilterPtr,
        body_type: u32,
        data: ModuleBuffer,
    ) -> bool {
        // SAFETY: the module passes a readable buffer.
        let data = unsafe { bytes(data) }.unwrap_or_default();
        with(|e| {
            // The request body going upstream: the one place prompt text may reach
            // Envoy, so it is not in `received_text`.
            e.call("http_append_body", filter);
            e.body(body_type).map(|b| b.push(data)).is_some()
        })
        .unwrap_or(false)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_drain_body(
        filter: FilterPtr,
        body_type: u32,
        bytes: usize,
    ) -> bool {
        with(|e| {
            e.call("http_drain_body", filter);
            let Some(body) = e.body(body_type) else {
                return false;
            };
            let mut left = bytes;
            for chunk in body.iter_mut() {
                let n = left.min(chunk.len());
                chunk.drain(..n);
                left -= n;
            }
            body.retain(|c| !c.is_empty());
            true
        })
        .unwrap_or(false)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: FilterPtr,
    ) -> bool {
        with(|e| {
            e.call("http_received_buffered_request_body", filter);
            e.stream.received_is_buffered
        })
        .unwrap_or(false)
    }

    // ----- stream information -----

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool {
        // SAFETY: the module passes readable buffers.
        let (key, value) = unsafe { (bytes(key), bytes(value)) };
        with(|e| {
            e.call("http_set_filter_state_bytes", filter);
            let (Some(k), Some(v)) = (key, value) else {
                e.problem("http_set_filter_state_bytes: a null buffer".to_string());
                return false;
            };
            let (k, v) = (e.text(&k), e.text(&v));
            let hook = e.hook;
            e.stream.filter_state.push((hook, k, v));
            true
        })
        .unwrap_or(false)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterPtr) {
        with(|e| {
            e.call("http_clear_route_cache", filter);
            let hook = e.hook;
            e.stream.route_cache_clears.push(hook);
        });
    }

    /// An attribute's text as Envoy knows it at this point of the stream.
    fn attribute_text(e: &Envoy, id: u32) -> Option<String> {
        let s = &e.stream;
        match id {
            abi::ATTR_XDS_CLUSTER_NAME => Some(super::CLUSTER.to_string()),
            abi::ATTR_UPSTREAM_ADDRESS if s.upstream => Some(super::UPSTREAM_ADDRESS.into()),
            abi::ATTR_RESPONSE_CODE_DETAILS => s.code_details.clone(),
            // A plaintext downstream has no peer certificate.
            _ => None,
        }
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterPtr,
        attribute_id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool {
        let lent = with(|e| {
            e.call("http_filter_get_attribute_string", filter);
            let text = attribute_text(e, attribute_id)?;
            Some(e.lend(text.as_bytes()))
        })
        .flatten();
        let Some(buf) = lent else {
            return false;
        };
        // SAFETY: `result` is the module's out-parameter.
        unsafe { result.write(buf) };
        true
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterPtr,
        attribute_id: u32,
        result: *mut u64,
    ) -> bool {
        let value = with(|e| {
            e.call("http_filter_get_attribute_int", filter);
            match attribute_id {
                abi::ATTR_RESPONSE_CODE => e.stream.response_code,
                _ => None,
            }
        })
        .flatten();
        let Some(v) = value else {
            return false;
        };
        // SAFETY: `result` is the module's out-parameter.
        unsafe { result.write(v) };
        true
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(
        filter: FilterPtr,
    ) {
        with(|e| {
            e.call("http_filter_continue_decoding", filter);
            let hook = e.hook;
            e.stream.continues.push(hook);
        });
    }

    // ----- schedulers -----

    /// Schedulers alive in the process and commits made to them, from any thread.
    #[derive(Debug, Default)]
    pub struct Commits {
        pub live: BTreeSet<usize>,
        /// Events committed and not yet run, by scheduler.
        pub pending: BTreeMap<usize, Vec<u64>>,
        pub to_dead: u64,
    }

    pub fn commits() -> MutexGuard<'static, Commits> {
        static C: OnceLock<Mutex<Commits>> = OnceLock::new();
        C.get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn commit(sched: SchedulerPtr, event_id: u64) {
        let mut c = commits();
        let s = sched as usize;
        if c.live.contains(&s) {
            c.pending.entry(s).or_default().push(event_id);
        } else {
            c.to_dead += 1;
        }
    }

    /// The events committed to `sched` so far, taken to be run (Envoy's dispatcher).
    pub fn take_pending(sched: usize) -> Vec<u64> {
        commits().pending.remove(&sched).unwrap_or_default()
    }

    fn new_scheduler(e: &mut Envoy) -> SchedulerPtr {
        let s = address();
        commits().live.insert(s);
        e.schedulers_made.push(s);
        s as SchedulerPtr
    }

    fn delete_scheduler(e: &mut Envoy, sched: SchedulerPtr) {
        let s = sched as usize;
        let mut c = commits();
        if !c.live.remove(&s) {
            e.problem("scheduler_delete: not a live scheduler".to_string());
        }
        // Envoy drops the events a deleted scheduler still had queued.
        c.pending.remove(&s);
        e.schedulers_deleted.push(s);
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterPtr,
    ) -> SchedulerPtr {
        with(|e| {
            e.call("http_filter_scheduler_new", filter);
            new_scheduler(e)
        })
        .unwrap_or(std::ptr::null_mut())
    }

    /// Thread-safe: the module's tick thread calls it.
    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    ) {
        commit(scheduler, event_id);
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_delete(
        scheduler: SchedulerPtr,
    ) {
        with(|e| {
            e.calls.push((e.hook, "http_filter_scheduler_delete"));
            delete_scheduler(e, scheduler);
        });
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigPtr,
    ) -> SchedulerPtr {
        with(|e| {
            e.call_config("http_filter_config_scheduler_new", config);
            new_scheduler(e)
        })
        .unwrap_or(std::ptr::null_mut())
    }

    /// Thread-safe: the module's tick thread calls it.
    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    ) {
        commit(scheduler, event_id);
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: SchedulerPtr,
    ) {
        with(|e| {
            e.calls
                .push((e.hook, "http_filter_config_scheduler_delete"));
            delete_scheduler(e, scheduler);
        });
    }

    // ----- metrics -----

    /// # Safety
    /// `names` holds `n` readable buffers.
    unsafe fn define(
        config: ConfigPtr,
        kind: Kind,
        name: ModuleBuffer,
        names: *const ModuleBuffer,
        n: usize,
        id: *mut usize,
    ) -> u32 {
        let (name, labels) = (bytes(name).unwrap_or_default(), buffers(names, n));
        let defined = with(|e| {
            let callback = match kind {
                Kind::Counter => "http_filter_config_define_counter",
                Kind::Gauge => "http_filter_config_define_gauge",
                Kind::Histogram => "http_filter_config_define_histogram",
            };
            e.call_config(callback, config);
            if e.hook != "config_new" {
                e.problem(format!("{callback} outside config_new"));
                return None;
            }
            let name = e.text(&name);
            let labels = labels.iter().map(|l| e.text(l)).collect();
            e.metrics.push(Metric { kind, name, labels });
            Some(e.metrics.len() - 1)
        })
        .flatten();
        match defined {
            Some(i) => {
                id.write(i);
                abi::METRICS_SUCCESS
            }
            None => METRIC_FROZEN,
        }
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32 {
        // SAFETY: the module passes its label names and a writable id.
        unsafe {
            define(
                config,
                Kind::Counter,
                name,
                label_names,
                label_names_length,
                id,
            )
        }
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32 {
        // SAFETY: as for counters.
        unsafe {
            define(
                config,
                Kind::Gauge,
                name,
                label_names,
                label_names_length,
                id,
            )
        }
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32 {
        // SAFETY: as for counters.
        unsafe {
            define(
                config,
                Kind::Histogram,
                name,
                label_names,
                label_names_length,
                id,
            )
        }
    }

    /// An update of metric `id` of kind `kind` with one value per label name.
    fn update(e: &mut Envoy, kind: Kind, id: usize, values: &[Vec<u8>], value: u64) -> u32 {
        let Some(m) = e.metrics.get(id).cloned() else {
            e.problem(format!("metric id {id} was never defined"));
            return METRIC_NOT_FOUND;
        };
        if m.kind != kind {
            e.problem(format!("{}: updated as a {kind:?}", m.name));
            return METRIC_NOT_FOUND;
        }
        if m.labels.len() != values.len() {
            e.problem(format!("{}: {} label values", m.name, values.len()));
            return METRIC_INVALID_LABELS;
        }
        let labels = m
            .labels
            .iter()
            .zip(values)
            .map(|(n, v)| (n.clone(), e.text(v)))
            .collect();
        let hook = e.hook;
        e.stream.updates.push(Update {
            hook,
            kind,
            name: m.name,
            labels,
            value,
        });
        abi::METRICS_SUCCESS
    }

    fn filter_update(
        filter: FilterPtr,
        callback: &'static str,
        kind: Kind,
        id: usize,
        values: Vec<Vec<u8>>,
        value: u64,
    ) -> u32 {
        with(|e| {
            e.call(callback, filter);
            update(e, kind, id, &values, value)
        })
        .unwrap_or(METRIC_NOT_FOUND)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32 {
        // SAFETY: the module passes its label values.
        let values = unsafe { buffers(label_values, label_values_length) };
        let name = "http_filter_increment_counter";
        filter_update(filter, name, Kind::Counter, id, values, value)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32 {
        // SAFETY: the module passes its label values.
        let values = unsafe { buffers(label_values, label_values_length) };
        let name = "http_filter_set_gauge";
        filter_update(filter, name, Kind::Gauge, id, values, value)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32 {
        // SAFETY: the module passes its label values.
        let values = unsafe { buffers(label_values, label_values_length) };
        let name = "http_filter_record_histogram_value";
        filter_update(filter, name, Kind::Histogram, id, values, value)
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32 {
        // SAFETY: the module passes its label values.
        let values = unsafe { buffers(label_values, label_values_length) };
        with(|e| {
            e.call_config("http_filter_config_increment_counter", config);
            update(e, Kind::Counter, id, &values, value)
        })
        .unwrap_or(METRIC_NOT_FOUND)
    }

    // ----- callouts (only for global limits, which these tests do not configure) -----

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterPtr,
        _callout_id: *mut u64,
        _cluster: ModuleBuffer,
        _headers: *mut ModuleHttpHeader,
        _headers_size: usize,
        _body: ModuleBuffer,
        _timeout_ms: u64,
    ) -> u32 {
        with(|e| e.call("http_filter_http_callout", filter));
        CALLOUT_CLUSTER_NOT_FOUND
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigPtr,
        _callout_id: *mut u64,
        _cluster: ModuleBuffer,
        _headers: *mut ModuleHttpHeader,
        _headers_size: usize,
        _body: ModuleBuffer,
        _timeout_ms: u64,
    ) -> u32 {
        with(|e| e.call_config("http_filter_config_http_callout", config));
        CALLOUT_CLUSTER_NOT_FOUND
    }
}

// ----- the module's hooks, as Envoy calls them -----

extern "C" {
    fn envoy_dynamic_module_on_program_init() -> *const c_char;
    fn envoy_dynamic_module_on_http_filter_config_new(
        config_envoy: abi::ConfigPtr,
        name: abi::EnvoyBuffer,
        config: abi::EnvoyBuffer,
    ) -> *const c_void;
    fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void);
    fn envoy_dynamic_module_on_http_filter_new(
        config: *const c_void,
        filter_envoy: abi::FilterPtr,
    ) -> *const c_void;
    fn envoy_dynamic_module_on_http_filter_request_headers(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
        end_of_stream: bool,
    ) -> u32;
    fn envoy_dynamic_module_on_http_filter_request_body(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
        end_of_stream: bool,
    ) -> u32;
    fn envoy_dynamic_module_on_http_filter_response_headers(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
        end_of_stream: bool,
    ) -> u32;
    fn envoy_dynamic_module_on_http_filter_response_body(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
        end_of_stream: bool,
    ) -> u32;
    fn envoy_dynamic_module_on_http_filter_stream_complete(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
    );
    fn envoy_dynamic_module_on_http_filter_destroy(module: *const c_void);
    fn envoy_dynamic_module_on_http_filter_scheduled(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_on_http_filter_local_reply(
        filter_envoy: abi::FilterPtr,
        module: *const c_void,
        response_code: u32,
        details: abi::EnvoyBuffer,
        reset_imminent: bool,
    ) -> u32;
}

fn lend(bytes: &[u8]) -> abi::EnvoyBuffer {
    abi::EnvoyBuffer {
        ptr: bytes.as_ptr(),
        length: bytes.len(),
    }
}

/// `on_http_filter_local_reply`, from inside `send_response` (as Envoy's sendLocalReply
/// tells each filter before the reply is encoded).
fn local_reply_hook(filter: abi::FilterPtr, module: usize, code: u32, details: &str, reset: bool) {
    envoy::with(|e| e.stream.nested_hooks.push(("local_reply", code)));
    envoy::hook("local_reply", || {
        // SAFETY: the module's filter is live; `details` outlives the call.
        unsafe {
            envoy_dynamic_module_on_http_filter_local_reply(
                filter,
                module as *const c_void,
                code,
                lend(details.as_bytes()),
                reset,
            )
        }
    });
}

/// `on_program_init`, whose answer is the module's ABI version.
fn program_init() -> String {
    // SAFETY: the hook returns a static NUL-terminated string (or null).
    let v = envoy::hook("program_init", || unsafe {
        envoy_dynamic_module_on_program_init()
    });
    assert!(!v.is_null(), "program_init refused to load");
    // SAFETY: non-null and NUL-terminated, as above.
    unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned()
}

/// A filter configuration (null: refused), on this thread's Envoy.
fn config_new(json: &[u8]) -> *const c_void {
    let config = envoy::address();
    envoy::with(|e| e.config = config);
    let name = b"ai-gateway-filter";
    envoy::hook("config_new", || {
        // SAFETY: both buffers outlive the call.
        unsafe {
            envoy_dynamic_module_on_http_filter_config_new(
                config as abi::ConfigPtr,
                lend(name),
                lend(json),
            )
        }
    })
}

fn config_destroy(config: *const c_void) {
    // SAFETY: made by config_new, destroyed once, after its streams.
    envoy::hook("config_destroy", || unsafe {
        envoy_dynamic_module_on_http_filter_config_destroy(config)
    });
}

fn demo_json() -> Vec<u8> {
    std::fs::read(DEMO).unwrap_or_else(|e| panic!("{DEMO}: {e}"))
}

/// The module's ABI version, checked, and the demo configuration.
fn setup() -> *const c_void {
    assert_eq!(program_init(), "v0.2.0");
    let config = config_new(&demo_json());
    assert!(
        !config.is_null(),
        "demo.json refused: {:?}",
        envoy::with(|e| e.logs.clone())
    );
    config
}

// ----- one exchange -----

/// How Envoy hands the module a body that came in several chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// One body hook per chunk, each with only its own chunk as received.
    Chunks,
    /// As `Chunks`, but at end of stream the last chunk is first added to the buffered
    /// body (what the dynamic-module filter does when a body is being buffered), so the
    /// received chunk is empty.
    LastIntoBuffer,
    /// An earlier filter buffered the whole body: one hook whose received body is the
    /// buffered body itself.
    EarlierFilterBuffered,
}

/// Scheduled events while a stream's headers are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    No,
    /// One tick event, run at once.
    Now,
    /// The events the module's tick thread committed to the stream's scheduler, once
    /// there are some.
    Committed,
}

struct Exchange {
    headers: Vec<(String, String)>,
    chunks: Vec<Vec<u8>>,
    delivery: Delivery,
    /// Scheduled events run while the headers are held.
    tick: Tick,
    /// The backend's status, headers and body.
    response: (u16, Vec<(String, String)>, Vec<u8>),
}

/// What happened: Envoy's view of the stream, the hooks' answers, every callback.
struct Outcome {
    envoy: envoy::Envoy,
    headers_status: u32,
    body_statuses: Vec<u32>,
    response_statuses: Vec<u32>,
}

impl Outcome {
    fn stream(&self) -> &envoy::Stream {
        &self.envoy.stream
    }

    /// Callback counts per hook, hooks in the order they ran.
    fn counts(&self) -> Vec<(&'static str, BTreeMap<&'static str, usize>)> {
        let mut out: Vec<(&'static str, BTreeMap<&'static str, usize>)> = Vec::new();
        for (hook, cb) in &self.envoy.calls {
            if out.last().is_none_or(|(h, _)| h != hook) {
                out.push((hook, BTreeMap::new()));
            }
            if let Some((_, m)) = out.last_mut() {
                *m.entry(*cb).or_default() += 1;
            }
        }
        out
    }

    fn total(&self) -> usize {
        self.envoy.calls.len()
    }

    fn state(&self, key: &str) -> Vec<&str> {
        self.stream()
            .filter_state
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value written to filter state `key`, parsed.
    fn record(&self, key: &str) -> Value {
        let values = self.state(key);
        assert_eq!(values.len(), 1, "{key} written {} times", values.len());
        serde_json::from_str(values[0]).unwrap_or_else(|e| panic!("{key}: {e}"))
    }
}

fn call_hook(
    name: &'static str,
    f: unsafe extern "C" fn(abi::FilterPtr, *const c_void, bool) -> u32,
    eos: bool,
) -> u32 {
    let (filter, module) = envoy::with(|e| (e.stream.filter, e.stream.module)).unwrap();
    // SAFETY: the filter made by filter_new is live until destroy.
    envoy::hook(name, || unsafe {
        f(filter as abi::FilterPtr, module as *const c_void, eos)
    })
}

fn replied() -> bool {
    envoy::with(|e| !e.stream.replies.is_empty()).unwrap()
}

/// `on_http_filter_new` for a new stream with `headers`.
fn filter_new(config: *const c_void, headers: Vec<(String, String)>) {
    let filter = envoy::address();
    envoy::with(|e| {
        e.calls.clear();
        e.stream = envoy::Stream {
            filter,
            request_headers: headers,
            ..envoy::Stream::default()
        };
    });
    // SAFETY: `config` is live; the filter pointer is this stream's.
    let module = envoy::hook("filter_new", || unsafe {
        envoy_dynamic_module_on_http_filter_new(config, filter as abi::FilterPtr)
    });
    assert!(!module.is_null(), "filter_new refused the stream");
    envoy::with(|e| e.stream.module = module as usize);
}

/// What Envoy passes upstream when decoding goes on: the headers as they are the first
/// time, then the buffered body followed by the received chunk.
fn forward() {
    envoy::with(|e| {
        let s = &mut e.stream;
        let mut body: Vec<u8> = s.buffered.take().into_iter().flatten().flatten().collect();
        if !s.received_is_buffered {
            body.extend(s.received.take().into_iter().flatten().flatten());
        }
        let headers = &s.request_headers;
        let fwd = s.forwarded.get_or_insert_with(|| envoy::Forwarded {
            headers: headers.clone(),
            body: Vec::new(),
        });
        fwd.body.extend(body);
    });
}

/// Sets up the received (and buffered) body for the next body hook.
fn present_chunk(chunk: &[u8], last: bool, delivery: Delivery) {
    envoy::with(|e| {
        let s = &mut e.stream;
        match delivery {
            Delivery::EarlierFilterBuffered => {
                s.buffered = Some(vec![chunk.to_vec()]);
                s.received_is_buffered = true;
            }
            Delivery::LastIntoBuffer if last && s.buffered.is_some() => {
                s.buffered.get_or_insert_default().push(chunk.to_vec());
                s.received = Some(Vec::new());
            }
            _ => s.received = Some(vec![chunk.to_vec()]),
        }
    });
}

/// The request body hooks, one per chunk; `false` when the stream stopped.
fn request_body(ex: &Exchange, out: &mut Outcome) -> bool {
    let n = ex.chunks.len();
    for (i, chunk) in ex.chunks.iter().enumerate() {
        let last = i + 1 == n;
        present_chunk(chunk, last, ex.delivery);
        let status = call_hook(
            "request_body",
            envoy_dynamic_module_on_http_filter_request_body,
            last,
        );
        out.body_statuses.push(status);
        if replied() {
            return false;
        }
        if status == abi::BODY_STOP_AND_BUFFER {
            // Envoy keeps the chunk: it joins the buffered body.
            envoy::with(|e| {
                let s = &mut e.stream;
                let chunk = s.received.take().unwrap_or_default();
                if !s.received_is_buffered {
                    s.buffered.get_or_insert_default().extend(chunk);
                }
            });
        } else {
            forward();
        }
    }
    envoy::with(|e| e.stream.received = None);
    true
}

/// The backend's response through the response hooks.
fn response(ex: &Exchange, out: &mut Outcome) {
    let (status, headers, body) = &ex.response;
    envoy::with(|e| {
        let mut map = vec![(":status".to_string(), status.to_string())];
        map.extend(headers.iter().cloned());
        let s = &mut e.stream;
        s.upstream = true;
        s.response_code = Some(u64::from(*status));
        s.code_details = Some("via_upstream".to_string());
        s.response_headers = Some(map);
    });
    let h = call_hook(
        "response_headers",
        envoy_dynamic_module_on_http_filter_response_headers,
        false,
    );
    envoy::with(|e| e.stream.received_response = Some(vec![body.clone()]));
    let b = call_hook(
        "response_body",
        envoy_dynamic_module_on_http_filter_response_body,
        true,
    );
    envoy::with(|e| e.stream.received_response = None);
    out.response_statuses = vec![h, b];
}

/// A scheduler event the module committed, run on the stream's worker.
fn scheduled(event_id: u64) {
    let (filter, module) = envoy::with(|e| (e.stream.filter, e.stream.module)).unwrap();
    envoy::with(|e| e.stream.scheduled.push(event_id));
    // SAFETY: the filter is live.
    envoy::hook("scheduled", || unsafe {
        envoy_dynamic_module_on_http_filter_scheduled(
            filter as abi::FilterPtr,
            module as *const c_void,
            event_id,
        )
    });
}

/// Waits for the module's tick thread to commit to this stream's scheduler, then runs
/// what it committed on this thread, as Envoy's dispatcher runs it on the worker.
fn run_committed() {
    let sched = envoy::with(|e| e.schedulers_made.last().copied()).flatten();
    let sched = sched.expect("a held stream has a scheduler");
    // No timing is asserted: the bound only keeps a broken tick thread from hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let events = envoy::take_pending(sched);
        if !events.is_empty() {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tick committed in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for id in events {
        assert_eq!(id, 1, "only ticks are posted to streams");
        scheduled(id);
    }
}

/// The stream's end: `on_http_filter_stream_complete` (before access logs), then destroy.
fn complete() {
    let (filter, module) = envoy::with(|e| (e.stream.filter, e.stream.module)).unwrap();
    // SAFETY: the filter is live until destroy, which comes last.
    envoy::hook("stream_complete", || unsafe {
        envoy_dynamic_module_on_http_filter_stream_complete(
            filter as abi::FilterPtr,
            module as *const c_void,
        )
    });
    envoy::hook("destroy", || unsafe {
        envoy_dynamic_module_on_http_filter_destroy(module as *const c_void)
    });
}

/// One stream from `on_http_filter_new` to `on_http_filter_destroy`.
fn run(config: *const c_void, ex: &Exchange) -> Outcome {
    filter_new(config, ex.headers.clone());
    let mut out = Outcome {
        envoy: envoy::Envoy::default(),
        headers_status: 0,
        body_statuses: Vec::new(),
        response_statuses: Vec::new(),
    };
    let eos = ex.chunks.is_empty();
    out.headers_status = call_hook(
        "request_headers",
        envoy_dynamic_module_on_http_filter_request_headers,
        eos,
    );
    if !replied() && out.headers_status == abi::HEADERS_CONTINUE {
        forward();
    }
    match ex.tick {
        Tick::No => {}
        Tick::Now => scheduled(1),
        Tick::Committed => run_committed(),
    }
    // After a local reply Envoy stops decoding, and skips the module's response hooks.
    if !replied() && request_body(ex, &mut out) && !replied() {
        response(ex, &mut out);
    }
    complete();
    out.envoy = envoy::take_stream();
    let problems = &out.envoy.problems;
    assert!(
        problems.is_empty(),
        "the module misused the ABI: {problems:?}"
    );
    out
}

// ----- requests and responses -----

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// A chat request of exactly `size` bytes for llama3-8b, a system and a user message.
fn chat_body(size: usize, stream: bool) -> Vec<u8> {
    let tail = if stream { ",\"stream\":true" } else { "" };
    let render = |content: &str| {
        format!(
            "{{\"model\":\"llama3-8b\",\"messages\":[{{\"role\":\"system\",\"content\":\
             \"You are a helpful assistant.\"}},{{\"role\":\"user\",\"content\":\"{content}\"}}],\
             \"max_tokens\":16{tail}}}"
        )
    };
    let mut text = String::from(PROMPT_CANARY);
    let need = size - render("").len();
    while text.len() + 6 <= need {
        text.push_str(" words");
    }
    while text.len() < need {
        text.push('.');
    }
    let body = render(&text).into_bytes();
    assert_eq!(body.len(), size);
    body
}

/// The request headers Envoy hands the filter (pseudo-headers first, then the client's,
/// then what the connection manager adds).
fn request_headers(credential: &str, len: usize) -> Vec<(String, String)> {
    vec![
        h(":authority", HOST_A),
        h(":path", "/v1/chat/completions"),
        h(":method", "POST"),
        h(":scheme", "http"),
        h("user-agent", "host-calls/1.0"),
        h("content-type", "application/json"),
        h("content-length", &len.to_string()),
        h("authorization", &format!("Bearer {credential}")),
        h("x-forwarded-proto", "http"),
        h("x-request-id", "6f1c7a52-3b0e-4d8e-9a41-0c2d5e7f9b13"),
    ]
}

/// The mock backend's completion, with usage.
fn completion() -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1704067200,"model":"llama3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":256,"completion_tokens":16,"total_tokens":272}}"#.to_vec();
    let headers = vec![
        h("content-type", "application/json"),
        h("content-length", &body.len().to_string()),
        h("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        h("x-envoy-upstream-service-time", "1"),
    ];
    (200, headers, body)
}

/// A 1 KiB chat for tenant-a with `credential`, its body in chunks split at `splits`.
fn chat(credential: &str, splits: &[usize], delivery: Delivery) -> Exchange {
    exchange(chat_body(1024, false), credential, splits, delivery)
}

/// A request with `body`, in chunks split at `splits`, answered with a completion.
fn exchange(body: Vec<u8>, credential: &str, splits: &[usize], delivery: Delivery) -> Exchange {
    let mut chunks = Vec::new();
    let mut at = 0;
    for &s in splits.iter().chain([&body.len()]) {
        chunks.push(body[at..s].to_vec());
        at = s;
    }
    Exchange {
        headers: request_headers(credential, body.len()),
        chunks,
        delivery,
        tick: Tick::No,
        response: completion(),
    }
}

// ----- assertions -----

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Prints the callback counts per hook, as the meter prints its table.
fn table(title: &str, out: &Outcome) -> String {
    let mut s = format!(
        "{title}\n{:<18} {:<40} {:>5}\n",
        "hook", "callback", "calls"
    );
    for (hook, calls) in out.counts() {
        for (cb, n) in calls {
            s.push_str(&format!("{hook:<18} {cb:<40} {n:>5}\n"));
        }
    }
    s.push_str(&format!("{:<18} {:<40} {:>5}\n", "total", "", out.total()));
    s
}

type Expected<'a> = &'a [(&'a str, &'a [(&'a str, usize)])];

fn assert_counts(title: &str, out: &Outcome, expected: Expected, total: usize) {
    let t = table(title, out);
    println!("{t}");
    let actual: Vec<(String, BTreeMap<String, usize>)> = out
        .counts()
        .into_iter()
        .map(|(h, m)| {
            (
                h.to_string(),
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            )
        })
        .collect();
    let want: Vec<(String, BTreeMap<String, usize>)> = expected
        .iter()
        .map(|(h, m)| {
            (
                h.to_string(),
                m.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            )
        })
        .collect();
    assert_eq!(actual, want, "callback counts differ:\n{t}");
    assert_eq!(out.total(), total, "{t}");
}

/// No credential and no prompt text reached Envoy through any callback.
fn assert_private(out: &Outcome) {
    for s in &out.envoy.received_text {
        assert!(
            !s.contains(KEY_A) && !s.contains("sk-wrong"),
            "a credential: {s}"
        );
        assert!(!s.contains(PROMPT_CANARY), "prompt text: {s}");
    }
}

/// The one update of `name` in this stream.
fn update<'a>(out: &'a Outcome, name: &str) -> &'a envoy::Update {
    let found: Vec<&envoy::Update> = out
        .stream()
        .updates
        .iter()
        .filter(|u| u.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{name}: {:?}", out.stream().updates);
    found[0]
}

fn labels(u: &envoy::Update) -> Vec<(&str, &str)> {
    u.labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

// ----- the tests -----

/// The callbacks of a 1 KiB chat, per hook, in the order the hooks run.
const CHAT_1K: Expected = &[
    // The stream carries its worker's tick (the demo holds headers for the body).
    ("filter_new", &[("http_filter_scheduler_new", 1)]),
    (
        "request_headers",
        &[
            ("http_get_headers_size", 1),
            ("http_get_headers", 1),
            // authorization removed; x-ai-tenant, x-ai-subject, x-request-id set.
            ("http_set_header", 4),
        ],
    ),
    (
        "request_body",
        &[
            ("http_received_buffered_request_body", 1),
            // Each body asked for once: the received chunk (size, chunks) and the
            // buffered body (size only: it is empty).
            ("http_get_body_chunks_size", 2),
            ("http_get_body_chunks", 1),
            // x-ai-model, x-gateway-model-name, x-ai-traffic-class.
            ("http_set_header", 3),
            ("http_clear_route_cache", 1),
        ],
    ),
    (
        "response_headers",
        &[
            ("http_get_headers_size", 1),
            ("http_get_headers", 1),
            // Six x-ratelimit-* headers and x-request-id.
            ("http_set_header", 7),
        ],
    ),
    (
        "response_body",
        &[
            ("http_get_body_chunks_size", 1),
            ("http_get_body_chunks", 1),
        ],
    ),
    (
        "stream_complete",
        &[
            // xds cluster name, upstream address.
            ("http_filter_get_attribute_string", 2),
            // ai.record, ai.audit, ai.tenant, ai.tokens_total.
            ("http_set_filter_state_bytes", 4),
            // requests, prompt and completion tokens, cost.
            ("http_filter_increment_counter", 4),
            // request, upstream and filter durations; GenAI token usage (2), duration.
            ("http_filter_record_histogram_value", 6),
        ],
    ),
    ("destroy", &[("http_filter_scheduler_delete", 1)]),
];

/// The callbacks of a request refused for its key, per hook.
const WRONG_KEY: Expected = &[
    ("filter_new", &[("http_filter_scheduler_new", 1)]),
    (
        "request_headers",
        &[
            ("http_get_headers_size", 1),
            ("http_get_headers", 1),
            ("http_send_response", 1),
        ],
    ),
    (
        "stream_complete",
        &[
            // xds cluster name, upstream address (none: nothing was forwarded).
            ("http_filter_get_attribute_string", 2),
            // The response code: the module's own reply was not read back.
            ("http_filter_get_attribute_int", 1),
            // ai.record, ai.audit, ai.tokens_total.
            ("http_set_filter_state_bytes", 3),
            // requests, auth denials.
            ("http_filter_increment_counter", 2),
            // request and filter durations, GenAI duration.
            ("http_filter_record_histogram_value", 3),
        ],
    ),
    ("destroy", &[("http_filter_scheduler_delete", 1)]),
];

/// Nothing the module did with its schedulers went wrong in any thread so far.
fn assert_schedulers(out: &Outcome) {
    assert_eq!(out.envoy.schedulers_made, out.envoy.schedulers_deleted);
    assert_eq!(
        envoy::commits().to_dead,
        0,
        "a commit to a deleted scheduler"
    );
}

#[test]
fn chat_1k_is_admitted_with_exact_host_calls() {
    let config = setup();
    let ex = chat(KEY_A, &[], Delivery::Chunks);
    let out = run(config, &ex);
    assert_counts("chat_1k: callbacks per hook", &out, CHAT_1K, 43);
    // Routing defaults hold the headers until the body is read; then the stream goes on.
    assert_eq!(out.headers_status, abi::HEADERS_STOP_ITERATION);
    assert_eq!(out.body_statuses, [abi::BODY_CONTINUE]);
    assert_eq!(
        out.response_statuses,
        [abi::HEADERS_CONTINUE, abi::BODY_CONTINUE]
    );
    assert_admitted(&out, &ex);
    assert_schedulers(&out);
    assert_private(&out);
    config_destroy(config);
}

/// What an admitted chat for tenant-a leaves: the request routed by its model and
/// forwarded without its credential, both records, the request counter.
fn assert_admitted(out: &Outcome, ex: &Exchange) {
    let s = out.stream();
    assert!(s.replies.is_empty() && s.continues.is_empty());
    let ops = &s.header_ops;
    let model = ops.iter().position(|o| o.name == "x-ai-model");
    let model = model.expect("x-ai-model set");
    assert_eq!(ops[model].value.as_deref(), Some("llama3-8b"));
    assert_eq!(ops[model].hook, "request_body");
    // The route is picked again once the routing header is set: after it, same hook.
    assert_eq!(s.route_cache_clears, ["request_body"]);
    let clear = out
        .envoy
        .calls
        .iter()
        .position(|c| c.1 == "http_clear_route_cache");
    let sets = out.envoy.calls.iter().filter(|c| c.1 == "http_set_header");
    assert!(sets.take(model + 1).count() == model + 1 && clear.is_some());
    let fwd = s.forwarded.as_ref().expect("forwarded");
    assert!(
        header(&fwd.headers, "authorization").is_empty(),
        "{:?}",
        fwd.headers
    );
    assert_eq!(header(&fwd.headers, "x-ai-tenant"), ["tenant-a"]);
    assert_eq!(header(&fwd.headers, "x-ai-model"), ["llama3-8b"]);
    let body: Vec<u8> = ex.chunks.concat();
    assert_eq!(fwd.body, body, "the body goes upstream unchanged");
    assert_records(out, Value::from("tenant-a"), 200, "allow");
    assert!(s.updates.iter().all(|u| u.hook == "stream_complete"));
    let req = update(out, "ai_gateway_requests_total");
    let want = [
        ("tenant", "tenant-a"),
        ("route", "/v1/chat/completions"),
        ("model_route", CLUSTER),
        ("status", "200"),
    ];
    assert_eq!(
        (labels(req), req.value, req.kind),
        (want.to_vec(), 1, envoy::Kind::Counter)
    );
}

/// Both records, written once each and only at the stream's end, naming `tenant` (null
/// for a request that did not authenticate).
fn assert_records(out: &Outcome, tenant: Value, status: u64, decision: &str) {
    for (hook, key, _) in &out.stream().filter_state {
        assert_eq!(*hook, "stream_complete", "{key} written in {hook}");
    }
    let record = out.record("wasm.ai.record");
    let audit = out.record("wasm.ai.audit");
    assert_eq!(record["tenant"], tenant);
    assert_eq!(audit["tenant"], tenant);
    assert_eq!(record["hostname"], HOST_A);
    assert_eq!(record["http_status"], status);
    assert_eq!(audit["http_status"], status);
    assert_eq!(audit["decision"], decision);
    assert_eq!(record["request_id"], audit["request_id"]);
}

#[test]
fn wrong_key_gets_a_local_401_and_both_records() {
    let config = setup();
    let out = run(config, &chat("sk-wrong-key", &[], Delivery::Chunks));
    assert_counts("wrong key: callbacks per hook", &out, WRONG_KEY, 16);
    let s = out.stream();
    assert!(s.forwarded.is_none(), "nothing goes upstream");
    assert!(out.body_statuses.is_empty() && out.response_statuses.is_empty());
    assert_eq!(s.replies.len(), 1);
    let reply = &s.replies[0];
    assert_eq!((reply.hook, reply.status), ("request_headers", 401));
    assert_eq!(header(&reply.headers, "content-type"), ["application/json"]);
    assert_eq!(header(&reply.headers, "www-authenticate").len(), 1);
    let body: Value = serde_json::from_slice(&reply.body).expect("a JSON body");
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(err["type"], "invalid_request_error", "{body}");
    assert!(err["code"].is_string(), "{body}");
    // Envoy told the module about its own reply, from inside send_response.
    assert_eq!(s.nested_hooks, [("local_reply", 401)]);
    assert_eq!(err["code"], "invalid_api_key", "{body}");
    // The host is tenant-a's, but a wrong key names no tenant (docs/contract.md).
    assert_records(&out, Value::Null, 401, "deny");
    assert_eq!(out.record("wasm.ai.audit")["reason"], "invalid_credentials");
    let denials = update(&out, "ai_gateway_auth_denials_total");
    assert_eq!(labels(denials), [("reason", "invalid_credentials")]);
    assert_eq!(denials.value, 1);
    let req = update(&out, "ai_gateway_requests_total");
    let want = [
        ("tenant", "unknown"),
        ("route", "/v1/chat/completions"),
        ("model_route", "unknown"),
        ("status", "401"),
    ];
    assert_eq!(labels(req), want);
    assert_schedulers(&out);
    assert_private(&out);
    config_destroy(config);
}

#[test]
fn invalid_configuration_is_refused() {
    assert_eq!(program_init(), "v0.2.0");
    let demo = String::from_utf8(demo_json()).unwrap();
    let bad: [&[u8]; 4] = [
        b"not json",
        b"{\"tenants\": \"nope\"}",
        b"{\"tenants\": [], \"no_such_field\": 1}",
        // Valid JSON, but a key hash that is not SHA-256 hex.
        &demo
            .replace(
                "6ca02907df2f5fadb8026da4b8c2fa39ce44b71e131a02039d96bf4de4b91e61",
                "xyz",
            )
            .into_bytes(),
    ];
    for json in bad {
        envoy::take();
        let config = config_new(json);
        let e = envoy::take();
        let shown = String::from_utf8_lossy(json);
        assert!(config.is_null(), "accepted: {shown}");
        // Refused before any metric is defined, with the reason in Envoy's log.
        assert!(e.metrics.is_empty(), "{shown}");
        let errors: Vec<&String> = e
            .logs
            .iter()
            .filter(|(l, _)| *l == abi::LOG_ERROR)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(errors.len(), 1, "{shown}: {:?}", e.logs);
        assert!(
            errors[0].contains("invalid plugin configuration"),
            "{errors:?}"
        );
        assert!(e.problems.is_empty(), "{:?}", e.problems);
    }
    // Envoy never makes a stream for a refused configuration; the hook holds anyway.
    // SAFETY: a null configuration; the filter pointer is never used.
    let module = unsafe {
        envoy_dynamic_module_on_http_filter_new(
            std::ptr::null(),
            envoy::address() as abi::FilterPtr,
        )
    };
    assert!(module.is_null());
}

#[test]
fn config_new_defines_the_whole_catalogue() {
    assert_eq!(program_init(), "v0.2.0");
    envoy::take();
    let config = config_new(&demo_json());
    assert!(!config.is_null());
    let e = envoy::take();
    let catalogue = ai_gateway_core::metrics::CATALOGUE;
    assert_eq!(e.metrics.len(), catalogue.len());
    for (m, (name, kind, labels)) in e.metrics.iter().zip(catalogue) {
        let kind = match kind {
            ai_gateway_core::metrics::Kind::Counter => envoy::Kind::Counter,
            ai_gateway_core::metrics::Kind::Gauge => envoy::Kind::Gauge,
            ai_gateway_core::metrics::Kind::Histogram => envoy::Kind::Histogram,
        };
        assert_eq!(
            (m.name.as_str(), m.kind, &m.labels),
            (*name, kind, &labels.iter().map(|l| l.to_string()).collect())
        );
    }
    assert!(e
        .logs
        .iter()
        .any(|(l, m)| *l == abi::LOG_INFO && m.contains("configuration loaded")));
    config_destroy(config);
}

/// Both records without the fields that depend on time or the request's random id.
fn records_summary(out: &Outcome) -> Vec<Value> {
    ["wasm.ai.record", "wasm.ai.audit"]
        .into_iter()
        .map(|key| {
            let mut r = out.record(key);
            for f in ["timestamp", "request_id", "latency_ms"] {
                r.as_object_mut().unwrap().remove(f);
            }
            r
        })
        .collect()
}

/// Each metric update's series, and its value unless it is a duration.
fn metrics_summary(out: &Outcome) -> Vec<Value> {
    out.stream()
        .updates
        .iter()
        .map(|u| {
            let value = Some(u.value).filter(|_| !u.name.contains("duration"));
            serde_json::json!([u.name, u.labels, value])
        })
        .collect()
}

/// The parts of an outcome that do not depend on time or on the request's random id.
fn summary(out: &Outcome) -> Value {
    let s = out.stream();
    let random = |o: &envoy::HeaderOp| o.name == "x-request-id" || o.map != abi::REQUEST_HEADERS;
    let ops: Vec<(String, Option<String>)> = s
        .header_ops
        .iter()
        .map(|o| (o.name.clone(), o.value.clone().filter(|_| !random(o))))
        .collect();
    let fwd = s.forwarded.as_ref().expect("forwarded");
    let fwd_headers: Vec<_> = fwd
        .headers
        .iter()
        .filter(|(k, _)| k != "x-request-id")
        .collect();
    serde_json::json!({
        "ops": ops,
        "forwarded_body": String::from_utf8_lossy(&fwd.body),
        "forwarded_headers": fwd_headers,
        "records": records_summary(out),
        "metrics": metrics_summary(out),
        "final_body_status": out.body_statuses.last(),
        "response": out.response_statuses,
        "clears": s.route_cache_clears,
    })
}

#[test]
fn a_body_in_two_chunks_is_read_as_one() {
    let config = setup();
    let one = run(config, &chat(KEY_A, &[], Delivery::Chunks));
    for delivery in [Delivery::Chunks, Delivery::LastIntoBuffer] {
        let two = run(config, &chat(KEY_A, &[512], delivery));
        println!(
            "{}",
            table(&format!("chat_1k in two chunks ({delivery:?})"), &two)
        );
        // The first chunk is buffered; the second, with end of stream, lets it all go.
        assert_eq!(
            two.body_statuses,
            [abi::BODY_STOP_AND_BUFFER, abi::BODY_CONTINUE]
        );
        assert_eq!(summary(&two), summary(&one), "{delivery:?}");
        assert_admitted(&two, &chat(KEY_A, &[512], delivery));
        assert_schedulers(&two);
        assert_private(&two);
    }
    // A body an earlier filter buffered arrives once, as the received body.
    let whole = run(config, &chat(KEY_A, &[], Delivery::EarlierFilterBuffered));
    assert_eq!(summary(&whole), summary(&one));
    config_destroy(config);
}

#[test]
fn a_tick_before_the_hold_times_out_changes_nothing() {
    let config = setup();
    let plain = run(config, &chat(KEY_A, &[], Delivery::Chunks));
    for tick in [Tick::Now, Tick::Committed] {
        let mut ex = chat(KEY_A, &[], Delivery::Chunks);
        ex.tick = tick;
        let ticked = run(config, &ex);
        // The worker's tick ran (no held request is overdue): no callback, no reply.
        let in_tick = ticked.envoy.calls.iter().filter(|(h, _)| *h == "scheduled");
        assert_eq!(in_tick.count(), 0, "{tick:?}");
        let ran = &ticked.stream().scheduled;
        let ticks = ran.iter().all(|id| *id == 1);
        assert!(!ran.is_empty() && ticks, "{tick:?}: {ran:?}");
        assert_eq!(ticked.total(), plain.total(), "{tick:?}");
        assert_eq!(summary(&ticked), summary(&plain), "{tick:?}");
        assert_schedulers(&ticked);
    }
    config_destroy(config);
}

#[test]
fn a_streamed_chat_is_rewritten_whole_however_its_body_arrived() {
    let config = setup();
    let body = chat_body(1024, true);
    let cases = [
        (&[][..], Delivery::Chunks),
        (&[300, 700][..], Delivery::Chunks),
        (&[512][..], Delivery::LastIntoBuffer),
        (&[][..], Delivery::EarlierFilterBuffered),
    ];
    let mut sent = Vec::new();
    for (splits, delivery) in cases {
        let out = run(config, &exchange(body.clone(), KEY_A, splits, delivery));
        let fwd = out.stream().forwarded.clone().expect("forwarded");
        // The usage is asked for, so the stream's cost can be read; nothing else changes.
        let mut got: Value = serde_json::from_slice(&fwd.body).expect("JSON upstream");
        assert_eq!(got["stream_options"]["include_usage"], true, "{delivery:?}");
        got.as_object_mut().unwrap().remove("stream_options");
        let sent_body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, sent_body, "{delivery:?} {splits:?}");
        let len = fwd.body.len().to_string();
        assert_eq!(header(&fwd.headers, "content-length"), [len.as_str()]);
        assert_eq!(header(&fwd.headers, "x-envoy-max-retries"), ["0"]);
        sent.push(fwd.body);
        assert_private(&out);
    }
    assert!(sent.windows(2).all(|w| w[0] == w[1]), "one body upstream");
    config_destroy(config);
}
