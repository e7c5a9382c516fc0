//! Per-tenant quota configuration, its validation, and the bucket plan it
//! yields for one request.
//!
//! Defaults: a rate without a burst gets `burst = rate` (one minute's worth,
//! the behaviour of a classic per-minute limit); a burst without a rate is an
//! error (it would never refill).
//!
//! Buckets are keyed only by prefix, tenant and model, never by the limits,
//! so they survive configuration pushes: new limits apply from the next
//! decision to the stored level (clamped to the new burst).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bucket::{Limit, MAX_LIMIT};
use super::global::TenantGlobal;

/// Rate limits for one tenant. Every field is optional; an absent rate means
/// that bucket does not exist (unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[serde(default)]
    pub requests_per_minute: Option<f64>,
    #[serde(default)]
    pub request_burst: Option<f64>,
    #[serde(default)]
    pub tokens_per_minute: Option<f64>,
    #[serde(default)]
    pub token_burst: Option<f64>,
    /// Share `[0, 1)` of every token bucket (tenant and per-model) that only
    /// interactive traffic may use.
    #[serde(default)]
    pub interactive_reserve: f64,
    /// Narrower buckets for individual models, checked in addition to the
    /// tenant-wide ones. Keys are exact model names.
    #[serde(default)]
    pub models: BTreeMap<String, ModelQuota>,
    /// Limits across every gateway replica, counted by the rate limit service
    /// (`global_quota`); checked after the buckets above.
    #[serde(default)]
    pub global: Option<TenantGlobal>,
}

/// Per-model limits; same meaning and defaults as in [`QuotaConfig`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelQuota {
    #[serde(default)]
    pub requests_per_minute: Option<f64>,
    #[serde(default)]
    pub request_burst: Option<f64>,
    #[serde(default)]
    pub tokens_per_minute: Option<f64>,
    #[serde(default)]
    pub token_burst: Option<f64>,
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketKind {
    Requests,
    Tokens,
}

impl BucketKind {
    /// The audit reason of a refusal by this bucket.
    pub fn reason(self) -> &'static str {
        match self {
            BucketKind::Requests => "quota_requests",
            BucketKind::Tokens => "quota_tokens",
        }
    }
    /// What it counts, as in the `kind` metric label and OpenAI's error type.
    pub fn label(self) -> &'static str {
        match self {
            BucketKind::Requests => "requests",
            BucketKind::Tokens => "tokens",
        }
    }
}

/// One bucket that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub key: String,
    pub kind: BucketKind,
    /// True for a per-model bucket, false for the tenant-wide one.
    pub model_scoped: bool,
    pub limit: Limit,
}

impl QuotaConfig {
    /// Checks every field; the error names the first offending one, e.g.
    /// `tenants[0].quota.token_burst: must be >= 1`.
    pub fn validate(&self, path: &str) -> Result<(), String> {
        let r = self.interactive_reserve;
        if !r.is_finite() || !(0.0..1.0).contains(&r) {
            return Err(format!(
                "{path}.interactive_reserve: must be a number in [0, 1), got {r}"
            ));
        }
        check_pair(
            path,
            "requests_per_minute",
            self.requests_per_minute,
            "request_burst",
            self.request_burst,
        )?;
        check_pair(
            path,
            "tokens_per_minute",
            self.tokens_per_minute,
            "token_burst",
            self.token_burst,
        )?;
        if let Some(g) = &self.global {
            g.validate(&format!("{path}.global"))?;
        }
        for (name, m) in &self.models {
            let mpath = format!("{path}.models[{name:?}]");
            if name.is_empty() {
                return Err(format!("{path}.models: model name must not be empty"));
            }
            check_pair(
                &mpath,
                "requests_per_minute",
                m.requests_per_minute,
                "request_burst",
                m.request_burst,
            )?;
            check_pair(
                &mpath,
                "tokens_per_minute",
                m.tokens_per_minute,
                "token_burst",
                m.token_burst,
            )?;
        }
        Ok(())
    }

    /// True when no bucket is configured at all.
    pub fn is_unlimited(&self) -> bool {
        self.global.is_none()
            && self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self
                .models
                .values()
                .all(|m| m.requests_per_minute.is_none() && m.tokens_per_minute.is_none())
    }

    /// The buckets a request for `model` must pass, in the order they are
    /// charged: tenant requests, model requests, tenant tokens, model tokens
    /// (cheap request checks first, so a flood is rejected before it touches
    /// the token buckets). Unvalidated, unusable limits are skipped.
    pub fn buckets(&self, prefix: &str, tenant: &str, model: Option<&str>) -> Vec<BucketSpec> {
        let per_model = model.and_then(|name| self.models.get(name).map(|q| (name, q)));
        let mut out = Vec::new();
        let mut push = |kind, scope: Option<&str>, rate: Option<f64>, burst: Option<f64>| {
            let reserve = match kind {
                BucketKind::Requests => 0.0,
                BucketKind::Tokens => self.interactive_reserve,
            };
            let limit = rate.and_then(|r| Limit::new(r, burst.unwrap_or(r), reserve));
            if let Some(limit) = limit {
                out.push(BucketSpec {
                    key: bucket_key(prefix, tenant, kind, scope),
                    kind,
                    model_scoped: scope.is_some(),
                    limit,
                });
            }
        };
        push(
            BucketKind::Requests,
            None,
            self.requests_per_minute,
            self.request_burst,
        );
        if let Some((name, q)) = per_model {
            push(
                BucketKind::Requests,
                Some(name),
                q.requests_per_minute,
                q.request_burst,
            );
        }
        push(
            BucketKind::Tokens,
            None,
            self.tokens_per_minute,
            self.token_burst,
        );
        if let Some((name, q)) = per_model {
            push(
                BucketKind::Tokens,
                Some(name),
                q.tokens_per_minute,
                q.token_burst,
            );
        }
        out
    }
}

/// `<prefix>:q:<tenant>:req` / `:tok`, plus `:<model>` for per-model buckets.
/// Tenant and model are escaped (`%` -> `%25`, `:` -> `%3A`) so a tenant name
/// containing `:` cannot alias another tenant's or a model's key.
pub fn bucket_key(prefix: &str, tenant: &str, kind: BucketKind, model: Option<&str>) -> String {
    let kind = match kind {
        BucketKind::Requests => "req",
        BucketKind::Tokens => "tok",
    };
    let mut key = format!("{prefix}:q:{}:{kind}", escape(tenant));
    if let Some(model) = model {
        key.push(':');
        key.push_str(&escape(model));
    }
    key
}

pub(crate) fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// Validates one rate/burst pair.
fn check_pair(
    path: &str,
    rate_name: &str,
    rate: Option<f64>,
    burst_name: &str,
    burst: Option<f64>,
) -> Result<(), String> {
    match (rate, burst) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(format!("{path}.{burst_name}: requires {path}.{rate_name}")),
        (Some(rate), burst) => {
            check_number(path, rate_name, rate, 0.001)?;
            match burst {
                Some(b) => check_number(path, burst_name, b, 1.0),
                // The defaulted burst equals the rate, so it needs the same floor.
                None if rate < 1.0 => Err(format!(
                    "{path}.{rate_name}: below 1 needs an explicit {burst_name} >= 1"
                )),
                None => Ok(()),
            }
        }
    }
}

fn check_number(path: &str, name: &str, v: f64, min: f64) -> Result<(), String> {
    if !v.is_finite() {
        return Err(format!("{path}.{name}: must be a finite number, got {v}"));
    }
    if v < min {
        return Err(format!("{path}.{name}: must be >= {min}, got {v}"));
    }
    if v > MAX_LIMIT {
        return Err(format!("{path}.{name}: must be <= {MAX_LIMIT}, got {v}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
