//! Limits that hold across gateway replicas, counted by a Rate Limit Service (RLS v3)
//! over Redis, without a network call per request in the default mode.
//!
//! - **Synced** ([`Mode::Synced`]): each process admits from its share of what was
//!   globally left ([`slot::Slot`], in shared data, so all its workers share it) and
//!   reports what it admitted from the root context's tick, where one worker per process
//!   ([`sync::elect`]) sends every slot's report in one call and learns the new remaining.
//! - **Strict** ([`Mode::Strict`]): the request waits for one call that charges it
//!   ([`strict_call`], [`strict_outcome`]).
//!
//! Every mode settles in `on_log` by correcting the process's slot ([`settle`]); the
//! sync reports corrections like admissions, refunds included (see `sync`).
//!
//! Descriptors are `[(kind, requests|tokens), (tenant, <name>)]` in the configured
//! domain, each with the tenant's limit as an override, so the service needs no limits
//! of its own (docs/global-quotas.md).

pub mod config;
pub mod slot;
pub mod sync;

pub use config::{Engine, EngineSpec, Mode, OnUnavailable, TenantGlobal, Unit};
pub use slot::{Slot, Take, Terms};

use super::config::{escape, BucketKind};
use super::rls::{self, Code, Descriptor, Override};
use super::store::{self, SharedStore, StoreError, Stored};

impl Stored for Slot {
    fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Slot::decode(bytes)
    }
}

/// How a request's quota was decided: the `quota_mode` of both records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaMode {
    /// The tenant has no global limit: this process's buckets only.
    #[default]
    Local,
    /// Synced mode.
    Global,
    Strict,
    /// The service was unreachable; decided within `limit / expected_replicas`.
    LocalFallback,
}

impl QuotaMode {
    pub fn label(self) -> &'static str {
        match self {
            QuotaMode::Local => "local",
            QuotaMode::Global => "global",
            QuotaMode::Strict => "strict",
            QuotaMode::LocalFallback => "local_fallback",
        }
    }

    /// The mode a tenant's requests are decided in while the service answers.
    pub fn configured(g: Option<&TenantGlobal>) -> QuotaMode {
        match g.map(|g| g.mode) {
            None => QuotaMode::Local,
            Some(Mode::Synced) => QuotaMode::Global,
            Some(Mode::Strict) => QuotaMode::Strict,
        }
    }
}

/// `<prefix>:g:<tenant>:req` / `:tok`: this process's slot of a tenant's global counter.
pub fn slot_key(prefix: &str, tenant: &str, kind: BucketKind) -> String {
    let kind = match kind {
        BucketKind::Requests => "req",
        BucketKind::Tokens => "tok",
    };
    format!("{prefix}:g:{}:{kind}", escape(tenant))
}

/// The tenant's global counters: (kind, limit per window).
pub fn counters(g: &TenantGlobal) -> impl Iterator<Item = (BucketKind, u32)> {
    [
        (BucketKind::Requests, g.requests),
        (BucketKind::Tokens, g.tokens),
    ]
    .into_iter()
    .filter_map(|(k, l)| l.map(|l| (k, l)))
}

/// One global counter a request was charged in, kept until it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub kind: BucketKind,
    pub limit: u32,
    pub window: u64,
    pub cost: u64,
}

/// What the global limits decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Admitted {
        mode: QuotaMode,
        charges: Vec<Charge>,
    },
    Denied {
        mode: QuotaMode,
        kind: BucketKind,
        retry_after_ms: u64,
    },
    TooLarge {
        kind: BucketKind,
        cost: u64,
        max: u64,
    },
    /// Unreachable and failing closed (503).
    Unavailable,
    /// Shared data failed: the caller applies `quota_failure_mode`.
    StoreFailed,
}

/// Who is asking: the tenant, its limits, the engine, the store's key prefix.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    pub prefix: &'a str,
    pub name: &'a str,
    pub limits: &'a TenantGlobal,
    pub engine: &'a Engine,
}

impl Tenant<'_> {
    fn cost(&self, kind: BucketKind, tokens: u64) -> u64 {
        match kind {
            BucketKind::Requests => 1,
            BucketKind::Tokens => tokens,
        }
    }

    fn terms(&self, limit: u32) -> Terms<'_> {
        Terms {
            limit,
            unit: self.limits.unit,
            on_unavailable: self.limits.on_unavailable,
            engine: self.engine,
        }
    }
}

/// Read-modify-write of one slot in the window of `now_ms`.
fn with_slot<T>(
    store: &dyn SharedStore,
    key: &str,
    terms: &Terms,
    now_ms: u64,
    trips: &mut u32,
    mut step: impl FnMut(Slot) -> (Option<Slot>, T),
) -> Result<T, StoreError> {
    store::update(store, key, Slot::fresh(terms, now_ms), trips, |s| {
        step(s.current(terms, now_ms))
    })
}

/// A request's charges in synced mode: 1 request and `tokens` tokens, from this
/// process's shares; all or nothing. Round trips: 2 per counter (get + set), 1 for a
/// refusing one, 2 per charge given back.
pub fn admit_synced(store: &dyn SharedStore, t: &Tenant, tokens: u64, now_ms: u64) -> Outcome {
    admit_local(store, t, tokens, now_ms, true)
}

/// `reachable`: false to decide as if the service were unreachable (a strict call just
/// failed).
fn admit_local(
    store: &dyn SharedStore,
    t: &Tenant,
    tokens: u64,
    now_ms: u64,
    reachable: bool,
) -> Outcome {
    let mut charges = Vec::with_capacity(2);
    let mut mode = QuotaMode::Global;
    let mut trips = 0;
    for (kind, limit) in counters(t.limits) {
        let cost = t.cost(kind, tokens);
        if cost == 0 {
            continue;
        }
        let key = slot_key(t.prefix, t.name, kind);
        let terms = t.terms(limit);
        let result = with_slot(store, &key, &terms, now_ms, &mut trips, |s| {
            let (next, take) = s.take(cost, &terms, now_ms, reachable);
            (next, (take, s.window))
        });
        let refused = match result {
            Ok((take @ (Take::Global | Take::LocalFallback), window)) => {
                if take == Take::LocalFallback {
                    mode = QuotaMode::LocalFallback;
                }
                charges.push(Charge {
                    key,
                    kind,
                    limit,
                    window,
                    cost,
                });
                continue;
            }
            Ok((
                Take::Denied {
                    retry_after_ms,
                    fallback,
                },
                _,
            )) => Outcome::Denied {
                mode: if fallback {
                    QuotaMode::LocalFallback
                } else {
                    QuotaMode::Global
                },
                kind,
                retry_after_ms,
            },
            Ok((Take::TooLarge, _)) => Outcome::TooLarge {
                kind,
                cost,
                max: u64::from(limit),
            },
            Ok((Take::Unavailable, _)) => Outcome::Unavailable,
            Err(_) => Outcome::StoreFailed,
        };
        give_back(store, t, &charges, now_ms);
        return refused;
    }
    Outcome::Admitted { mode, charges }
}

/// Undo `charges` made by this request (a later counter refused it).
fn give_back(store: &dyn SharedStore, t: &Tenant, charges: &[Charge], now_ms: u64) {
    for c in charges {
        let delta = -i64::try_from(c.cost).unwrap_or(i64::MAX);
        if correct(store, t, c, delta, now_ms).is_err() {
            log::warn!("global quota: could not give back a refused request's charge");
        }
    }
}

fn correct(
    store: &dyn SharedStore,
    t: &Tenant,
    c: &Charge,
    delta: i64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut trips = 0;
    let terms = t.terms(c.limit);
    with_slot(store, &c.key, &terms, now_ms, &mut trips, |s| {
        (s.correct(delta, c.window), ())
    })
}

/// Settlement: the tokens charge is corrected to `billed` (refund or extra charge),
/// reported at the next sync whatever the mode was.
pub fn settle(store: &dyn SharedStore, t: &Tenant, charges: &[Charge], billed: u64, now_ms: u64) {
    for c in charges.iter().filter(|c| c.kind == BucketKind::Tokens) {
        let delta = i128::from(billed) - i128::from(c.cost);
        let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        if delta != 0 && correct(store, t, c, delta, now_ms).is_err() {
            log::warn!("global quota: a settlement could not be recorded; it is lost");
        }
    }
}

/// The entries of a tenant's counter; `refund` adds the service's refund marker.
fn entries(kind: BucketKind, tenant: &str, refund: bool) -> Vec<(&str, &str)> {
    let mut e = vec![("kind", kind.label()), ("tenant", tenant)];
    if refund {
        e.push((rls::REFUND_KEY, "true"));
    }
    e
}

fn limit_override(limit: u32, unit: Unit) -> Option<Override> {
    Some(Override {
        requests_per_unit: limit,
        unit: unit.wire(),
    })
}

/// A strict admission's call: the message, and the counters it charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictCall {
    pub message: Vec<u8>,
    pub charges: Vec<Charge>,
}

/// The call that charges 1 request and `tokens` tokens at the service.
pub fn strict_call(t: &Tenant, tokens: u64, now_ms: u64) -> Option<StrictCall> {
    let unit = t.limits.unit;
    let charges: Vec<Charge> = counters(t.limits)
        .filter_map(|(kind, limit)| {
            let cost = t.cost(kind, tokens);
            (cost > 0).then(|| Charge {
                key: slot_key(t.prefix, t.name, kind),
                kind,
                limit,
                window: unit.window_start(now_ms),
                cost,
            })
        })
        .collect();
    if charges.is_empty() {
        return None;
    }
    let descriptors: Vec<Descriptor> = charges
        .iter()
        .map(|c| Descriptor {
            entries: entries(c.kind, t.name, false),
            hits: Some(c.cost),
            limit: limit_override(c.limit, unit),
        })
        .collect();
    Some(StrictCall {
        message: rls::encode_request(&t.engine.spec.domain, &descriptors),
        charges,
    })
}

/// How a call to the service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallFailure {
    /// The gRPC status (14 UNAVAILABLE, 4 DEADLINE_EXCEEDED, ...; 0 for an answer that
    /// could not be read).
    pub grpc_status: u32,
}

impl CallFailure {
    /// Only UNAVAILABLE means the service cannot have counted the call (Envoy had no
    /// connection, or the service could not reach Redis); after anything else the call
    /// may have been counted.
    pub fn not_counted(&self) -> bool {
        self.grpc_status == 14
    }
}

/// What a strict call's answer (or failure) means for the request. A refusal's hits,
/// which the service counted anyway, are given back at the next sync; a failure falls
/// back as the tenant's `on_unavailable` says.
pub fn strict_outcome(
    store: &dyn SharedStore,
    t: &Tenant,
    call: StrictCall,
    answer: Result<rls::Response, CallFailure>,
    now_ms: u64,
) -> Outcome {
    let statuses = match answer {
        Ok(r) if r.statuses.len() == call.charges.len() => r.statuses,
        Ok(_) => return strict_failed(store, t, call, CallFailure { grpc_status: 0 }, now_ms),
        Err(f) => return strict_failed(store, t, call, f, now_ms),
    };
    let over = call
        .charges
        .iter()
        .zip(&statuses)
        .find(|(_, s)| s.code == Code::OverLimit);
    let mut trips = 0;
    for c in &call.charges {
        let cost = i64::try_from(c.cost).unwrap_or(i64::MAX);
        let terms = t.terms(c.limit);
        let recorded = with_slot(store, &c.key, &terms, now_ms, &mut trips, |s| {
            let next = if over.is_some() {
                s.refund_later(cost)
            } else {
                s.admitted_remotely(cost)
            };
            (Some(next), ())
        });
        if recorded.is_err() {
            log::warn!("global quota: a strict decision could not be recorded locally");
        }
    }
    match over {
        Some((c, s)) => Outcome::Denied {
            mode: QuotaMode::Strict,
            kind: c.kind,
            retry_after_ms: s.reset_ms.max(1),
        },
        None => Outcome::Admitted {
            mode: QuotaMode::Strict,
            charges: call.charges,
        },
    }
}

fn strict_failed(
    store: &dyn SharedStore,
    t: &Tenant,
    call: StrictCall,
    f: CallFailure,
    now_ms: u64,
) -> Outcome {
    log::warn!(
        "global quota: strict admission failed (gRPC status {}); tenant policy {:?}",
        f.grpc_status,
        t.limits.on_unavailable
    );
    let tokens = call
        .charges
        .iter()
        .find(|c| c.kind == BucketKind::Tokens)
        .map_or(0, |c| c.cost);
    let out = admit_local(store, t, tokens, now_ms, false);
    if let (false, Outcome::Admitted { charges, .. }) = (f.not_counted(), &out) {
        // The service may have counted the call: the local charge must not be reported
        // as well.
        let mut trips = 0;
        for c in charges {
            let cost = i64::try_from(c.cost).unwrap_or(i64::MAX);
            let terms = t.terms(c.limit);
            let _ = with_slot(store, &c.key, &terms, now_ms, &mut trips, |s| {
                (Some(s.refund_later(cost)), ())
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
