//! ai-gateway-native: the ai-gateway-filter core as an Envoy dynamic module.
//!
//! Envoy 1.40 `dlopen`s the shared object (`envoy.filters.http.dynamic_modules`) and
//! calls the event hooks below; the module calls back through the C ABI declared in
//! `abi`. The decisions are the core's, exactly as in the Proxy-Wasm module: the same
//! JSON configuration, records, headers, metrics and errors.
//!
//! - `abi`: the callbacks used, declared in-tree; `host`: safe calls on one stream.
//! - `hooks`: the exported event hooks; `filter`: one stream; `effects`: a plan.
//! - `store`: process memory as the quota store (what Proxy-Wasm shared data is there).
//! - `grpc`, `sync`: rate limit service calls as HTTP callouts; the global sync.
//! - `worker`, `ticker`: per-thread state and its tick; `metrics`, `logger`, `clock`.
//!
//! A panic here would take Envoy down, not one VM: the crate denies what can panic
//! (clippy), and the release profile aborts rather than unwinding across the C ABI.

use std::sync::Arc;

use ai_gateway_core::config::Config;

pub mod abi;
mod clock;
mod effects;
mod filter;
mod grpc;
mod hooks;
mod host;
mod logger;
mod metrics;
mod pin;
pub mod store;
mod sync;
mod ticker;
mod timeouts;
mod worker;

/// One filter configuration (one `DynamicModuleFilter` in Envoy's configuration): the
/// core's immutable configuration and the ids of the metrics defined for it.
pub struct FilterConfig {
    /// Always `Some` for a configuration Envoy accepted (a refused one is never made).
    pub core: Option<Arc<Config>>,
    metrics: metrics::Ids,
    /// Held requests or concurrency limits: the streams carry the worker's tick.
    ticks: bool,
    /// With global limits: the serial and main-thread scheduler of the sync checks.
    sync: Option<(u64, usize)>,
}

impl FilterConfig {
    /// The rate limit service's cluster, when the configuration has global limits.
    fn cluster(&self) -> Option<&str> {
        let g = self.core.as_ref()?.global.as_ref()?;
        Some(g.spec.cluster.as_str())
    }
}
