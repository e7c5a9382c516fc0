//! The few messages of Envoy's Rate Limit Service v3 the filter sends and reads, encoded
//! by hand (protobuf wire format): `envoy.service.ratelimit.v3.RateLimitRequest` out,
//! `RateLimitResponse` in. Field numbers are those of Envoy's protos (v1.40):
//!
//! - `RateLimitRequest`: `domain` 1, `descriptors` 2, `hits_addend` 3 (0 means 1).
//! - `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`: `entries` 1 (`key` 1,
//!   `value` 2), `limit` 2 (`RateLimitOverride`: `requests_per_unit` 1, `unit` 2),
//!   `hits_addend` 3 (`google.protobuf.UInt64Value`, `value` 1: an explicit 0
//!   is a pure read), `is_negative_hits` 4.
//! - `RateLimitResponse`: `overall_code` 1, `statuses` 2; `DescriptorStatus`: `code` 1,
//!   `current_limit` 2 (`requests_per_unit` 1, `unit` 2), `limit_remaining` 3,
//!   `duration_until_reset` 4 (`google.protobuf.Duration`: `seconds` 1, `nanos` 2).
//!
//! Unknown fields are skipped, as protobuf requires.

/// The last entry that makes a descriptor a refund of the counter its other entries name:
/// an extension of `ai-gateway-ratelimit` (docs/ratelimit.md); other RLS servers see a
/// descriptor without a limit and ignore it.
pub const REFUND_KEY: &str = "ai_gateway_refund";

/// One descriptor: its entries, how many hits it adds (`Some(0)`: a pure read), and the
/// limit it asks for (an override of the service's own configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor<'a> {
    pub entries: Vec<(&'a str, &'a str)>,
    pub hits: Option<u64>,
    pub limit: Option<Override>,
}

/// `RateLimitDescriptor.RateLimitOverride`: `requests_per_unit` per `unit` (the wire
/// values of `RateLimitResponse.RateLimit.Unit`: 1 second, 2 minute, 3 hour, 4 day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub requests_per_unit: u32,
    pub unit: u32,
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from_wire(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// `current_limit.requests_per_unit` (0 when no limit applies).
    pub limit: u32,
    /// `current_limit.unit` (1 second, 2 minute, 3 hour, 4 day, ...).
    pub unit: u32,
    pub remaining: u32,
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    pub statuses: Vec<Status>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A `RateLimitRequest` for `domain` with `descriptors`.
pub fn encode_request(domain: &str, descriptors: &[Descriptor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    bytes_field(&mut out, 1, domain.as_bytes());
    for d in descriptors {
        let mut desc = Vec::with_capacity(48);
        for (k, v) in &d.entries {
            let mut entry = Vec::with_capacity(k.len() + v.len() + 4);
            bytes_field(&mut entry, 1, k.as_bytes());
            bytes_field(&mut entry, 2, v.as_bytes());
            bytes_field(&mut desc, 1, &entry);
        }
        if let Some(o) = d.limit {
            let mut limit = Vec::with_capacity(12);
            tag(&mut limit, 1, 0);
            varint(&mut limit, u64::from(o.requests_per_unit));
            tag(&mut limit, 2, 0);
            varint(&mut limit, u64::from(o.unit));
            bytes_field(&mut desc, 2, &limit);
        }
        if let Some(h) = d.hits {
            // UInt64Value { value = 1 }; a zero value is written as an empty message, which
            // decodes to 0, and presence is what makes it a pure read.
            let mut wrapper = Vec::with_capacity(10);
            if h > 0 {
                tag(&mut wrapper, 1, 0);
                varint(&mut wrapper, h);
            }
            bytes_field(&mut desc, 3, &wrapper);
        }
        bytes_field(&mut out, 2, &desc);
    }
    out
}

/// `envoy.config.core.v3.GrpcService { envoy_grpc (1): { cluster_name (1) } }`: what the
/// filter hands `proxy_dispatch_grpc_call` as the upstream. Given a message, Envoy 1.40
/// builds the client with `skip_cluster_check`, so the call returns Ok, InternalFailure,
/// or (only when the client cannot be built at all) BadArgument; a missing cluster is
/// reported later as the call's UNAVAILABLE close rather than as a status at dispatch.
pub fn grpc_service(cluster: &str) -> Vec<u8> {
    let mut envoy_grpc = Vec::with_capacity(cluster.len() + 2);
    bytes_field(&mut envoy_grpc, 1, cluster.as_bytes());
    let mut out = Vec::with_capacity(envoy_grpc.len() + 2);
    bytes_field(&mut out, 1, &envoy_grpc);
    out
}

/// A reader over one message's fields.
struct Fields<'a> {
    buf: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Fields<'a> {
    fn read_varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.buf.get(..n)?, self.buf.get(n..)?);
        self.buf = rest;
        Some(head)
    }

    /// The next (field number, value), `None` at the end; `Err` on malformed input.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, ()> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.read_varint().ok_or(())?;
        let value = match key & 7 {
            0 => Value::Varint(self.read_varint().ok_or(())?),
            1 => self.take(8).map(|_| Value::Other).ok_or(())?,
            2 => {
                let n = usize::try_from(self.read_varint().ok_or(())?).map_err(|_| ())?;
                Value::Bytes(self.take(n).ok_or(())?)
            }
            5 => self.take(4).map(|_| Value::Other).ok_or(())?,
            _ => return Err(()),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn each<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Value<'a>)) -> Result<(), ()> {
    let mut fields = Fields { buf };
    while let Some((n, v)) = fields.next_field()? {
        f(n, v);
    }
    Ok(())
}

fn decode_status(buf: &[u8]) -> Result<Status, ()> {
    let mut s = Status {
        code: Code::Unknown,
        limit: 0,
        unit: 0,
        remaining: 0,
        reset_ms: 0,
    };
    let mut inner = Ok(());
    each(buf, |n, v| match (n, v) {
        (1, Value::Varint(c)) => s.code = Code::from_wire(c),
        (2, Value::Bytes(b)) => {
            inner = inner.and(each(b, |n, v| match (n, v) {
                (1, Value::Varint(x)) => s.limit = u32::try_from(x).unwrap_or(u32::MAX),
                (2, Value::Varint(x)) => s.unit = u32::try_from(x).unwrap_or(0),
                _ => {}
            }));
        }
        (3, Value::Varint(x)) => s.remaining = u32::try_from(x).unwrap_or(u32::MAX),
        (4, Value::Bytes(b)) => {
            let (mut secs, mut nanos) = (0u64, 0u64);
            inner = inner.and(each(b, |n, v| match (n, v) {
                (1, Value::Varint(x)) => secs = x,
                (2, Value::Varint(x)) => nanos = x,
                _ => {}
            }));
            s.reset_ms = secs.saturating_mul(1000).saturating_add(nanos / 1_000_000);
        }
        _ => {}
    })?;
    inner.map(|()| s)
}

/// A `RateLimitResponse`, or `None` when the bytes are not one.
pub fn decode_response(buf: &[u8]) -> Option<Response> {
    let mut overall = Code::Unknown;
    let mut statuses = Vec::new();
    let mut bad = false;
    each(buf, |n, v| match (n, v) {
        (1, Value::Varint(c)) => overall = Code::from_wire(c),
        (2, Value::Bytes(b)) => match decode_status(b) {
            Ok(s) => statuses.push(s),
            Err(()) => bad = true,
        },
        _ => {}
    })
    .ok()?;
    (!bad).then_some(Response { overall, statuses })
}

#[cfg(test)]
mod tests;
