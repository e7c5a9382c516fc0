//! OpenAI-compatible rate-limit response headers.
//!
//! OpenAI sends `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` with
//! the maximum permitted before the limit is exhausted (here: the bucket's
//! capacity for the request's traffic class), the remaining count, and the
//! time until the bucket is back to its initial (full) state as a Go-style duration (`1s`, `6m0s`,
//! `20ms`, `1m30.5s`). On a 429 we add `retry-after` (whole seconds, rounded
//! up, at least 1) and `retry-after-ms`.

use super::config::BucketKind;
use super::reserve::{BucketReport, ReserveOutcome, ReserveVerdict};

/// Headers for a [`ReserveOutcome`]; only kinds with a configured (and
/// consulted) bucket appear.
pub fn rate_limit_headers(outcome: &ReserveOutcome) -> Vec<(&'static str, String)> {
    let retry = match outcome.verdict {
        ReserveVerdict::Denied { retry_after_ms, .. } => Some(retry_after_ms),
        _ => None,
    };
    headers_for(&outcome.reports, retry)
}

/// Headers from bucket reports (e.g. from [`super::peek`]). When a request
/// and a model bucket of the same kind both apply, the one that denied wins,
/// else the one with the least remaining: it is the one the client hits.
pub fn headers_for(
    reports: &[BucketReport],
    retry_after_ms: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let kinds = [
        (
            BucketKind::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            BucketKind::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ];
    for (kind, [limit, remaining, reset]) in kinds {
        let Some(r) = binding(reports, kind) else {
            continue;
        };
        out.push((limit, r.limit.to_string()));
        out.push((remaining, r.remaining.to_string()));
        out.push((reset, format_duration(r.reset_ms)));
    }
    if let Some(ms) = retry_after_ms {
        let ms = ms.max(1);
        out.push(("retry-after", ms.div_ceil(1000).to_string()));
        out.push(("retry-after-ms", ms.to_string()));
    }
    out
}

fn binding(reports: &[BucketReport], kind: BucketKind) -> Option<&BucketReport> {
    let of_kind = reports.iter().filter(|r| r.kind == kind);
    of_kind
        .clone()
        .find(|r| r.denied)
        // Least remaining; on a tie the one that takes longer to reset.
        .or_else(|| of_kind.min_by_key(|r| (r.remaining, std::cmp::Reverse(r.reset_ms))))
}

/// Go `time.Duration` formatting at millisecond resolution, as OpenAI uses:
/// `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1m30.5s`, `2h0m0s`.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let secs = (ms / 1000) % 60;
    let frac = ms % 1000;
    let mut seconds = secs.to_string();
    if frac != 0 {
        let digits = format!("{frac:03}");
        seconds.push('.');
        seconds.push_str(digits.trim_end_matches('0'));
    }
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests;
