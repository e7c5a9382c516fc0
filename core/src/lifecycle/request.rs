//! [`Request`]: one HTTP request's lifecycle, owned by the core. The host hands each
//! callback's input to it and carries out the returned [`Plan`]; every path ends in
//! [`Request::on_log`], which writes both records, settles the quota and observes the
//! metrics, so every request (allowed, denied, failed or aborted) leaves exactly one
//! gateway record and one audit record.

use std::sync::Arc;

use super::exchange::{BodyAction, End, Exchange, HeadersAction, RequestHead};
use super::hold::HoldWatch;
use super::plan::{Flow, LocalReply, Plan};
use super::quota_step::{QuotaState, Stage};
use crate::config::Config;
use crate::contract::header;
use crate::deny::Denial;
use crate::metrics::observations;
use crate::quota::SharedStore;
use crate::record::state_entries;

/// The per-worker state a request touches: the quota store and the hold watch.
pub struct Worker<'a> {
    pub store: &'a dyn SharedStore,
    pub hold: &'a mut HoldWatch,
}

/// What Envoy offers with the request headers.
pub struct RequestHeaders<'a> {
    /// `None` when the host could not read them.
    pub headers: Option<&'a [(String, String)]>,
    /// The mTLS peer certificate's URI SAN, if any.
    pub peer_uri_san: Option<&'a str>,
    pub end_of_stream: bool,
    pub now_ms: u64,
}

/// What the host must read for [`Request::on_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogNeeds {
    /// A filter before this one answered: the request headers never reached the filter.
    pub request_headers: bool,
    /// No response headers were seen: Envoy's response code is needed.
    pub response_code: bool,
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
        }
    }
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
            logged: false,
        }
    }

    /// Identity, authorization and the quota for body-less routes; decides whether the
    /// body is read and whether the headers are held until it is.
    pub fn on_request_headers(&mut self, w: &mut Worker, input: &RequestHeaders) -> Plan {
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
        self.credentials = header::CREDENTIALS
            .into_iter()
            .filter(|n| present(n))
            .collect();
        let head = RequestHead::from_headers(headers, input.peer_uri_san, !input.end_of_stream);
        match self.ex.on_request_headers(&cfg, &head) {
            HeadersAction::Deny(d) => self.reply(plan, &d, Vec::new()),
            HeadersAction::Continue => {
                self.identity_headers(&cfg, &mut plan);
                self.forward(&cfg, w.store, plan, Stage::Headers, input.now_ms)
            }
            HeadersAction::ReadBody { hold } => {
                self.identity_headers(&cfg, &mut plan);
                self.reading_body = true;
                // On a worker where holding proved impossible, route by path at once.
                self.held = hold && w.hold.should_hold();
                if self.held {
                    w.hold.begin(self.id, input.now_ms);
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

    /// A request body callback. `buffered` is the size Envoy holds so far; `body` is the
    /// whole body when [`Request::wants_request_body`] said so, else empty.
    pub fn on_request_body(
        &mut self,
        w: &mut Worker,
        buffered: usize,
        end_of_stream: bool,
        body: &[u8],
        now_ms: u64,
    ) -> Plan {
        let Some(cfg) = self.cfg.clone() else {
            return Plan::proceed();
        };
        if !self.reading_body || self.local_reply {
            return Plan::proceed();
        }
        if self.held && w.hold.body_arrived(self.id) {
            // Rescued by the hold watch: the headers already went upstream unchanged.
            self.held = false;
        }
        if !end_of_stream {
            return match self.ex.on_partial_body(&cfg, buffered) {
                Some(d) => self.reply(Plan::default(), &d, Vec::new()),
                None => Plan::pause(), // keep buffering
            };
        }
        self.reading_body = false;
        match self.ex.on_request_body(&cfg, body, self.held) {
            BodyAction::Deny(d) => self.reply(Plan::default(), &d, Vec::new()),
            BodyAction::Continue(decision) => {
                let plan = Plan {
                    set_request_headers: decision.set_headers,
                    replace_request_body: decision.new_body,
                    clear_route_cache: decision.clear_route_cache,
                    ..Plan::default()
                };
                self.forward(&cfg, w.store, plan, Stage::Body, now_ms)
            }
        }
    }

    /// The response headers: status and content type decide how the body is scanned.
    pub fn on_response_headers(
        &mut self,
        status: Option<u16>,
        content_type: Option<&str>,
        end_of_stream: bool,
        now_ms: u64,
    ) -> Plan {
        let mut plan = Plan::default();
        if let Some(cfg) = self.cfg.clone() {
            self.ex.on_response_headers(status, content_type, &cfg);
            if !self.local_reply {
                plan.set_response_headers = self.quota.response_headers().to_vec();
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
        })
    }

    /// The end of the stream: both records, the quota settlement, the metrics.
    pub fn on_log(&mut self, w: &mut Worker, input: &LogInput) -> Plan {
        w.hold.end(self.id);
        let Some(cfg) = self.cfg.clone() else {
            return Plan::proceed();
        };
        if self.logged {
            return Plan::proceed();
        }
        self.logged = true;
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
        };
        let (gateway, audit) = self.ex.records(&cfg, &end);
        let served = self.ex.denial.is_none() && end.cluster.is_some();
        let settled = self
            .quota
            .settle(&self.ex, w.store, end.now_ms, gateway.http_status, served);
        Plan {
            filter_state: state_entries(&gateway, &audit, settled, cfg.filter_state),
            metrics: observations(&self.ex.finished(&gateway, input.busy_ns)),
            ..Plan::default()
        }
    }

    /// Identity headers for the upstream; the client's credentials stay at the gateway
    /// unless `identity.forward_credentials` is set.
    fn identity_headers(&self, cfg: &Config, plan: &mut Plan) {
        if let (Some(tenant), Some(id)) = (self.ex.tenant_name(cfg), &self.ex.identity) {
            plan.set_request_headers
                .push((header::TENANT, tenant.to_string()));
            plan.set_request_headers
                .push((header::SUBJECT, id.subject.clone()));
        }
        if !cfg.forward_credentials {
            plan.remove_request_headers
                .extend(self.credentials.iter().copied());
        }
    }

    /// Charge the quota for `stage` and release the request, or refuse it (429, or 503
    /// when the store failed closed) with `plan`'s request changes dropped.
    fn forward(
        &mut self,
        cfg: &Config,
        store: &dyn SharedStore,
        plan: Plan,
        stage: Stage,
        now_ms: u64,
    ) -> Plan {
        match self.quota.reserve(cfg, &self.ex, store, now_ms, stage) {
            Ok(()) => {
                self.ex.on_forwarded(now_ms);
                plan
            }
            Err((d, headers)) => {
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
        if d.status == 401 {
            headers.push((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"ai-gateway\"".to_string(),
            ));
        }
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

#[cfg(test)]
mod tests;
