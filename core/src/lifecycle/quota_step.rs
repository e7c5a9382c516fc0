//! The quota step of a request: which buckets to charge, when, and how a verdict becomes
//! a response. Reserve once per request (at headers for body-less routes, after the body
//! otherwise, when the token estimate is known); settle once, in `on_log`.

use crate::config::{Config, FailureMode, TrafficClass};
use crate::deny::Denial;
use crate::lifecycle::budget_step::{self, BudgetState};
use crate::lifecycle::exchange::Exchange;
use crate::openai::request::Api;
use crate::openai::usage::Usage;
use crate::quota::budget::Prices;
use crate::quota::global::{self, CallFailure, Costs, Outcome, QuotaMode, StrictCall};
use crate::quota::rls;
use crate::quota::SharedStore;
use crate::quota::{self, headers_for, BucketKind, QuotaRequest, Reservation, ReserveVerdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Body-less routes: requests bucket only.
    Headers,
    /// After the body was read: requests and the token estimate.
    Body,
}

/// A refusal and the `x-ratelimit-*` headers it carries. Large, but only built on the
/// cold refusal path, so it is not boxed.
pub type Refusal = (Denial, Vec<(&'static str, String)>);

#[derive(Debug, Default)]
pub struct QuotaState {
    reservation: Option<Reservation>,
    headers: Vec<(&'static str, String)>,
    reserved: bool,
    /// Shared-data gets + sets this request made (reserve + settle).
    pub round_trips: u32,
    /// A store failure influenced a decision (failed open or closed).
    pub degraded: bool,
    /// The tenant whose global limits were charged, and the charges to settle.
    global: Option<(usize, Vec<global::Charge>)>,
    /// A strict admission waiting for its call.
    call: Option<(usize, StrictCall)>,
    /// The call was sent again after a failure (once at most).
    retried: bool,
    /// Seeds this request's report ids: a hash of its gateway request id (random).
    report_seed: u64,
    /// How the quota was decided (records' `quota_mode`); `None` until it was.
    pub mode: Option<QuotaMode>,
    /// Set when the rate limit service was unreachable: `local_fallback` or `closed`
    /// (the degraded-decision metric).
    pub unreachable: Option<&'static str>,
    /// The tenant's spend budgets for this request.
    pub budget: BudgetState,
}

/// Prompt estimate plus the completion the request may produce.
pub fn estimated_tokens(cfg: &Config, ex: &Exchange) -> u64 {
    let prompt = ex.estimated_prompt_tokens.unwrap_or(0);
    prompt.saturating_add(completion_limit(cfg, ex))
}

/// The most the request may generate: its own limit, else the configured default (none
/// for embeddings).
pub fn completion_limit(cfg: &Config, ex: &Exchange) -> u64 {
    match ex.api {
        Some(Api::Embeddings) | None => 0,
        _ => ex
            .max_completion_tokens
            .unwrap_or(cfg.limits.default_completion_tokens),
    }
}

impl QuotaState {
    #[allow(clippy::result_large_err)] // see `Refusal`
    pub fn reserve(
        &mut self,
        cfg: &Config,
        ex: &Exchange,
        store: &dyn SharedStore,
        now_ms: u64,
        stage: Stage,
    ) -> Result<(), Refusal> {
        if self.reserved {
            return Ok(());
        }
        self.reserved = true;
        self.report_seed = ex.request_id.as_deref().map_or(0, fnv1a);
        let Some(tenant) = ex.identity.as_ref().and_then(|id| cfg.tenant(id.tenant)) else {
            return Ok(());
        };
        let tenant_idx = ex.identity.as_ref().map_or(0, |id| id.tenant);
        let tokens = match stage {
            Stage::Headers => 0,
            Stage::Body => estimated_tokens(cfg, ex),
        };
        let model = ex.model.as_deref().filter(|_| ex.known_model);
        // Only budgets need the model's name and prices: a tenant without one does no
        // lookup and no allocation for them.
        let budgeted = !tenant.budgets.is_empty();
        if budgeted {
            self.budget.model = model.map(str::to_owned);
        }
        let prices = match budgeted {
            true => Prices::of(model.and_then(|m| cfg.models.get(m))),
            false => Prices::default(),
        };
        let costs = Costs {
            tokens,
            spend_micros: match stage {
                Stage::Body if budgeted => budget_step::max_cost(cfg, ex, &prices),
                _ => 0,
            },
        };
        let Some(q) = &tenant.quota else {
            return self.reserve_global(cfg, tenant_idx, store, &costs, prices, now_ms);
        };
        let class = ex.traffic_class.unwrap_or(TrafficClass::Interactive);
        let req = QuotaRequest {
            prefix: &cfg.shared_data_prefix,
            tenant: &tenant.name,
            model,
            estimated_tokens: tokens,
            class,
            on_store_error: cfg.quota_failure_mode,
        };
        let outcome = quota::reserve(store, q, &req, now_ms);
        self.round_trips = self.round_trips.saturating_add(outcome.round_trips);
        self.degraded |= outcome.degraded;
        self.headers = quota::rate_limit_headers(&outcome);
        match outcome.verdict {
            ReserveVerdict::Allowed => {
                self.reservation = outcome.reservation;
                self.reserve_global(cfg, tenant_idx, store, &costs, prices, now_ms)
            }
            ReserveVerdict::Denied {
                kind: k,
                retry_after_ms,
            } => {
                let secs = retry_after_ms.div_ceil(1000).max(1);
                let msg = format!(
                    "Rate limit reached for {} of tenant {}. Please try again in {secs}s.",
                    k.label(),
                    tenant.name
                );
                Err((Denial::quota(k, msg), self.headers.clone()))
            }
            ReserveVerdict::TooLarge { kind: k, cost, max } => {
                Err((too_large(k, cost, max, &tenant.name), self.headers.clone()))
            }
            ReserveVerdict::StoreUnavailable => Err((Denial::quota_unavailable(), Vec::new())),
        }
    }

    /// After the local buckets: the tenant's global counters (synced ones charged now,
    /// the others in a call the host sends, see [`QuotaState::take_call`]), or, without
    /// the rate limit service, its budgets in this process.
    #[allow(clippy::result_large_err)] // see `Refusal`
    fn reserve_global(
        &mut self,
        cfg: &Config,
        tenant_idx: usize,
        store: &dyn SharedStore,
        costs: &Costs,
        prices: Prices,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        self.budget.prices = prices;
        self.budget.costs = *costs;
        let model = self.budget.model.clone();
        let Some(t) = global_tenant(cfg, tenant_idx, model.as_deref()) else {
            self.mode = Some(QuotaMode::Local);
            let Some(tenant) = cfg.tenant(tenant_idx) else {
                return Ok(());
            };
            let reserved = self.budget.reserve_local(cfg, tenant, store, costs, now_ms);
            if reserved.is_err() {
                self.release_local(store, now_ms);
            }
            return reserved;
        };
        self.mode = Some(QuotaMode::configured(
            cfg.tenant(tenant_idx)
                .and_then(|t| t.quota.as_ref())
                .and_then(|q| q.global.as_ref()),
        ));
        let out = global::admit_synced(store, &t, costs, now_ms);
        self.decided(cfg, tenant_idx, store, out, now_ms)?;
        let mut seq = 0u64;
        let seed = self.report_seed;
        let mut new_id = || {
            seq += 1;
            seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        };
        if let Some(call) = global::strict_call(&t, costs, now_ms, &mut new_id) {
            self.call = Some((tenant_idx, call));
        }
        Ok(())
    }

    /// Gives back the local buckets' reservation of a request that does not go on.
    fn release_local(&mut self, store: &dyn SharedStore, now_ms: u64) {
        if let Some(r) = self.reservation.take() {
            let out = quota::release(store, &r, now_ms);
            self.round_trips = self.round_trips.saturating_add(out.round_trips);
        }
    }

    /// The message of a strict admission the host must send before the request goes on
    /// (the request stays paused until [`QuotaState::on_answer`]).
    pub fn take_call(&mut self) -> Option<(Vec<u8>, String)> {
        self.call
            .as_ref()
            .map(|(_, c)| (c.message.clone(), c.reports.clone()))
    }

    /// The same call, to send once more after it failed: its report ids make the service
    /// count it once however often it arrives, so the second answer is the definitive
    /// one (whether or not the first call was counted).
    pub fn retry_call(&mut self) -> Option<(Vec<u8>, String)> {
        if self.retried {
            return None;
        }
        self.retried = true;
        self.take_call()
    }

    /// Whether a strict admission is waiting for its answer.
    pub fn awaiting(&self) -> bool {
        self.call.is_some()
    }

    /// The strict admission's answer, or how its call failed.
    #[allow(clippy::result_large_err)] // see `Refusal`
    pub fn on_answer(
        &mut self,
        cfg: &Config,
        store: &dyn SharedStore,
        answer: Result<rls::Response, CallFailure>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let Some((idx, call)) = self.call.take() else {
            return Ok(());
        };
        let model = self.budget.model.clone();
        let Some(t) = global_tenant(cfg, idx, model.as_deref()) else {
            return Ok(());
        };
        let out = global::strict_outcome(store, &t, call, answer, now_ms);
        let decided = self.decided(cfg, idx, store, out, now_ms);
        if decided.is_err() {
            // The synced charges made before the call go back too.
            if let Some((_, charges)) = self.global.take() {
                global::give_back(store, &t, &charges, now_ms);
            }
        }
        decided
    }

    /// A global decision: kept for settlement, or a refusal (the local reservation is
    /// given back, since the request does not go on).
    #[allow(clippy::result_large_err)] // see `Refusal`
    fn decided(
        &mut self,
        cfg: &Config,
        idx: usize,
        store: &dyn SharedStore,
        out: Outcome,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let name = cfg.tenant(idx).map_or("", |t| t.name.as_str());
        let refusal = match out {
            Outcome::Admitted { mode, charges } => {
                if !charges.is_empty() {
                    self.mode = Some(mode);
                }
                if mode == QuotaMode::LocalFallback {
                    self.unreachable = Some("local_fallback");
                }
                self.budget.admitted_globally(&charges, now_ms);
                match &mut self.global {
                    Some((_, held)) => held.extend(charges),
                    None => self.global = Some((idx, charges)),
                }
                return Ok(());
            }
            Outcome::Denied {
                mode,
                counter,
                retry_after_ms,
                remaining,
            } => {
                self.mode = Some(mode);
                if mode == QuotaMode::LocalFallback {
                    self.unreachable = Some("local_fallback");
                }
                match counter.kind.bucket() {
                    Some(kind) => {
                        let secs = retry_after_ms.div_ceil(1000).max(1);
                        let msg = format!(
                            "Rate limit reached for {} of tenant {name} across all gateways. \
                             Please try again in {secs}s.",
                            kind.label()
                        );
                        (
                            Denial::quota(kind, msg),
                            headers_for(&[], Some(retry_after_ms)),
                        )
                    }
                    None => self
                        .budget
                        .refused_globally(name, &counter, remaining, now_ms),
                }
            }
            Outcome::TooLarge { counter, cost } => match counter.kind.bucket() {
                Some(kind) => (
                    too_large(kind, cost, u64::from(counter.limit), name),
                    Vec::new(),
                ),
                None => self.budget.refused_globally(name, &counter, None, now_ms),
            },
            Outcome::Unavailable => {
                self.unreachable = Some("closed");
                (Denial::quota_unavailable(), Vec::new())
            }
            Outcome::StoreFailed => {
                self.degraded = true;
                match cfg.quota_failure_mode {
                    FailureMode::Open => return Ok(()),
                    FailureMode::Closed => (Denial::quota_unavailable(), Vec::new()),
                }
            }
        };
        self.release_local(store, now_ms);
        Err(refusal)
    }

    /// `x-ratelimit-*` headers for the response of an allowed request.
    pub fn response_headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// Settle the reservation against `billed`, what the request is billed (see
    /// `Exchange::billable`; `None`: nothing), and return its tokens (for
    /// `wasm.ai.tokens_total`).
    pub fn settle(
        &mut self,
        cfg: &Config,
        store: &dyn SharedStore,
        billed: Option<&Usage>,
        now_ms: u64,
    ) -> u64 {
        let tokens = billed.map_or(0, |u| u.total_tokens);
        if let Some(r) = self.reservation.take() {
            let out = quota::settle(store, r, tokens, now_ms);
            self.round_trips = self.round_trips.saturating_add(out.round_trips);
            self.degraded |= out.degraded;
        }
        let costs = Costs {
            tokens,
            spend_micros: billed.map_or(0, |u| self.budget.prices.billed_micros(u)),
        };
        self.budget.settle_local(store, costs.spend_micros, now_ms);
        if let Some((idx, charges)) = self.global.take() {
            let model = self.budget.model.clone();
            if let Some(t) = global_tenant(cfg, idx, model.as_deref()) {
                global::settle(store, &t, &charges, &costs, now_ms);
            }
            self.budget.settled_globally(&charges, &costs, now_ms);
        }
        tokens
    }
}

/// The tenant's counters at the rate limit service, when it has any.
fn global_tenant<'a>(
    cfg: &'a Config,
    idx: usize,
    model: Option<&'a str>,
) -> Option<global::Tenant<'a>> {
    let tenant = cfg.tenant(idx)?;
    if tenant.global.is_empty() {
        return None;
    }
    Some(global::Tenant {
        prefix: &cfg.shared_data_prefix,
        name: &tenant.name,
        counters: &tenant.global,
        model,
        engine: cfg.global.as_ref()?,
    })
}

/// FNV-1a, 64 bits.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A request that can never fit: 400, retrying cannot help.
fn too_large(kind: BucketKind, cost: u64, max: u64, tenant: &str) -> Denial {
    let msg = format!(
        "This request needs an estimated {cost} {} but tenant {tenant} can never use more \
         than {max} at once; reduce max_tokens or the prompt. Retrying will not help.",
        kind.label()
    );
    Denial::quota_too_large(kind, msg)
}

#[cfg(test)]
pub(crate) mod tests;
