//! Which metrics a finished request updates, as plain data. The host defines each
//! (name, labels) series once per VM and increments or records it.
//!
//! Labels are encoded in the stat name as `.<label>=.=<value>;.;` and turned back into
//! Prometheus labels by the bootstrap's `stats_tags`. Every label value comes from the
//! configuration (tenants, routes), Envoy's own cluster names, a status code, or a fixed
//! set — anything else becomes `unknown` — so clients cannot create series.

use crate::contract::metric::{self, UNKNOWN};
use crate::record::GatewayRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
    /// Set to the value.
    Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub name: String,
    pub kind: Kind,
    pub value: u64,
}

/// `base.label=.=value;.;.label2=.=value2;.;`
pub fn series_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(base.len() + labels.len() * 32);
    s.push_str(base);
    for (k, v) in labels {
        s.push('.');
        s.push_str(k);
        s.push_str("=.=");
        s.push_str(v);
        s.push_str(";.;");
    }
    s
}

/// Every series base the filter emits, its kind and its label names in emission order.
/// Hosts that must declare metrics up front (Envoy's dynamic modules freeze stat
/// creation after configuration) define these; the Proxy-Wasm host defines series as
/// they come. A test checks that every observation matches an entry.
pub const CATALOGUE: &[(&str, Kind, &[&str])] = &[
    (
        metric::REQUESTS_TOTAL,
        Kind::Counter,
        &["tenant", "route", "model_route", "status"],
    ),
    (
        metric::REQUEST_DURATION_MS,
        Kind::Histogram,
        &["tenant", "route", "model_route"],
    ),
    (
        metric::UPSTREAM_DURATION_MS,
        Kind::Histogram,
        &["tenant", "route", "model_route"],
    ),
    (metric::FILTER_DURATION_US, Kind::Histogram, &["route"]),
    (
        metric::TTFT_MS,
        Kind::Histogram,
        &["tenant", "route", "model_route"],
    ),
    (
        metric::TOKENS_TOTAL,
        Kind::Counter,
        &["tenant", "model_route", "type"],
    ),
    (
        metric::COST_USD_MICROS_TOTAL,
        Kind::Counter,
        &["tenant", "model_route"],
    ),
    (
        metric::QUOTA_REJECTIONS_TOTAL,
        Kind::Counter,
        &["tenant", "kind"],
    ),
    (metric::AUTH_DENIALS_TOTAL, Kind::Counter, &["reason"]),
    (
        metric::BUDGET_LIMIT_USD_MICROS,
        Kind::Gauge,
        &["tenant", "period"],
    ),
    (
        metric::BUDGET_REMAINING_USD_MICROS,
        Kind::Gauge,
        &["tenant", "period"],
    ),
    (
        metric::QUOTA_DEGRADED_TOTAL,
        Kind::Counter,
        &["tenant", "mode"],
    ),
    (
        metric::GEN_AI_TOKEN_USAGE,
        Kind::Histogram,
        &[
            "gen_ai_token_type",
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
        ],
    ),
    (
        metric::GEN_AI_REQUEST_DURATION_MS,
        Kind::Histogram,
        &[
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
        ],
    ),
    (
        metric::GEN_AI_TTFT_MS,
        Kind::Histogram,
        &[
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
        ],
    ),
    (metric::GLOBAL_SYNCS_TOTAL, Kind::Counter, &["result"]),
];

/// The inverse of [`series_name`]: the base and the (label, value) pairs, or `None` for
/// a name not in that shape.
pub fn split_series(name: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let (base, mut rest) = match name.find('.') {
        Some(i) => (name.get(..i)?, name.get(i..)?),
        None => return Some((name, Vec::new())),
    };
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let body = rest.strip_prefix('.')?;
        let (label, after) = body.split_once("=.=")?;
        let (value, tail) = after.split_once(";.;")?;
        labels.push((label, value));
        rest = tail;
    }
    Some((base, labels))
}

fn counter(base: &str, labels: &[(&str, &str)], value: u64) -> Observation {
    Observation {
        name: series_name(base, labels),
        kind: Kind::Counter,
        value,
    }
}

fn gauge(base: &str, labels: &[(&str, &str)], value: u64) -> Observation {
    Observation {
        name: series_name(base, labels),
        kind: Kind::Gauge,
        value,
    }
}

fn histogram(base: &str, labels: &[(&str, &str)], value: u64) -> Observation {
    Observation {
        name: series_name(base, labels),
        kind: Kind::Histogram,
        value,
    }
}

/// Status codes are bounded by HTTP (100-599); anything else is `unknown`.
fn status_label(status: Option<u16>) -> String {
    match status {
        Some(s) if (100..600).contains(&s) => s.to_string(),
        _ => UNKNOWN.to_string(),
    }
}

/// A finished request, as the metrics see it.
#[derive(Debug, Clone)]
pub struct Finished<'a> {
    pub record: &'a GatewayRecord,
    /// From forwarding to the end of the response.
    pub upstream_ms: Option<u64>,
    /// The audit reason of a refusal.
    pub denial_reason: Option<&'static str>,
    /// Time spent inside the filter's callbacks.
    pub busy_ns: u64,
    /// The rate limit service was unreachable: `local_fallback` or `closed`.
    pub unreachable: Option<&'static str>,
    /// The tenant-wide budgets after settlement: (period, limit, remaining), micro-USD.
    pub budgets: Vec<(&'static str, u64, u64)>,
    /// OpenTelemetry's `gen_ai.operation.name` (`chat`, `text_completion`, `embeddings`),
    /// for API routes.
    pub operation: Option<&'static str>,
    /// The requested model, when it is a configured one (bounded labels).
    pub request_model: Option<&'a str>,
}

/// Everything one finished request contributes.
pub fn observations(f: &Finished) -> Vec<Observation> {
    let (rec, busy_ns) = (f.record, f.busy_ns);
    let tenant = rec.tenant.as_deref().unwrap_or(UNKNOWN);
    let route = rec.route.as_deref().unwrap_or(UNKNOWN);
    let model_route = rec.model_route.as_deref().unwrap_or(UNKNOWN);
    let status = status_label(rec.http_status);
    let trm = [
        ("tenant", tenant),
        ("route", route),
        ("model_route", model_route),
    ];

    let mut out = Vec::with_capacity(12);
    out.push(counter(
        metric::REQUESTS_TOTAL,
        &[
            ("tenant", tenant),
            ("route", route),
            ("model_route", model_route),
            ("status", &status),
        ],
        1,
    ));
    if let Some(ms) = rec.latency_ms {
        out.push(histogram(metric::REQUEST_DURATION_MS, &trm, ms));
    }
    if let Some(ms) = f.upstream_ms {
        out.push(histogram(metric::UPSTREAM_DURATION_MS, &trm, ms));
    }
    out.push(histogram(
        metric::FILTER_DURATION_US,
        &[("route", route)],
        busy_ns / 1000,
    ));
    if let Some(ttft) = rec.ttft_ms {
        out.push(histogram(metric::TTFT_MS, &trm, ttft));
    }
    let tm = [("tenant", tenant), ("model_route", model_route)];
    if let Some(p) = rec.prompt_tokens.filter(|p| *p > 0) {
        out.push(counter(
            metric::TOKENS_TOTAL,
            &[tm[0], tm[1], ("type", "prompt")],
            p,
        ));
    }
    if let Some(c) = rec.completion_tokens.filter(|c| *c > 0) {
        out.push(counter(
            metric::TOKENS_TOTAL,
            &[tm[0], tm[1], ("type", "completion")],
            c,
        ));
    }
    if let Some(micros) = rec
        .estimated_cost_usd
        .map(crate::record::cost::to_micros)
        .filter(|m| *m > 0)
    {
        out.push(counter(metric::COST_USD_MICROS_TOTAL, &tm, micros));
    }
    out.extend(f.denial_reason.and_then(|r| denial_counter(r, tenant)));
    out.extend(gen_ai(f, rec));
    for (period, limit, remaining) in &f.budgets {
        let labels = [("tenant", tenant), ("period", *period)];
        out.push(gauge(metric::BUDGET_LIMIT_USD_MICROS, &labels, *limit));
        out.push(gauge(
            metric::BUDGET_REMAINING_USD_MICROS,
            &labels,
            *remaining,
        ));
    }
    if let Some(mode) = f.unreachable {
        out.push(counter(
            metric::QUOTA_DEGRADED_TOTAL,
            &[("tenant", tenant), ("mode", mode)],
            1,
        ));
    }
    out
}

/// The OpenTelemetry GenAI semantic-convention instruments (docs/contract.md), beside
/// the tutorial's: token usage by type, request duration and time to first token, with
/// `gen_ai.*` attributes as labels. Envoy's histograms take integers, so the durations
/// are milliseconds, the unit in the name (OTel's instruments are in seconds).
fn gen_ai(f: &Finished, rec: &GatewayRecord) -> Vec<Observation> {
    let Some(operation) = f.operation else {
        return Vec::new();
    };
    let model = f.request_model.unwrap_or(UNKNOWN);
    let attrs = [
        ("gen_ai_operation_name", operation),
        ("gen_ai_provider_name", metric::GEN_AI_PROVIDER),
        ("gen_ai_request_model", model),
    ];
    let mut out = Vec::with_capacity(4);
    // (value, token type): the token types are label values, not label names.
    for (tokens, kind) in [
        (rec.prompt_tokens, "input"),
        (rec.completion_tokens, "output"),
    ] {
        if let Some(n) = tokens.filter(|_| rec.http_status.is_some_and(|s| s < 400)) {
            let [a, b, c] = attrs;
            let labels = [("gen_ai_token_type", kind), a, b, c];
            out.push(histogram(metric::GEN_AI_TOKEN_USAGE, &labels, n));
        }
    }
    if let Some(ms) = rec.latency_ms {
        out.push(histogram(metric::GEN_AI_REQUEST_DURATION_MS, &attrs, ms));
    }
    if let Some(ms) = rec.ttft_ms {
        out.push(histogram(metric::GEN_AI_TTFT_MS, &attrs, ms));
    }
    out
}

/// One sync of this process with the rate limit service.
pub fn sync_observation(ok: bool) -> Observation {
    let result = if ok { "ok" } else { "failed" };
    counter(metric::GLOBAL_SYNCS_TOTAL, &[("result", result)], 1)
}

/// The refusal counters: quota rejections by bucket kind (`requests`, `tokens`, and the
/// concurrency limits `in_flight`, `streams`), auth denials by reason.
fn denial_counter(reason: &'static str, tenant: &str) -> Option<Observation> {
    match reason {
        "quota_requests"
        | "quota_tokens"
        | "concurrency_in_flight"
        | "concurrency_streams"
        | "budget_exceeded" => {
            let kind = match reason {
                "quota_requests" => "requests",
                "quota_tokens" => "tokens",
                "concurrency_in_flight" => "in_flight",
                "budget_exceeded" => "budget",
                _ => "streams",
            };
            Some(counter(
                metric::QUOTA_REJECTIONS_TOTAL,
                &[("tenant", tenant), ("kind", kind)],
                1,
            ))
        }
        "missing_credentials"
        | "invalid_credentials"
        | "conflicting_credentials"
        | "host_mismatch"
        | "route_forbidden"
        | "model_forbidden" => Some(counter(
            metric::AUTH_DENIALS_TOTAL,
            &[("reason", reason)],
            1,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
