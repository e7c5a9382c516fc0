//! Routing, control headers, the request echo headers and the JSON responses.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::body::MockBody;
use crate::sse::{self, Kind, StreamPlan};
use crate::usage::{self, CompletionPlan};

/// Largest request body accepted (bigger ones get 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Echoed request-header prefixes: what the gateway let through to the backend.
const ECHO_PREFIXES: [&str; 4] = ["x-ai-", "x-gateway-", "x-envoy-", "x-request-id"];
/// Credential headers (and a JWT payload) are echoed as `["present"]` only (never their
/// values), so tests can check whether the gateway passed them on.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-jwt-payload"];

static X_BACKEND: HeaderName = HeaderName::from_static("x-backend");
static X_RECEIVED: HeaderName = HeaderName::from_static("x-mock-received");
static X_INCLUDE_USAGE: HeaderName = HeaderName::from_static("x-mock-include-usage");
static X_REQUEST_BYTES: HeaderName = HeaderName::from_static("x-mock-request-bytes");

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

const MODELS_BODY: &str = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"llama3-8b","object":"model","created":1700000000,"owned_by":"mock-llm"},"#,
    r#"{"id":"bge-small","object":"model","created":1700000000,"owned_by":"mock-llm"}]}"#
);

/// Server-wide settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub ttft_ms: u64,
    pub tokens_per_second: f64,
    pub completion_tokens: u64,
    pub error_rate: f64,
    pub force_status: u16,
    /// A header model requests must carry with this exact value (a backend with its own
    /// API key, like vLLM's `--api-key`); otherwise 401.
    pub require_header: Option<(String, String)>,
}

pub struct State {
    cfg: Config,
    backend: HeaderValue,
    /// Model requests seen so far; drives `--error-rate` and the response ids.
    model_requests: AtomicU64,
}

impl State {
    pub fn new(cfg: Config) -> Self {
        let backend =
            HeaderValue::from_str(&cfg.name).unwrap_or(HeaderValue::from_static("invalid-name"));
        State {
            cfg,
            backend,
            model_requests: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Completions,
    Embeddings,
    Models,
    Health,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => Route::Chat,
        (&Method::POST, "/v1/completions") => Route::Completions,
        (&Method::POST, "/v1/embeddings") => Route::Embeddings,
        (&Method::GET, "/v1/models") => Route::Models,
        (&Method::GET, "/healthz") => Route::Health,
        _ => Route::NotFound,
    }
}

/// Headers every response carries, computed from the request.
struct Echo {
    received: HeaderValue,
    include_usage: bool,
    request_bytes: usize,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningTokens>,
}

impl Usage {
    fn new(kind: Kind, prompt: u64, plan: &CompletionPlan) -> Self {
        let completion = plan.completion_tokens();
        let chat = kind == Kind::Chat;
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: chat.then_some(CachedTokens { cached_tokens: 0 }),
            completion_tokens_details: chat.then_some(ReasoningTokens {
                reasoning_tokens: 0,
            }),
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Completion<'a, C> {
    id: &'a str,
    object: &'a str,
    created: u64,
    model: &'a str,
    choices: [C; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: [f32; usage::EMBEDDING_DIMS],
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// hyper service entry point: never fails, every problem is an HTTP response.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let route = route(&parts.method, parts.uri.path());
    let is_model = matches!(route, Route::Chat | Route::Completions | Route::Embeddings);
    // Count before anything can fail, so request i is the i-th model request received.
    let seq = if is_model {
        state.model_requests.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        0
    };

    let mut echo = Echo {
        received: received_header(headers),
        include_usage: false,
        request_bytes: 0,
    };
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let (status, code) = if e.is::<http_body_util::LengthLimitError>() {
                (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
            } else {
                (StatusCode::BAD_REQUEST, "body_read_error")
            };
            let msg = format!("mock-llm: could not read request body: {e}");
            return Ok(finish(
                &state,
                &echo,
                error_response(status, "invalid_request_error", code, &msg),
            ));
        }
    };
    echo.request_bytes = body.len();
    let parsed: Option<Value> = if is_model {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(Value::is_object)
    } else {
        None
    };
    if let Some(v) = &parsed {
        echo.include_usage = usage::include_usage(v);
    }

    if let (true, Some((name, want))) = (is_model, &state.cfg.require_header) {
        let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            let resp = error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "mock-llm: the backend's API key is missing or wrong",
            );
            return Ok(finish(&state, &echo, resp));
        }
    }
    // Precedence: x-mock-status, then --force-status, then --error-rate.
    if let Some(status) = header_u64(headers, "x-mock-status").and_then(valid_status) {
        return Ok(finish(&state, &echo, forced_error(status)));
    }
    if is_model {
        if let Some(status) = valid_status(u64::from(state.cfg.force_status)) {
            return Ok(finish(&state, &echo, forced_error(status)));
        }
        if usage::request_fails(seq, state.cfg.error_rate) {
            let resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "backend_unavailable",
                "mock-llm: injected failure (--error-rate)",
            );
            return Ok(finish(&state, &echo, resp));
        }
    }

    let resp = match (route, parsed) {
        (Route::Health, _) => simple(StatusCode::OK, TEXT, Bytes::from_static(b"ok")),
        (Route::Models, _) => simple(
            StatusCode::OK,
            JSON,
            Bytes::from_static(MODELS_BODY.as_bytes()),
        ),
        (Route::NotFound, _) => {
            let msg = format!(
                "mock-llm: no route for {} {}",
                parts.method,
                parts.uri.path()
            );
            error_response(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                &msg,
            )
        }
        (_, None) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "mock-llm: request body is not a JSON object",
        ),
        (Route::Embeddings, Some(v)) => {
            sleep_ms(ttft_ms(&state, headers)).await;
            embeddings(&state, headers, &v)
        }
        (r, Some(v)) => {
            let kind = if r == Route::Chat {
                Kind::Chat
            } else {
                Kind::Completion
            };
            completion(&state, headers, seq, kind, &v).await
        }
    };
    Ok(finish(&state, &echo, resp))
}

/// Chat or legacy completion, streaming or not.
async fn completion(
    state: &State,
    headers: &HeaderMap,
    seq: u64,
    kind: Kind,
    v: &Value,
) -> Response<MockBody> {
    let prompt = match kind {
        Kind::Chat => usage::chat_prompt_tokens(v),
        Kind::Completion => usage::field_prompt_tokens(v, "prompt"),
    };
    let plan = usage::completion_plan(v, state.cfg.completion_tokens);
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&state.cfg.name);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-mock-{seq}"),
        Kind::Completion => format!("cmpl-mock-{seq}"),
    };
    let created = unix_now();
    let ttft = ttft_ms(state, headers);
    let chunk_bytes = header_u64(headers, "x-mock-chunk-bytes")
        .filter(|&n| n > 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let usage = Usage::new(kind, prompt, &plan);

    if v.get("stream").and_then(Value::as_bool) == Some(true) {
        let omit = header_flag(headers, "x-mock-omit-usage");
        let usage_json = (usage::include_usage(v) && !omit).then(|| to_json(&usage));
        let prefix = format!(
            "{{\"id\":{},\"object\":\"{}\",\"created\":{},\"model\":{}",
            to_json(&id),
            sse::chunk_object(kind),
            created,
            to_json(&model)
        );
        let token_interval = (state.cfg.tokens_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / state.cfg.tokens_per_second));
        let body = sse::stream(StreamPlan {
            kind,
            prefix,
            plan,
            usage_json,
            ttft: Duration::from_millis(ttft),
            token_interval,
            chunk_bytes,
            reset_after: header_u64(headers, "x-mock-reset-after-chunks"),
        });
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, SSE);
        h.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        return resp;
    }

    sleep_ms(ttft).await;
    let text = usage::completion_text(plan.per_choice);
    let json = match kind {
        Kind::Chat => to_json(&Completion {
            id: &id,
            object: "chat.completion",
            created,
            model,
            choices: [ChatChoice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: &text,
                },
                logprobs: None,
                finish_reason: plan.finish_reason,
            }],
            usage,
        }),
        Kind::Completion => to_json(&Completion {
            id: &id,
            object: "text_completion",
            created,
            model,
            choices: [TextChoice {
                text: &text,
                index: 0,
                logprobs: None,
                finish_reason: plan.finish_reason,
            }],
            usage,
        }),
    };
    match chunk_bytes {
        Some(n) => {
            let mut resp = Response::new(sse::chunked(Bytes::from(json), n));
            resp.headers_mut().insert(CONTENT_TYPE, JSON);
            resp
        }
        None => maybe_compressed(headers, Bytes::from(json)),
    }
}

/// A 200 JSON body, gzip-compressed as `x-mock-compress` asks: `if-accepted` when the
/// request's `Accept-Encoding` allows gzip (a well-behaved backend), `always` regardless
/// (one that ignores it). `x-mock-accept-encoding` echoes what the backend was offered.
fn maybe_compressed(headers: &HeaderMap, json: Bytes) -> Response<MockBody> {
    let offered = headers
        .get(hyper::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mode = headers
        .get("x-mock-compress")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let gzip = match mode {
        "always" => true,
        "if-accepted" => offered.to_ascii_lowercase().contains("gzip"),
        _ => false,
    };
    let body = if gzip { gzip_bytes(&json) } else { None };
    let mut resp = match &body {
        Some(b) => simple(StatusCode::OK, JSON, b.clone()),
        None => simple(StatusCode::OK, JSON, json),
    };
    let h = resp.headers_mut();
    if body.is_some() {
        h.insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    let echo = if offered.is_empty() {
        "none"
    } else {
        offered.as_str()
    };
    if let Ok(v) = HeaderValue::from_str(echo) {
        h.insert("x-mock-accept-encoding", v);
    }
    resp
}

fn gzip_bytes(data: &[u8]) -> Option<Bytes> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).ok()?;
    enc.finish().ok().map(Bytes::from)
}

fn embeddings(state: &State, headers: &HeaderMap, v: &Value) -> Response<MockBody> {
    let input = v.get("input");
    let prompt = usage::field_prompt_tokens(v, "input");
    let data = usage::embedding_items(input)
        .into_iter()
        .enumerate()
        .map(|(index, item)| Embedding {
            object: "embedding",
            index,
            embedding: usage::embedding(item),
        })
        .collect();
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&state.cfg.name);
    let json = to_json(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: prompt,
            total_tokens: prompt,
        },
    });
    match header_u64(headers, "x-mock-chunk-bytes").filter(|&n| n > 0) {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let mut resp = Response::new(sse::chunked(Bytes::from(json), n));
            resp.headers_mut().insert(CONTENT_TYPE, JSON);
            resp
        }
        None => simple(StatusCode::OK, JSON, Bytes::from(json)),
    }
}

/// `{"x-ai-tenant":["a"],...}` for every request header with an echoed prefix.
fn received_header(headers: &HeaderMap) -> HeaderValue {
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if CREDENTIAL_HEADERS.contains(&n) {
            seen.entry(n).or_default().push("present".to_string());
        } else if ECHO_PREFIXES.iter().any(|p| n.starts_with(p)) {
            seen.entry(n)
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    if seen.is_empty() {
        return HeaderValue::from_static("{}");
    }
    HeaderValue::from_str(&to_json(&seen))
        .or_else(|_| HeaderValue::from_bytes(to_json(&seen).as_bytes()))
        .unwrap_or(HeaderValue::from_static("{}"))
}

fn finish(state: &State, echo: &Echo, mut resp: Response<MockBody>) -> Response<MockBody> {
    let h = resp.headers_mut();
    h.insert(X_BACKEND.clone(), state.backend.clone());
    h.insert(X_RECEIVED.clone(), echo.received.clone());
    h.insert(
        X_INCLUDE_USAGE.clone(),
        HeaderValue::from_static(if echo.include_usage { "true" } else { "false" }),
    );
    h.insert(
        X_REQUEST_BYTES.clone(),
        HeaderValue::from(echo.request_bytes),
    );
    resp
}

fn simple(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

fn error_response(status: StatusCode, kind: &str, code: &str, message: &str) -> Response<MockBody> {
    let body = to_json(&ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            code,
        },
    });
    simple(status, JSON, Bytes::from(body))
}

/// Error body for `x-mock-status` / `--force-status`, typed like OpenAI would.
fn forced_error(status: StatusCode) -> Response<MockBody> {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "backend_unavailable"),
        s if s >= 500 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "mock_forced_status"),
    };
    let msg = format!("mock-llm: forced status {}", status.as_u16());
    error_response(status, kind, code, &msg)
}

/// Only final statuses 200..=599 are honoured; anything else is ignored.
fn valid_status(n: u64) -> Option<StatusCode> {
    if (200..=599).contains(&n) {
        StatusCode::from_u16(u16::try_from(n).ok()?).ok()
    } else {
        None
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| matches!(s.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

fn ttft_ms(state: &State, headers: &HeaderMap) -> u64 {
    header_u64(headers, "x-mock-ttft-ms").unwrap_or(state.cfg.ttft_ms)
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serializing these plain structs cannot fail; "{}" keeps the server total anyway.
fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}
