//! The public contract: every filter-state key, header name and metric name the filter
//! reads or writes is defined here once. Access-log formats, dashboards and recording
//! rules depend on these spellings; change them only with a version bump (see README).

/// Version of the public contract (filter state, records, headers, metrics and the
/// refusals' error bodies). Bumped on any incompatible change; version 5 made the error
/// bodies OpenAI's (`deny.rs`, docs/contract.md "Refusals").
pub const CONTRACT_VERSION: u32 = 5;

/// Every field of the gateway record (`wasm.ai.record`), in order: the gateway
/// log contract plus `model`, `traffic_class`, `usage_estimated`, `prompt_sha256`,
/// `prompt_blake3` and `stream_complete` (version 2 added `prompt_blake3`, the default
/// fingerprint; `prompt_sha256` is set only under `fingerprint_algorithm: hmac_sha256`;
/// version 3 made `request_id` the gateway's own id and added `client_request_id`;
/// version 4 added `quota_mode`, also in the audit record, and the `budget_*` fields).
/// `prompt_preview` appears only when previews are configured.
pub const GATEWAY_RECORD_FIELDS: [&str; 25] = [
    "timestamp",
    "request_id",
    "client_request_id",
    "tenant",
    "hostname",
    "route",
    "model_route",
    "stream",
    "http_status",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "estimated_cost_usd",
    "gateway_backend",
    "model",
    "traffic_class",
    "usage_estimated",
    "prompt_sha256",
    "prompt_blake3",
    "stream_complete",
    "quota_mode",
    "budget_period",
    "budget_spent_usd",
    "budget_remaining_usd",
];

/// Filter-state keys. `set_property(["ai.tenant"])` lands in Envoy's filter state as
/// `wasm.ai.tenant`; access logs read it with `%FILTER_STATE(wasm.ai.tenant:PLAIN)%`.
pub mod state {
    /// The gateway record, one JSON object.
    pub const RECORD: &str = "ai.record";
    /// The audit record, one JSON object.
    pub const AUDIT: &str = "ai.audit";
    pub const TENANT: &str = "ai.tenant";
    pub const SUBJECT: &str = "ai.subject";
    pub const ROUTE: &str = "ai.route";
    pub const MODEL: &str = "ai.model";
    pub const MODEL_ROUTE: &str = "ai.model_route";
    pub const STREAM: &str = "ai.stream";
    pub const HTTP_STATUS: &str = "ai.http_status";
    pub const LATENCY_MS: &str = "ai.latency_ms";
    pub const TTFT_MS: &str = "ai.ttft_ms";
    pub const PROMPT_TOKENS: &str = "ai.prompt_tokens";
    pub const COMPLETION_TOKENS: &str = "ai.completion_tokens";
    /// Settled token cost as a plain integer, for Envoy's global rate limit `hits_addend`.
    pub const TOKENS_TOTAL: &str = "ai.tokens_total";
    pub const COST_USD: &str = "ai.estimated_cost_usd";
    pub const GATEWAY_BACKEND: &str = "ai.gateway_backend";
    pub const TRAFFIC_CLASS: &str = "ai.traffic_class";
    pub const REQUEST_ID: &str = "ai.request_id";
    pub const CLIENT_REQUEST_ID: &str = "ai.client_request_id";
    pub const DECISION: &str = "ai.decision";
    pub const REASON: &str = "ai.reason";
    pub const USAGE_ESTIMATED: &str = "ai.usage_estimated";
    pub const PROMPT_SHA256: &str = "ai.prompt_sha256";
    pub const PROMPT_BLAKE3: &str = "ai.prompt_blake3";
    pub const HOSTNAME: &str = "ai.hostname";
    pub const QUOTA_MODE: &str = "ai.quota_mode";
    pub const BUDGET_PERIOD: &str = "ai.budget_period";
    pub const BUDGET_SPENT_USD: &str = "ai.budget_spent_usd";
    pub const BUDGET_REMAINING_USD: &str = "ai.budget_remaining_usd";
}

/// Request headers the filter sets towards the upstream (and the route table). Any
/// client-supplied copy is removed first, so the upstream can trust them.
pub mod header {
    pub const TENANT: &str = "x-ai-tenant";
    pub const SUBJECT: &str = "x-ai-subject";
    pub const MODEL: &str = "x-ai-model";
    /// Gateway API Inference Extension's body-based-routing header.
    pub const GATEWAY_MODEL_NAME: &str = "x-gateway-model-name";
    pub const TRAFFIC_CLASS: &str = "x-ai-traffic-class";
    /// Set to 0 on streaming requests: a stream is never replayed by the gateway.
    pub const ENVOY_MAX_RETRIES: &str = "x-envoy-max-retries";

    /// Every header above; stripped from client requests before the filter sets its own.
    pub const TRUSTED: [&str; 5] = [TENANT, SUBJECT, MODEL, GATEWAY_MODEL_NAME, TRAFFIC_CLASS];

    // Credential headers, in the order they are read.
    pub const AUTHORIZATION: &str = "authorization";
    pub const X_API_KEY: &str = "x-api-key";
    pub const AZURE_API_KEY: &str = "api-key";
    /// Removed before forwarding unless `identity.forward_credentials` is set.
    pub const CREDENTIALS: [&str; 3] = [AUTHORIZATION, X_API_KEY, AZURE_API_KEY];

    pub const REQUEST_ID: &str = "x-request-id";
    pub const WWW_AUTHENTICATE: &str = "www-authenticate";
    pub const RETRY_AFTER: &str = "retry-after";
    pub const RETRY_AFTER_MS: &str = "retry-after-ms";
    /// `false` on refusals retrying cannot help (OpenAI's SDKs honour it).
    pub const SHOULD_RETRY: &str = "x-should-retry";
    /// On every response of a tenant with a budget: the binding budget's period
    /// (`day`/`month`), what is left of it in USD (6 decimals), and when it resets.
    pub const BUDGET_PERIOD: &str = "x-ai-budget-period";
    pub const BUDGET_REMAINING_USD: &str = "x-ai-budget-remaining-usd";
    pub const BUDGET_RESET_AT: &str = "x-ai-budget-reset-at";
    /// On 405: the methods the route serves.
    pub const ALLOW: &str = "allow";
    /// Removed from requests on body routes: backends answer uncompressed, so the usage
    /// in their responses can be read.
    pub const ACCEPT_ENCODING: &str = "accept-encoding";
    /// A client copy of `jwt_authn`'s default payload header is removed unless the
    /// configuration reads verified claims from it.
    pub const JWT_PAYLOAD: &str = "x-jwt-payload";
}

/// Metric names (Prometheus names after Envoy strips the `wasmcustom.` namespace).
/// Labels are encoded in the stat name as `name.label=.=value;.;…` and extracted by the
/// `stats_tags` in the bootstrap (Istio's convention).
pub mod metric {
    pub const REQUESTS_TOTAL: &str = "ai_gateway_requests_total";
    pub const REQUEST_DURATION_MS: &str = "ai_gateway_request_duration_ms";
    pub const UPSTREAM_DURATION_MS: &str = "ai_gateway_upstream_duration_ms";
    pub const FILTER_DURATION_US: &str = "ai_gateway_filter_duration_us";
    pub const TTFT_MS: &str = "ai_gateway_ttft_ms";
    pub const TOKENS_TOTAL: &str = "ai_gateway_tokens_total";
    pub const COST_USD_MICROS_TOTAL: &str = "ai_gateway_cost_usd_micros_total";
    pub const QUOTA_REJECTIONS_TOTAL: &str = "ai_gateway_quota_rejections_total";
    pub const AUTH_DENIALS_TOTAL: &str = "ai_gateway_auth_denials_total";
    /// Quota decisions made without the rate limit service (labels tenant, mode:
    /// `local_fallback` or `closed`).
    pub const QUOTA_DEGRADED_TOTAL: &str = "ai_gateway_quota_degraded_total";
    /// A budget's limit and what is left of it, micro-USD (labels tenant, period).
    pub const BUDGET_LIMIT_USD_MICROS: &str = "ai_gateway_budget_limit_usd_micros";
    pub const BUDGET_REMAINING_USD_MICROS: &str = "ai_gateway_budget_remaining_usd_micros";
    /// OpenTelemetry GenAI `gen_ai.client.token.usage` (histogram of tokens; labels
    /// gen_ai_token_type, gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model).
    pub const GEN_AI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
    /// `gen_ai.server.request.duration`, in milliseconds (Envoy histograms are integers).
    pub const GEN_AI_REQUEST_DURATION_MS: &str = "gen_ai_server_request_duration_ms";
    /// `gen_ai.server.time_to_first_token`, in milliseconds (streams).
    pub const GEN_AI_TTFT_MS: &str = "gen_ai_server_time_to_first_token_ms";
    /// `gen_ai.provider.name` of every backend: they all speak the OpenAI API.
    pub const GEN_AI_PROVIDER: &str = "openai";
    /// Syncs with the rate limit service by one process (label `result`: ok, failed).
    pub const GLOBAL_SYNCS_TOTAL: &str = "ai_gateway_global_syncs_total";
    /// Gauge: one VM's linear memory in bytes, labelled `vm` (the VM's ordinal).
    pub const WASM_MEMORY_BYTES: &str = "ai_gateway_wasm_memory_bytes";
    /// The label value used for anything not in the configuration (bounded cardinality).
    pub const UNKNOWN: &str = "unknown";
}
