//! The quota step of a request: which buckets to charge, when, and how a verdict becomes
//! a response. Reserve once per request (at headers for body-less routes, after the body
//! otherwise, when the token estimate is known); settle once, in `on_log`.

use crate::config::{Config, TrafficClass};
use crate::deny::Denial;
use crate::lifecycle::exchange::Exchange;
use crate::openai::request::Api;
use crate::quota::{self, QuotaRequest, Reservation, ReserveVerdict, SharedStore};

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
}

/// Prompt estimate plus the completion the request may produce.
pub fn estimated_tokens(cfg: &Config, ex: &Exchange) -> u64 {
    let prompt = ex.estimated_prompt_tokens.unwrap_or(0);
    let completion = match ex.api {
        Some(Api::Embeddings) | None => 0,
        _ => ex
            .max_completion_tokens
            .unwrap_or(cfg.limits.default_completion_tokens),
    };
    prompt.saturating_add(completion)
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
        let Some(tenant) = ex.identity.as_ref().and_then(|id| cfg.tenant(id.tenant)) else {
            return Ok(());
        };
        let Some(q) = &tenant.quota else {
            return Ok(());
        };
        let tokens = match stage {
            Stage::Headers => 0,
            Stage::Body => estimated_tokens(cfg, ex),
        };
        let class = ex.traffic_class.unwrap_or(TrafficClass::Interactive);
        let model = ex.model.as_deref().filter(|_| ex.known_model);
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
                Ok(())
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
                let msg = format!(
                    "This request needs an estimated {cost} {} but tenant {} can never use more \
                     than {max} at once; reduce max_tokens or the prompt. Retrying will not help.",
                    k.label(),
                    tenant.name
                );
                Err((Denial::quota_too_large(k, msg), self.headers.clone()))
            }
            ReserveVerdict::StoreUnavailable => Err((Denial::quota_unavailable(), Vec::new())),
        }
    }

    /// `x-ratelimit-*` headers for the response of an allowed request.
    pub fn response_headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// Settle the reservation against `billed`, what the request is billed (see
    /// `Exchange::billable`), and return it (for `wasm.ai.tokens_total`).
    pub fn settle(&mut self, store: &dyn SharedStore, billed: u64, now_ms: u64) -> u64 {
        if let Some(r) = self.reservation.take() {
            let out = quota::settle(store, r, billed, now_ms);
            self.round_trips = self.round_trips.saturating_add(out.round_trips);
            self.degraded |= out.degraded;
        }
        billed
    }
}

#[cfg(test)]
mod tests;
