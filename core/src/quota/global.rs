//! Limits that hold across gateway replicas, counted by a Rate Limit Service (RLS v3)
//! over Redis, without a network call per request in the default mode.
//!
//! - **Synced** ([`Mode::Synced`]): each process admits from its share of what was
//!   globally left ([`slot::Slot`], in shared data, so all its workers share it) and
//!   reports what it admitted from the root context's tick, where one VM per process
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

/// What a global counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKind {
    Requests,
    Tokens,
    /// Spend in a UTC day, in units of `Counter::scale` micro-dollars.
    SpendDay,
    /// Spend in a UTC month.
    SpendMonth,
}

impl CounterKind {
    /// The descriptor's `kind` value.
    pub fn label(self) -> &'static str {
        match self {
            CounterKind::Requests => "requests",
            CounterKind::Tokens => "tokens",
            CounterKind::SpendDay => "spend_day",
            CounterKind::SpendMonth => "spend_month",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            CounterKind::Requests => "req",
            CounterKind::Tokens => "tok",
            CounterKind::SpendDay => "sd",
            CounterKind::SpendMonth => "sm",
        }
    }

    /// The rate bucket kind, for the refusal of a request or token counter.
    pub fn bucket(self) -> Option<BucketKind> {
        match self {
            CounterKind::Requests => Some(BucketKind::Requests),
            CounterKind::Tokens => Some(BucketKind::Tokens),
            CounterKind::SpendDay | CounterKind::SpendMonth => None,
        }
    }

    pub fn is_spend(self) -> bool {
        self.bucket().is_none()
    }
}

/// One counter of a tenant at the rate limit service: what it counts, its limit per
/// window, and how a request is charged in it. Built once with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub kind: CounterKind,
    /// A per-model budget's model.
    pub model: Option<String>,
    /// Per window, in counter units.
    pub limit: u32,
    pub unit: Unit,
    /// Micro-dollars per unit of a spend counter (1 for requests and tokens): budgets
    /// above `u32::MAX` micro-dollars are counted in coarser units so the limit fits the
    /// protocol's `requests_per_unit`.
    pub scale: u64,
    pub on_unavailable: OnUnavailable,
    /// Charged by a call per request (strict mode, and every spend counter) rather than
    /// from the synced share.
    pub strict: bool,
}

impl Counter {
    /// The counter of `limit` units per `unit`, for requests and tokens.
    pub fn rate(kind: CounterKind, limit: u32, g: &TenantGlobal) -> Counter {
        Counter {
            kind,
            model: None,
            limit,
            unit: g.unit,
            scale: 1,
            on_unavailable: g.on_unavailable,
            strict: g.mode == Mode::Strict,
        }
    }

    /// A spend counter for a budget of `micros` per day or month.
    pub fn spend(
        kind: CounterKind,
        model: Option<&str>,
        micros: u64,
        on: OnUnavailable,
    ) -> Counter {
        let scale = micros.div_ceil(u64::from(u32::MAX)).max(1);
        Counter {
            kind,
            model: model.map(str::to_owned),
            limit: u32::try_from(micros / scale).unwrap_or(u32::MAX).max(1),
            unit: if kind == CounterKind::SpendMonth {
                Unit::Month
            } else {
                Unit::Day
            },
            scale,
            on_unavailable: on,
            strict: true,
        }
    }

    /// `<prefix>:g:<tenant>:<req|tok|sd|sm>[:<model>]`: this process's slot of it.
    pub fn key(&self, prefix: &str, tenant: &str) -> String {
        let mut key = format!("{prefix}:g:{}:{}", escape(tenant), self.kind.suffix());
        if let Some(m) = &self.model {
            key.push(':');
            key.push_str(&escape(m));
        }
        key
    }

    pub fn terms<'a>(&self, engine: &'a Engine) -> Terms<'a> {
        Terms {
            limit: self.limit,
            unit: self.unit,
            on_unavailable: self.on_unavailable,
            engine,
        }
    }

    /// The descriptor's entries; `refund` adds the service's refund marker.
    pub fn entries<'a>(&'a self, tenant: &'a str, refund: bool) -> Vec<(&'a str, &'a str)> {
        let mut e = vec![("kind", self.kind.label()), ("tenant", tenant)];
        if let Some(m) = &self.model {
            e.push(("model", m.as_str()));
        }
        if refund {
            e.push((rls::REFUND_KEY, "true"));
        }
        e
    }

    fn limit_override(&self) -> Option<Override> {
        Some(Override {
            requests_per_unit: self.limit,
            unit: self.unit.wire(),
        })
    }

    /// What `costs` charge in this counter, in its units.
    pub fn cost(&self, costs: &Costs) -> u64 {
        match self.kind {
            CounterKind::Requests => 1,
            CounterKind::Tokens => costs.tokens,
            CounterKind::SpendDay | CounterKind::SpendMonth => {
                costs.spend_micros.div_ceil(self.scale)
            }
        }
    }

    /// Whether this counter applies to a request for `model`.
    pub fn applies(&self, model: Option<&str>) -> bool {
        self.model.is_none() || self.model.as_deref() == model
    }
}

/// What a request is charged (or, at settlement, billed): 1 request, its tokens, its
/// spend in micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Costs {
    pub tokens: u64,
    pub spend_micros: u64,
}

/// One global counter a request was charged in, kept until it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub counter: Counter,
    pub window: u64,
    /// Units charged at admission.
    pub cost: u64,
    /// What the service said was left after this charge (strict calls), in units.
    pub remaining: Option<u64>,
}

impl Charge {
    /// Micro-dollars left of a spend counter after this request's settlement at `billed`
    /// units, as this request saw it.
    pub fn remaining_after(&self, billed: u64) -> Option<u64> {
        let left = self.remaining?;
        let after = i128::from(left) + i128::from(self.cost) - i128::from(billed);
        let after = u64::try_from(after.max(0)).unwrap_or(0);
        Some(after.saturating_mul(self.counter.scale))
    }
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
        counter: Counter,
        retry_after_ms: u64,
        /// Units left of the refusing counter just before this request (strict spend
        /// counters), for the headers and the record.
        remaining: Option<u64>,
    },
    TooLarge {
        counter: Counter,
        cost: u64,
    },
    /// Unreachable and failing closed (503).
    Unavailable,
    /// Shared data failed: the caller applies `quota_failure_mode`.
    StoreFailed,
}

/// Who is asking: the tenant's counters that apply to this request, the engine, the
/// store's key prefix.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    pub prefix: &'a str,
    pub name: &'a str,
    pub counters: &'a [Counter],
    pub model: Option<&'a str>,
    pub engine: &'a Engine,
}

impl Tenant<'_> {
    fn applying(&self) -> impl Iterator<Item = &Counter> {
        let model = self.model;
        self.counters.iter().filter(move |c| c.applies(model))
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

/// A request's charges in synced mode: 1 request and `costs.tokens` tokens from this
/// process's shares; all or nothing. Round trips: 2 per counter (get + set), 1 for a
/// refusing one, 2 per charge given back. Counters charged by a call are left to
/// [`strict_call`].
pub fn admit_synced(store: &dyn SharedStore, t: &Tenant, costs: &Costs, now_ms: u64) -> Outcome {
    let synced: Vec<&Counter> = t.applying().filter(|c| !c.strict).collect();
    admit_local(store, t, &synced, costs, now_ms, true)
}

/// `reachable`: false to decide as if the service were unreachable (a strict call just
/// failed).
fn admit_local(
    store: &dyn SharedStore,
    t: &Tenant,
    counters: &[&Counter],
    costs: &Costs,
    now_ms: u64,
    reachable: bool,
) -> Outcome {
    let mut charges = Vec::with_capacity(counters.len());
    let mut mode = QuotaMode::Global;
    let mut trips = 0;
    for counter in counters {
        let cost = counter.cost(costs);
        if cost == 0 {
            continue;
        }
        let key = counter.key(t.prefix, t.name);
        let terms = counter.terms(t.engine);
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
                    counter: (*counter).clone(),
                    window,
                    cost,
                    remaining: None,
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
                counter: (*counter).clone(),
                retry_after_ms,
                remaining: None,
            },
            Ok((Take::TooLarge, _)) => Outcome::TooLarge {
                counter: (*counter).clone(),
                cost,
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
pub fn give_back(store: &dyn SharedStore, t: &Tenant, charges: &[Charge], now_ms: u64) {
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
    let terms = c.counter.terms(t.engine);
    with_slot(store, &c.key, &terms, now_ms, &mut trips, |s| {
        (s.correct(delta, c.window), ())
    })
}

/// Settlement: token and spend charges are corrected to what the request is billed
/// (refund or extra charge), reported at the next sync whatever the mode was.
pub fn settle(
    store: &dyn SharedStore,
    t: &Tenant,
    charges: &[Charge],
    billed: &Costs,
    now_ms: u64,
) {
    for c in charges
        .iter()
        .filter(|c| c.counter.kind != CounterKind::Requests)
    {
        let delta = i128::from(c.counter.cost(billed)) - i128::from(c.cost);
        let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        if delta != 0 && correct(store, t, c, delta, now_ms).is_err() {
            log::warn!("global quota: a settlement could not be recorded; it is lost");
        }
    }
}

/// A strict admission's call: the message, the counters it charges, and the report ids
/// of its charges (the `x-ai-gateway-reports` metadata), so that sending the same call
/// again after a failure cannot count it twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictCall {
    pub message: Vec<u8>,
    pub charges: Vec<Charge>,
    pub reports: String,
}

/// Spend counters are read just before they are charged, in the same call (the service
/// runs a call's descriptors in order, atomically): the service answers an over-limit
/// charge with nothing left, and a refusal should say what was left.
fn read_first(c: &Counter) -> bool {
    c.kind.is_spend()
}

/// The call that charges the request in every counter charged by a call (strict
/// request and token counters, spend counters), or `None` when there is none.
pub fn strict_call(
    t: &Tenant,
    costs: &Costs,
    now_ms: u64,
    new_id: &mut dyn FnMut() -> u64,
) -> Option<StrictCall> {
    let charges: Vec<Charge> = t
        .applying()
        .filter(|c| c.strict)
        .filter_map(|c| {
            let cost = c.cost(costs);
            (cost > 0 || c.kind.is_spend()).then(|| Charge {
                key: c.key(t.prefix, t.name),
                counter: c.clone(),
                window: c.unit.window_start(now_ms),
                cost,
                remaining: None,
            })
        })
        .collect();
    if charges.is_empty() {
        return None;
    }
    let mut descriptors: Vec<Descriptor> = Vec::with_capacity(charges.len() * 2);
    let mut reports: Vec<String> = Vec::with_capacity(charges.len() * 2);
    for c in &charges {
        let d = |hits| Descriptor {
            entries: c.counter.entries(t.name, false),
            hits: Some(hits),
            limit: c.counter.limit_override(),
        };
        if read_first(&c.counter) {
            descriptors.push(d(0));
            reports.push(String::new());
        }
        descriptors.push(d(c.cost));
        reports.push(format!("{:x}", new_id().max(1)));
    }
    Some(StrictCall {
        message: rls::encode_request(&t.engine.spec.domain, &descriptors),
        charges,
        reports: reports.join(","),
    })
}

/// Each charge's status, and the status of its read when it has one.
fn pair_statuses(
    charges: &[Charge],
    statuses: Vec<rls::Status>,
) -> Option<Vec<(Option<rls::Status>, rls::Status)>> {
    let mut it = statuses.into_iter();
    let mut out = Vec::with_capacity(charges.len());
    for c in charges {
        let read = if read_first(&c.counter) {
            Some(it.next()?)
        } else {
            None
        };
        out.push((read, it.next()?));
    }
    it.next().is_none().then_some(out)
}

/// How a call to the service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallFailure {
    /// The gRPC status (14 UNAVAILABLE, 4 DEADLINE_EXCEEDED, ...; 0 for an answer that
    /// could not be read).
    pub grpc_status: u32,
}

impl CallFailure {
    /// UNAVAILABLE means the service cannot have counted the call (Envoy had no
    /// connection, or the service could not reach Redis), INVALID_ARGUMENT that it
    /// refused it whole; after anything else the call may have been counted.
    pub fn not_counted(&self) -> bool {
        // UNAVAILABLE, or INVALID_ARGUMENT: the service refused the whole call.
        matches!(self.grpc_status, 3 | 14)
    }
}

/// What a strict call's answer (or failure) means for the request. A refusal's hits,
/// which the service counted anyway, are given back at the next sync; a failure falls
/// back as each counter's `on_unavailable` says.
pub fn strict_outcome(
    store: &dyn SharedStore,
    t: &Tenant,
    call: StrictCall,
    answer: Result<rls::Response, CallFailure>,
    now_ms: u64,
) -> Outcome {
    let statuses = match answer.map(|r| pair_statuses(&call.charges, r.statuses)) {
        Ok(Some(s)) => s,
        Ok(None) => return strict_failed(store, t, call, CallFailure { grpc_status: 0 }, now_ms),
        Err(f) => return strict_failed(store, t, call, f, now_ms),
    };
    let over = call
        .charges
        .iter()
        .zip(&statuses)
        .find(|(_, (_, s))| s.code == Code::OverLimit);
    let mut trips = 0;
    for c in &call.charges {
        let cost = i64::try_from(c.cost).unwrap_or(i64::MAX);
        let terms = c.counter.terms(t.engine);
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
        Some((c, (read, s))) => Outcome::Denied {
            mode: QuotaMode::Strict,
            counter: c.counter.clone(),
            retry_after_ms: s.reset_ms.max(1),
            remaining: read.map(|r| u64::from(r.remaining)),
        },
        None => {
            let mut charges = call.charges;
            for (c, (_, s)) in charges.iter_mut().zip(&statuses) {
                c.remaining = Some(u64::from(s.remaining));
            }
            Outcome::Admitted {
                mode: QuotaMode::Strict,
                charges,
            }
        }
    }
}

fn strict_failed(
    store: &dyn SharedStore,
    t: &Tenant,
    call: StrictCall,
    f: CallFailure,
    now_ms: u64,
) -> Outcome {
    // Logged once per outage by the sync; per request only at debug level.
    log::debug!(
        "global quota: strict admission failed (gRPC status {}); falling back",
        f.grpc_status
    );
    let counters: Vec<&Counter> = call.charges.iter().map(|c| &c.counter).collect();
    let costs: Vec<u64> = call.charges.iter().map(|c| c.cost).collect();
    let out = admit_fixed(store, t, &counters, &costs, now_ms);
    if let (false, Outcome::Admitted { charges, .. }) = (f.not_counted(), &out) {
        // The service may have counted the call: the local charge must not be reported
        // as well.
        let mut trips = 0;
        for c in charges {
            let cost = i64::try_from(c.cost).unwrap_or(i64::MAX);
            let terms = c.counter.terms(t.engine);
            let _ = with_slot(store, &c.key, &terms, now_ms, &mut trips, |s| {
                (Some(s.refund_later(cost)), ())
            });
        }
    }
    out
}

/// The local fallback for costs already computed per counter (a failed strict call).
fn admit_fixed(
    store: &dyn SharedStore,
    t: &Tenant,
    counters: &[&Counter],
    costs: &[u64],
    now_ms: u64,
) -> Outcome {
    // Each counter is charged its own cost: express it through `Costs` one at a time.
    let mut charges = Vec::with_capacity(counters.len());
    let mut mode = QuotaMode::Strict;
    for (counter, cost) in counters.iter().zip(costs) {
        let one = fixed_costs(counter, *cost);
        match admit_local(store, t, &[counter], &one, now_ms, false) {
            Outcome::Admitted {
                mode: m,
                charges: c,
            } => {
                mode = m;
                charges.extend(c);
            }
            refused => {
                give_back(store, t, &charges, now_ms);
                return refused;
            }
        }
    }
    Outcome::Admitted { mode, charges }
}

/// `Costs` that charge exactly `cost` units in `counter`.
fn fixed_costs(counter: &Counter, cost: u64) -> Costs {
    Costs {
        tokens: cost,
        spend_micros: cost.saturating_mul(counter.scale),
    }
}

#[cfg(test)]
pub(crate) mod tests;
