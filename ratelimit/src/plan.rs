//! One ShouldRateLimit call, without I/O: the request becomes a list of counter operations
//! (run by the store in one atomic script), and the counters' values after them become the
//! response.
//!
//! Per descriptor, in the order of the request:
//!
//! - its hits are the descriptor's own `hits_addend` when set (an explicit 0 is a pure
//!   read), else the request's `hits_addend`, where 0 means 1;
//! - a descriptor with a limit (configured, or its `limit` override) is a counter of the
//!   current window of that limit's unit: the hits are added to it (`Charge`), or it is
//!   only read (`Read`, hits 0). It is OVER_LIMIT when the value after that exceeds
//!   `requests_per_unit`, as envoyproxy/ratelimit decides (counters are incremented even
//!   when over the limit);
//! - a descriptor with no limit, or `unlimited: true`, is OK and touches nothing;
//! - the refund extension: a descriptor whose last entry is (`ai_gateway_refund`, `true`)
//!   takes its hits back (`Refund`, clamped at 0) from the counter of the descriptor made
//!   of its other entries, and is OK. A descriptor with `is_negative_hits` (RLS v3) is a
//!   refund of its own counter, the same way.
//!
//! The response is OVER_LIMIT when any descriptor is.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;

use crate::config::{Config, Limit};
use crate::window::{Unit, Window};

/// The extension's marker entry (see the module documentation and docs/ratelimit.md).
pub const REFUND_KEY: &str = "ai_gateway_refund";
pub const REFUND_VALUE: &str = "true";

/// Hits a descriptor can add or take back at once. Larger hits exceed any limit
/// (`requests_per_unit` is a u32) all the same, and counters stay exact in the script's
/// Lua numbers (doubles, exact to 2^53).
pub const MAX_HITS: u64 = 1 << 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Charge,
    Read,
    Refund,
}

/// One counter operation of the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: String,
    pub kind: OpKind,
    pub hits: u64,
    pub ttl_seconds: u64,
    /// A charge or refund with a report id (the `x-ai-gateway-reports` metadata) runs at
    /// most once per id: this key marks it done, and a second call with it only reads.
    pub once: Option<String>,
}

/// The call metadata that gives descriptors report ids: comma-separated, one entry per
/// descriptor in order, empty for a descriptor without one (docs/ratelimit.md).
pub const REPORTS_METADATA: &str = "x-ai-gateway-reports";

/// The report ids of `value` (the metadata), per descriptor index; ids that are not 1 to
/// 32 hex digits are ignored.
pub fn report_ids(value: Option<&str>) -> Vec<Option<String>> {
    let Some(v) = value else {
        return Vec::new();
    };
    v.split(',')
        .map(|id| {
            let id = id.trim();
            let ok = (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| id.to_ascii_lowercase())
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// No limit applies: OK, nothing stored.
    NoLimit,
    /// `unlimited: true`.
    Unlimited,
    /// The value of `ops[op]` decides.
    Counter {
        op: usize,
        requests_per_unit: u32,
        unit: Unit,
        name: String,
        until_reset_ms: u64,
    },
}

/// What a request needs from the store, and how to answer once it is done.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    slots: Vec<Slot>,
}

/// A request the protocol refuses (gRPC INVALID_ARGUMENT).
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

/// The operations of a request at `now_ms` (Unix milliseconds).
pub fn plan(
    config: &Config,
    prefix: &str,
    request: &RateLimitRequest,
    now_ms: u64,
    reports: &[Option<String>],
) -> Result<Plan, Invalid> {
    if request.domain.is_empty() {
        return Err(Invalid("domain must not be empty".into()));
    }
    if request.descriptors.is_empty() {
        return Err(Invalid("the descriptor list must not be empty".into()));
    }
    let request_hits = u64::from(request.hits_addend.max(1));
    let mut plan = Plan {
        ops: Vec::new(),
        slots: Vec::with_capacity(request.descriptors.len()),
    };
    for (i, d) in request.descriptors.iter().enumerate() {
        let ctx = Ctx {
            config,
            prefix,
            domain: &request.domain,
            request_hits,
            now_ms,
            next_op: plan.ops.len(),
        };
        let (slot, op) =
            plan_descriptor(&ctx, d).map_err(|e| Invalid(format!("descriptors[{i}]: {e}")))?;
        let report = reports.get(i).cloned().flatten();
        plan.ops.extend(op.map(|mut op| {
            if op.kind != OpKind::Read {
                op.once = report.map(|id| format!("{prefix}report|{id}"));
            }
            op
        }));
        plan.slots.push(slot);
    }
    Ok(plan)
}

struct Ctx<'a> {
    config: &'a Config,
    prefix: &'a str,
    domain: &'a str,
    request_hits: u64,
    now_ms: u64,
    /// The index the descriptor's operation gets, if it has one.
    next_op: usize,
}

fn plan_descriptor(ctx: &Ctx, d: &RateLimitDescriptor) -> Result<(Slot, Option<Op>), String> {
    let (config, domain) = (ctx.config, ctx.domain);
    let hits = d
        .hits_addend
        .as_ref()
        .map_or(ctx.request_hits, |h| h.value)
        .min(MAX_HITS);
    let entries = &d.entries;
    let (counted, refund) = match entries.split_last() {
        Some((last, rest)) if last.key == REFUND_KEY && last.value == REFUND_VALUE => (rest, true),
        _ => (entries.as_slice(), d.is_negative_hits),
    };
    let limit = match (&d.limit, config.has_domain(domain)) {
        (_, false) => None,
        (Some(o), true) => {
            let unit = Unit::from_proto(o.unit)
                .ok_or_else(|| format!("limit override unit {} is not implemented", o.unit))?;
            Some(Limit::Limited {
                requests_per_unit: o.requests_per_unit,
                unit,
                name: String::new(),
            })
        }
        (None, true) => config
            .find(
                domain,
                counted.iter().map(|e| (e.key.as_str(), e.value.as_str())),
            )
            .cloned(),
    };
    let (requests_per_unit, unit, name) = match limit {
        None => return Ok((Slot::NoLimit, None)),
        Some(Limit::Unlimited) => return Ok((Slot::Unlimited, None)),
        Some(Limit::Limited {
            requests_per_unit,
            unit,
            name,
        }) => (requests_per_unit, unit, name),
    };
    let window = Window::at(ctx.now_ms, unit);
    let kind = match (refund, hits) {
        (true, _) => OpKind::Refund,
        (false, 0) => OpKind::Read,
        (false, _) => OpKind::Charge,
    };
    let entries = counted.iter().map(|e| (e.key.as_str(), e.value.as_str()));
    let op = Op {
        key: counter_key(ctx.prefix, domain, entries, unit, window.start),
        kind,
        hits,
        ttl_seconds: window.ttl_seconds,
        once: None,
    };
    let slot = Slot::Counter {
        op: ctx.next_op,
        requests_per_unit,
        unit,
        name,
        until_reset_ms: window.until_reset_ms,
    };
    Ok((slot, Some(op)))
}

/// `<prefix><domain>|<key>=<value>|…|<unit>:<window start>`, with `%`, `|` and `=` in the
/// domain, keys and values percent-encoded, so two descriptors share a counter only when
/// their domain, entries, unit and window are equal.
pub fn counter_key<'a, I>(prefix: &str, domain: &str, entries: I, unit: Unit, start: u64) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut key = String::with_capacity(prefix.len() + domain.len() + 48);
    key.push_str(prefix);
    escape_into(&mut key, domain);
    for (k, v) in entries {
        key.push('|');
        escape_into(&mut key, k);
        key.push('=');
        escape_into(&mut key, v);
    }
    key.push('|');
    key.push_str(unit.name());
    key.push(':');
    key.push_str(&start.to_string());
    key
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

impl Plan {
    /// The response, from the counters' values after the operations (one per op, in order).
    pub fn respond(&self, values: &[i64]) -> RateLimitResponse {
        let statuses: Vec<DescriptorStatus> = self
            .slots
            .iter()
            .map(|s| status(s, &self.ops, values))
            .collect();
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        }
    }
}

fn status(slot: &Slot, ops: &[Op], values: &[i64]) -> DescriptorStatus {
    let (op, requests_per_unit, unit, name, until_reset_ms) = match slot {
        Slot::NoLimit => return ok_status(0),
        Slot::Unlimited => return ok_status(u32::MAX),
        Slot::Counter {
            op,
            requests_per_unit,
            unit,
            name,
            until_reset_ms,
        } => (*op, *requests_per_unit, *unit, name, *until_reset_ms),
    };
    let value = u64::try_from(values.get(op).copied().unwrap_or(0)).unwrap_or(0);
    let limit = u64::from(requests_per_unit);
    let refund = ops.get(op).is_some_and(|o| o.kind == OpKind::Refund);
    let over = !refund && value > limit;
    let remaining = if over { 0 } else { limit.saturating_sub(value) };
    DescriptorStatus {
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: Some(RateLimit {
            name: name.clone(),
            requests_per_unit,
            unit: unit.proto() as i32,
        }),
        limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        duration_until_reset: Some(duration(until_reset_ms)),
        ..Default::default()
    }
}

fn ok_status(limit_remaining: u32) -> DescriptorStatus {
    DescriptorStatus {
        code: Code::Ok as i32,
        limit_remaining,
        ..Default::default()
    }
}

fn duration(ms: u64) -> Duration {
    Duration {
        seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX),
        // Below 1e9: (ms % 1000) * 1e6.
        nanos: i32::try_from((ms % 1_000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests;
