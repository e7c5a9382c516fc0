//! Plugin configuration: the JSON users write (serde types with defaults), validated once
//! in `on_configure` into an immutable [`Config`] shared by every HTTP context.
//! Every error names the offending field (`tenants[1].api_keys[0].sha256: …`).

pub mod digest;
pub mod hostname;
pub mod validate;

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};

use crate::openai::request::Api;

use crate::config::digest::DigestMap;
use crate::quota::budget::{Budget, BudgetSpec};
use crate::quota::global::{Counter, Engine, EngineSpec};
use crate::quota::QuotaConfig;
use crate::redact::{FingerprintKey, RedactionConfig, Redactor};

/// Traffic classes: what a request is for, which decides its routing header and whether it
/// may use a tenant's interactive token reserve (`docs/quotas.md`).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TrafficClass {
    Interactive,
    Batch,
    ToolCallingAgents,
    Streaming,
}

impl TrafficClass {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficClass::Interactive => "interactive",
            TrafficClass::Batch => "batch",
            TrafficClass::ToolCallingAgents => "tool_calling_agents",
            TrafficClass::Streaming => "streaming",
        }
    }
    /// Latency-sensitive classes may use a tenant's interactive token reserve.
    pub fn is_interactive(self) -> bool {
        matches!(self, TrafficClass::Interactive | TrafficClass::Streaming)
    }
}

/// Which filter-state keys `on_log` writes. Each key is one host call (a few µs in V8).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FilterStateMode {
    /// The two records plus one key per record field, for custom access-log formats.
    Full,
    /// Only `ai.record`, `ai.audit`, `ai.tenant` and `ai.tokens_total`: the access logs
    /// need the records, the global rate limit the tenant and the token count.
    #[default]
    Records,
}

/// What to do when the shared quota store fails (not when a quota is exhausted).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through and mark the decision degraded (default: a broken store
    /// must not take inference down).
    #[default]
    Open,
    Closed,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub prefix: String,
    /// What the route speaks, which decides whether and how its body is read; `"none"`
    /// (e.g. `/v1/models`): no body is read, identity and quotas still apply.
    #[serde(deserialize_with = "route_api")]
    pub api: Option<Api>,
    #[serde(default)]
    pub traffic_class: Option<TrafficClass>,
    /// Methods the route serves. Default: `["POST"]` on a route with an `api` (its body is
    /// read), any method on an `api: "none"` route. Other methods get 405 with `Allow`.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default)]
    pub input_usd_per_million: f64,
    #[serde(default)]
    pub output_usd_per_million: f64,
    /// Price of cached prompt tokens; defaults to the input price.
    #[serde(default)]
    pub cached_input_usd_per_million: Option<f64>,
    /// Envoy clusters that serve this model. When set and the headers are not held for the
    /// body (so the route was chosen by path), a request for the model is refused unless
    /// Envoy picked one of these clusters.
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// The credential the model's backends require (their own API key), sent upstream
    /// with every request for the model; the client's never is.
    #[serde(default)]
    pub backend_credential: Option<BackendCredentialSpec>,
}

/// `models[].backend_credential`: the header, and the Wasm VM environment variable that
/// holds its value (`vmConfig.env` from a Secret in Istio, `env` in Envoy Gateway).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BackendCredentialSpec {
    /// `authorization`, `x-api-key` or `api-key`.
    pub header: String,
    pub value_env: String,
    /// Put before the value, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: String,
}

/// A credential's value: kept out of every `Debug` print, so no log line can hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The value, for the one place it goes: the upstream request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Key id, used as the audit `subject` (e.g. `svc:agent-platform`).
    pub id: String,
    /// Lower- or upper-case hex SHA-256 of the key. The key itself is never configured.
    pub sha256: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    /// Values of the configured JWT tenant claim that map to this tenant.
    #[serde(default)]
    pub jwt_claim_values: Vec<String>,
    /// mTLS peer URI SANs (Istio SPIFFE IDs) that map to this tenant.
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
    /// Route prefixes this tenant may call; absent = every configured route.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Models this tenant may use; absent = every configured model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Serve this tenant only on its own `hosts` (not on shared or unowned hostnames).
    #[serde(default)]
    pub own_hosts_only: bool,
    /// Requests this tenant may have in flight at once, across all workers of the process.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Streaming requests this tenant may have in flight at once (counted in
    /// `max_in_flight` too).
    #[serde(default)]
    pub max_streams: Option<u32>,
    /// Spend limits per UTC day and month (docs/budgets.md).
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Header where Envoy's `jwt_authn` forwards the verified payload
    /// (`forward_payload_header`), base64url JSON.
    #[serde(default = "default_jwt_header")]
    pub payload_header: String,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    /// Pass the client's `Authorization` / `x-api-key` / `api-key` on to the backend.
    /// Off by default: tenant keys are gateway credentials, and a model server that logs
    /// request headers would otherwise collect every tenant's key.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Hostnames that serve every authenticated tenant (the shared API domain). A
    /// hostname in a tenant's `hosts` cannot be shared.
    #[serde(default)]
    pub shared_hosts: Vec<String>,
    /// Hostnames that are neither a tenant's nor listed in `shared_hosts`.
    #[serde(default)]
    pub unowned_hosts: UnownedHosts,
}

/// What a hostname no tenant owns serves.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnownedHosts {
    /// Every authenticated tenant, as on `shared_hosts` (default).
    #[default]
    Shared,
    /// Nobody: 403 `host_mismatch`.
    Refuse,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: u64,
    /// Completion tokens reserved when a request sets no `max_tokens`.
    #[serde(default = "default_completion_reservation")]
    pub default_completion_tokens: u64,
    #[serde(default = "default_max_sse_event")]
    pub max_sse_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: default_max_body(),
            default_completion_tokens: default_completion_reservation(),
            max_sse_event_bytes: default_max_sse_event(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Set `x-ai-model` / `x-gateway-model-name` and ask Envoy to re-pick the route.
    #[serde(default = "yes")]
    pub model_header: bool,
    /// Hold request headers until the body is read so the route can depend on the model.
    /// Needs `allow_on_headers_stop_iteration: true` in the Wasm filter config; a host that
    /// cannot set it (Istio's WasmPlugin, Envoy Gateway) must set this to false.
    #[serde(default = "yes")]
    pub hold_headers_for_body: bool,
    /// The longest held headers wait for the whole body; then the request is refused with
    /// 408 (it is never let through unrouted).
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout_ms: u64,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            model_header: true,
            hold_headers_for_body: true,
            hold_timeout_ms: default_hold_timeout(),
        }
    }
}

fn default_hold_timeout() -> u64 {
    10_000
}

/// The configuration exactly as users write it.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Prefix of every shared-data key (Istio leaves `vm_id` empty, so plugins share one
    /// namespace).
    #[serde(default = "default_prefix")]
    pub shared_data_prefix: String,
    #[serde(default = "default_routes")]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    pub tenants: Vec<TenantSpec>,
    #[serde(default)]
    pub identity: IdentitySpec,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub quota_failure_mode: FailureMode,
    #[serde(default)]
    pub redaction: RedactionConfig,
    #[serde(default)]
    pub filter_state: FilterStateMode,
    /// The rate limit service that counts the tenants' `quota.global` limits.
    #[serde(default)]
    pub global_quota: Option<EngineSpec>,
}

/// A route's `api`: one of [`Api`]'s names, or `"none"`.
fn route_api<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Api>, D::Error> {
    const NAMES: &[&str] = &[
        "chat_completions",
        "completions",
        "embeddings",
        "responses",
        "none",
    ];
    let name = String::deserialize(d)?;
    if name == "none" {
        return Ok(None);
    }
    Api::from_name(&name)
        .map(Some)
        .ok_or_else(|| serde::de::Error::unknown_variant(&name, NAMES))
}

fn yes() -> bool {
    true
}
fn default_prefix() -> String {
    "ai-gateway-filter".to_string()
}
fn default_jwt_header() -> String {
    "x-jwt-payload".to_string()
}
fn default_tenant_claim() -> String {
    "tenant".to_string()
}
fn default_subject_claim() -> String {
    "sub".to_string()
}
fn default_max_body() -> u64 {
    4 * 1024 * 1024
}
fn default_completion_reservation() -> u64 {
    256
}
fn default_max_sse_event() -> usize {
    64 * 1024
}
fn default_routes() -> Vec<RouteSpec> {
    let r = |prefix: &str, api| RouteSpec {
        prefix: prefix.to_string(),
        api,
        traffic_class: None,
        methods: None,
    };
    vec![
        r("/v1/chat/completions", Some(Api::ChatCompletions)),
        r("/v1/completions", Some(Api::Completions)),
        r("/v1/embeddings", Some(Api::Embeddings)),
        r("/v1/responses", Some(Api::Responses)),
        r("/v1/models", None),
    ]
}

/// A configured route, ready for matching.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    /// `None`: the route has no body to read.
    pub api: Option<Api>,
    pub traffic_class: TrafficClass,
    /// Upper-case methods served; `None` = any.
    pub methods: Option<Vec<String>>,
}

impl Route {
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x.eq_ignore_ascii_case(method)))
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub input_usd_per_million: f64,
    pub output_usd_per_million: f64,
    pub cached_input_usd_per_million: f64,
    /// Envoy clusters allowed to serve the model; `None` = any.
    pub clusters: Option<Vec<String>>,
    /// The header and value its backends require.
    pub credential: Option<(&'static str, Secret)>,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    /// Lower-case hostnames without port; empty = any host.
    pub hosts: Vec<String>,
    /// Indexes into `Config::routes`; `None` = all.
    pub routes: Option<Vec<usize>>,
    pub models: Option<Vec<String>>,
    pub quota: Option<QuotaConfig>,
    /// Serve only on `hosts`.
    pub own_hosts_only: bool,
    pub max_in_flight: Option<u32>,
    pub max_streams: Option<u32>,
    /// Spend budgets (tenant-wide, then per model); empty without a budget.
    pub budgets: Vec<Budget>,
    pub budget_on_unavailable: crate::quota::global::OnUnavailable,
    /// The counters this tenant has at the rate limit service (global limits, and the
    /// budgets when `global_quota` is configured); empty without one.
    pub global: Vec<Counter>,
}

impl Tenant {
    /// Whether the tenant has a concurrency limit (its in-flight slots are counted).
    pub fn limits_concurrency(&self) -> bool {
        self.max_in_flight.is_some() || self.max_streams.is_some()
    }
    pub fn may_use_route(&self, route: Option<usize>) -> bool {
        match (&self.routes, route) {
            (None, _) => true,
            (Some(allowed), Some(r)) => allowed.contains(&r),
            (Some(_), None) => false,
        }
    }
    pub fn may_use_model(&self, model: &str) -> bool {
        match &self.models {
            None => true,
            Some(allowed) => allowed.iter().any(|m| m == model),
        }
    }
}

/// Which tenant (index into `Config::tenants`) and subject a credential maps to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: usize,
    pub subject: String,
}

/// The validated, immutable configuration.
#[derive(Debug)]
pub struct Config {
    pub shared_data_prefix: String,
    /// Sorted longest prefix first, so the first match is the most specific.
    pub routes: Vec<Route>,
    pub models: HashMap<String, Model>,
    /// Some model lists `clusters`: requests routed by path need the chosen cluster.
    pub pinned_clusters: bool,
    pub tenants: Vec<Tenant>,
    pub keys: DigestMap<Principal>,
    pub jwt: Option<JwtSpec>,
    pub forward_credentials: bool,
    /// Hostname -> the tenant it is bound to.
    pub host_owner: HashMap<String, usize>,
    /// Hostnames that serve every tenant (`identity.shared_hosts`).
    pub shared_hosts: Vec<String>,
    pub unowned_hosts: UnownedHosts,
    pub jwt_claims: HashMap<String, usize>,
    pub spiffe_ids: HashMap<String, usize>,
    pub limits: Limits,
    pub routing: Routing,
    pub quota_failure_mode: FailureMode,
    pub filter_state: FilterStateMode,
    pub redactor: Redactor,
    pub preview_chars: usize,
    /// The configured fingerprint salt; without one no fingerprint is written.
    pub fingerprint_salt: Option<Vec<u8>>,
    /// The salt prepared for `redaction.fingerprint_algorithm`.
    pub fingerprint_key: Option<FingerprintKey>,
    /// The rate limit service of the global limits (`global_quota`).
    pub global: Option<Engine>,
}

impl Config {
    /// Parse and validate. `env` resolves `redaction.fingerprint_salt_env` (the host passes
    /// the VM's environment, tests a map).
    pub fn parse(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let spec = parse_spec(bytes)?;
        Config::from_spec(spec, env)
    }

    pub fn from_spec(
        spec: ConfigSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        crate::config::validate::build(spec, env)
    }

    /// What was loaded, for the log line (counts only, never values).
    pub fn summary(&self) -> String {
        format!(
            "{} tenants, {} keys, {} routes, {} models",
            self.tenants.len(),
            self.keys.len(),
            self.routes.len(),
            self.models.len()
        )
    }

    /// What this configuration gives up, for the log at load time.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.routing.hold_headers_for_body {
            out.push(
                "routing.hold_headers_for_body is false: routes are chosen by path and host, \
                 never by model; x-ai-model, x-gateway-model-name, x-ai-traffic-class and \
                 x-envoy-max-retries are not set, and streams are not rewritten to report \
                 usage (it is estimated). Models with `clusters` are refused on other backends."
                    .to_string(),
            );
        }
        if self.global.is_none() && self.tenants.iter().any(|t| !t.budgets.is_empty()) {
            out.push(
                "budgets are kept in this Envoy's shared data: the spend is lost when Envoy \
                 restarts and each replica counts its own; configure global_quota to keep \
                 it with the rate limit service (docs/budgets.md)"
                    .to_string(),
            );
        }
        out
    }

    pub fn tenant(&self, idx: usize) -> Option<&Tenant> {
        self.tenants.get(idx)
    }

    /// The tenants with counters at the rate limit service, for the sync: (index, name,
    /// counters).
    pub fn global_tenants(&self) -> Vec<(usize, &str, &[Counter])> {
        self.tenants
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.global.is_empty())
            .map(|(i, t)| (i, t.name.as_str(), t.global.as_slice()))
            .collect()
    }
}

/// Parse the JSON (or a JSON string containing JSON, as Istio's `pluginConfig` may arrive)
/// into the user-facing spec, with the failing field's path in the error.
pub fn parse_spec(bytes: &[u8]) -> Result<ConfigSpec, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("configuration is empty: expected a JSON object".to_string());
    }
    // Istio may hand the configuration over as a JSON string holding the JSON object.
    let owned;
    let bytes = match serde_json::from_slice::<String>(bytes) {
        Ok(inner) => {
            owned = inner;
            owned.as_bytes()
        }
        Err(_) => bytes,
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = mask_values(&strip_position(&inner.to_string()));
        if path.is_empty() || path == "." {
            format!("configuration: {msg}")
        } else {
            format!("{path}: {msg}")
        }
    })
}

/// serde echoes the offending value (`invalid type: string "sk-…"`, `unknown variant `x``):
/// a key pasted into the wrong field must not reach Envoy's log, so values are elided.
/// Field names (`unknown field`, `expected one of`) stay: they are what the user fixes.
fn mask_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quotes = false;
    for c in msg.chars() {
        if c == '"' {
            if in_quotes {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            out.push(c);
        }
    }
    if let Some(rest) = out.strip_prefix("unknown variant `") {
        if let Some(end) = rest.find('`') {
            return format!("unknown variant `…`{}", rest.get(end + 1..).unwrap_or(""));
        }
    }
    out
}

/// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;
