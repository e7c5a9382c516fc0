//! Estimated cost of a request from the configured price table.

use crate::config::Model;
use crate::openai::usage::Usage;

/// USD for the usage at the model's prices (per million tokens). Cached prompt tokens are
/// billed at the cached price when the backend reports them.
pub fn estimate_usd(model: &Model, usage: &Usage) -> f64 {
    let cached = usage.cached_tokens.unwrap_or(0).min(usage.prompt_tokens);
    let fresh = usage.prompt_tokens - cached;
    let micro = fresh as f64 * model.input_usd_per_million
        + cached as f64 * model.cached_input_usd_per_million
        + usage.completion_tokens as f64 * model.output_usd_per_million;
    round(micro / 1_000_000.0)
}

/// Integer micro-USD, for counters (Prometheus counters here are integers).
pub fn to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1_000_000.0).round() as u64
    } else {
        0
    }
}

/// Ten decimal places: exact enough for per-request cents, short in logs.
fn round(usd: f64) -> f64 {
    (usd * 1e10).round() / 1e10
}

#[cfg(test)]
mod tests;
