//! The records' JSON, written by hand into one buffer: the same bytes `serde_json` writes
//! for the derived `Serialize` (the tests hold the two equal), without its per-byte escape
//! table for values that need no escaping, which all of them are but for rare ones.

use super::{AuditRecord, GatewayRecord};

/// A JSON object under construction.
struct Object {
    out: String,
    empty: bool,
}

impl Object {
    fn with_capacity(n: usize) -> Object {
        let mut out = String::with_capacity(n);
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_str(&mut self.out, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    fn opt_u64(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => {
                self.key(key);
                push_u64(&mut self.out, v);
            }
            None => self.null(key),
        }
    }

    fn opt_bool(&mut self, key: &str, value: Option<bool>) {
        match value {
            Some(v) => self.bool(key, v),
            None => self.null(key),
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn opt_f64(&mut self, key: &str, value: Option<f64>) {
        self.key(key);
        // serde_json's own float formatting (and `null` for non-finite values).
        let text = value.and_then(|v| serde_json::to_string(&v).ok());
        self.out.push_str(text.as_deref().unwrap_or("null"));
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Decimal digits without the formatting machinery.
fn push_u64(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || start == 0 {
            break;
        }
    }
    for d in digits.get(start..).unwrap_or_default() {
        out.push(char::from(*d));
    }
}

/// A JSON string: copied as is when nothing in it needs escaping, else escaped by
/// serde_json.
fn push_str(out: &mut String, s: &str) {
    if !crate::ascii::needs_json_escape(s.as_bytes()) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "null".to_string()));
    }
}

pub fn gateway(g: &GatewayRecord) -> String {
    let mut o = Object::with_capacity(640);
    o.str("timestamp", &g.timestamp);
    o.opt_str("request_id", g.request_id.as_deref());
    o.opt_str("client_request_id", g.client_request_id.as_deref());
    o.opt_str("tenant", g.tenant.as_deref());
    o.opt_str("hostname", g.hostname.as_deref());
    o.opt_str("route", g.route.as_deref());
    o.opt_str("model_route", g.model_route.as_deref());
    o.opt_bool("stream", g.stream);
    o.opt_u64("http_status", g.http_status.map(u64::from));
    o.opt_u64("latency_ms", g.latency_ms);
    o.opt_u64("ttft_ms", g.ttft_ms);
    o.opt_u64("prompt_tokens", g.prompt_tokens);
    o.opt_u64("completion_tokens", g.completion_tokens);
    o.opt_f64("estimated_cost_usd", g.estimated_cost_usd);
    o.opt_str("gateway_backend", g.gateway_backend.as_deref());
    o.opt_str("model", g.model.as_deref());
    o.opt_str("traffic_class", g.traffic_class);
    o.opt_bool("usage_estimated", g.usage_estimated);
    o.opt_str("prompt_sha256", g.prompt_sha256.as_deref());
    o.opt_str("prompt_blake3", g.prompt_blake3.as_deref());
    o.opt_bool("stream_complete", g.stream_complete);
    o.opt_str("quota_mode", g.quota_mode);
    o.opt_str("budget_period", g.budget_period);
    o.opt_f64("budget_spent_usd", g.budget_spent_usd);
    o.opt_f64("budget_remaining_usd", g.budget_remaining_usd);
    if let Some(p) = &g.prompt_preview {
        o.str("prompt_preview", p);
    }
    o.finish()
}

pub fn audit(a: &AuditRecord) -> String {
    let mut o = Object::with_capacity(384);
    o.str("timestamp", &a.timestamp);
    o.opt_str("tenant", a.tenant.as_deref());
    o.opt_str("subject", a.subject.as_deref());
    o.opt_str("route", a.route.as_deref());
    o.opt_str("model_route", a.model_route.as_deref());
    o.str("decision", a.decision);
    o.opt_str("request_id", a.request_id.as_deref());
    o.opt_str("client_request_id", a.client_request_id.as_deref());
    o.bool("sensitive_payload_logged", a.sensitive_payload_logged);
    if let Some(r) = a.reason {
        o.str("reason", r);
    }
    o.opt_str("hostname", a.hostname.as_deref());
    o.opt_str("auth_source", a.auth_source);
    o.opt_u64("http_status", a.http_status.map(u64::from));
    o.opt_str("quota_mode", a.quota_mode);
    o.finish()
}

#[cfg(test)]
mod tests;
