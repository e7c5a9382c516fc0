//! Request-time reservation, response-time settlement, and read-only peek
//! across all buckets that apply to a request.
//!
//! Each bucket is updated atomically on its own (CAS); across buckets the
//! reservation is made all-or-nothing by refunding the buckets already
//! charged when a later one denies.

use super::bucket::{self, BucketState, Limit, Verdict};
use super::config::{BucketKind, BucketSpec, QuotaConfig};
use super::store::{self, SharedStore, StoreError};
use crate::config::{FailureMode, TrafficClass};

/// Everything about the request that the quota decision needs.
#[derive(Debug, Clone, Copy)]
pub struct QuotaRequest<'a> {
    /// Shared-data key prefix (plugin-specific; Istio shares one namespace).
    pub prefix: &'a str,
    pub tenant: &'a str,
    pub model: Option<&'a str>,
    /// Upper-bound estimate of prompt + completion tokens, reserved now and
    /// settled against real usage later.
    pub estimated_tokens: u64,
    pub class: TrafficClass,
    /// What to do when the store fails (error or CAS loop exhausted); a failure is
    /// always marked `degraded`.
    pub on_store_error: FailureMode,
}

/// The overall decision of [`reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveVerdict {
    Allowed,
    /// Rate limited (429): retry after this long.
    Denied {
        kind: BucketKind,
        retry_after_ms: u64,
    },
    /// The request alone exceeds what the `kind` bucket can ever hold for
    /// this traffic class: refuse outright, retrying cannot help.
    TooLarge {
        kind: BucketKind,
        cost: u64,
        max: u64,
    },
    /// The store failed and `FailureMode::Closed` is configured.
    StoreUnavailable,
}

/// One bucket's state for response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketReport {
    pub kind: BucketKind,
    pub model_scoped: bool,
    /// What this request's class can take from a full bucket: the burst, less the
    /// interactive reserve for batch traffic. OpenAI defines `x-ratelimit-limit-*` as
    /// "the maximum permitted before exhausting the rate limit"; using the capacity (not
    /// the refill rate) keeps `remaining <= limit` and makes `reset` the time until
    /// `remaining == limit`, even when burst and per-minute rate differ.
    pub limit: u64,
    /// Whole units this request's class can still take (never negative).
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
    /// This bucket caused the denial.
    pub denied: bool,
}

/// One bucket recorded in a [`Reservation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargedBucket {
    pub key: String,
    pub kind: BucketKind,
    pub model_scoped: bool,
    pub limit: Limit,
    /// Units actually taken at reserve time (0 if the store failed open).
    pub charged: u64,
}

/// Kept by the host per request between [`reserve`] and [`settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub tenant: String,
    pub model: Option<String>,
    pub class: TrafficClass,
    pub reserved_tokens: u64,
    pub buckets: Vec<ChargedBucket>,
}

/// Result of [`reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ReserveOutcome {
    pub verdict: ReserveVerdict,
    /// A store failure influenced the decision (failed open or closed).
    pub degraded: bool,
    /// Present exactly when the verdict is `Allowed`.
    pub reservation: Option<Reservation>,
    /// Buckets that were consulted, in charge order.
    pub reports: Vec<BucketReport>,
    /// Shared-data gets + sets performed.
    pub round_trips: u32,
}

impl ReserveOutcome {
    /// An allowed outcome with room for `buckets` reports, before any bucket is read.
    fn allowed(buckets: usize) -> ReserveOutcome {
        ReserveOutcome {
            verdict: ReserveVerdict::Allowed,
            degraded: false,
            reservation: None,
            reports: Vec::with_capacity(buckets),
            round_trips: 0,
        }
    }
}

/// Result of [`settle`] and [`peek`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct StoreOutcome {
    pub degraded: bool,
    pub reports: Vec<BucketReport>,
    pub round_trips: u32,
}

/// Reserves 1 request and `estimated_tokens` tokens in every configured
/// bucket, or none of them. Round trips: 2 per bucket charged (get + set),
/// 1 for the denying bucket or a zero-cost token bucket, 2 per refund, 1 per
/// bucket after the denying one (read for the headers); +2 the first time a
/// key is used; +2 per CAS retry under contention.
pub fn reserve<S>(
    store: &S,
    config: &QuotaConfig,
    req: &QuotaRequest<'_>,
    now_ms: u64,
) -> ReserveOutcome
where
    S: SharedStore + ?Sized,
{
    let specs = config.buckets(req.prefix, req.tenant, req.model);
    let mut out = ReserveOutcome::allowed(specs.len());
    let mut charged: Vec<ChargedBucket> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let cost = match spec.kind {
            BucketKind::Requests => 1,
            BucketKind::Tokens => req.estimated_tokens,
        };
        let init = BucketState::full(&spec.limit, now_ms);
        let result = store::update(store, &spec.key, init, &mut out.round_trips, |mut st| {
            let d = bucket::try_take(&mut st, cost, now_ms, &spec.limit, req.class);
            if cost == 0 {
                // Nothing to take (a body-less request's token bucket): report the
                // level, never refuse for a debt this request does not add to, and
                // skip the write (refill is recomputed from the timestamp anyway).
                let d = bucket::Decision {
                    verdict: Verdict::Allowed,
                    ..d
                };
                return (None, d);
            }
            (d.allowed().then_some(st), d)
        });
        // (verdict that ends the reservation, units actually taken here)
        let (denial, taken) = match result {
            Ok(d) => {
                out.reports.push(report(
                    spec,
                    req.class,
                    d.remaining,
                    d.reset_ms,
                    !d.allowed(),
                ));
                let denial = refusal(d.verdict, spec, cost, req.class);
                (denial, if d.allowed() { cost } else { 0 })
            }
            Err(e) => {
                out.degraded = true;
                log::warn!(
                    "quota: store error {e:?} on {}, policy {:?}",
                    spec.key,
                    req.on_store_error
                );
                match req.on_store_error {
                    FailureMode::Open => (None, 0),
                    FailureMode::Closed => (Some(ReserveVerdict::StoreUnavailable), 0),
                }
            }
        };
        if let Some(verdict) = denial {
            refund_all(store, &charged, req.class, now_ms, &mut out);
            if verdict != ReserveVerdict::StoreUnavailable {
                // A refusal carries the same x-ratelimit-* headers as an allowed
                // response: read (1 get each) the buckets this request never reached.
                peek_into(
                    store,
                    specs.get(i + 1..).unwrap_or(&[]),
                    req.class,
                    now_ms,
                    &mut out,
                );
            }
            out.verdict = verdict;
            return out;
        }
        charged.push(ChargedBucket {
            key: spec.key.clone(),
            kind: spec.kind,
            model_scoped: spec.model_scoped,
            limit: spec.limit,
            charged: taken,
        });
    }
    out.reservation = Some(Reservation {
        tenant: req.tenant.to_owned(),
        model: req.model.map(str::to_owned),
        class: req.class,
        reserved_tokens: req.estimated_tokens,
        buckets: charged,
    });
    out
}

/// Settles the token buckets against real usage: refunds an over-reservation,
/// charges an under-reservation (the level may go negative), and charges the
/// full usage to buckets the store failed to charge at reserve time. A failed
/// upstream settles with `actual_tokens = 0` (full refund). Never denies.
/// Takes the reservation by value so it cannot be settled twice.
/// Round trips: 2 per token bucket whose amount differs, 0 otherwise.
pub fn settle<S>(
    store: &S,
    reservation: Reservation,
    actual_tokens: u64,
    now_ms: u64,
) -> StoreOutcome
where
    S: SharedStore + ?Sized,
{
    let mut out = StoreOutcome::default();
    for b in reservation
        .buckets
        .iter()
        .filter(|b| b.kind == BucketKind::Tokens)
    {
        let delta = i128::from(actual_tokens) - i128::from(b.charged);
        let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        if delta == 0 {
            continue;
        }
        match apply_delta(
            store,
            b,
            delta,
            reservation.class,
            now_ms,
            &mut out.round_trips,
        ) {
            Ok(r) => out.reports.push(r),
            Err(e) => {
                out.degraded = true;
                log::warn!("quota: store error {e:?} settling {} by {delta}", b.key);
            }
        }
    }
    out
}

/// Gives back everything `reservation` took: a check after the local buckets (a global
/// limit) refused the request.
pub fn release<S>(store: &S, reservation: &Reservation, now_ms: u64) -> StoreOutcome
where
    S: SharedStore + ?Sized,
{
    let mut out = ReserveOutcome::allowed(0);
    refund_all(
        store,
        &reservation.buckets,
        reservation.class,
        now_ms,
        &mut out,
    );
    StoreOutcome {
        degraded: out.degraded,
        reports: Vec::new(),
        round_trips: out.round_trips,
    }
}

/// Reads every configured bucket without changing anything (1 get each), for
/// headers on responses that did not go through [`reserve`].
pub fn peek<S>(store: &S, config: &QuotaConfig, req: &QuotaRequest<'_>, now_ms: u64) -> StoreOutcome
where
    S: SharedStore + ?Sized,
{
    let specs = config.buckets(req.prefix, req.tenant, req.model);
    let mut out = ReserveOutcome::allowed(specs.len());
    peek_into(store, &specs, req.class, now_ms, &mut out);
    StoreOutcome {
        degraded: out.degraded,
        reports: out.reports,
        round_trips: out.round_trips,
    }
}

/// Reports `specs` as they stand (1 get each, nothing written).
fn peek_into<S>(
    store: &S,
    specs: &[BucketSpec],
    class: TrafficClass,
    now_ms: u64,
    out: &mut ReserveOutcome,
) where
    S: SharedStore + ?Sized,
{
    for spec in specs {
        let init = BucketState::full(&spec.limit, now_ms);
        match store::read(store, &spec.key, init, &mut out.round_trips) {
            Ok(mut st) => {
                st.refill(&spec.limit, now_ms);
                let (remaining, reset_ms) = st.view(&spec.limit, now_ms, class);
                out.reports
                    .push(report(spec, class, remaining, reset_ms, false));
            }
            Err(_) => out.degraded = true,
        }
    }
}

/// Gives back what a failed reservation already took, newest first, and
/// refreshes those buckets' reports. Failures only mark the outcome degraded.
fn refund_all<S>(
    store: &S,
    charged: &[ChargedBucket],
    class: TrafficClass,
    now_ms: u64,
    out: &mut ReserveOutcome,
) where
    S: SharedStore + ?Sized,
{
    for b in charged.iter().rev().filter(|b| b.charged > 0) {
        let delta = i64::try_from(b.charged).map_or(i64::MIN, |c| -c);
        match apply_delta(store, b, delta, class, now_ms, &mut out.round_trips) {
            Ok(fresh) => {
                if let Some(r) = out
                    .reports
                    .iter_mut()
                    .find(|r| same_bucket(r, &fresh) && !r.denied)
                {
                    *r = fresh;
                }
            }
            Err(e) => {
                out.degraded = true;
                log::warn!("quota: store error {e:?} refunding {}", b.key);
            }
        }
    }
}

fn apply_delta<S>(
    store: &S,
    b: &ChargedBucket,
    delta: i64,
    class: TrafficClass,
    now_ms: u64,
    trips: &mut u32,
) -> Result<BucketReport, StoreError>
where
    S: SharedStore + ?Sized,
{
    let init = BucketState::full(&b.limit, now_ms);
    let (remaining, reset_ms) = store::update(store, &b.key, init, trips, |mut st| {
        bucket::settle(&mut st, delta, now_ms, &b.limit);
        (Some(st), st.view(&b.limit, now_ms, class))
    })?;
    Ok(BucketReport {
        kind: b.kind,
        model_scoped: b.model_scoped,
        limit: capacity(&b.limit, class),
        remaining,
        reset_ms,
        denied: false,
    })
}

fn same_bucket(a: &BucketReport, b: &BucketReport) -> bool {
    a.kind == b.kind && a.model_scoped == b.model_scoped
}

fn report(
    spec: &BucketSpec,
    class: TrafficClass,
    remaining: u64,
    reset_ms: u64,
    denied: bool,
) -> BucketReport {
    BucketReport {
        kind: spec.kind,
        model_scoped: spec.model_scoped,
        limit: capacity(&spec.limit, class),
        remaining,
        reset_ms,
        denied,
    }
}

/// The reserve verdict for a bucket that refused, `None` if it allowed.
fn refusal(
    verdict: Verdict,
    spec: &BucketSpec,
    cost: u64,
    class: TrafficClass,
) -> Option<ReserveVerdict> {
    let kind = spec.kind;
    match verdict {
        Verdict::Allowed => None,
        Verdict::Denied { retry_after_ms } => Some(ReserveVerdict::Denied {
            kind,
            retry_after_ms,
        }),
        Verdict::TooLarge => Some(ReserveVerdict::TooLarge {
            kind,
            cost,
            max: capacity(&spec.limit, class),
        }),
    }
}

/// The largest cost `class` can ever take from this bucket.
fn capacity(limit: &Limit, class: TrafficClass) -> u64 {
    let full = BucketState::full(limit, 0);
    full.view(limit, 0, class).0
}

#[cfg(test)]
mod tests;
