//! The functional core of ai-gateway-filter: plain Rust, no host API.
//!
//! It decides everything about a request (who is calling, whether they may, what the
//! body says, what to charge, what to record) and hands the host layer one [`lifecycle::Plan`]
//! of effects per callback. The crate has no `proxy-wasm` dependency, so Cargo keeps the
//! boundary: the Proxy-Wasm filter crate (the repository root) is a thin layer that reads
//! what Envoy offers, calls [`lifecycle::Request`] once, and carries out the plan.
//!
//! - [`config`]: the configuration users write, validated once into an immutable [`config::Config`].
//! - [`identity`]: credentials to tenant and subject; host binding.
//! - [`lifecycle`]: one request from headers to `on_log`, and the per-worker hold watch.
//! - [`openai`]: request-body parser, SSE and JSON usage scanners.
//! - [`quota`]: token buckets over the [`quota::SharedStore`] trait; reserve and settle.
//! - [`redact`]: prompt fingerprint and masked previews.
//! - [`record`]: the gateway and audit records, prices, timestamps.
//! - [`metrics`]: the metric series a finished request updates.
//! - [`contract`]: every public name (filter-state keys, headers, metric names).

// The length limit is for the module's code; table-driven tests may run longer.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod ascii;
pub mod config;
pub mod contract;
pub mod deny;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod openai;
pub mod quota;
pub mod record;
pub mod redact;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
