//! A request's spend budgets: the reservation at its maximum cost, the refusal
//! (`insufficient_quota`), the settlement at what it is billed, and where the binding
//! budget stands for the headers, the gateway record and the gauges.

use super::exchange::Exchange;
use super::quota_step::{completion_limit, Refusal};
use crate::config::{Config, FailureMode, Tenant};
use crate::contract::header;
use crate::deny::Denial;
use crate::quota::budget::{self, binding, Budget, Held, Period, Prices, Refused, Standing};
use crate::quota::global::{Charge, Costs, Counter};
use crate::quota::SharedStore;
use crate::record::timefmt::rfc3339_millis;

/// The most the request can cost at `prices`, in micro-dollars: its prompt estimate in,
/// its completion limit out (the token reservation's upper bound).
pub fn max_cost(cfg: &Config, ex: &Exchange, prices: &Prices) -> u64 {
    let prompt = ex.estimated_prompt_tokens.unwrap_or(0);
    prices.max_micros(prompt, completion_limit(cfg, ex))
}

#[derive(Debug, Default)]
pub struct BudgetState {
    /// The request's model (per-model budgets), when it is a configured one.
    pub model: Option<String>,
    /// Prices at admission: the settlement charges at these.
    pub prices: Prices,
    /// What was reserved.
    pub costs: Costs,
    /// Reservations in this process's shared data (no rate limit service).
    held: Vec<Held>,
    /// Where each budget stands: after the reservation, then after the settlement.
    pub standing: Vec<Standing>,
    /// Shared data failed while reserving.
    pub degraded: bool,
}

impl BudgetState {
    /// Reserves the maximum cost in the tenant's budgets in this process.
    #[allow(clippy::result_large_err)] // see `Refusal`
    pub fn reserve_local(
        &mut self,
        cfg: &Config,
        tenant: &Tenant,
        store: &dyn SharedStore,
        costs: &Costs,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let model = self.model.as_deref();
        let budgets: Vec<&Budget> = tenant.budgets.iter().filter(|b| b.applies(model)).collect();
        if budgets.is_empty() {
            return Ok(());
        }
        let key_of = |b: &Budget| b.key(&cfg.shared_data_prefix, &tenant.name);
        match budget::reserve_local(store, &key_of, &budgets, costs.spend_micros, now_ms) {
            Ok(held) => {
                self.standing = held
                    .iter()
                    .map(|h| Standing {
                        period: h.budget.period,
                        model: h.budget.model.clone(),
                        limit_micros: h.budget.limit_micros,
                        spent_micros: h.spent,
                        reset_ms: h.budget.period.end(now_ms),
                    })
                    .collect();
                self.held = held;
                Ok(())
            }
            Err(Refused::Exceeded(st)) => {
                let refusal = refusal(&tenant.name, &st, costs.spend_micros, true);
                self.standing = vec![st];
                Err(refusal)
            }
            Err(Refused::Store(_)) => {
                self.degraded = true;
                match cfg.quota_failure_mode {
                    FailureMode::Open => Ok(()),
                    FailureMode::Closed => Err((Denial::quota_unavailable(), Vec::new())),
                }
            }
        }
    }

    /// A settlement in this process's shared data.
    pub fn settle_local(&mut self, store: &dyn SharedStore, billed_micros: u64, now_ms: u64) {
        if !self.held.is_empty() {
            self.standing = budget::settle_local(store, &self.held, billed_micros, now_ms);
            self.held.clear();
        }
    }

    /// The rate limit service admitted the request: its spend counters say what is left.
    pub fn admitted_globally(&mut self, charges: &[Charge], now_ms: u64) {
        let costs = self.costs;
        self.standing.extend(standings(charges, &costs, now_ms));
    }

    /// After the settlement, from the service's answer at admission.
    pub fn settled_globally(&mut self, charges: &[Charge], billed: &Costs, now_ms: u64) {
        let after = standings(charges, billed, now_ms);
        if !after.is_empty() {
            self.standing = after;
        }
    }

    /// The service refused the request for a spend counter.
    /// `remaining`: units left just before this request (read in the same call), else
    /// the whole budget is taken as spent.
    pub fn refused_globally(
        &mut self,
        tenant: &str,
        counter: &Counter,
        remaining: Option<u64>,
        now_ms: u64,
    ) -> Refusal {
        let Some(period) = Period::of(counter.kind) else {
            return (Denial::quota_unavailable(), Vec::new());
        };
        let limit = u64::from(counter.limit).saturating_mul(counter.scale);
        let left = remaining.map_or(0, |r| r.saturating_mul(counter.scale).min(limit));
        let st = Standing {
            period,
            model: counter.model.clone(),
            limit_micros: limit,
            spent_micros: limit - left,
            reset_ms: period.end(now_ms),
        };
        let refusal = refusal(tenant, &st, self.costs.spend_micros, false);
        self.standing = vec![st];
        refusal
    }

    /// Headers for every response of a budgeted tenant.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        binding(&self.standing).map(headers).unwrap_or_default()
    }
}

/// Where the spend counters of `charges` stand after charging `costs`.
fn standings(charges: &[Charge], costs: &Costs, now_ms: u64) -> Vec<Standing> {
    charges
        .iter()
        .filter_map(|c| {
            let period = Period::of(c.counter.kind)?;
            let left = c.remaining_after(c.counter.cost(costs))?;
            let limit = u64::from(c.counter.limit).saturating_mul(c.counter.scale);
            Some(Standing {
                period,
                model: c.counter.model.clone(),
                limit_micros: limit,
                spent_micros: limit.saturating_sub(left),
                reset_ms: period.end(now_ms),
            })
        })
        .collect()
}

/// USD with six decimals, from micro-dollars.
pub fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn headers(st: &Standing) -> Vec<(&'static str, String)> {
    vec![
        (header::BUDGET_PERIOD, st.period.label().to_string()),
        (header::BUDGET_REMAINING_USD, usd(st.remaining_micros())),
        (header::BUDGET_RESET_AT, rfc3339_seconds(st.reset_ms)),
    ]
}

/// `2026-12-03T00:00:00Z`.
fn rfc3339_seconds(ms: u64) -> String {
    let full = rfc3339_millis(ms - ms % 1000);
    full.replace(".000Z", "Z")
}

/// 429 `insufficient_quota`: names the budget, what the request needed, when it resets.
/// `spent_known`: the spend is this process's exact figure (the service only says "over").
fn refusal(tenant: &str, st: &Standing, cost: u64, spent_known: bool) -> Refusal {
    let scope = match &st.model {
        Some(m) => format!("{} budget for model {m}", adjective(st.period)),
        None => format!("{} budget", adjective(st.period)),
    };
    let spent = if spent_known {
        format!(" ({} USD spent)", usd(st.spent_micros))
    } else {
        String::new()
    };
    let msg = format!(
        "Tenant {tenant} has reached its {scope} of {} USD{spent}: this request may cost up \
         to {} USD. The budget resets at {}.",
        usd(st.limit_micros),
        usd(cost),
        rfc3339_seconds(st.reset_ms)
    );
    (Denial::budget_exceeded(msg), headers(st))
}

fn adjective(p: Period) -> &'static str {
    match p {
        Period::Day => "daily",
        Period::Month => "monthly",
    }
}

#[cfg(test)]
mod tests;
