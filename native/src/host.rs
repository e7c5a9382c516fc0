//! Safe calls on one HTTP filter: each wraps one ABI callback on the filter pointer Envoy
//! passed to the current event hook, and copies out what Envoy lends.
#![allow(unsafe_code)]

use crate::abi::{self, EnvoyBuffer, EnvoyHttpHeader, FilterPtr, ModuleBuffer, ModuleHttpHeader};

/// Envoy's filter for the stream being served. Valid while the stream's module filter
/// lives: every method is called from an event hook of that stream, on its worker.
#[derive(Clone, Copy)]
pub struct Stream(pub FilterPtr);

/// Envoy's bytes as text, copied: valid UTF-8 as is, anything else with its invalid
/// sequences replaced (a header value is never trusted to be text).
fn text(buf: &EnvoyBuffer) -> String {
    // SAFETY: Envoy lends `buf` until the end of the current event hook; it is copied now.
    let bytes = unsafe { buf.bytes() };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Appends chunks Envoy lent in the current hook to `out`.
pub fn copy_chunks(chunks: &[EnvoyBuffer], out: &mut Vec<u8>) {
    for c in chunks {
        // SAFETY: Envoy lends the chunk for the current event hook; copied now.
        out.extend_from_slice(unsafe { c.bytes() });
    }
}

impl Stream {
    /// Every header of the map, in order (names arrive lower case).
    pub fn headers(self, header_type: u32) -> Vec<(String, String)> {
        // SAFETY: `self.0` is the live filter; the result vector has the size Envoy gave.
        let n = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(self.0, header_type)
        };
        if n == 0 {
            return Vec::new();
        }
        let blank = EnvoyHttpHeader {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        let mut raw = vec![blank; n];
        // SAFETY: `raw` holds `n` entries, the size Envoy reported for this map.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                self.0,
                header_type,
                raw.as_mut_ptr(),
            )
        };
        if !ok {
            return Vec::new();
        }
        raw.iter()
            .map(|h| {
                let k = EnvoyBuffer {
                    ptr: h.key_ptr,
                    length: h.key_length,
                };
                let v = EnvoyBuffer {
                    ptr: h.value_ptr,
                    length: h.value_length,
                };
                (text(&k), text(&v))
            })
            .collect()
    }

    pub fn set_header(self, header_type: u32, name: &str, value: &str) -> bool {
        // SAFETY: both buffers outlive the call; Envoy copies them.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.0,
                header_type,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Removes every value of the header.
    pub fn remove_header(self, header_type: u32, name: &str) -> bool {
        // SAFETY: as set_header; a null value removes.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.0,
                header_type,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::null(),
            )
        }
    }

    /// A local reply. `details` is Envoy's response code details (empty, as the
    /// Proxy-Wasm module's replies have them).
    pub fn send_response(self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let mut hs: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::of(k, v))
            .collect();
        // SAFETY: `hs` and the strings it points to outlive the call; Envoy copies them.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                hs.as_mut_ptr(),
                hs.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            );
        }
    }

    /// A body's chunks, lent by Envoy until the end of the current hook.
    pub fn chunks(self, body_type: u32) -> Vec<EnvoyBuffer> {
        // SAFETY: the vector has the number of chunks Envoy reported.
        let n = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, body_type)
        };
        if n == 0 {
            return Vec::new();
        }
        let mut out = vec![EnvoyBuffer::empty(); n];
        // SAFETY: `out` holds `n` entries.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                body_type,
                out.as_mut_ptr(),
            )
        };
        if ok {
            out
        } else {
            Vec::new()
        }
    }

    /// Appends a body's bytes to `out`.
    pub fn read_body(self, body_type: u32, out: &mut Vec<u8>) {
        copy_chunks(&self.chunks(body_type), out);
    }

    pub fn body_len(self, body_type: u32) -> usize {
        self.chunks(body_type).iter().map(|c| c.length).sum()
    }

    /// Whether the received request body is the one an earlier filter buffered.
    pub fn received_is_buffered(self) -> bool {
        // SAFETY: `self.0` is the live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.0) }
    }

    pub fn drain_body(self, body_type: u32, bytes: usize) -> bool {
        // SAFETY: `self.0` is the live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_drain_body(self.0, body_type, bytes) }
    }

    pub fn append_body(self, body_type: u32, data: &[u8]) -> bool {
        // SAFETY: `data` outlives the call; Envoy copies it.
        unsafe {
            abi::envoy_dynamic_module_callback_http_append_body(
                self.0,
                body_type,
                ModuleBuffer::of(data),
            )
        }
    }

    pub fn set_filter_state(self, key: &str, value: &str) -> bool {
        // SAFETY: both buffers outlive the call; Envoy copies them.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    pub fn clear_route_cache(self) {
        // SAFETY: `self.0` is the live filter; a no-op outside the request phase.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.0) }
    }

    pub fn continue_decoding(self) {
        // SAFETY: `self.0` is the live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    pub fn attribute_string(self, id: u32) -> Option<String> {
        let mut out = EnvoyBuffer::empty();
        // SAFETY: `out` is written by Envoy.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0, id, &mut out,
            )
        };
        if ok {
            Some(text(&out)).filter(|s| !s.is_empty())
        } else {
            None
        }
    }

    pub fn attribute_int(self, id: u32) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: `out` is written by Envoy.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut out)
        };
        ok.then_some(out)
    }
}
