//! Scanners for vendor credentials with a fixed shape: GitHub, Slack, Google,
//! Stripe and Hugging Face tokens, Slack webhook URLs, and AWS secret access
//! keys (which have no prefix and are recognized by shape plus context).
//!
//! Prefixed tokens are found in one pass that only looks further at bytes
//! that start a prefix, and each match is skipped, so a scan is linear.

use super::span::{at_is, before_is, find_from, is_word, run_all, Span};

pub(crate) const TAG_GITHUB: &str = "[GITHUB_TOKEN]";
pub(crate) const TAG_SLACK: &str = "[SLACK_TOKEN]";
pub(crate) const TAG_SLACK_WEBHOOK: &str = "[SLACK_WEBHOOK]";
pub(crate) const TAG_GOOGLE_KEY: &str = "[GOOGLE_API_KEY]";
pub(crate) const TAG_GOOGLE_OAUTH: &str = "[GOOGLE_OAUTH]";
pub(crate) const TAG_STRIPE: &str = "[STRIPE_KEY]";
pub(crate) const TAG_HF: &str = "[HF_TOKEN]";
pub(crate) const TAG_AWS_SECRET: &str = "[AWS_SECRET]";

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_word_or_dash(c: u8) -> bool {
    is_word(c) || c == b'-'
}

fn is_alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

fn is_oauth(c: u8) -> bool {
    is_word_or_dash(c) || c == b'.'
}

/// A token class: a literal prefix, then at least `min_body` body bytes.
struct Prefixed {
    prefix: &'static [u8],
    body: fn(u8) -> bool,
    min_body: usize,
    tag: &'static str,
}

const fn rule(
    prefix: &'static [u8],
    body: fn(u8) -> bool,
    min_body: usize,
    tag: &'static str,
) -> Prefixed {
    Prefixed {
        prefix,
        body,
        min_body,
        tag,
    }
}

/// Bodies are a little shorter than today's formats (GitHub 36, Google 35,
/// Hugging Face 34, Stripe 24+) so older and test tokens are caught too, and
/// long enough that identifiers such as `hf_hub_download` or `sk_live_mode`
/// are not.
const RULES: &[Prefixed] = &[
    // GitHub: personal, OAuth, user-to-server, server-to-server, refresh;
    // fine-grained personal tokens have an inner `_`.
    rule(b"ghp_", is_alnum, 30, TAG_GITHUB),
    rule(b"gho_", is_alnum, 30, TAG_GITHUB),
    rule(b"ghu_", is_alnum, 30, TAG_GITHUB),
    rule(b"ghs_", is_alnum, 30, TAG_GITHUB),
    rule(b"ghr_", is_alnum, 30, TAG_GITHUB),
    rule(b"github_pat_", is_word, 30, TAG_GITHUB),
    // Slack: bot, user, app-configuration, refresh, session; app-level tokens.
    rule(b"xoxb-", is_alnum_dash, 10, TAG_SLACK),
    rule(b"xoxp-", is_alnum_dash, 10, TAG_SLACK),
    rule(b"xoxa-", is_alnum_dash, 10, TAG_SLACK),
    rule(b"xoxr-", is_alnum_dash, 10, TAG_SLACK),
    rule(b"xoxs-", is_alnum_dash, 10, TAG_SLACK),
    rule(b"xoxe-", is_alnum_dash, 10, TAG_SLACK),
    rule(b"xapp-", is_alnum_dash, 10, TAG_SLACK),
    // Google: API keys (AIza + 35) and OAuth 2.0 access tokens.
    rule(b"AIza", is_word_or_dash, 35, TAG_GOOGLE_KEY),
    rule(b"ya29.", is_oauth, 20, TAG_GOOGLE_OAUTH),
    // Stripe: secret, restricted and publishable keys, live and test, and
    // webhook signing secrets.
    rule(b"sk_live_", is_alnum, 16, TAG_STRIPE),
    rule(b"sk_test_", is_alnum, 16, TAG_STRIPE),
    rule(b"rk_live_", is_alnum, 16, TAG_STRIPE),
    rule(b"rk_test_", is_alnum, 16, TAG_STRIPE),
    rule(b"pk_live_", is_alnum, 16, TAG_STRIPE),
    rule(b"pk_test_", is_alnum, 16, TAG_STRIPE),
    rule(b"whsec_", is_alnum, 24, TAG_STRIPE),
    // Hugging Face user access tokens.
    rule(b"hf_", is_alnum, 30, TAG_HF),
];

/// Vendor tokens that start with one of [`RULES`]' prefixes, as a token of
/// their own (not glued to a preceding word, dash or dot-free identifier):
/// the prefix and the whole body run are masked.
pub(crate) fn find_prefixed_tokens(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let starts_prefix = matches!(
            c,
            b'g' | b'x' | b'A' | b'y' | b's' | b'r' | b'p' | b'w' | b'h'
        );
        if starts_prefix && !before_is(b, i, is_word_or_dash) {
            if let Some((end, tag)) = prefixed_at(b, i) {
                out.push(Span::new(i, end, tag));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

fn prefixed_at(b: &[u8], start: usize) -> Option<(usize, &'static str)> {
    let rest = b.get(start..)?;
    RULES.iter().find_map(|r| {
        if !rest.starts_with(r.prefix) {
            return None;
        }
        let body_start = start + r.prefix.len();
        let body = run_all(b, body_start, r.body);
        (body >= r.min_body).then_some((body_start + body, r.tag))
    })
}

// ---------------------------------------------------------------- Slack webhooks

const SLACK_HOOKS: &[u8] = b"hooks.slack.com/";

fn is_path(c: u8) -> bool {
    is_word_or_dash(c) || c == b'/'
}

/// `https://hooks.slack.com/services/…` (also `workflows/`, `triggers/`):
/// the whole URL, scheme included, when its path has at least 8 more bytes.
pub(crate) fn find_slack_webhooks(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut from = 0;
    while let Some(p) = find_from(b, from, SLACK_HOOKS) {
        let after = p + SLACK_HOOKS.len();
        let kind = [&b"services/"[..], b"workflows/", b"triggers/"]
            .into_iter()
            .find(|k| b.get(after..).is_some_and(|r| r.starts_with(k)))
            .map_or(0, <[u8]>::len);
        let path = run_all(b, after + kind, is_path);
        if kind > 0 && path >= 8 && !before_is(b, p, |c| is_word_or_dash(c) || c == b'.') {
            let start = [&b"https://"[..], b"http://"]
                .into_iter()
                .find(|s| p >= s.len() && b.get(p - s.len()..p) == Some(s))
                .map_or(p, |s| p - s.len());
            let end = after + kind + path;
            out.push(Span::new(start, end, TAG_SLACK_WEBHOOK));
            from = end;
        } else {
            from = p + 1;
        }
    }
}

// ---------------------------------------------------------------- AWS secrets

const AWS_SECRET_LEN: usize = 40;
/// How far before a candidate the `aws` / `secret` context may be.
const AWS_CONTEXT: usize = 64;

fn is_aws_secret_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+'
}

/// AWS secret access keys: a whole run of exactly 40 base64 characters
/// (`A-Z a-z 0-9 / +`) mixing upper and lower case with a digit, `/` or
/// `+`, with `aws` or `secret` (any case) in the 64 bytes before it.
/// The shape alone would match too much; the mix of cases rules out git
/// SHA-1s and other hex digests, the context rules out random ids.
pub(crate) fn find_aws_secrets(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        let run = run_all(b, i, is_aws_secret_char);
        if run == 0 {
            i += 1;
            continue;
        }
        let end = i + run;
        // A longer base64 blob ends in `=` padding; `_`/`-` make an identifier.
        let glued =
            before_is(b, i, is_word_or_dash) || at_is(b, end, |c| is_word_or_dash(c) || c == b'=');
        if run == AWS_SECRET_LEN
            && !glued
            && random_mix(b.get(i..end).unwrap_or_default())
            && has_aws_context(b.get(i.saturating_sub(AWS_CONTEXT)..i).unwrap_or_default())
        {
            out.push(Span::new(i, end, TAG_AWS_SECRET));
        }
        i = end;
    }
}

fn random_mix(s: &[u8]) -> bool {
    s.iter().any(u8::is_ascii_uppercase)
        && s.iter().any(u8::is_ascii_lowercase)
        && s.iter()
            .any(|&c| c.is_ascii_digit() || c == b'/' || c == b'+')
}

fn has_aws_context(before: &[u8]) -> bool {
    let has = |word: &[u8]| {
        before
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    has(b"aws") || has(b"secret")
}

#[cfg(test)]
mod tests;
