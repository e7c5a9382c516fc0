//! The two records written for every request: the gateway record (tutorial Step 6 log
//! contract) and the audit record (Step 7). Field names are the public contract; neither
//! ever holds prompt or response text, credentials or their digests.

use serde::Serialize;

/// Gateway log contract, one JSON object per request (`wasm.ai.record`).
/// Unknown values are `null`, never omitted, so every line has the same fields.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct GatewayRecord {
    pub timestamp: String,
    pub request_id: Option<String>,
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
    /// HMAC-SHA-256 of the normalized prompt under the configured salt.
    pub prompt_sha256: Option<String>,
    /// For streams: whether the upstream finished the stream (`[DONE]` or a clean end).
    pub stream_complete: Option<bool>,
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
    /// Always false: the filter never logs prompts or responses.
    pub sensitive_payload_logged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub hostname: Option<String>,
    pub auth_source: Option<&'static str>,
    pub http_status: Option<u16>,
}

pub fn to_json<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).unwrap_or_else(|_| "{}".to_string())
}

/// Cap a client-chosen string (model names, hostnames, request ids) before it is logged:
/// bounded length, printable ASCII only, so a log line cannot be forged or bloated.
pub fn sanitize(value: &str, max: usize) -> String {
    value
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY_FIELDS: [&str; 19] = [
        "timestamp",
        "request_id",
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
        "stream_complete",
    ];

    #[test]
    fn gateway_record_has_every_contract_field() {
        let v: serde_json::Value =
            serde_json::from_str(&to_json(&GatewayRecord::default())).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        let mut want = GATEWAY_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn audit_record_fields() {
        let a = AuditRecord {
            decision: "deny",
            reason: Some("invalid_credentials"),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&a)).unwrap();
        for k in [
            "timestamp",
            "tenant",
            "subject",
            "route",
            "model_route",
            "decision",
            "request_id",
            "sensitive_payload_logged",
            "reason",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["sensitive_payload_logged"], false);
        let allow = AuditRecord {
            decision: "allow",
            ..Default::default()
        };
        assert!(!to_json(&allow).contains("reason"));
    }

    #[test]
    fn sanitize_caps_and_masks() {
        assert_eq!(sanitize("llama3-8b", 64), "llama3-8b");
        assert_eq!(sanitize("a\nb\"c", 64), "a?b\"c");
        assert_eq!(sanitize(&"x".repeat(500), 10).len(), 10);
    }
}
