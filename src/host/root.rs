//! Root context: parses and validates the plugin configuration once per push and shares
//! the immutable result with every HTTP context of this VM.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::abi;
use super::hold;
use super::http::Http;
use crate::config::Config;

#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match abi::get_buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(e) => {
                log::error!("cannot read the plugin configuration (host status {})", e.0);
                return false;
            }
        };
        let env = |name: &str| std::env::var(name).ok();
        match Config::parse(&bytes, &env) {
            Ok(cfg) => {
                log::info!(
                    "configuration loaded: {} tenants, {} keys, {} routes, {} models",
                    cfg.tenants.len(),
                    cfg.keys.len(),
                    cfg.routes.len(),
                    cfg.models.len()
                );
                // The hold watch needs a tick only while headers may be held.
                let tick = if cfg.routing.hold_headers_for_body {
                    hold::TICK_MS
                } else {
                    0
                };
                if abi::set_tick_period_ms(tick).is_err() {
                    log::warn!("no timer: held requests cannot be rescued on this worker");
                }
                // Requests in flight keep the configuration they started with.
                self.config = Some(Rc::new(cfg));
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
        if let Some(cfg) = &self.config {
            hold::rescue_overdue(cfg.routing.hold_timeout_ms);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
