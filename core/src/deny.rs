//! Why a request is refused, and the error body the client gets: OpenAI's envelope, with
//! OpenAI's status, `type` and `code` wherever OpenAI has the same case, so its SDKs raise
//! the exception they raise against OpenAI. Cases OpenAI has no equivalent for carry the
//! nearest OpenAI `type` and a `code` of our own. docs/contract.md ("Refusals") lists
//! every one. The `reason` strings are the audit record's `reason` field (a public
//! contract, independent of what the client sees).

use serde::Serialize;

use crate::quota::BucketKind;

/// OpenAI's `type` for a request it cannot serve as sent (also its 401 and 404 answers).
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// OpenAI's 403 `type` (it answers a request from a region it does not serve with it):
/// here for a hostname or route the tenant may not use, which OpenAI has no case for.
pub const REQUEST_FORBIDDEN: &str = "request_forbidden";
/// OpenAI's `type` for a failure on the server's side.
pub const SERVER_ERROR: &str = "server_error";
/// OpenAI's `code` for a rate limit (the `type` names the bucket: `requests`, `tokens`).
pub const RATE_LIMIT_EXCEEDED: &str = "rate_limit_exceeded";

/// Longest model name a refusal's message repeats back to the client.
const MAX_ECHOED_MODEL: usize = 128;

/// A refusal: HTTP status, audit reason, and the client-facing error.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub status: u16,
    /// Audit `reason` (e.g. `invalid_credentials`).
    pub reason: &'static str,
    /// OpenAI error `type`.
    pub error_type: &'static str,
    /// OpenAI error `code`; `None` is a JSON `null` (OpenAI's answer to a missing key).
    pub code: Option<&'static str>,
    /// OpenAI error `param`: the request field at fault (a fixed field name, never a value).
    pub param: Option<&'static str>,
    /// Safe to show the client: never contains request content or credentials (a model
    /// name is repeated only when it passes [`echoable_model`]).
    pub message: String,
    /// Headers the refusal carries besides the filter's own (`allow`, `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl Denial {
    /// A refusal whose `code` is its audit reason (the cases OpenAI has no code for).
    fn new(status: u16, reason: &'static str, error_type: &'static str, message: &str) -> Denial {
        Denial::with_code(
            status,
            reason,
            error_type,
            Some(reason),
            message.to_string(),
        )
    }

    fn with_code(
        status: u16,
        reason: &'static str,
        error_type: &'static str,
        code: Option<&'static str>,
        message: String,
    ) -> Denial {
        Denial {
            status,
            reason,
            error_type,
            code,
            param: None,
            message,
            headers: Vec::new(),
        }
    }

    /// No credential at all: OpenAI's 401 with `code: null`.
    pub fn missing_credentials() -> Denial {
        Denial::with_code(
            401,
            "missing_credentials",
            INVALID_REQUEST,
            None,
            "You didn't provide an API key. Send it in the Authorization header as a bearer \
             token (Authorization: Bearer YOUR_KEY), or in the x-api-key or api-key header."
                .to_string(),
        )
    }
    /// A credential no tenant holds (or one that cannot be read): OpenAI's
    /// `invalid_api_key`. One answer for every such case, and no part of the key in it.
    pub fn invalid_credentials() -> Denial {
        Denial::with_code(
            401,
            "invalid_credentials",
            INVALID_REQUEST,
            Some("invalid_api_key"),
            "Incorrect API key provided. Use a key or token issued for this gateway.".to_string(),
        )
    }
    pub fn conflicting_credentials() -> Denial {
        Denial::new(
            401,
            "conflicting_credentials",
            INVALID_REQUEST,
            "The request carries credentials that disagree; send exactly one.",
        )
    }
    pub fn host_mismatch() -> Denial {
        Denial::new(
            403,
            "host_mismatch",
            REQUEST_FORBIDDEN,
            "These credentials are not valid for this hostname.",
        )
    }
    pub fn route_forbidden() -> Denial {
        Denial::new(
            403,
            "route_forbidden",
            REQUEST_FORBIDDEN,
            "This tenant may not call this route.",
        )
    }
    /// A model the tenant may not use and a model nobody serves get the same answer,
    /// OpenAI's 404 `model_not_found`, so a caller cannot learn which models exist.
    pub fn model_forbidden(model: &str) -> Denial {
        let message = match echoable_model(model) {
            Some(m) => format!("The model `{m}` does not exist or you do not have access to it."),
            None => "The model does not exist or you do not have access to it.".to_string(),
        };
        Denial::with_code(
            404,
            "model_forbidden",
            INVALID_REQUEST,
            Some("model_not_found"),
            message,
        )
    }
    /// Audit-only: another filter or Envoy itself answered before this filter saw the
    /// request (no reply is sent from here; the record carries Envoy's status).
    pub fn answered_before_filter() -> Denial {
        Denial::new(
            403,
            "answered_before_filter",
            REQUEST_FORBIDDEN,
            "The request was answered before the gateway filter.",
        )
    }
    pub fn route_not_found() -> Denial {
        Denial::new(
            404,
            "route_not_found",
            INVALID_REQUEST,
            "Invalid URL: this gateway serves no API at this path.",
        )
    }
    pub fn invalid_path() -> Denial {
        Denial::new(
            400,
            "invalid_path",
            INVALID_REQUEST,
            "The request path is not in canonical form.",
        )
    }
    /// A body the parser refused; `param` names the field at fault, as OpenAI does.
    pub fn invalid_body(code: &'static str, param: Option<&'static str>, message: &str) -> Denial {
        let mut d = Denial::with_code(
            400,
            "invalid_body",
            INVALID_REQUEST,
            Some(code),
            message.to_string(),
        );
        d.param = param;
        d
    }
    pub fn body_too_large(limit: u64) -> Denial {
        Denial::with_code(
            413,
            "body_too_large",
            INVALID_REQUEST,
            Some("request_too_large"),
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    }
    /// A request or token bucket is empty (local, global or strict): OpenAI's 429, whose
    /// `type` names the bucket and whose `code` is `rate_limit_exceeded`.
    pub fn quota(kind: BucketKind, message: String) -> Denial {
        Denial::with_code(
            429,
            kind.reason(),
            kind.label(),
            Some(RATE_LIMIT_EXCEEDED),
            message,
        )
    }
    /// A request that can never fit the tenant's bucket: not retryable, so not a 429.
    pub fn quota_too_large(kind: BucketKind, message: String) -> Denial {
        Denial::with_code(
            400,
            kind.reason(),
            INVALID_REQUEST,
            Some("quota_exceeds_burst"),
            message,
        )
    }
    /// A method the route does not serve; `allow` lists the ones it does.
    pub fn method_not_allowed(allow: &[String]) -> Denial {
        let list = allow.join(", ");
        let mut d = Denial::new(
            405,
            "method_not_allowed",
            INVALID_REQUEST,
            &format!("This route does not serve this method; use {list}."),
        );
        d.headers.push((crate::contract::header::ALLOW, list));
        d
    }
    /// Held headers waited `ms` for the whole body.
    pub fn body_timeout(ms: u64) -> Denial {
        Denial::with_code(
            408,
            "body_timeout",
            INVALID_REQUEST,
            Some("request_timeout"),
            format!("The request body did not arrive within {ms} ms."),
        )
    }
    /// The route Envoy chose by path leads to a backend that does not serve the model
    /// (headers are not held, so the route cannot follow the model).
    pub fn model_not_on_route() -> Denial {
        Denial::new(
            400,
            "model_not_on_route",
            INVALID_REQUEST,
            "The requested model is not served on this route.",
        )
    }
    /// The tenant's concurrency limit is reached: a 429 of OpenAI's `requests` type with a
    /// code of our own (OpenAI has no concurrency limit).
    pub fn concurrency(full: crate::quota::inflight::Full, limit: u32) -> Denial {
        use crate::quota::inflight::Full;
        let (code, what) = match full {
            Full::InFlight => ("too_many_requests_in_flight", "requests"),
            Full::Streams => ("too_many_streams", "streaming requests"),
        };
        let mut d = Denial::with_code(
            429,
            full.reason(),
            BucketKind::Requests.label(),
            Some(code),
            format!(
                "This tenant already has {limit} {what} in flight, its limit. Retry when one finishes."
            ),
        );
        d.headers
            .push((crate::contract::header::RETRY_AFTER, "1".to_string()));
        d
    }
    /// The worker has no valid configuration (every push so far was refused).
    pub fn not_configured() -> Denial {
        Denial::new(
            503,
            "not_configured",
            SERVER_ERROR,
            "The gateway is not configured; try again shortly.",
        )
    }
    /// A spend budget cannot take the request's maximum cost: OpenAI's
    /// `insufficient_quota`, which its SDKs do not retry (`x-should-retry: false` makes
    /// sure of it).
    pub fn budget_exceeded(message: String) -> Denial {
        let mut d = Denial::with_code(
            429,
            "budget_exceeded",
            "insufficient_quota",
            Some("insufficient_quota"),
            message,
        );
        d.headers
            .push((crate::contract::header::SHOULD_RETRY, "false".to_string()));
        d
    }

    pub fn quota_unavailable() -> Denial {
        Denial::new(
            503,
            "quota_unavailable",
            SERVER_ERROR,
            "The quota service is unavailable; try again shortly.",
        )
    }

    /// `{"error": {"message", "type", "param", "code"}}`, as the OpenAI API returns.
    pub fn body(&self) -> String {
        render(&self.message, self.error_type, self.param, self.code)
    }
}

/// The model name as a refusal may repeat it: the client sent it, so only a short name of
/// printable ASCII without quotes, backticks or backslashes (nothing that could break out
/// of the message or pass for markup), else `None`.
pub fn echoable_model(model: &str) -> Option<&str> {
    let ok = !model.is_empty()
        && model.len() <= MAX_ECHOED_MODEL
        && model
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'`' | b'"' | b'\'' | b'\\'));
    ok.then_some(model)
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
    param: Option<&'a str>,
    code: Option<&'a str>,
}

fn render(message: &str, error_type: &str, param: Option<&str>, code: Option<&str>) -> String {
    let env = ErrorEnvelope {
        error: ErrorObject {
            message,
            error_type,
            param,
            code,
        },
    };
    serde_json::to_string(&env).unwrap_or_else(|_| {
        r#"{"error":{"message":"error","type":"server_error","param":null,"code":"internal_error"}}"#
            .to_string()
    })
}

#[cfg(test)]
mod tests;
