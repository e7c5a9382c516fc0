//! Per-request HTTP context. Each callback reads what Envoy offers, asks the core
//! (`Exchange`) what to do, and does it. Every path ends in `on_log`, which writes the
//! gateway and audit records, settles the quota and updates metrics, so every request —
//! allowed, denied, failed or aborted — leaves exactly one record of each.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi::{self, REQUEST_BODY, REQUEST_HEADERS, RESPONSE_BODY, RESPONSE_HEADERS};
use super::{hold, metrics, store::HostStore};
use crate::config::Config;
use crate::contract::header;
use crate::deny::Denial;
use crate::exchange::{BodyAction, End, Exchange, HeadersAction, RequestHead};
use crate::quota_flow::{QuotaState, Stage};
use crate::record::state_entries;

pub struct Http {
    id: u32,
    cfg: Option<Rc<Config>>,
    ex: Exchange,
    /// Request headers are held back until the body is read.
    held: bool,
    reading_body: bool,
    local_reply: bool,
    quota: QuotaState,
    /// Nanoseconds spent inside this filter's callbacks (gateway-side cost).
    busy_ns: u64,
    /// Credential headers the client sent (removed before forwarding).
    credential_headers: Vec<&'static str>,
    /// Wall clock at the start of the current callback, ms.
    now_ms: u64,
}

impl Http {
    pub fn new(id: u32, cfg: Option<Rc<Config>>) -> Http {
        let now = abi::now_ms();
        Http {
            id,
            cfg,
            ex: Exchange::new(now),
            held: false,
            reading_body: false,
            local_reply: false,
            quota: QuotaState::default(),
            busy_ns: 0,
            credential_headers: Vec::new(),
            now_ms: now,
        }
    }

    /// Refuse with an OpenAI-shaped body. The response callbacks and `on_log` still run.
    fn reply(&mut self, d: &Denial, extra: &[(&'static str, String)]) -> Action {
        self.local_reply = true;
        // Every refusal is a denial in the audit record, including the host-level ones.
        if self.ex.denial.is_none() {
            self.ex.denial = Some(d.clone());
        }
        let body = d.body();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if d.status == 401 {
            headers.push((header::WWW_AUTHENTICATE, "Bearer realm=\"ai-gateway\""));
        }
        for (k, v) in extra {
            headers.push((k, v.as_str()));
        }
        if let Err(e) = abi::send_local_response(u32::from(d.status), &headers, body.as_bytes()) {
            log::warn!("local reply {} failed (host status {})", d.status, e.0);
        }
        Action::Pause
    }

    fn set_identity_headers(&self, cfg: &Config) {
        if let (Some(tenant), Some(id)) = (self.ex.tenant_name(cfg), &self.ex.identity) {
            let _ = abi::set_header(REQUEST_HEADERS, header::TENANT, tenant);
            let _ = abi::set_header(REQUEST_HEADERS, header::SUBJECT, &id.subject);
        }
        if !cfg.forward_credentials {
            // Gateway credentials stay at the gateway (see `identity.forward_credentials`).
            for name in &self.credential_headers {
                let _ = abi::remove_header(REQUEST_HEADERS, name);
            }
        }
    }

    /// Charge the quota for this stage; a refusal becomes a 429 (or 503 when closed).
    fn charge(&mut self, cfg: &Config, stage: Stage) -> Option<Action> {
        let store = HostStore;
        let now = self.now_ms;
        match self.quota.reserve(cfg, &self.ex, &store, now, stage) {
            Ok(()) => None,
            Err((d, headers)) => {
                self.ex.denial = Some(d.clone());
                Some(self.reply(&d, &headers))
            }
        }
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let t0 = abi::now_nanos();
        // One clock read serves the whole callback (each read is a host call).
        self.now_ms = t0 / 1_000_000;
        let out = f(self);
        self.busy_ns = self
            .busy_ns
            .saturating_add(abi::now_nanos().saturating_sub(t0));
        out
    }

    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(cfg) = self.cfg.clone() else {
            return self.reply(&Denial::quota_unavailable(), &[]);
        };
        let headers = match abi::get_headers(REQUEST_HEADERS) {
            Ok(h) => h,
            Err(_) => return self.reply(&Denial::invalid_credentials(), &[]),
        };
        // Anti-spoofing: nothing the client sends may pose as the filter's own headers.
        // Only headers actually present are removed: each host call costs a VM exit.
        let present = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        for name in header::TRUSTED {
            if present(name) {
                let _ = abi::remove_header(REQUEST_HEADERS, name);
            }
        }
        self.credential_headers = header::CREDENTIALS
            .iter()
            .copied()
            .filter(|name| present(name))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.as_str())
        };
        let peer = abi::get_property_string(&["connection", "uri_san_peer_certificate"]);
        let head = RequestHead {
            headers: &headers,
            authority: get(":authority").unwrap_or(""),
            path: get(":path").unwrap_or(""),
            method: get(":method").unwrap_or(""),
            request_id: get(header::REQUEST_ID),
            peer_uri_san: peer.as_deref(),
            has_body: !end_of_stream,
        };
        match self.ex.on_request_headers(&cfg, &head) {
            HeadersAction::Deny(d) => self.reply(&d, &[]),
            HeadersAction::Continue => {
                self.set_identity_headers(&cfg);
                if let Some(a) = self.charge(&cfg, Stage::Headers) {
                    return a;
                }
                self.ex.on_forwarded(self.now_ms);
                Action::Continue
            }
            HeadersAction::ReadBody { hold } => {
                self.set_identity_headers(&cfg);
                self.reading_body = true;
                // On a worker where holding proved impossible, route by path at once.
                self.held = hold && hold::should_hold();
                if self.held {
                    hold::begin(self.id, self.now_ms);
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
        }
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.cfg.clone() else {
            return Action::Continue;
        };
        if !self.reading_body || self.local_reply {
            return Action::Continue;
        }
        if self.held && hold::body_arrived(self.id) {
            // Rescued by the hold watch: the headers already went upstream unchanged.
            self.held = false;
        }
        if !end_of_stream {
            if let Some(d) = self.ex.on_partial_body(&cfg, body_size) {
                return self.reply(&d, &[]);
            }
            return Action::Pause; // keep buffering
        }
        self.reading_body = false;
        let body = abi::get_buffer(REQUEST_BODY, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match self.ex.on_request_body(&cfg, &body, self.held) {
            BodyAction::Deny(d) => self.reply(&d, &[]),
            BodyAction::Continue(decision) => {
                if let Some(a) = self.charge(&cfg, Stage::Body) {
                    return a;
                }
                for (name, value) in &decision.set_headers {
                    let _ = abi::set_header(REQUEST_HEADERS, name, value);
                }
                if let Some(new_body) = &decision.new_body {
                    if abi::set_buffer(REQUEST_BODY, 0, body_size, new_body).is_err() {
                        log::warn!("could not replace the request body");
                    }
                }
                if decision.clear_route_cache {
                    // Envoy re-selects the route now that the model header is set.
                    if let Err(e) = abi::call_foreign_function("clear_route_cache", &[]) {
                        log::warn!("clear_route_cache unavailable (host status {})", e.0);
                    }
                }
                self.ex.on_forwarded(self.now_ms);
                Action::Continue
            }
        }
    }

    fn response_headers(&mut self) -> Action {
        let Some(cfg) = self.cfg.clone() else {
            return Action::Continue;
        };
        let status = abi::get_header(RESPONSE_HEADERS, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let ct = abi::get_header(RESPONSE_HEADERS, "content-type")
            .ok()
            .flatten();
        self.ex.on_response_headers(status, ct.as_deref(), &cfg);
        if !self.local_reply {
            for (name, value) in self.quota.response_headers() {
                let _ = abi::set_header(RESPONSE_HEADERS, name, value);
            }
        }
        Action::Continue
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.local_reply {
            return Action::Continue;
        }
        if !self.ex.observes_response_body() {
            self.ex.on_response_chunk(&[], end_of_stream, self.now_ms);
            return Action::Continue;
        }
        // The chunk is observed, never held: streams reach the client as they arrive.
        let chunk = abi::get_buffer(RESPONSE_BODY, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.ex
            .on_response_chunk(&chunk, end_of_stream, self.now_ms);
        Action::Continue
    }

    fn finish(&mut self) {
        hold::end(self.id);
        let Some(cfg) = self.cfg.clone() else {
            return;
        };
        if self.ex.finished {
            return;
        }
        self.ex.finished = true;
        if !self.ex.headers_seen {
            // A filter before this one (or Envoy) answered: still exactly one record.
            let headers = abi::get_headers(REQUEST_HEADERS).unwrap_or_default();
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .map(|(_, v)| v.as_str())
            };
            let head = RequestHead {
                headers: &[],
                authority: get(":authority").unwrap_or(""),
                path: get(":path").unwrap_or(""),
                method: get(":method").unwrap_or(""),
                request_id: get(header::REQUEST_ID),
                peer_uri_san: None,
                has_body: false,
            };
            self.ex.on_unseen_request(&cfg, &head);
        }
        let cluster = abi::get_property_string(&["xds", "cluster_name"]);
        let upstream = abi::get_property_string(&["upstream", "address"]);
        // The status seen in the response headers saves a property read.
        let status = self.ex.response_status.or_else(|| {
            abi::get_property_u64(&["response", "code"]).and_then(|c| u16::try_from(c).ok())
        });
        let end = End {
            now_ms: abi::now_ms(),
            status: status.filter(|s| *s != 0),
            cluster: cluster.as_deref(),
            upstream_address: upstream.as_deref(),
        };
        let (gateway, audit) = self.ex.records(&cfg, &end);
        let served = self.ex.denial.is_none() && end.cluster.is_some();
        let settled = self.quota.settle(
            &self.ex,
            &HostStore,
            end.now_ms,
            gateway.http_status,
            served,
        );
        // Filter state for access logs (`%FILTER_STATE(wasm.ai.<key>:PLAIN)%`).
        for (key, value) in state_entries(&gateway, &audit, settled, cfg.filter_state) {
            if let Err(e) = abi::set_property(&[key], value.as_bytes()) {
                log::debug!("filter state {key} not written (host status {})", e.0);
            }
        }
        metrics::record(&cfg, &self.ex, &gateway, self.busy_ns);
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.timed(|s| s.request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.timed(|s| s.request_body(body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.timed(|s| {
            let action = s.response_headers();
            if end_of_stream {
                // A response without a body ends here; no body callback follows.
                s.ex.on_response_chunk(&[], true, s.now_ms);
            }
            action
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.timed(|s| s.response_body(body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.finish();
    }
}
