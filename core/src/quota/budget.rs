//! Spend budgets: dollars per UTC day and per UTC month, per tenant and optionally per
//! tenant and model, reserved before the request at its maximum cost and settled on what
//! it is billed.
//!
//! Spend is kept in micro-dollars (integers). With `global_quota` it lives with the rate
//! limit service (one call per budgeted request: [`crate::quota::global`]'s spend
//! counters), so it holds across replicas and survives gateway restarts; without it, in
//! this process's shared data ([`reserve_local`]): exact across workers, lost when the
//! process restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::escape;
use super::global::{Counter, CounterKind, OnUnavailable, Unit};
use super::store::{self, SharedStore, StoreError, Stored};
use crate::config::Model;
use crate::openai::usage::Usage;

/// Largest budget per period, in dollars.
pub const MAX_USD: f64 = 1e9;

/// `tenants[].budget`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
    /// Narrower budgets for single models, in addition to the tenant's.
    #[serde(default)]
    pub models: BTreeMap<String, ModelBudget>,
    /// With the rate limit service unreachable: `local` (each process spends at most
    /// budget / expected_replicas of the period) or `closed` (503).
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBudget {
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
}

/// A budget's period: a UTC calendar day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn label(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    fn unit(self) -> Unit {
        match self {
            Period::Day => Unit::Day,
            Period::Month => Unit::Month,
        }
    }

    /// The start of the period holding `now_ms`.
    pub fn start(self, now_ms: u64) -> u64 {
        self.unit().window_start(now_ms)
    }

    /// When the period holding `now_ms` ends (the budget resets).
    pub fn end(self, now_ms: u64) -> u64 {
        self.unit().window_end(now_ms)
    }

    fn counter_kind(self) -> CounterKind {
        match self {
            Period::Day => CounterKind::SpendDay,
            Period::Month => CounterKind::SpendMonth,
        }
    }

    pub fn of(kind: CounterKind) -> Option<Period> {
        match kind {
            CounterKind::SpendDay => Some(Period::Day),
            CounterKind::SpendMonth => Some(Period::Month),
            _ => None,
        }
    }
}

/// One budget of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub period: Period,
    pub model: Option<String>,
    pub limit_micros: u64,
}

impl Budget {
    /// The global counter that holds it.
    pub fn counter(&self, on: OnUnavailable) -> Counter {
        Counter::spend(
            self.period.counter_kind(),
            self.model.as_deref(),
            self.limit_micros,
            on,
        )
    }

    /// `<prefix>:b:<tenant>:<day|month>[:<model>]`: its spend in this process.
    pub fn key(&self, prefix: &str, tenant: &str) -> String {
        let mut key = format!("{prefix}:b:{}:{}", escape(tenant), self.period.label());
        if let Some(m) = &self.model {
            key.push(':');
            key.push_str(&escape(m));
        }
        key
    }

    pub fn applies(&self, model: Option<&str>) -> bool {
        self.model.is_none() || self.model.as_deref() == model
    }
}

/// Micro-dollars of a dollar amount (rounded to the nearest).
pub fn micros(usd: f64) -> u64 {
    super::super::record::cost::to_micros(usd)
}

impl BudgetSpec {
    /// Every field checked; the error names it (`tenants[0].budget.usd_per_day: …`).
    pub fn validate(&self, path: &str, models: &dyn Fn(&str) -> bool) -> Result<(), String> {
        let check = |p: &str, field: &str, v: Option<f64>| -> Result<(), String> {
            match v {
                Some(x) if !x.is_finite() || x <= 0.0 || x > MAX_USD => Err(format!(
                    "{p}.{field}: must be a number above 0 and at most {MAX_USD}, got {x}"
                )),
                Some(x) if micros(x) == 0 => Err(format!("{p}.{field}: must be at least 0.000001")),
                _ => Ok(()),
            }
        };
        check(path, "usd_per_day", self.usd_per_day)?;
        check(path, "usd_per_month", self.usd_per_month)?;
        let mut any = self.usd_per_day.is_some() || self.usd_per_month.is_some();
        for (name, m) in &self.models {
            let p = format!("{path}.models[{name:?}]");
            if !models(name) {
                return Err(format!("{path}.models: {name:?} is not a configured model"));
            }
            check(&p, "usd_per_day", m.usd_per_day)?;
            check(&p, "usd_per_month", m.usd_per_month)?;
            any |= m.usd_per_day.is_some() || m.usd_per_month.is_some();
        }
        if !any {
            return Err(format!("{path}: needs usd_per_day or usd_per_month"));
        }
        Ok(())
    }

    /// Every budget, tenant-wide first (day, month), then per model.
    pub fn budgets(&self) -> Vec<Budget> {
        let mut out = Vec::new();
        let mut push = |period, model: Option<&str>, usd: Option<f64>| {
            if let Some(usd) = usd {
                out.push(Budget {
                    period,
                    model: model.map(str::to_owned),
                    limit_micros: micros(usd).max(1),
                });
            }
        };
        push(Period::Day, None, self.usd_per_day);
        push(Period::Month, None, self.usd_per_month);
        for (name, m) in &self.models {
            push(Period::Day, Some(name), m.usd_per_day);
            push(Period::Month, Some(name), m.usd_per_month);
        }
        out
    }
}

/// A model's prices, captured when the request is admitted: the settlement charges at
/// these, whatever configuration is pushed meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prices {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

impl Prices {
    pub fn of(model: Option<&Model>) -> Prices {
        model.map_or(Prices::default(), |m| Prices {
            input: m.input_usd_per_million,
            cached_input: m.cached_input_usd_per_million,
            output: m.output_usd_per_million,
        })
    }

    /// The most `prompt` tokens in and `completion` out can cost, in micro-dollars
    /// (rounded up; a price per million tokens is micro-dollars per token).
    pub fn max_micros(&self, prompt: u64, completion: u64) -> u64 {
        let most =
            prompt as f64 * self.input.max(self.cached_input) + completion as f64 * self.output;
        if most.is_finite() && most > 0.0 {
            most.ceil().min(u64::MAX as f64) as u64
        } else {
            0
        }
    }

    /// What `usage` is billed, in micro-dollars: the gateway record's
    /// `estimated_cost_usd`, rounded the same way.
    pub fn billed_micros(&self, usage: &Usage) -> u64 {
        let model = Model {
            name: String::new(),
            input_usd_per_million: self.input,
            output_usd_per_million: self.output,
            cached_input_usd_per_million: self.cached_input,
            clusters: None,
            credential: None,
        };
        micros(super::super::record::cost::estimate_usd(&model, usage))
    }
}

/// One budget's spend in this process's period (shared data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spend {
    period_start: u64,
    micros: i64,
}

impl Stored for Spend {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(1);
        out.extend_from_slice(&self.period_start.to_le_bytes());
        out.extend_from_slice(&self.micros.to_le_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 17 || bytes.first() != Some(&1) {
            return None;
        }
        Some(Spend {
            period_start: u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?),
            micros: i64::from_le_bytes(bytes.get(9..17)?.try_into().ok()?),
        })
    }
}

impl Spend {
    fn current(self, period: Period, now_ms: u64) -> Spend {
        let start = period.start(now_ms);
        if self.period_start == start {
            self
        } else {
            Spend {
                period_start: start,
                micros: 0,
            }
        }
    }
}

/// Where one budget stands: its limit and what is spent (both micro-dollars).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub period: Period,
    pub model: Option<String>,
    pub limit_micros: u64,
    pub spent_micros: u64,
    /// When the period ends.
    pub reset_ms: u64,
}

impl Standing {
    pub fn remaining_micros(&self) -> u64 {
        self.limit_micros.saturating_sub(self.spent_micros)
    }
}

/// The budget that binds: the one with the least left.
pub fn binding(standings: &[Standing]) -> Option<&Standing> {
    standings.iter().min_by_key(|s| s.remaining_micros())
}

/// A budget this request reserved in, in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub budget: Budget,
    pub key: String,
    pub period_start: u64,
    pub reserved: u64,
    /// Spent after the reservation.
    pub spent: u64,
}

/// Why a local reservation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The reservation does not fit what `standing` has left.
    Exceeded(Standing),
    Store(StoreError),
}

/// Reserves `cost` micro-dollars in every budget of `budgets` that applies to `model`,
/// all or nothing: one get and one set per budget.
pub fn reserve_local(
    store: &dyn SharedStore,
    key_of: &dyn Fn(&Budget) -> String,
    budgets: &[&Budget],
    cost: u64,
    now_ms: u64,
) -> Result<Vec<Held>, Refused> {
    let mut held: Vec<Held> = Vec::with_capacity(budgets.len());
    let mut trips = 0;
    let c = i64::try_from(cost).unwrap_or(i64::MAX);
    for b in budgets {
        let key = key_of(b);
        let init = Spend {
            period_start: b.period.start(now_ms),
            micros: 0,
        };
        let limit = i64::try_from(b.limit_micros).unwrap_or(i64::MAX);
        let result = store::update(store, &key, init, &mut trips, |s| {
            let s = s.current(b.period, now_ms);
            if s.micros.saturating_add(c) > limit {
                return (None, Err(s));
            }
            let next = Spend {
                micros: s.micros.saturating_add(c),
                ..s
            };
            (Some(next), Ok(next))
        });
        let refusal = match result {
            Ok(Ok(next)) => {
                held.push(Held {
                    budget: (*b).clone(),
                    key,
                    period_start: next.period_start,
                    reserved: cost,
                    spent: u64::try_from(next.micros.max(0)).unwrap_or(0),
                });
                continue;
            }
            Ok(Err(s)) => Refused::Exceeded(Standing {
                period: b.period,
                model: b.model.clone(),
                limit_micros: b.limit_micros,
                spent_micros: u64::try_from(s.micros.max(0)).unwrap_or(0),
                reset_ms: b.period.end(now_ms),
            }),
            Err(e) => Refused::Store(e),
        };
        settle_local(store, &held, 0, now_ms);
        return Err(refusal);
    }
    Ok(held)
}

/// Charges `billed` micro-dollars instead of each reservation; returns where each budget
/// stands after it. A reservation from a period that has ended is not carried over.
pub fn settle_local(
    store: &dyn SharedStore,
    held: &[Held],
    billed: u64,
    now_ms: u64,
) -> Vec<Standing> {
    let mut out = Vec::with_capacity(held.len());
    let mut trips = 0;
    for h in held {
        let delta = i128::from(billed) - i128::from(h.reserved);
        let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        let init = Spend {
            period_start: h.budget.period.start(now_ms),
            micros: 0,
        };
        let result = store::update(store, &h.key, init, &mut trips, |s| {
            let s = s.current(h.budget.period, now_ms);
            if s.period_start != h.period_start || delta == 0 {
                return (None, s);
            }
            let next = Spend {
                micros: s.micros.saturating_add(delta).max(0),
                ..s
            };
            (Some(next), next)
        });
        let spent = match result {
            Ok(s) => u64::try_from(s.micros.max(0)).unwrap_or(0),
            Err(_) => {
                log::warn!("budget: a settlement could not be recorded; it is lost");
                h.spent
            }
        };
        out.push(Standing {
            period: h.budget.period,
            model: h.budget.model.clone(),
            limit_micros: h.budget.limit_micros,
            spent_micros: spent,
            reset_ms: h.budget.period.end(now_ms),
        });
    }
    out
}

#[cfg(test)]
mod tests;
