//! [`Request`]: one HTTP request's lifecycle, owned by the core. The host hands each
//! callback's input to it and carries out the returned [`Plan`]; every path ends in
//! [`Request::on_log`], which writes both records, settles the quota and observes the
//! metrics, so every request (allowed, denied, failed or aborted) leaves exactly one
//! gateway record and one audit record.

use std::sync::Arc;

use super::exchange::{BodyAction, End, Exchange, HeadersAction, RequestHead, ResponseHead};
use super::plan::{Flow, GrpcCall, LocalReply, Plan};
use super::quota_step::{QuotaState, Stage};
pub use super::worker::Worker;
use crate::config::Config;
use crate::contract::header;
use crate::deny::Denial;
use crate::metrics::observations;
use crate::quota::budget;
use crate::quota::global::{CallFailure, QuotaMode};
use crate::quota::inflight::{self, Acquire};
use crate::quota::rls;
use crate::record::state_entries;

/// What Envoy offers with the request headers.
pub struct RequestHeaders<'a> {
    /// `None` when the host could not read them.
    pub headers: Option<&'a [(String, String)]>,
    /// The mTLS peer certificate's URI SAN, if any.
    pub peer_uri_san: Option<&'a str>,
    pub end_of_stream: bool,
    pub now_ms: u64,
}

/// A request body callback's input.
pub struct RequestBody<'a> {
    /// What Envoy holds so far.
    pub buffered: usize,
    pub end_of_stream: bool,
    /// The whole body when [`Request::wants_request_body`] said so, else empty.
    pub body: &'a [u8],
    /// The cluster Envoy chose, when [`Request::wants_cluster`] said so.
    pub cluster: Option<&'a str>,
    pub now_ms: u64,
}

/// What the host must read for [`Request::on_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogNeeds {
    /// A filter before this one answered: the request headers never reached the filter.
    pub request_headers: bool,
    /// No response headers were seen: Envoy's response code is needed.
    pub response_code: bool,
    /// Envoy's `response.code_details`, to tell a backend's error from Envoy's own.
    pub code_details: bool,
}

/// What Envoy knows when the stream is done.
pub struct LogInput<'a> {
    pub now_ms: u64,
    /// Envoy's response code, if [`LogNeeds::response_code`] asked for it.
    pub response_code: Option<u16>,
    pub cluster: Option<&'a str>,
    pub upstream_address: Option<&'a str>,
    /// The request headers, if [`LogNeeds::request_headers`] asked for them.
    pub request_headers: Option<&'a [(String, String)]>,
    /// Time spent inside this filter's callbacks, as the host measured it.
    pub busy_ns: u64,
    /// Envoy's `response.code_details`, if [`LogNeeds::code_details`] asked for it.
    pub code_details: Option<&'a str>,
}

impl LogInput<'_> {
    /// For a request with nothing to log ([`Request::log_needs`] is `None`).
    pub fn nothing() -> LogInput<'static> {
        LogInput {
            now_ms: 0,
            response_code: None,
            cluster: None,
            upstream_address: None,
            request_headers: None,
            busy_ns: 0,
            code_details: None,
        }
    }
}

/// What a host reads from Envoy when the stream is done. [`Request::on_stream_end`] asks
/// for each only when the records need it, in the order listed here.
pub trait LogSource {
    fn request_headers(&self) -> Option<Vec<(String, String)>>;
    fn cluster(&self) -> Option<String>;
    fn upstream_address(&self) -> Option<String>;
    fn response_code(&self) -> Option<u64>;
    fn code_details(&self) -> Option<String>;
    fn now_ms(&self) -> u64;
}

pub struct Request {
    id: u32,
    cfg: Option<Arc<Config>>,
    ex: Exchange,
    quota: QuotaState,
    /// The request headers are held back until the body is read.
    held: bool,
    reading_body: bool,
    local_reply: bool,
    /// Credential headers the client sent (removed before forwarding).
    credentials: Vec<&'static str>,
    /// The concurrency slot this request holds: (shared-data key, is a stream).
    slot: Option<(String, bool)>,
    logged: bool,
}

impl Request {
    /// `id` is the host's context id (the hold watch resumes requests by it).
    pub fn new(id: u32, cfg: Option<Arc<Config>>, now_ms: u64) -> Request {
        Request {
            id,
            cfg,
            ex: Exchange::new(now_ms),
            quota: QuotaState::default(),
            held: false,
            reading_body: false,
            local_reply: false,
            credentials: Vec::new(),
            slot: None,
            logged: false,
        }
    }

    /// The id the records, the upstream and the client see (chosen here, never taken from
    /// the client: see `lifecycle::ids`).
    fn request_id(&mut self, w: &mut Worker) -> String {
        self.ex
            .request_id
            .get_or_insert_with(|| w.state.ids.next_id())
            .clone()
    }

    /// Identity, authorization and the quota for body-less routes; decides whether the
    /// body is read and whether the headers are held until it is.
    pub fn on_request_headers(&mut self, w: &mut Worker, input: &RequestHeaders) -> Plan {
        let id = self.request_id(w);
        let Some(cfg) = self.cfg.clone() else {
            return self.reply(Plan::default(), &Denial::not_configured(), Vec::new());
        };
        let Some(headers) = input.headers else {
            return self.reply(Plan::default(), &Denial::invalid_credentials(), Vec::new());
        };
        let mut plan = Plan::default();
        // Anti-spoofing: nothing the client sends may pose as the filter's own headers.
        // Only headers actually present are removed: each removal is a host call.
        let present = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        plan.remove_request_headers = header::TRUSTED.into_iter().filter(|n| present(n)).collect();
        let reads_payload = cfg
            .jwt
            .as_ref()
            .is_some_and(|j| j.payload_header == header::JWT_PAYLOAD);
        if !reads_payload && present(header::JWT_PAYLOAD) {
            plan.remove_request_headers.push(header::JWT_PAYLOAD);
        }
        self.credentials = header::CREDENTIALS
            .into_iter()
            .filter(|n| present(n))
            .collect();
        let head = RequestHead::from_headers(headers, input.peer_uri_san, !input.end_of_stream);
        let action = self.ex.on_request_headers(&cfg, &head);
        if !matches!(action, HeadersAction::Deny(_)) {
            self.upstream_headers(&cfg, &mut plan, id, present(header::ACCEPT_ENCODING));
        }
        match action {
            HeadersAction::Deny(d) => self.reply(plan, &d, Vec::new()),
            HeadersAction::Continue => self.forward(&cfg, w, plan, Stage::Headers, input.now_ms),
            HeadersAction::ReadBody { hold } => {
                self.reading_body = true;
                self.held = hold;
                if self.held {
                    let rid = self.ex.request_id.as_deref().unwrap_or("");
                    w.state.hold.begin(self.id, rid, input.now_ms);
                    plan.flow = Flow::Pause;
                }
                plan
            }
        }
    }

    /// Whether the host should read the mTLS peer's URI SAN (only tenants with
    /// `spiffe_ids` use it; the read is a host call).
    pub fn wants_peer_identity(&self) -> bool {
        self.cfg.as_ref().is_some_and(|c| !c.spiffe_ids.is_empty())
    }

    /// Whether the host should read the buffered body for [`Request::on_request_body`].
    pub fn wants_request_body(&self, end_of_stream: bool) -> bool {
        end_of_stream && self.reading_body && !self.local_reply && self.cfg.is_some()
    }

    /// Whether the host should read the cluster Envoy chose (`xds.cluster_name`) for the
    /// body callback: only for a body routed by path while some model pins its clusters.
    pub fn wants_cluster(&self, end_of_stream: bool) -> bool {
        self.wants_request_body(end_of_stream)
            && !self.held
            && self.cfg.as_ref().is_some_and(|c| c.pinned_clusters)
    }

    /// A request body callback.
    pub fn on_request_body(&mut self, w: &mut Worker, input: &RequestBody) -> Plan {
        let Some(cfg) = self.cfg.clone() else {
            return Plan::proceed();
        };
        if !self.reading_body || self.local_reply {
            return Plan::proceed();
        }
        if self.held {
            w.state.hold.body_arrived(self.id);
        }
        if !input.end_of_stream {
            return match self.ex.on_partial_body(&cfg, input.buffered) {
                Some(d) => self.reply(Plan::default(), &d, Vec::new()),
                None => Plan::pause(), // keep buffering
            };
        }
        self.reading_body = false;
        match self
            .ex
            .on_request_body(&cfg, input.body, self.held, input.cluster)
        {
            BodyAction::Deny(d) => self.reply(Plan::default(), &d, Vec::new()),
            BodyAction::Continue(decision) => {
                let plan = Plan {
                    set_request_headers: decision.set_headers,
                    replace_request_body: decision.new_body,
                    clear_route_cache: decision.clear_route_cache,
                    ..Plan::default()
                };
                self.forward(&cfg, w, plan, Stage::Body, input.now_ms)
            }
        }
    }

    /// A held request the root's tick refused (408): record it as this filter's refusal.
    fn check_timed_out(&mut self, w: &mut Worker) {
        if w.state.hold.take_timed_out(self.id) && !self.local_reply {
            self.local_reply = true;
            self.reading_body = false;
            let ms = self.cfg.as_ref().map_or(0, |c| c.routing.hold_timeout_ms);
            self.ex.denial = Some(Denial::body_timeout(ms));
        }
    }

    /// Whether the host should read the response headers: not for the filter's own reply
    /// (its status is known; a reply sent by the root's tick is read like any other).
    pub fn wants_response_headers(&self) -> bool {
        !self.local_reply
    }

    /// The response headers: status, content type and encoding decide how the body is
    /// scanned.
    pub fn on_response_headers(
        &mut self,
        w: &mut Worker,
        head: &ResponseHead,
        end_of_stream: bool,
        now_ms: u64,
    ) -> Plan {
        self.check_timed_out(w);
        let mut plan = Plan::default();
        if let Some(cfg) = self.cfg.clone() {
            // The filter's own reply was not read back: its status is the refusal's.
            let own = ResponseHead {
                status: head
                    .status
                    .or_else(|| self.ex.denial.as_ref().map(|d| d.status)),
                ..*head
            };
            self.ex.on_response_headers(&own, &cfg);
            if !self.local_reply {
                plan.set_response_headers = self.quota.response_headers().to_vec();
                plan.set_response_headers
                    .extend(self.quota.budget.headers());
                if let Some(id) = &self.ex.request_id {
                    plan.set_response_headers
                        .push((header::REQUEST_ID, id.clone()));
                }
            }
        }
        if end_of_stream {
            // A response without a body ends here; no body callback follows.
            self.ex.on_response_chunk(&[], true, now_ms);
        }
        plan
    }

    /// Whether the host should copy response body chunks out for the usage scan.
    pub fn wants_response_body(&self) -> bool {
        !self.local_reply && self.ex.observes_response_body()
    }

    /// A response body chunk passing through (never held back).
    pub fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool, now_ms: u64) -> Plan {
        if !self.local_reply {
            self.ex.on_response_chunk(chunk, end_of_stream, now_ms);
        }
        Plan::proceed()
    }

    /// What [`Request::on_log`] needs read from Envoy; `None` when there is nothing to
    /// log (no configuration, or already logged).
    pub fn log_needs(&self) -> Option<LogNeeds> {
        if self.cfg.is_none() || self.logged {
            return None;
        }
        Some(LogNeeds {
            request_headers: !self.ex.headers_seen,
            response_code: self.ex.response_status.is_none(),
            code_details: self.ex.needs_code_details(),
        })
    }

    /// The end of the stream, reading from `src` what [`Request::log_needs`] says the
    /// records need; `busy_ns` is the time the host spent in this request's callbacks.
    pub fn on_stream_end(&mut self, w: &mut Worker, src: &impl LogSource, busy_ns: u64) -> Plan {
        let Some(needs) = self.log_needs() else {
            return self.on_log(w, &LogInput::nothing());
        };
        let headers = needs
            .request_headers
            .then(|| src.request_headers())
            .flatten();
        let cluster = src.cluster();
        let upstream = src.upstream_address();
        let code = needs
            .response_code
            .then(|| src.response_code())
            .flatten()
            .and_then(|c| u16::try_from(c).ok());
        let details = needs.code_details.then(|| src.code_details()).flatten();
        let input = LogInput {
            now_ms: src.now_ms(),
            response_code: code,
            cluster: cluster.as_deref(),
            upstream_address: upstream.as_deref(),
            request_headers: headers.as_deref(),
            busy_ns,
            code_details: details.as_deref(),
        };
        self.on_log(w, &input)
    }

    /// The end of the stream: both records, the quota settlement, the metrics.
    pub fn on_log(&mut self, w: &mut Worker, input: &LogInput) -> Plan {
        self.check_timed_out(w);
        w.state.hold.end(self.id);
        self.release_slot(w, input.now_ms);
        let Some(cfg) = self.cfg.clone() else {
            return Plan::proceed();
        };
        if self.logged {
            return Plan::proceed();
        }
        self.logged = true;
        self.request_id(w);
        if !self.ex.headers_seen {
            let headers = input.request_headers.unwrap_or(&[]);
            let head = RequestHead::from_headers(headers, None, false).without_headers();
            self.ex.on_unseen_request(&cfg, &head);
        }
        let status = self.ex.response_status.or(input.response_code);
        let end = End {
            now_ms: input.now_ms,
            status: status.filter(|s| *s != 0),
            cluster: input.cluster,
            upstream_address: input.upstream_address,
            code_details: input.code_details,
        };
        let (gateway, audit) = self.ex.records(&cfg, &end);
        let billed = self.ex.billable(&cfg, &end).map(|(u, _)| u);
        let settled = self
            .quota
            .settle(&cfg, w.store, billed.as_ref(), end.now_ms);
        let (mut gateway, mut audit) = (gateway, audit);
        let mode = self.quota_mode(&cfg).label();
        gateway.quota_mode = Some(mode);
        audit.quota_mode = Some(mode);
        let standing = &self.quota.budget.standing;
        if let Some(b) = budget::binding(standing) {
            gateway.budget_period = Some(b.period.label());
            gateway.budget_spent_usd = Some(micros_to_usd(b.spent_micros));
            gateway.budget_remaining_usd = Some(micros_to_usd(b.remaining_micros()));
        }
        let mut finished = self.ex.finished(&gateway, input.busy_ns);
        finished.unreachable = self.quota.unreachable;
        finished.budgets = standing
            .iter()
            .filter(|s| s.model.is_none())
            .map(|s| (s.period.label(), s.limit_micros, s.remaining_micros()))
            .collect();
        Plan {
            filter_state: state_entries(&gateway, &audit, settled, cfg.filter_state),
            metrics: observations(&finished),
            ..Plan::default()
        }
    }

    /// The decided mode, or the one the tenant's quota runs in (the records' `quota_mode`).
    fn quota_mode(&self, cfg: &Config) -> QuotaMode {
        self.quota.mode.unwrap_or_else(|| {
            let g = self
                .ex
                .identity
                .as_ref()
                .and_then(|i| cfg.tenant(i.tenant))
                .and_then(|t| t.quota.as_ref())
                .and_then(|q| q.global.as_ref());
            QuotaMode::configured(g)
        })
    }

    /// The answer of the strict admission the plan's `grpc_call` asked for (or how the
    /// call failed). `inline`: the dispatch itself failed, inside the callback that
    /// paused, so the stream simply goes on (or is refused) instead of being resumed.
    pub fn on_quota_answer(
        &mut self,
        w: &mut Worker,
        answer: Result<rls::Response, CallFailure>,
        now_ms: u64,
        inline: bool,
    ) -> Plan {
        let Some(cfg) = self.cfg.clone() else {
            return Plan::proceed();
        };
        if !self.quota.awaiting() || self.local_reply {
            return Plan::proceed();
        }
        if answer.is_err() && !inline {
            // Once more, under the same report ids: the service counts the call once
            // however often it arrives, so this answer says what the first one would have.
            if let (Some(call), Some(engine)) = (self.quota.retry_call(), &cfg.global) {
                return Plan {
                    grpc_call: Some(strict_grpc_call(engine, call)),
                    flow: Flow::Pause,
                    ..Plan::default()
                };
            }
        }
        match self.quota.on_answer(&cfg, w.store, answer, now_ms) {
            Ok(()) => {
                self.ex.on_forwarded(now_ms);
                Plan {
                    resume: !inline,
                    ..Plan::default()
                }
            }
            Err((d, headers)) => {
                self.release_slot(w, now_ms);
                self.ex.denial = Some(d.clone());
                self.reply(Plan::default(), &d, headers)
            }
        }
    }

    /// The plan's call could not be sent: decided at once as the tenant's policy for an
    /// unreachable service says, and folded into `plan`. `in_callback`: still inside the
    /// callback that pauses (the stream goes on or is refused there); otherwise inside a
    /// call's answer (the paused stream is resumed or refused).
    pub fn on_call_not_sent(
        &mut self,
        w: &mut Worker,
        failure: CallFailure,
        plan: &mut Plan,
        now_ms: u64,
        in_callback: bool,
    ) {
        let now = self.on_quota_answer(w, Err(failure), now_ms, true);
        if in_callback {
            plan.flow = now.flow;
            plan.local_reply = now.local_reply;
        } else {
            *plan = Plan {
                resume: now.local_reply.is_none(),
                ..now
            };
        }
    }

    /// Headers for the upstream: identity, the gateway's request id, no `Accept-Encoding`
    /// on body routes (so usage can be read from the response); the client's credentials
    /// stay at the gateway unless `identity.forward_credentials` is set.
    fn upstream_headers(&self, cfg: &Config, plan: &mut Plan, id: String, encoding: bool) {
        if let (Some(tenant), Some(who)) = (self.ex.tenant_name(cfg), &self.ex.identity) {
            plan.set_request_headers
                .push((header::TENANT, tenant.to_string()));
            plan.set_request_headers
                .push((header::SUBJECT, who.subject.clone()));
        }
        plan.set_request_headers.push((header::REQUEST_ID, id));
        if encoding && self.ex.api.is_some() {
            plan.remove_request_headers.push(header::ACCEPT_ENCODING);
        }
        if !cfg.forward_credentials {
            plan.remove_request_headers
                .extend(self.credentials.iter().copied());
        }
    }

    /// Take the tenant's concurrency slot, or say why not.
    fn take_slot(&mut self, cfg: &Config, w: &mut Worker, now_ms: u64) -> Result<(), Denial> {
        let Some(t) = self.ex.identity.as_ref().and_then(|i| cfg.tenant(i.tenant)) else {
            return Ok(());
        };
        if !t.limits_concurrency() {
            return Ok(());
        }
        let stream = self.ex.stream == Some(true);
        let key = inflight::key(&cfg.shared_data_prefix, &t.name);
        let limits = inflight::Limits {
            max_in_flight: t.max_in_flight,
            max_streams: t.max_streams,
        };
        match inflight::acquire(w.store, &key, w.state.vm, limits, stream, now_ms) {
            Ok(Acquire::Taken) => {
                w.state.took_slot(&key);
                self.slot = Some((key, stream));
                Ok(())
            }
            Ok(Acquire::Full(full)) => {
                let limit = match full {
                    inflight::Full::InFlight => t.max_in_flight,
                    inflight::Full::Streams => t.max_streams,
                };
                Err(Denial::concurrency(full, limit.unwrap_or(0)))
            }
            Err(_) => {
                self.quota.degraded = true;
                match cfg.quota_failure_mode {
                    crate::config::FailureMode::Open => Ok(()),
                    crate::config::FailureMode::Closed => Err(Denial::quota_unavailable()),
                }
            }
        }
    }

    fn release_slot(&mut self, w: &mut Worker, now_ms: u64) {
        if let Some((key, stream)) = self.slot.take() {
            w.state.gave_slot(&key);
            if inflight::release(w.store, &key, w.state.vm, stream, now_ms).is_err() {
                log::warn!("concurrency: a slot could not be released; its lease will expire");
            }
        }
    }

    /// Take the concurrency slot, charge the quota for `stage` and release the request, or
    /// refuse it (429, or 503 when the store failed closed) with `plan`'s request changes
    /// dropped.
    #[allow(clippy::result_large_err)] // the `Refusal` closure; see `quota_step::Refusal`
    fn forward(
        &mut self,
        cfg: &Config,
        w: &mut Worker,
        plan: Plan,
        stage: Stage,
        now_ms: u64,
    ) -> Plan {
        let admitted = self.take_slot(cfg, w, now_ms).map_err(|d| (d, Vec::new()));
        let charged =
            admitted.and_then(|()| self.quota.reserve(cfg, &self.ex, w.store, now_ms, stage));
        match charged {
            Ok(()) => match (self.quota.take_call(), &cfg.global) {
                (Some(call), Some(engine)) => Plan {
                    grpc_call: Some(strict_grpc_call(engine, call)),
                    flow: Flow::Pause,
                    ..plan
                },
                _ => {
                    self.ex.on_forwarded(now_ms);
                    plan
                }
            },
            Err((d, headers)) => {
                self.release_slot(w, now_ms);
                self.ex.denial = Some(d.clone());
                // The header-stage changes (anti-spoofing, identity) were made before the
                // charge; a body-stage decision is dropped with the request.
                let kept = match stage {
                    Stage::Headers => Plan {
                        remove_request_headers: plan.remove_request_headers,
                        set_request_headers: plan.set_request_headers,
                        ..Plan::default()
                    },
                    Stage::Body => Plan::default(),
                };
                self.reply(kept, &d, headers)
            }
        }
    }

    /// Refuse with an OpenAI-shaped body. The response callbacks and `on_log` still run.
    fn reply(&mut self, mut plan: Plan, d: &Denial, extra: Vec<(&'static str, String)>) -> Plan {
        self.local_reply = true;
        // Every refusal is a denial in the audit record.
        if self.ex.denial.is_none() {
            self.ex.denial = Some(d.clone());
        }
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(id) = &self.ex.request_id {
            headers.push((header::REQUEST_ID, id.clone()));
        }
        if d.status == 401 {
            headers.push((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"ai-gateway\"".to_string(),
            ));
        }
        headers.extend(d.headers.iter().cloned());
        headers.extend(extra);
        plan.local_reply = Some(LocalReply {
            status: d.status,
            headers,
            body: d.body(),
        });
        plan.flow = Flow::Pause;
        plan
    }
}

/// A strict admission's call to the rate limit service.
fn strict_grpc_call(engine: &crate::quota::global::Engine, call: (Vec<u8>, String)) -> GrpcCall {
    GrpcCall {
        upstream: engine.grpc_service.clone(),
        message: call.0,
        timeout_ms: engine.spec.timeout_ms,
        metadata: vec![(crate::quota::global::sync::REPORTS_METADATA, call.1)],
    }
}

fn micros_to_usd(m: u64) -> f64 {
    m as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests;
