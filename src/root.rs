//! Root context: parses and validates the plugin configuration once per push and shares
//! the immutable result with every HTTP context of this VM; its tick refuses held
//! requests whose body did not arrive in time (408) and keeps this VM's concurrency
//! slots alive.

use std::sync::Arc;

use ai_gateway_core::config::Config;
use ai_gateway_core::contract::header;
use ai_gateway_core::deny::Denial;
use ai_gateway_core::lifecycle::hold::{tick_period_ms, NO_BODY_WHILE_HELD};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::abi;
use crate::http::Http;
use crate::{vm_memory, worker};

#[derive(Default)]
pub struct Root {
    config: Option<Arc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match abi::get_buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log::error!("cannot read the plugin configuration (host status {})", e.0);
                return false;
            }
        };
        let env = |name: &str| std::env::var(name).ok();
        match Config::parse(&bytes, &env) {
            Ok(cfg) => {
                log::info!("configuration loaded: {}", cfg.summary());
                for w in cfg.warnings() {
                    log::warn!("{w}");
                }
                if abi::set_tick_period_ms(tick_period_ms(&cfg)).is_err() {
                    log::warn!("no timer: held requests cannot time out on this worker");
                }
                // The memory gauge's own tick, only when the hold watch arms none.
                if tick_period_ms(&cfg) == 0 {
                    let _ = abi::set_tick_period_ms(vm_memory::TICK_MS);
                }
                // Requests in flight keep the configuration they started with.
                self.config = Some(Arc::new(cfg));
                vm_memory::report();
                true
            }
            Err(msg) => {
                // On a refused push Envoy keeps serving with the previous configuration.
                log::error!("invalid plugin configuration: {msg}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(context_id, self.config.clone())))
    }

    fn on_tick(&mut self) {
        vm_memory::report();
        let Some(cfg) = &self.config else {
            return;
        };
        let tick = worker::tick(cfg, abi::now_ms());
        if tick.warn_no_body {
            log::warn!("{NO_BODY_WHILE_HELD}");
        }
        if tick.time_out.is_empty() {
            return;
        }
        let d = Denial::body_timeout(cfg.routing.hold_timeout_ms);
        let body = d.body();
        for (id, request_id) in tick.time_out {
            // Envoy runs the reply through the request's response callbacks and on_log,
            // which record it as this filter's 408.
            let headers = [
                ("content-type", "application/json"),
                (header::REQUEST_ID, request_id.as_str()),
            ];
            let sent = abi::set_effective_context(id)
                .and_then(|_| abi::send_local_response(408, &headers, body.as_bytes()));
            if sent.is_err() {
                log::debug!("held request {id} had already ended");
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
