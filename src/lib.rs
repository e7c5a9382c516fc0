//! ai-gateway-filter: a Proxy-Wasm module for LLM inference gateways.
//!
//! Everything outside `host/` is the functional core: plain Rust, no `proxy_wasm`,
//! unit-tested natively. `host/` is the thin layer that talks to Envoy, compiled only for
//! the Wasm target.

pub mod config;
pub mod config_validate;
pub mod contract;
pub mod cost;
pub mod deny;
pub mod digest;
pub mod exchange;
pub mod hold_watch;
pub mod identity;
pub mod metrics;
pub mod openai;
pub mod quota;
pub mod quota_flow;
pub mod record;
pub mod redact;
pub mod route;
pub mod timefmt;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod host;
