//! The two records written for every request: the gateway record (`wasm.ai.record`) and
//! the audit record (`wasm.ai.audit`), both documented in `docs/contract.md`. Field names are the public contract; neither
//! ever holds prompt or response text, credentials or their digests.

pub mod cost;
mod json;
pub mod timefmt;

use serde::Serialize;

use crate::config::FilterStateMode;
use crate::contract::state;

/// Gateway log contract, one JSON object per request (`wasm.ai.record`).
/// Unknown values are `null`, never omitted, so every line has the same fields.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct GatewayRecord {
    pub timestamp: String,
    /// The gateway's own id, unique per request (also the response's `x-request-id`).
    pub request_id: Option<String>,
    /// The `x-request-id` the request arrived with (the client's, or Envoy's when the
    /// client sent none), sanitized: for correlation only, never unique.
    pub client_request_id: Option<String>,
    pub tenant: Option<String>,
    pub hostname: Option<String>,
    /// The configured route prefix that matched, never the raw path.
    pub route: Option<String>,
    /// The backend (Envoy cluster / service name) that served the request.
    pub model_route: Option<String>,
    pub stream: Option<bool>,
    pub http_status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub estimated_cost_usd: Option<f64>,
    /// Upstream host and port.
    pub gateway_backend: Option<String>,
    pub model: Option<String>,
    pub traffic_class: Option<&'static str>,
    pub usage_estimated: Option<bool>,
    /// HMAC-SHA-256 of the normalized prompt under the configured salt
    /// (`redaction.fingerprint_algorithm: hmac_sha256`).
    pub prompt_sha256: Option<String>,
    /// BLAKE3 (keyed) of the normalized prompt under a key derived from the salt (the
    /// default algorithm).
    pub prompt_blake3: Option<String>,
    /// For streams: whether the upstream finished the stream (`[DONE]` or a clean end).
    pub stream_complete: Option<bool>,
    /// How the quota was decided: `local`, `global` (synced), `strict`, `local_fallback`.
    pub quota_mode: Option<&'static str>,
    /// The tenant's budget with the least left (`day` / `month`), after this request's
    /// settlement: what is spent of it and what is left, USD.
    pub budget_period: Option<&'static str>,
    pub budget_spent_usd: Option<f64>,
    pub budget_remaining_usd: Option<f64>,
    /// Only when `redaction.prompt_preview_chars` > 0: a masked, truncated preview.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_preview: Option<String>,
}

/// Audit contract, exactly one per request (`wasm.ai.audit`).
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct AuditRecord {
    pub timestamp: String,
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub route: Option<String>,
    pub model_route: Option<String>,
    pub decision: &'static str,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    /// Always false: the filter never logs prompts or responses.
    pub sensitive_payload_logged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub hostname: Option<String>,
    pub auth_source: Option<&'static str>,
    pub http_status: Option<u16>,
    /// As in the gateway record.
    pub quota_mode: Option<&'static str>,
}

/// The filter-state entries written in `on_log`: the two records, the keys the global
/// rate limit composition needs, and (in `full` mode) one key per record field.
pub fn state_entries(
    g: &GatewayRecord,
    a: &AuditRecord,
    tokens_total: u64,
    mode: FilterStateMode,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::with_capacity(24);
    let mut opt = |key: &'static str, v: Option<String>| {
        if let Some(v) = v {
            out.push((key, v));
        }
    };
    opt(state::RECORD, Some(json::gateway(g)));
    opt(state::AUDIT, Some(json::audit(a)));
    opt(state::TENANT, g.tenant.clone());
    opt(state::TOKENS_TOTAL, Some(tokens_total.to_string()));
    if mode == FilterStateMode::Records {
        return out;
    }
    let s = |v: &Option<String>| v.clone();
    let n = |v: Option<u64>| v.map(|x| x.to_string());
    opt(state::REQUEST_ID, s(&g.request_id));
    opt(state::CLIENT_REQUEST_ID, s(&g.client_request_id));
    opt(state::SUBJECT, s(&a.subject));
    opt(state::HOSTNAME, s(&g.hostname));
    opt(state::ROUTE, s(&g.route));
    opt(state::MODEL, s(&g.model));
    opt(state::MODEL_ROUTE, s(&g.model_route));
    opt(state::STREAM, g.stream.map(|b| b.to_string()));
    opt(state::HTTP_STATUS, g.http_status.map(|x| x.to_string()));
    opt(state::LATENCY_MS, n(g.latency_ms));
    opt(state::TTFT_MS, n(g.ttft_ms));
    opt(state::PROMPT_TOKENS, n(g.prompt_tokens));
    opt(state::COMPLETION_TOKENS, n(g.completion_tokens));
    opt(state::COST_USD, g.estimated_cost_usd.map(|x| x.to_string()));
    opt(state::GATEWAY_BACKEND, s(&g.gateway_backend));
    opt(state::TRAFFIC_CLASS, g.traffic_class.map(str::to_string));
    opt(
        state::USAGE_ESTIMATED,
        g.usage_estimated.map(|b| b.to_string()),
    );
    opt(state::PROMPT_SHA256, s(&g.prompt_sha256));
    opt(state::PROMPT_BLAKE3, s(&g.prompt_blake3));
    opt(state::QUOTA_MODE, g.quota_mode.map(str::to_string));
    opt(state::BUDGET_PERIOD, g.budget_period.map(str::to_string));
    opt(
        state::BUDGET_SPENT_USD,
        g.budget_spent_usd.map(|x| x.to_string()),
    );
    opt(
        state::BUDGET_REMAINING_USD,
        g.budget_remaining_usd.map(|x| x.to_string()),
    );
    opt(state::DECISION, Some(a.decision.to_string()));
    opt(state::REASON, a.reason.map(str::to_string));
    out
}

pub fn to_json<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).unwrap_or_else(|_| "{}".to_string())
}

/// Cap a client-chosen string (model names, hostnames, request ids) before it is logged:
/// bounded length, printable ASCII only, so a log line cannot be forged or bloated.
pub fn sanitize(value: &str, max: usize) -> String {
    // The usual case, a short printable value, is one copy.
    if value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic()) {
        return value.to_string();
    }
    value
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests;
