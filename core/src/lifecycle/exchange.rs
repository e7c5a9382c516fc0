//! One request's journey through the filter, as plain Rust: the host layer feeds it what
//! Envoy says (headers, body, response chunks, the end) and carries out what it decides.
//! Everything here is deterministic and unit-tested without Envoy.

use crate::config::{Config, TrafficClass};
use crate::contract::header;
use crate::deny::Denial;
use crate::identity::{self, Identity};
use crate::lifecycle::route;
use crate::metrics::Finished;
use crate::openai::request::{self, Api, ParsedRequest};
use crate::openai::sse::SseScanner;
use crate::openai::usage::{JsonUsageScanner, Usage};
use crate::record::{sanitize, AuditRecord, GatewayRecord};
use crate::redact::FingerprintAlgorithm;

/// What the host knows when request headers arrive.
pub struct RequestHead<'a> {
    pub headers: &'a [(String, String)],
    pub authority: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    /// The inbound `x-request-id`.
    pub request_id: Option<&'a str>,
    pub peer_uri_san: Option<&'a str>,
    /// False when the headers end the stream (no body follows).
    pub has_body: bool,
}

impl<'a> RequestHead<'a> {
    /// The pseudo-headers and request id, looked up in Envoy's header map (names arrive
    /// lower case).
    pub fn from_headers(
        headers: &'a [(String, String)],
        peer_uri_san: Option<&'a str>,
        has_body: bool,
    ) -> RequestHead<'a> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.as_str())
        };
        RequestHead {
            headers,
            authority: get(":authority").unwrap_or(""),
            path: get(":path").unwrap_or(""),
            method: get(":method").unwrap_or(""),
            request_id: get(header::REQUEST_ID),
            peer_uri_san,
            has_body,
        }
    }

    /// The same head with the header map dropped: what a request that never reached the
    /// filter still tells the records (no credentials are looked at).
    pub fn without_headers(self) -> RequestHead<'a> {
        RequestHead {
            headers: &[],
            ..self
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum HeadersAction {
    Deny(Denial),
    /// Forward now; the body (if any) is not read.
    Continue,
    /// Read the whole body before forwarding (`hold` = keep the headers back too, so the
    /// route can be chosen by model).
    ReadBody {
        hold: bool,
    },
}

/// Headers to set on the upstream request after the body was read.
#[derive(Debug, PartialEq, Default)]
pub struct BodyDecision {
    pub set_headers: Vec<(&'static str, String)>,
    /// A replacement body (with `stream_options.include_usage` added).
    pub new_body: Option<Vec<u8>>,
    /// Ask Envoy to re-select the route (the model header changed).
    pub clear_route_cache: bool,
}

#[derive(Debug, PartialEq)]
pub enum BodyAction {
    Deny(Denial),
    Continue(BodyDecision),
}

enum ResponseScan {
    None,
    Sse(Box<SseScanner>),
    Json(Box<JsonUsageScanner>),
}

/// Largest `usage` object captured from a JSON response.
const MAX_USAGE_CAPTURE: usize = 4096;

/// The response headers the scan depends on.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub status: Option<u16>,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
}

impl<'a> ResponseHead<'a> {
    pub fn from_headers(headers: &'a [(String, String)]) -> ResponseHead<'a> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        ResponseHead {
            status: get(":status").and_then(|s| s.parse().ok()),
            content_type: get("content-type"),
            content_encoding: get("content-encoding"),
        }
    }
}

/// What Envoy says when the stream is done (read in `on_log`).
#[derive(Debug, Default)]
pub struct End<'a> {
    pub now_ms: u64,
    pub status: Option<u16>,
    pub cluster: Option<&'a str>,
    pub upstream_address: Option<&'a str>,
    /// Envoy's `response.code_details` (`via_upstream` when the backend answered), read
    /// only when [`Exchange::needs_code_details`] says so.
    pub code_details: Option<&'a str>,
}

pub struct Exchange {
    pub start_ms: u64,
    /// The gateway's id (set by the lifecycle before the headers are looked at).
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub hostname: Option<String>,
    pub route: Option<usize>,
    pub identity: Option<Identity>,
    pub denial: Option<Denial>,
    /// What the route speaks (`None`: no body is read).
    pub api: Option<Api>,
    pub model: Option<String>,
    /// The configured model the request named, if any (bounded label values).
    pub known_model: bool,
    pub stream: Option<bool>,
    pub traffic_class: Option<TrafficClass>,
    pub estimated_prompt_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    /// The prompt's keyed fingerprint and the algorithm that made it.
    pub prompt_fingerprint: Option<(FingerprintAlgorithm, String)>,
    pub prompt_preview: Option<String>,
    pub response_status: Option<u16>,
    pub ttft_ms: Option<u64>,
    pub upstream_start_ms: Option<u64>,
    pub response_end_ms: Option<u64>,
    scan: ResponseScan,
    /// Whether the upstream ended the response cleanly (end of stream seen).
    pub response_complete: bool,
    /// The response came with a `content-encoding` the usage scanners cannot read.
    pub response_encoded: bool,
    pub finished: bool,
    /// The request headers reached this filter (false when a filter before it answered).
    pub headers_seen: bool,
}

impl Exchange {
    pub fn new(start_ms: u64) -> Exchange {
        Exchange {
            start_ms,
            request_id: None,
            client_request_id: None,
            hostname: None,
            route: None,
            identity: None,
            denial: None,
            api: None,
            model: None,
            known_model: false,
            stream: None,
            traffic_class: None,
            estimated_prompt_tokens: None,
            max_completion_tokens: None,
            prompt_fingerprint: None,
            prompt_preview: None,
            response_status: None,
            ttft_ms: None,
            upstream_start_ms: None,
            response_end_ms: None,
            scan: ResponseScan::None,
            response_complete: false,
            response_encoded: false,
            finished: false,
            headers_seen: false,
        }
    }

    fn deny(&mut self, d: Denial) -> Denial {
        self.denial = Some(d.clone());
        d
    }

    pub fn tenant_name<'c>(&self, cfg: &'c Config) -> Option<&'c str> {
        let id = self.identity.as_ref()?;
        cfg.tenant(id.tenant).map(|t| t.name.as_str())
    }

    pub fn route_prefix<'c>(&self, cfg: &'c Config) -> Option<&'c str> {
        cfg.routes.get(self.route?).map(|r| r.prefix.as_str())
    }

    /// What identifies the request in the records: request id, hostname, route.
    fn note_request(&mut self, cfg: &Config, head: &RequestHead) {
        self.client_request_id = head.request_id.map(|r| sanitize(r, 128));
        if !head.authority.is_empty() {
            self.hostname = Some(sanitize(
                &crate::config::hostname::normalize_host(head.authority),
                253,
            ));
        }
        self.route = route::match_route(cfg, head.path);
    }

    /// `on_log` for a request whose headers never reached this filter: a filter before it
    /// (say `jwt_authn` refusing a token) or Envoy answered. It was not let through, so
    /// its one audit record is a denial, with what the request headers still tell.
    pub fn on_unseen_request(&mut self, cfg: &Config, head: &RequestHead) {
        self.note_request(cfg, head);
        self.denial = Some(Denial::answered_before_filter());
    }

    /// Identity, host binding, route authorization and the body-size check from headers.
    pub fn on_request_headers(&mut self, cfg: &Config, head: &RequestHead) -> HeadersAction {
        self.headers_seen = true;
        self.note_request(cfg, head);
        if let Some(r) = self.route.and_then(|i| cfg.routes.get(i)) {
            self.api = r.api;
            self.traffic_class = Some(r.traffic_class);
        }
        match self.headers_decision(cfg, head) {
            Ok(action) => action,
            Err(d) => HeadersAction::Deny(self.deny(d)),
        }
    }

    fn headers_decision(
        &mut self,
        cfg: &Config,
        head: &RequestHead,
    ) -> Result<HeadersAction, Denial> {
        let id = identity::identify(cfg, head.headers, head.peer_uri_san)?;
        self.identity = Some(id.clone());
        identity::check_host(cfg, &id, head.authority)?;
        if !route::is_canonical(head.path) {
            return Err(Denial::invalid_path());
        }
        // Deny by default: a path outside the configured routes would reach a backend
        // without body checks, model authorization or a token reservation.
        if self.route.is_none() {
            return Err(Denial::route_not_found());
        }
        let tenant = cfg
            .tenant(id.tenant)
            .ok_or_else(Denial::invalid_credentials)?;
        if !tenant.may_use_route(self.route) {
            return Err(Denial::route_forbidden());
        }
        if let Some(r) = self.route.and_then(|i| cfg.routes.get(i)) {
            if !r.allows_method(head.method) {
                return Err(Denial::method_not_allowed(
                    r.methods.as_deref().unwrap_or(&[]),
                ));
            }
        }
        // A route's body is read for POST, and for any other method that carries one:
        // no method gets a body past the model allowlist and the reservation.
        let post = head.method.eq_ignore_ascii_case("POST");
        if self.api.is_none() || (!post && !head.has_body) {
            return Ok(HeadersAction::Continue);
        }
        if !head.has_body {
            return Err(Denial::invalid_body(
                "empty_body",
                None,
                "The request body is empty; a JSON object is required.",
            ));
        }
        let limit = cfg.limits.max_request_body_bytes;
        let declared = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .max();
        if declared.is_some_and(|n| n > limit) {
            return Err(Denial::body_too_large(limit));
        }
        Ok(HeadersAction::ReadBody {
            hold: cfg.routing.hold_headers_for_body,
        })
    }

    /// Called while the body is still arriving: refuse as soon as the limit is crossed.
    pub fn on_partial_body(&mut self, cfg: &Config, buffered: usize) -> Option<Denial> {
        let limit = cfg.limits.max_request_body_bytes;
        if buffered as u64 > limit {
            return Some(self.deny(Denial::body_too_large(limit)));
        }
        None
    }

    /// The whole body: parse, authorize the model, classify, fingerprint, route by model.
    /// `headers_held` says whether the request headers are still held back (only then can
    /// headers and `Content-Length` still be changed); when they are not, `cluster` is the
    /// cluster Envoy chose by path (read when [`Config::pinned_clusters`] is set).
    pub fn on_request_body(
        &mut self,
        cfg: &Config,
        body: &[u8],
        headers_held: bool,
        cluster: Option<&str>,
    ) -> BodyAction {
        if let Some(d) = self.on_partial_body(cfg, body.len()) {
            return BodyAction::Deny(d);
        }
        match self.body_decision(cfg, body, headers_held, cluster) {
            Ok(d) => BodyAction::Continue(d),
            Err(d) => BodyAction::Deny(self.deny(d)),
        }
    }

    fn body_decision(
        &mut self,
        cfg: &Config,
        body: &[u8],
        held: bool,
        cluster: Option<&str>,
    ) -> Result<BodyDecision, Denial> {
        let Some(api) = self.api else {
            return Ok(BodyDecision::default());
        };
        let parsed = request::parse_request(api, body)
            .map_err(|e| Denial::invalid_body(e.code(), e.field, &e.message()))?;
        self.model = Some(sanitize(&parsed.model, 128));
        self.stream = Some(parsed.stream);
        self.estimated_prompt_tokens = Some(parsed.estimated_prompt_tokens);
        // The reservation covers every completion the upstream may generate and bill: up
        // to the limit for each choice (`n`, completions `best_of`) of each prompt, so
        // neither slips past the token quota or its per-request cap.
        let choices = parsed.generated_choices();
        self.max_completion_tokens = if choices > 1 {
            Some(
                parsed
                    .max_completion_tokens()
                    .unwrap_or(cfg.limits.default_completion_tokens)
                    .saturating_mul(choices),
            )
        } else {
            parsed.max_completion_tokens()
        };
        self.traffic_class = Some(classify(self.traffic_class, &parsed));
        self.fingerprint(cfg, &parsed);

        // Model authorization: with a model table, unknown models are refused here rather
        // than left for a routing miss, and the tenant allowlist applies. Both get the
        // same answer, so a caller cannot tell a model that exists from one that does not.
        let known = cfg.models.contains_key(parsed.model.as_ref());
        self.known_model = known;
        let tenant = self
            .identity
            .as_ref()
            .and_then(|id| cfg.tenant(id.tenant))
            .ok_or_else(Denial::invalid_credentials)?;
        if (!cfg.models.is_empty() && !known) || !tenant.may_use_model(&parsed.model) {
            return Err(Denial::model_forbidden(&parsed.model));
        }

        let mut decision = BodyDecision::default();
        if let Some((name, value)) = cfg
            .models
            .get(parsed.model.as_ref())
            .and_then(|m| m.credential.as_ref())
        {
            decision
                .set_headers
                .push((name, value.expose().to_string()));
        }
        if !held {
            // Routed by path: the backend must be one that serves the model.
            let pinned = cfg
                .models
                .get(parsed.model.as_ref())
                .and_then(|m| m.clusters.as_ref());
            if pinned.is_some_and(|c| !cluster.is_some_and(|x| c.iter().any(|p| p == x))) {
                return Err(Denial::model_not_on_route());
            }
            return Ok(decision);
        }
        if cfg.routing.model_header {
            let m = parsed.model.to_string();
            decision.set_headers.push((header::MODEL, m.clone()));
            decision.set_headers.push((header::GATEWAY_MODEL_NAME, m));
            decision.clear_route_cache = true;
        }
        if let Some(class) = self.traffic_class {
            decision
                .set_headers
                .push((header::TRAFFIC_CLASS, class.as_str().to_string()));
        }
        if parsed.stream {
            // A stream is never replayed by the gateway: a retry would send the client a
            // second, different answer after part of the first.
            decision
                .set_headers
                .push((header::ENVOY_MAX_RETRIES, "0".to_string()));
            if !parsed.include_usage && matches!(api, Api::ChatCompletions | Api::Completions) {
                decision.new_body = request::with_include_usage_parsed(body, &parsed);
                if let Some(b) = &decision.new_body {
                    decision
                        .set_headers
                        .push(("content-length", b.len().to_string()));
                }
            }
        }
        Ok(decision)
    }

    fn fingerprint(&mut self, cfg: &Config, parsed: &ParsedRequest) {
        // Normalizing a large prompt costs about a fifth of a 1 MB request: only when used.
        if let Some(key) = &cfg.fingerprint_key {
            // Normalized and hashed in one pass: no normalized copy of the prompt.
            let hex = key.fingerprint(|sink| parsed.feed_normalized(sink));
            self.prompt_fingerprint = Some((key.algorithm(), hex));
        }
        if cfg.preview_chars > 0 {
            let pieces = parsed.normalized_pieces();
            // The preview scans at most 4 bytes a char plus a margin; joining a 1 MB
            // prompt just to cut it would copy it for nothing.
            let cap = cfg.preview_chars.saturating_mul(4).saturating_add(4_360);
            let mut text = String::new();
            for (i, p) in pieces.iter().enumerate() {
                if text.len() >= cap {
                    break;
                }
                if i > 0 {
                    text.push('\n');
                }
                text.push_str(p);
            }
            if text.len() > cap {
                let mut end = cap;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            self.prompt_preview = Some(crate::redact::redacted_preview(
                &text,
                cfg.preview_chars,
                &cfg.redactor,
            ));
        }
    }

    /// The request was released to the upstream.
    pub fn on_forwarded(&mut self, now_ms: u64) {
        self.upstream_start_ms.get_or_insert(now_ms);
    }

    pub fn on_response_headers(&mut self, head: &ResponseHead, cfg: &Config) {
        self.response_status = head.status;
        if self.denial.is_some() {
            return; // our own local reply
        }
        // The backend was asked for an identity body; one it compressed anyway cannot be
        // scanned for usage, so the request is charged its reservation (see `billable`).
        if head
            .content_encoding
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"))
        {
            self.response_encoded = true;
            return;
        }
        let ct = head.content_type.unwrap_or("").to_ascii_lowercase();
        self.scan = if ct.starts_with("text/event-stream") {
            ResponseScan::Sse(Box::new(SseScanner::new(cfg.limits.max_sse_event_bytes)))
        } else if ct.starts_with("application/json") && self.api.is_some() {
            ResponseScan::Json(Box::new(JsonUsageScanner::new(MAX_USAGE_CAPTURE)))
        } else {
            ResponseScan::None
        };
    }

    /// Whether response body bytes are worth copying out of Envoy (a usage scan is on).
    pub fn observes_response_body(&self) -> bool {
        !matches!(self.scan, ResponseScan::None)
    }

    /// A response body chunk passing through (never held back).
    pub fn on_response_chunk(&mut self, chunk: &[u8], end_of_stream: bool, now_ms: u64) {
        match &mut self.scan {
            ResponseScan::Sse(s) => {
                if s.feed(chunk).first_content && self.ttft_ms.is_none() {
                    self.ttft_ms = Some(now_ms.saturating_sub(self.start_ms));
                }
            }
            ResponseScan::Json(j) => j.feed(chunk),
            ResponseScan::None => {}
        }
        if end_of_stream {
            // A last event without its closing blank line still counts.
            if let ResponseScan::Sse(s) = &mut self.scan {
                if s.finish().first_content && self.ttft_ms.is_none() {
                    self.ttft_ms = Some(now_ms.saturating_sub(self.start_ms));
                }
            }
            self.response_complete = true;
            self.response_end_ms = Some(now_ms);
        }
    }

    /// Whether `on_log` needs Envoy's `response.code_details` to bill the request: it was
    /// forwarded, reported no usage, and got no success status (did a backend answer?).
    pub fn needs_code_details(&self) -> bool {
        self.forwarded()
            && self.reported_usage().is_none()
            && self.response_status.is_none_or(|s| s >= 400)
    }

    /// The request was released to the upstream (not refused by this filter).
    pub fn forwarded(&self) -> bool {
        self.denial.is_none() && self.upstream_start_ms.is_some()
    }

    fn reported_usage(&self) -> Option<Usage> {
        match &self.scan {
            ResponseScan::Sse(s) => s.summary().usage,
            ResponseScan::Json(j) => j.usage(),
            ResponseScan::None => None,
        }
    }

    /// What the request is billed (records and quota settlement), and whether estimated:
    /// - not forwarded (refused here, or ended before it was released): nothing;
    /// - usage reported by the backend: that;
    /// - a success whose body could not be scanned (compressed): the reservation's bound;
    /// - a success without usage (cut short, or a backend that omits it): the estimate of
    ///   the prompt and of what was streamed;
    /// - an error status from the backend itself (`via_upstream`) without usage: nothing,
    ///   and nothing when Envoy says no backend got the request (no healthy upstream,
    ///   connection failure, overflow) or a filter after this one answered (a rate limit);
    /// - otherwise (client abort, upstream timeout or reset after the request left):
    ///   the estimate, at least the prompt, since the backend may have done the work.
    pub fn billable(&self, cfg: &Config, end: &End) -> Option<(Usage, bool)> {
        if !self.forwarded() {
            return None;
        }
        if let Some(u) = self.reported_usage() {
            return Some((u, false));
        }
        let status = end.status.or(self.response_status);
        let success = status.is_some_and(|s| (200..400).contains(&s));
        if success && self.response_encoded {
            let completion = crate::lifecycle::quota_step::estimated_tokens(cfg, self)
                .saturating_sub(self.estimated_prompt_tokens.unwrap_or(0));
            return self.estimate(completion);
        }
        let ended_by_envoy = status.is_some() && !success;
        if ended_by_envoy && !upstream_was_sent(end.code_details) {
            return None;
        }
        if status.is_none() && end.code_details.is_some_and(never_reached) {
            return None;
        }
        let streamed = match &self.scan {
            ResponseScan::Sse(s) => s.summary().estimated_completion_tokens,
            _ => 0,
        };
        self.estimate(streamed)
    }

    fn estimate(&self, completion: u64) -> Option<(Usage, bool)> {
        let prompt = self.estimated_prompt_tokens?;
        Some((
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt.saturating_add(completion),
                cached_tokens: None,
                reasoning_tokens: None,
            },
            true,
        ))
    }

    /// Did the stream finish properly (`[DONE]` seen and the response ended)?
    pub fn stream_complete(&self) -> Option<bool> {
        match &self.scan {
            ResponseScan::Sse(s) => Some(self.response_complete && s.summary().saw_done),
            _ if self.stream == Some(true) && self.denial.is_none() => Some(false),
            _ => None,
        }
    }

    /// What the metrics of a finished request need besides its gateway record.
    pub fn finished<'r>(&self, record: &'r GatewayRecord, busy_ns: u64) -> Finished<'r> {
        Finished {
            record,
            upstream_ms: match (self.upstream_start_ms, self.response_end_ms) {
                (Some(start), Some(end)) => Some(end.saturating_sub(start)),
                _ => None,
            },
            denial_reason: self.denial.as_ref().map(|d| d.reason),
            busy_ns,
            unreachable: None,
            budgets: Vec::new(),
            operation: self.api.map(gen_ai_operation),
            request_model: record.model.as_deref().filter(|_| self.known_model),
        }
    }

    fn fingerprint_of(&self, algorithm: FingerprintAlgorithm) -> Option<String> {
        match &self.prompt_fingerprint {
            Some((a, hex)) if *a == algorithm => Some(hex.clone()),
            _ => None,
        }
    }

    /// Build both records. Only upstream-served responses count tokens and cost.
    pub fn records(&self, cfg: &Config, end: &End) -> (GatewayRecord, AuditRecord) {
        let timestamp = crate::record::timefmt::rfc3339_millis(self.start_ms);
        let tenant = self.tenant_name(cfg).map(str::to_string);
        let route = self.route_prefix(cfg).map(str::to_string);
        // A local reply (denial) names no backend even though Envoy had picked a route.
        // Only a request the filter released names a backend: a local reply, or a request
        // that ended before it was forwarded (client abort mid-body), names none even though
        // Envoy had already picked a route.
        let forwarded = self.denial.is_none() && self.upstream_start_ms.is_some();
        let model_route = end
            .cluster
            .filter(|_| forwarded)
            .map(model_route_from_cluster);
        let status = end.status.or(self.response_status);
        let usage = self.billable(cfg, end);
        let cost = match (
            &usage,
            self.model.as_deref().and_then(|m| cfg.models.get(m)),
        ) {
            (Some((u, _)), Some(m)) => Some(crate::record::cost::estimate_usd(m, u)),
            _ => None,
        };
        let gateway = GatewayRecord {
            timestamp: timestamp.clone(),
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
            tenant: tenant.clone(),
            hostname: self.hostname.clone(),
            route: route.clone(),
            model_route: model_route.clone(),
            stream: self.stream,
            http_status: status,
            latency_ms: Some(end.now_ms.saturating_sub(self.start_ms)),
            ttft_ms: self.ttft_ms,
            prompt_tokens: usage.map(|(u, _)| u.prompt_tokens),
            completion_tokens: usage.map(|(u, _)| u.completion_tokens),
            estimated_cost_usd: cost,
            gateway_backend: end
                .upstream_address
                .filter(|_| forwarded)
                .map(|a| sanitize(a, 256)),
            model: self.model.clone(),
            traffic_class: self.traffic_class.map(TrafficClass::as_str),
            usage_estimated: usage.map(|(_, e)| e),
            prompt_sha256: self.fingerprint_of(FingerprintAlgorithm::HmacSha256),
            prompt_blake3: self.fingerprint_of(FingerprintAlgorithm::Blake3),
            stream_complete: if self.stream == Some(true) {
                self.stream_complete()
            } else {
                None
            },
            quota_mode: None,
            budget_period: None,
            budget_spent_usd: None,
            budget_remaining_usd: None,
            prompt_preview: self.prompt_preview.clone(),
        };
        let audit = AuditRecord {
            timestamp,
            tenant,
            subject: self.identity.as_ref().map(|i| i.subject.clone()),
            route,
            model_route,
            decision: if self.denial.is_some() {
                "deny"
            } else {
                "allow"
            },
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
            sensitive_payload_logged: false,
            reason: self.denial.as_ref().map(|d| d.reason),
            hostname: self.hostname.clone(),
            auth_source: self.identity.as_ref().map(|i| i.source.as_str()),
            http_status: status,
            quota_mode: None,
        };
        (gateway, audit)
    }
}

/// OpenTelemetry's `gen_ai.operation.name` of an API.
fn gen_ai_operation(api: Api) -> &'static str {
    match api {
        Api::ChatCompletions | Api::Responses => "chat",
        Api::Completions => "text_completion",
        Api::Embeddings => "embeddings",
    }
}

/// Envoy's code details for a request no backend received (no healthy host, a connection
/// that never opened, a circuit breaker).
fn never_reached(d: &str) -> bool {
    d.contains("connection_failure") || d.contains("overflow") || d.starts_with("no_healthy")
}

/// For an error status Envoy (not the backend) answered: did the upstream request leave?
/// Envoy's upstream failures are timeouts (`response_timeout`, `upstream_per_try_timeout`)
/// and resets (`upstream_reset_*`); anything else is a local reply of a filter after this
/// one (`request_rate_limited`, `ext_authz_denied`, `route_not_found`, ...) or the
/// backend's own answer (`via_upstream`): no work was done, or the backend said so.
/// Unknown details count as sent.
fn upstream_was_sent(details: Option<&str>) -> bool {
    details
        .is_none_or(|d| (d.starts_with("upstream_") || d.contains("timeout")) && !never_reached(d))
}

/// Traffic class from the route's class and the body: streams are `streaming`, requests
/// with tools `tool_calling_agents`, the rest the route's class.
pub fn classify(route_class: Option<TrafficClass>, parsed: &ParsedRequest) -> TrafficClass {
    if parsed.stream {
        TrafficClass::Streaming
    } else if parsed.has_tools {
        TrafficClass::ToolCallingAgents
    } else {
        route_class.unwrap_or(TrafficClass::Interactive)
    }
}

/// Envoy cluster name to backend name: Istio's `outbound|8000||svc.ns.svc.cluster.local`
/// becomes `svc`; plain cluster names are kept.
pub fn model_route_from_cluster(cluster: &str) -> String {
    let name = match cluster.split('|').collect::<Vec<_>>().as_slice() {
        [_dir, _port, _subset, host] => host.split('.').next().unwrap_or(host),
        _ => cluster,
    };
    sanitize(name, 128)
}

#[cfg(test)]
mod tests;
