//! ai-gateway-filter: the Proxy-Wasm host layer over `ai_gateway_core`.
//!
//! The only code that talks to Envoy. Each callback reads what Envoy offers, hands it to
//! the core's [`ai_gateway_core::lifecycle::Request`] once, and carries out the returned
//! plan. Everything but the wire formats is compiled for the Wasm target only.
//!
//! - `abi`: the Proxy-Wasm imports used, every host status mapped to a `Result`.
//! - `root`: configuration once per push; the tick (hold watch, global sync).
//! - `http`: the per-request callbacks.
//! - `effects`: carries out a plan.
//! - `grpc`: calls to the rate limit service (strict admissions, the global sync).
//! - `worker`, `store`, `metrics`, `logger`: the per-worker hold watch, shared data as the
//!   quota store, metric ids, the `log` backend.
//! - `vm_memory`: the per-VM linear memory gauge.
//! - `wire`: the Proxy-Wasm map and path encodings (pure, tested natively).

pub mod wire;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(target_arch = "wasm32")]
mod effects;
#[cfg(target_arch = "wasm32")]
mod grpc;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod logger;
#[cfg(target_arch = "wasm32")]
mod metrics;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod vm_memory;
#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    logger::init();
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
