//! Per-tenant request and token rate limits, exact across Envoy workers.
//!
//! Token buckets (lazy refill, fixed-point) live in Proxy-Wasm shared data
//! behind the [`SharedStore`] trait, which the host layer implements; this
//! module never touches `proxy_wasm`. Per request the host calls
//! [`reserve`] before forwarding (1 request + estimated tokens), keeps the
//! returned [`Reservation`], and calls [`settle`] with the real usage once
//! it is known (0 for a failed upstream). [`rate_limit_headers`] renders the
//! OpenAI-style `x-ratelimit-*` and `retry-after` headers.
//!
//! Buckets are keyed by prefix, tenant and model only: they survive
//! configuration pushes, and new limits apply from the next decision to the
//! stored level, clamped to the new burst.

pub mod bucket;
pub mod budget;
pub mod config;
pub mod global;
pub mod headers;
pub mod inflight;
pub mod reserve;
pub mod rls;
pub mod store;

pub use bucket::{settle as settle_bucket, try_take, BucketState, Decision, Limit, Verdict};
pub use config::{bucket_key, BucketKind, BucketSpec, ModelQuota, QuotaConfig};
pub use headers::{format_duration, headers_for, rate_limit_headers};
pub use reserve::{
    peek, release, reserve, settle, BucketReport, ChargedBucket, QuotaRequest, Reservation,
    ReserveOutcome, ReserveVerdict, StoreOutcome,
};
pub use store::{SharedStore, StoreError, CREATE_CAS, MAX_CAS_ATTEMPTS};
