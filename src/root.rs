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
use crate::{grpc, metrics, vm_memory, worker};

#[derive(Default)]
pub struct Root {
    config: Option<Arc<Config>>,
}

impl Context for Root {
    /// The answer to this VM's global sync (the only call a root context makes).
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let Some(cfg) = &self.config else {
            return;
        };
        let answer = grpc::answer(status, size);
        let obs = worker::sync_answered(cfg, Some(token), answer, abi::now_ms());
        metrics::record(obs.as_slice());
    }
}

/// The tick: the hold watch's or the concurrency heartbeat's period, the global sync
/// interval, else the memory gauge's, whichever is shortest.
fn period_ms(cfg: &Config) -> u32 {
    let sync = cfg.global.as_ref().map_or(0, |g| g.spec.sync_interval_ms);
    [tick_period_ms(cfg), sync]
        .into_iter()
        .filter(|p| *p > 0)
        .min()
        .unwrap_or(vm_memory::TICK_MS)
}

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
                if abi::set_tick_period_ms(period_ms(&cfg)).is_err() {
                    log::warn!("no timer: held requests cannot time out and global limits do not sync on this worker");
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
        let now_ms = abi::now_ms();
        if let Some(call) = worker::sync_due(cfg, now_ms) {
            match grpc::dispatch(&call) {
                Ok(token) => worker::sync_sent(token),
                Err(failure) => {
                    let obs = worker::sync_answered(cfg, None, Err(failure), now_ms);
                    metrics::record(obs.as_slice());
                }
            }
        }
        let tick = worker::tick(cfg, now_ms);
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
