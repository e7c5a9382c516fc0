//! Turns a [`ConfigSpec`] into the immutable [`Config`]: checks every field and builds
//! the lookup indexes (key digests, hosts, JWT claims, SPIFFE IDs).

use std::collections::{HashMap, HashSet};

use crate::config::digest::{parse_hex_digest, DigestMap};
use crate::config::hostname::normalize_host;
use crate::config::{
    Config, ConfigSpec, IdentitySpec, Limits, Model, Principal, Route, RouteSpec, Routing, Tenant,
    TenantSpec, TrafficClass,
};
use crate::openai::request::Api;
use crate::quota::global::{Counter, CounterKind, Engine};
use crate::redact::{FingerprintKey, RedactionConfig, Redactor};

/// Names that end up as metric label values and shared-data keys: keep them plain.
fn check_name(path: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path}: must be 1-128 characters of letters, digits, '-', '_', '.', ':' or '/'"
        ))
    }
}

fn check_price(path: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{path}: must be a finite number >= 0"))
    }
}

pub fn build(spec: ConfigSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    if spec.shared_data_prefix.is_empty() || spec.shared_data_prefix.contains(char::is_whitespace) {
        return Err("shared_data_prefix: must be non-empty and without spaces".to_string());
    }
    let routes = build_routes(&spec)?;
    let models = build_models(&spec, env)?;
    if spec.tenants.is_empty() {
        return Err("tenants: at least one tenant is required".to_string());
    }
    let key_count: usize = spec.tenants.iter().map(|t| t.api_keys.len()).sum();
    let mut index = TenantIndex {
        keys: DigestMap::with_capacity(key_count),
        route_index: routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.prefix.clone(), i))
            .collect(),
        ..TenantIndex::default()
    };
    let mut tenants = Vec::with_capacity(spec.tenants.len());
    for (ti, t) in spec.tenants.into_iter().enumerate() {
        tenants.push(index.add(ti, t, &models)?);
    }
    check_settings(&spec.identity, &spec.routing, &spec.limits, &index)?;
    let global = spec.global_quota.map(Engine::build).transpose()?;
    if global.is_some() {
        for t in &mut tenants {
            t.global = global_counters(t);
        }
    }
    if global.is_none() {
        if let Some(i) = tenants
            .iter()
            .position(|t| t.quota.as_ref().is_some_and(|q| q.global.is_some()))
        {
            return Err(format!(
                "tenants[{i}].quota.global: needs global_quota (the rate limit service)"
            ));
        }
    }
    let shared_hosts = shared_hosts(&spec.identity, &index.hosts)?;
    let redactor = Redactor::from_config(&spec.redaction)?;
    let salt = fingerprint_salt(&spec.redaction, env)?;
    Ok(Config {
        shared_data_prefix: spec.shared_data_prefix,
        routes,
        pinned_clusters: models.values().any(|m| m.clusters.is_some()),
        models,
        tenants,
        keys: index.keys,
        forward_credentials: spec.identity.forward_credentials,
        jwt: spec.identity.jwt,
        host_owner: index.hosts,
        shared_hosts,
        unowned_hosts: spec.identity.unowned_hosts,
        jwt_claims: index.jwt_claims,
        spiffe_ids: index.spiffe_ids,
        limits: spec.limits,
        routing: spec.routing,
        quota_failure_mode: spec.quota_failure_mode,
        filter_state: spec.filter_state,
        preview_chars: spec.redaction.prompt_preview_chars,
        redactor,
        fingerprint_key: salt
            .as_ref()
            .map(|s| FingerprintKey::new(spec.redaction.fingerprint_algorithm, s)),
        fingerprint_salt: salt,
        global,
    })
}

/// A tenant's counters at the rate limit service: its global request and token limits,
/// then its budgets.
fn global_counters(t: &Tenant) -> Vec<Counter> {
    let mut out = Vec::new();
    if let Some(g) = t.quota.as_ref().and_then(|q| q.global.as_ref()) {
        for (kind, limit) in [
            (CounterKind::Requests, g.requests),
            (CounterKind::Tokens, g.tokens),
        ] {
            if let Some(limit) = limit {
                out.push(Counter::rate(kind, limit, g));
            }
        }
    }
    out.extend(t.budgets.iter().map(|b| b.counter(t.budget_on_unavailable)));
    out
}

/// Routes, sorted longest prefix first so the first match is the most specific.
fn build_routes(spec: &ConfigSpec) -> Result<Vec<Route>, String> {
    let mut routes = Vec::with_capacity(spec.routes.len());
    let mut seen_prefix = HashSet::new();
    for (i, r) in spec.routes.iter().enumerate() {
        let path = format!("routes[{i}].prefix");
        if !r.prefix.starts_with('/') {
            return Err(format!("{path}: must start with '/'"));
        }
        check_name(&path, &r.prefix)?;
        if !seen_prefix.insert(r.prefix.clone()) {
            return Err(format!("{path}: duplicate route prefix {:?}", r.prefix));
        }
        let class = r.traffic_class.unwrap_or(match r.api {
            Some(Api::Embeddings) => TrafficClass::Batch,
            _ => TrafficClass::Interactive,
        });
        routes.push(Route {
            prefix: r.prefix.trim_end_matches('/').to_string(),
            api: r.api,
            traffic_class: class,
            methods: route_methods(&format!("routes[{i}].methods"), r)?,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(routes)
}

/// A route's methods, upper case: as configured, else POST for a route whose body is read.
fn route_methods(path: &str, r: &RouteSpec) -> Result<Option<Vec<String>>, String> {
    let Some(methods) = &r.methods else {
        return Ok(r.api.map(|_| vec!["POST".to_string()]));
    };
    if methods.is_empty() {
        return Err(format!("{path}: list at least one method, or leave it out"));
    }
    let mut out = Vec::with_capacity(methods.len());
    for (j, m) in methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("{path}[{j}]: not an HTTP method"));
        }
        out.push(m.to_ascii_uppercase());
    }
    Ok(Some(out))
}

/// The model table and its prices.
fn build_models(
    spec: &ConfigSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Model>, String> {
    let mut models = HashMap::new();
    for (i, m) in spec.models.iter().enumerate() {
        check_name(&format!("models[{i}].name"), &m.name)?;
        check_price(
            &format!("models[{i}].input_usd_per_million"),
            m.input_usd_per_million,
        )?;
        check_price(
            &format!("models[{i}].output_usd_per_million"),
            m.output_usd_per_million,
        )?;
        let cached = m
            .cached_input_usd_per_million
            .unwrap_or(m.input_usd_per_million);
        check_price(&format!("models[{i}].cached_input_usd_per_million"), cached)?;
        if let Some(c) = &m.clusters {
            if c.is_empty() || c.iter().any(String::is_empty) {
                return Err(format!(
                    "models[{i}].clusters: list cluster names, or leave it out"
                ));
            }
        }
        let credential = m
            .backend_credential
            .as_ref()
            .map(|c| backend_credential(&format!("models[{i}].backend_credential"), c, env))
            .transpose()?;
        let model = Model {
            clusters: m.clusters.clone(),
            name: m.name.clone(),
            input_usd_per_million: m.input_usd_per_million,
            output_usd_per_million: m.output_usd_per_million,
            cached_input_usd_per_million: cached,
            credential,
        };
        if models.insert(m.name.clone(), model).is_some() {
            return Err(format!("models[{i}].name: duplicate model {:?}", m.name));
        }
    }
    Ok(models)
}

/// A backend credential: one of the credential headers, its value from the VM's
/// environment. Errors name the field and the variable, never the value.
fn backend_credential(
    path: &str,
    c: &crate::config::BackendCredentialSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(&'static str, crate::config::Secret), String> {
    let name = c.header.to_ascii_lowercase();
    let header = crate::contract::header::CREDENTIALS
        .into_iter()
        .find(|h| *h == name)
        .ok_or_else(|| {
            format!("{path}.header: must be one of authorization, x-api-key, api-key")
        })?;
    if c.value_env.is_empty() {
        return Err(format!("{path}.value_env: name the environment variable"));
    }
    let value = env(&c.value_env).filter(|v| !v.is_empty()).ok_or_else(|| {
        format!(
            "{path}.value_env: environment variable {:?} is not set in the Wasm VM",
            c.value_env
        )
    })?;
    let full = format!("{}{value}", c.prefix);
    if !full
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(format!(
            "{path}: the value (prefix and {:?}) must be printable ASCII",
            c.value_env
        ));
    }
    Ok((header, crate::config::Secret::new(full)))
}

/// The lookup indexes built while the tenants are checked one by one.
#[derive(Default)]
struct TenantIndex {
    keys: DigestMap<Principal>,
    route_index: HashMap<String, usize>,
    names: HashSet<String>,
    hosts: HashMap<String, usize>,
    jwt_claims: HashMap<String, usize>,
    spiffe_ids: HashMap<String, usize>,
}

impl TenantIndex {
    fn add(
        &mut self,
        ti: usize,
        t: TenantSpec,
        models: &HashMap<String, Model>,
    ) -> Result<Tenant, String> {
        let p = format!("tenants[{ti}]");
        check_name(&format!("{p}.name"), &t.name)?;
        if t.name == crate::contract::metric::UNKNOWN {
            return Err(format!("{p}.name: \"unknown\" is reserved"));
        }
        if !self.names.insert(t.name.clone()) {
            return Err(format!("{p}.name: duplicate tenant {:?}", t.name));
        }
        let hosts = self.add_hosts(&p, ti, &t)?;
        self.add_keys(&p, ti, &t)?;
        self.add_identities(&p, ti, &t)?;
        let routes = self.allowed_routes(&p, &t)?;
        check_tenant_models(&p, &t, models)?;
        check_concurrency(&p, &t)?;
        if t.own_hosts_only && hosts.is_empty() {
            return Err(format!("{p}.own_hosts_only: the tenant has no hosts"));
        }
        if let Some(b) = &t.budget {
            b.validate(&format!("{p}.budget"), &|m| models.contains_key(m))?;
        }
        Ok(Tenant {
            name: t.name,
            hosts,
            routes,
            models: t.models,
            budgets: t.budget.as_ref().map(|b| b.budgets()).unwrap_or_default(),
            budget_on_unavailable: t
                .budget
                .as_ref()
                .map(|b| b.on_unavailable)
                .unwrap_or_default(),
            global: Vec::new(),
            quota: t.quota,
            own_hosts_only: t.own_hosts_only,
            max_in_flight: t.max_in_flight,
            max_streams: t.max_streams,
        })
    }

    fn add_hosts(&mut self, p: &str, ti: usize, t: &TenantSpec) -> Result<Vec<String>, String> {
        let mut tenant_hosts = Vec::with_capacity(t.hosts.len());
        for (hi, h) in t.hosts.iter().enumerate() {
            let host = normalize_host(h);
            if host.is_empty() {
                return Err(format!("{p}.hosts[{hi}]: empty hostname"));
            }
            if let Some(other) = self.hosts.insert(host.clone(), ti) {
                if other != ti {
                    return Err(format!(
                        "{p}.hosts[{hi}]: hostname {host:?} is already bound to tenants[{other}]"
                    ));
                }
            }
            tenant_hosts.push(host);
        }
        Ok(tenant_hosts)
    }

    fn add_keys(&mut self, p: &str, ti: usize, t: &TenantSpec) -> Result<(), String> {
        for (ki, k) in t.api_keys.iter().enumerate() {
            // Built only for an error: 100,000 keys should not cost 100,000 formats.
            let kp = || format!("{p}.api_keys[{ki}]");
            if k.id.is_empty() {
                return Err(format!("{}.id: must not be empty", kp()));
            }
            let digest = parse_hex_digest(&k.sha256).ok_or_else(|| {
                format!(
                    "{}.sha256: must be 64 hex characters (the SHA-256 of the key, not the key)",
                    kp()
                )
            })?;
            let principal = Principal {
                tenant: ti,
                subject: k.id.clone(),
            };
            if !self.keys.insert(digest, principal) {
                return Err(format!(
                    "{}.sha256: the same key digest is configured twice",
                    kp()
                ));
            }
        }
        Ok(())
    }

    /// JWT claim values and SPIFFE IDs, each mapping to exactly one tenant.
    fn add_identities(&mut self, p: &str, ti: usize, t: &TenantSpec) -> Result<(), String> {
        for (ci, c) in t.jwt_claim_values.iter().enumerate() {
            if self.jwt_claims.insert(c.clone(), ti).is_some() {
                return Err(format!(
                    "{p}.jwt_claim_values[{ci}]: claim value {c:?} maps to two tenants"
                ));
            }
        }
        for (si, s) in t.spiffe_ids.iter().enumerate() {
            if s.is_empty() {
                return Err(format!("{p}.spiffe_ids[{si}]: must not be empty"));
            }
            if self.spiffe_ids.insert(s.clone(), ti).is_some() {
                return Err(format!(
                    "{p}.spiffe_ids[{si}]: identity {s:?} maps to two tenants"
                ));
            }
        }
        Ok(())
    }

    fn allowed_routes(&self, p: &str, t: &TenantSpec) -> Result<Option<Vec<usize>>, String> {
        let Some(list) = &t.routes else {
            return Ok(None);
        };
        let mut idx = Vec::with_capacity(list.len());
        for (ri, r) in list.iter().enumerate() {
            let i = self
                .route_index
                .get(r.trim_end_matches('/'))
                .ok_or_else(|| {
                    format!("{p}.routes[{ri}]: {r:?} is not a configured route prefix")
                })?;
            idx.push(*i);
        }
        Ok(Some(idx))
    }
}

/// A tenant's model allowlist and per-model quotas name configured models.
fn check_tenant_models(
    p: &str,
    t: &TenantSpec,
    models: &HashMap<String, Model>,
) -> Result<(), String> {
    if let Some(list) = &t.models {
        for (mi, m) in list.iter().enumerate() {
            if !models.contains_key(m) {
                return Err(format!("{p}.models[{mi}]: {m:?} is not a configured model"));
            }
        }
    }
    if let Some(q) = &t.quota {
        q.validate(&format!("{p}.quota"))?;
        for (mi, m) in q.models.keys().enumerate() {
            if !models.contains_key(m) {
                return Err(format!(
                    "{p}.quota.models: {m:?} (entry {mi}) is not a configured model"
                ));
            }
        }
    }
    Ok(())
}

fn check_concurrency(p: &str, t: &TenantSpec) -> Result<(), String> {
    if t.max_in_flight == Some(0) {
        return Err(format!("{p}.max_in_flight: must be at least 1"));
    }
    if t.max_streams == Some(0) {
        return Err(format!("{p}.max_streams: must be at least 1"));
    }
    Ok(())
}

/// `identity.shared_hosts`, normalized; none may be a tenant's own hostname.
fn shared_hosts(
    identity: &IdentitySpec,
    owned: &HashMap<String, usize>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(identity.shared_hosts.len());
    for (i, h) in identity.shared_hosts.iter().enumerate() {
        let host = normalize_host(h);
        if host.is_empty() {
            return Err(format!("identity.shared_hosts[{i}]: empty hostname"));
        }
        if let Some(t) = owned.get(&host) {
            return Err(format!(
                "identity.shared_hosts[{i}]: hostname {host:?} is bound to tenants[{t}]"
            ));
        }
        out.push(host);
    }
    Ok(out)
}

fn check_settings(
    identity: &IdentitySpec,
    routing: &Routing,
    limits: &Limits,
    index: &TenantIndex,
) -> Result<(), String> {
    if identity.jwt.is_none() && !index.jwt_claims.is_empty() {
        return Err(
            "identity.jwt: tenants use jwt_claim_values but no identity.jwt is configured"
                .to_string(),
        );
    }
    if let Some(j) = &identity.jwt {
        if j.payload_header.is_empty() || j.payload_header.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(
                "identity.jwt.payload_header: must be a non-empty lower-case header name"
                    .to_string(),
            );
        }
    }
    if !(10..=300_000).contains(&routing.hold_timeout_ms) {
        return Err("routing.hold_timeout_ms: must be between 10 and 300000".to_string());
    }
    if limits.max_request_body_bytes == 0 {
        return Err("limits.max_request_body_bytes: must be > 0".to_string());
    }
    if limits.max_sse_event_bytes < 1024 {
        return Err("limits.max_sse_event_bytes: must be >= 1024".to_string());
    }
    Ok(())
}

/// The fingerprint salt: inline or from the VM's environment, 16 bytes or more.
fn fingerprint_salt(
    r: &RedactionConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    let salt = match (&r.fingerprint_salt, &r.fingerprint_salt_env) {
        (Some(_), Some(_)) => {
            return Err("redaction: set fingerprint_salt or fingerprint_salt_env, not both".to_string())
        }
        (Some(s), None) => Some(s.as_bytes().to_vec()),
        (None, Some(var)) => match env(var) {
            Some(v) if !v.is_empty() => Some(v.into_bytes()),
            _ => {
                return Err(format!(
                    "redaction.fingerprint_salt_env: environment variable {var:?} is not set in the Wasm VM"
                ))
            }
        },
        (None, None) => None,
    };
    if salt.as_ref().is_some_and(|s| s.len() < 16) {
        return Err("redaction.fingerprint_salt: must be at least 16 bytes".to_string());
    }
    Ok(salt)
}
