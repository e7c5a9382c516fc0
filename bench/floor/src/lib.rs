//! The emptiest Proxy-Wasm HTTP filter that buffers and reads the request body.
//!
//! Request headers pass on at once (the SDK's default `Continue`). On the request body
//! it answers `Pause` until `end_of_stream`, which makes Envoy buffer the whole body,
//! then reads the buffer once (one `proxy_get_buffer_bytes` call, which copies the body
//! into the VM) and continues. It reads no configuration, sets no header, writes no
//! filter state, logs nothing and leaves the response alone.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FloorHttp;

impl Context for FloorHttp {}

impl HttpContext for FloorHttp {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        // The copy into the VM is the cost being measured; black_box keeps it.
        std::hint::black_box(self.get_http_request_body(0, body_size));
        Action::Continue
    }
}
