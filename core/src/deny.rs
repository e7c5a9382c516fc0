//! Why a request is refused, and the OpenAI-shaped error body the client gets.
//! The `reason` strings are the audit record's `reason` field (a public contract).

use serde::Serialize;

use crate::quota::BucketKind;

/// A refusal: HTTP status, audit reason, and the client-facing error.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub status: u16,
    /// Audit `reason` (e.g. `invalid_credentials`).
    pub reason: &'static str,
    /// OpenAI error `type`.
    pub error_type: &'static str,
    /// OpenAI error `code`.
    pub code: String,
    /// Safe to show the client: never contains request content or credentials.
    pub message: String,
    /// Headers the refusal carries besides the filter's own (`allow`, `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl Denial {
    fn new(status: u16, reason: &'static str, error_type: &'static str, message: &str) -> Denial {
        Denial {
            status,
            reason,
            error_type,
            code: reason.to_string(),
            message: message.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn missing_credentials() -> Denial {
        Denial::new(
            401,
            "missing_credentials",
            "authentication_error",
            "No API key provided. Send it as 'Authorization: Bearer <key>', 'x-api-key' or 'api-key'.",
        )
    }
    pub fn invalid_credentials() -> Denial {
        Denial::new(
            401,
            "invalid_credentials",
            "authentication_error",
            "Invalid credentials.",
        )
    }
    pub fn conflicting_credentials() -> Denial {
        Denial::new(
            401,
            "conflicting_credentials",
            "authentication_error",
            "The request carries credentials that disagree; send exactly one.",
        )
    }
    pub fn host_mismatch() -> Denial {
        Denial::new(
            403,
            "host_mismatch",
            "permission_error",
            "These credentials are not valid for this hostname.",
        )
    }
    pub fn route_forbidden() -> Denial {
        Denial::new(
            403,
            "route_forbidden",
            "permission_error",
            "This tenant may not call this route.",
        )
    }
    pub fn model_forbidden(model_known: bool) -> Denial {
        let msg = if model_known {
            "This tenant may not use the requested model."
        } else {
            "The requested model does not exist or this tenant may not use it."
        };
        Denial::new(403, "model_forbidden", "permission_error", msg)
    }
    /// Audit-only: another filter or Envoy itself answered before this filter saw the
    /// request (no reply is sent from here; the record carries Envoy's status).
    pub fn answered_before_filter() -> Denial {
        Denial::new(
            403,
            "answered_before_filter",
            "permission_error",
            "The request was answered before the gateway filter.",
        )
    }
    pub fn route_not_found() -> Denial {
        Denial::new(
            404,
            "route_not_found",
            "invalid_request_error",
            "Unknown API route.",
        )
    }
    pub fn invalid_path() -> Denial {
        Denial::new(
            400,
            "invalid_path",
            "invalid_request_error",
            "The request path is not in canonical form.",
        )
    }
    pub fn invalid_body(code: &str, message: &str) -> Denial {
        Denial {
            status: 400,
            reason: "invalid_body",
            error_type: "invalid_request_error",
            code: code.to_string(),
            message: message.to_string(),
            headers: Vec::new(),
        }
    }
    pub fn body_too_large(limit: u64) -> Denial {
        Denial {
            status: 413,
            reason: "body_too_large",
            error_type: "invalid_request_error",
            code: "request_too_large".to_string(),
            message: format!("The request body exceeds the limit of {limit} bytes."),
            headers: Vec::new(),
        }
    }
    pub fn quota(kind: BucketKind, message: String) -> Denial {
        Denial {
            status: 429,
            reason: kind.reason(),
            error_type: "rate_limit_exceeded",
            code: "rate_limit_exceeded".to_string(),
            message,
            headers: Vec::new(),
        }
    }
    /// A request that can never fit the tenant's bucket: not retryable, so not a 429.
    pub fn quota_too_large(kind: BucketKind, message: String) -> Denial {
        Denial {
            status: 400,
            reason: kind.reason(),
            error_type: "invalid_request_error",
            code: "quota_exceeds_burst".to_string(),
            message,
            headers: Vec::new(),
        }
    }
    /// A method the route does not serve; `allow` lists the ones it does.
    pub fn method_not_allowed(allow: &[String]) -> Denial {
        let list = allow.join(", ");
        let mut d = Denial::new(
            405,
            "method_not_allowed",
            "invalid_request_error",
            &format!("This route does not serve this method; use {list}."),
        );
        d.headers.push((crate::contract::header::ALLOW, list));
        d
    }
    /// Held headers waited `ms` for the whole body.
    pub fn body_timeout(ms: u64) -> Denial {
        let mut d = Denial::new(
            408,
            "body_timeout",
            "invalid_request_error",
            &format!("The request body did not arrive within {ms} ms."),
        );
        d.code = "request_timeout".to_string();
        d
    }
    /// The route Envoy chose by path leads to a backend that does not serve the model
    /// (headers are not held, so the route cannot follow the model).
    pub fn model_not_on_route() -> Denial {
        Denial::new(
            400,
            "model_not_on_route",
            "invalid_request_error",
            "The requested model is not served on this route.",
        )
    }
    /// The tenant's concurrency limit is reached.
    pub fn concurrency(full: crate::quota::inflight::Full, limit: u32) -> Denial {
        use crate::quota::inflight::Full;
        let (code, what) = match full {
            Full::InFlight => ("too_many_requests_in_flight", "requests"),
            Full::Streams => ("too_many_streams", "streaming requests"),
        };
        let mut d = Denial::new(
            429,
            full.reason(),
            "rate_limit_exceeded",
            &format!(
                "This tenant already has {limit} {what} in flight, its limit. Retry when one finishes."
            ),
        );
        d.code = code.to_string();
        d.headers
            .push((crate::contract::header::RETRY_AFTER, "1".to_string()));
        d
    }
    /// The worker has no valid configuration (every push so far was refused).
    pub fn not_configured() -> Denial {
        Denial::new(
            503,
            "not_configured",
            "server_error",
            "The gateway is not configured; try again shortly.",
        )
    }
    /// A spend budget cannot take the request's maximum cost: OpenAI's
    /// `insufficient_quota`, which its SDKs do not retry (`x-should-retry: false` makes
    /// sure of it).
    pub fn budget_exceeded(message: String) -> Denial {
        Denial {
            status: 429,
            reason: "budget_exceeded",
            error_type: "insufficient_quota",
            code: "insufficient_quota".to_string(),
            message,
            headers: vec![(crate::contract::header::SHOULD_RETRY, "false".to_string())],
        }
    }

    pub fn quota_unavailable() -> Denial {
        Denial::new(
            503,
            "quota_unavailable",
            "server_error",
            "The quota service is unavailable; try again shortly.",
        )
    }

    /// `{"error": {"message", "type", "code", "param"}}`, as the OpenAI API returns.
    pub fn body(&self) -> String {
        error_body(&self.message, self.error_type, &self.code)
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    error_type: &'a str,
    code: &'a str,
    param: Option<&'a str>,
}

pub fn error_body(message: &str, error_type: &str, code: &str) -> String {
    let env = ErrorEnvelope {
        error: ErrorObject {
            message,
            error_type,
            code,
            param: None,
        },
    };
    serde_json::to_string(&env).unwrap_or_else(|_| {
        r#"{"error":{"message":"error","type":"server_error","code":"internal_error","param":null}}"#
            .to_string()
    })
}

#[cfg(test)]
mod tests;
