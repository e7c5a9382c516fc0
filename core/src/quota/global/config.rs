//! The configuration of global limits: the engine (top-level `global_quota`) and each
//! tenant's limits (`quota.global`). Validated once, with the field named in the error.

use serde::{Deserialize, Serialize};

use crate::quota::rls;
use crate::record::timefmt;

/// `global_quota`: where the rate limit service is and how this process talks to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// The Envoy cluster (HTTP/2) of an RLS v3 service.
    pub cluster: String,
    #[serde(default = "default_domain")]
    pub domain: String,
    /// Gateway processes that share the limits: the share of the global remaining each
    /// may admit between syncs is `1 / expected_replicas`, and the local fallback enforces
    /// `limit / expected_replicas`.
    pub expected_replicas: u32,
    #[serde(default = "default_sync_interval")]
    pub sync_interval_ms: u32,
    /// Deadline of every call to the service (the sync and a strict admission).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
}

fn default_domain() -> String {
    "ai-gateway".to_string()
}
fn default_sync_interval() -> u32 {
    200
}
fn default_timeout() -> u32 {
    250
}

/// The engine, validated, with what every call needs prepared once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub spec: EngineSpec,
    /// `envoy.config.core.v3.GrpcService` naming the cluster: what `dispatch_grpc_call`
    /// is given (see [`rls::grpc_service`]).
    pub grpc_service: Vec<u8>,
}

impl Engine {
    pub fn build(spec: EngineSpec) -> Result<Engine, String> {
        let p = "global_quota";
        if spec.cluster.is_empty() {
            return Err(format!(
                "{p}.cluster: must name the rate limit service's cluster"
            ));
        }
        // The GrpcService message around the name is handed to the host as a string:
        // printable ASCII with one-byte lengths keeps it valid UTF-8.
        if spec.cluster.len() > 120 || !spec.cluster.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{p}.cluster: must be at most 120 printable ASCII characters"
            ));
        }
        if spec.domain.is_empty() {
            return Err(format!("{p}.domain: must not be empty"));
        }
        range(p, "expected_replicas", spec.expected_replicas, 1, 1000)?;
        range(p, "sync_interval_ms", spec.sync_interval_ms, 20, 10_000)?;
        range(p, "timeout_ms", spec.timeout_ms, 10, 10_000)?;
        Ok(Engine {
            grpc_service: rls::grpc_service(&spec.cluster),
            spec,
        })
    }

    /// After this long without a successful sync, a process treats the service as
    /// unreachable (also when no process's tick is syncing at all).
    pub fn stale_after_ms(&self) -> u64 {
        let s = &self.spec;
        u64::from(s.sync_interval_ms.saturating_mul(3))
            .max(u64::from(s.timeout_ms.saturating_mul(2)))
            .max(1000)
    }

    pub fn replicas(&self) -> u64 {
        u64::from(self.spec.expected_replicas.max(1))
    }
}

fn range(p: &str, field: &str, v: u32, min: u32, max: u32) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("{p}.{field}: must be in {min}..={max}, got {v}"));
    }
    Ok(())
}

/// The fixed window of a global limit, as the rate limit service counts it (UTC,
/// aligned to the unit; a month is a calendar month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Second,
    #[default]
    Minute,
    Hour,
    Day,
    Month,
}

impl Unit {
    fn fixed_ms(self) -> Option<u64> {
        match self {
            Unit::Second => Some(1_000),
            Unit::Minute => Some(60_000),
            Unit::Hour => Some(3_600_000),
            Unit::Day => Some(86_400_000),
            Unit::Month => None,
        }
    }

    /// `RateLimitResponse.RateLimit.Unit`.
    pub fn wire(self) -> u32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
        }
    }

    /// The start of the window holding `now_ms`.
    pub fn window_start(self, now_ms: u64) -> u64 {
        match self.fixed_ms() {
            Some(ms) => now_ms - now_ms % ms,
            None => timefmt::month_bounds(now_ms).0,
        }
    }

    /// The end (exclusive) of the window holding `now_ms`.
    pub fn window_end(self, now_ms: u64) -> u64 {
        match self.fixed_ms() {
            Some(ms) => self.window_start(now_ms).saturating_add(ms),
            None => timefmt::month_bounds(now_ms).1,
        }
    }
}

/// How a tenant's admissions reach the global counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Admitted from this process's share, reported at the next sync: no call per request.
    #[default]
    Synced,
    /// One call to the service per request, the request paused until it answers.
    Strict,
}

/// What a tenant gets while the service (or its Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Each process enforces `limit / expected_replicas` of the window on its own.
    #[default]
    Local,
    /// Refuse (503) until the service is back.
    Closed,
}

/// `tenants[].quota.global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantGlobal {
    #[serde(default)]
    pub unit: Unit,
    /// Requests per window, across every replica.
    #[serde(default)]
    pub requests: Option<u32>,
    /// Tokens per window (reserved at admission, settled on real usage).
    #[serde(default)]
    pub tokens: Option<u32>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

impl TenantGlobal {
    pub fn validate(&self, path: &str) -> Result<(), String> {
        if self.requests.is_none() && self.tokens.is_none() {
            return Err(format!("{path}: needs requests, tokens or both"));
        }
        for (name, v) in [("requests", self.requests), ("tokens", self.tokens)] {
            if v == Some(0) {
                return Err(format!("{path}.{name}: must be >= 1"));
            }
        }
        Ok(())
    }
}
