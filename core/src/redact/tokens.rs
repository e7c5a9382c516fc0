//! Scanners for textual secrets: e-mail addresses, JWTs, API keys, AWS access
//! key ids and `Bearer` tokens.
//!
//! All are ASCII-only, anchored on a cheap literal (`@`, `eyJ`, `sk-`,
//! `AKIA`/`ASIA`, `bearer`), and skip past each match, so a scan is linear.

use super::creds::is_url_userinfo_end;
use super::span::{at, at_is, before_is, find_from, is_word, run_all, Span};

pub(crate) const TAG_EMAIL: &str = "[EMAIL]";
pub(crate) const TAG_JWT: &str = "[JWT]";
pub(crate) const TAG_API_KEY: &str = "[API_KEY]";
pub(crate) const TAG_AWS_KEY: &str = "[AWS_KEY]";
pub(crate) const TAG_BEARER: &str = "[BEARER]";

/// Characters of a base64url segment (JWT parts, most API keys).
fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

// ---------------------------------------------------------------- e-mail

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// `local@domain.tld` with at least two domain labels and an alphabetic TLD
/// of two or more letters (`user@localhost` is left alone).
pub(crate) fn find_emails(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut from = 0;
    // The local part never reaches back before the previous match.
    let mut floor = 0;
    while let Some(at_sign) = find_from(b, from, b"@") {
        let mut left = at_sign;
        while left > floor && before_is(b, left, is_local) {
            left -= 1;
        }
        while left < at_sign && at(b, left) == Some(b'.') {
            left += 1;
        }
        // `scheme://user:pass@host` is the URL scanner's: it masks the user too.
        if left < at_sign && !is_url_userinfo_end(b, at_sign) {
            if let Some(end) = domain_end(b, at_sign + 1) {
                out.push(Span::new(left, end, TAG_EMAIL));
                from = end;
                floor = end;
                continue;
            }
        }
        from = at_sign + 1;
    }
}

/// End of the longest `label(.label)+` at `start` whose last label is an
/// alphabetic TLD; a sentence-ending `.` is not included.
fn domain_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut labels = 0;
    let mut best = None;
    loop {
        let run = run_all(b, i, is_label);
        if run == 0 {
            break;
        }
        labels += 1;
        let tld_like = run >= 2
            && b.get(i..i + run)
                .is_some_and(|l| l.iter().all(u8::is_ascii_alphabetic));
        i += run;
        if labels >= 2 && tld_like {
            best = Some(i);
        }
        if at(b, i) == Some(b'.') && at_is(b, i + 1, is_label) {
            i += 1;
        } else {
            break;
        }
    }
    best
}

// ---------------------------------------------------------------- JWT

/// Three (or, for JWE, five) base64url segments joined by dots, the first
/// starting with `eyJ` (base64 of `{"`). Plain base64 without the dotted
/// structure is not a JWT.
pub(crate) fn find_jwts(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut from = 0;
    while let Some(p) = find_from(b, from, b"eyJ") {
        if !before_is(b, p, is_b64url) {
            if let Some(end) = jwt_end(b, p) {
                out.push(Span::new(p, end, TAG_JWT));
                from = end;
                continue;
            }
        }
        from = p + 1;
    }
}

fn jwt_end(b: &[u8], start: usize) -> Option<usize> {
    // A header is at least {"alg":"..."}: far more than 10 base64 chars.
    let header = run_all(b, start, is_b64url);
    if header < 10 {
        return None;
    }
    let mut i = start + header;
    if at(b, i) != Some(b'.') {
        return None;
    }
    i += 1;
    let payload = run_all(b, i, is_b64url);
    if payload < 2 {
        return None;
    }
    i += payload;
    if at(b, i) != Some(b'.') {
        return None;
    }
    i += 1;
    // The signature may be empty (alg "none"); further segments are JWE parts.
    i += run_all(b, i, is_b64url);
    while at(b, i) == Some(b'.') && at_is(b, i + 1, is_b64url) {
        i += 1;
        i += run_all(b, i, is_b64url);
    }
    Some(i)
}

// ---------------------------------------------------------------- API keys

const KEY_MIN_BODY: usize = 16;

/// `sk-`, `sk-proj-`, `sk-ant-` followed by at least 16 key characters.
/// The prefix must start a token, so words such as `task-list` or
/// `risk-based` never match.
pub(crate) fn find_api_keys(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut from = 0;
    while let Some(p) = find_from(b, from, b"sk-") {
        let body_start = p + 3;
        let body = run_all(b, body_start, is_b64url);
        let end = body_start + body;
        if !before_is(b, p, is_b64url) {
            let rest = b.get(body_start..end).unwrap_or_default();
            let prefix = [b"proj-".as_slice(), b"ant-".as_slice()]
                .into_iter()
                .find(|pre| rest.starts_with(pre))
                .map_or(0, <[u8]>::len);
            if body.saturating_sub(prefix) >= KEY_MIN_BODY {
                out.push(Span::new(p, end, TAG_API_KEY));
            }
        }
        // Any later "sk-" inside this run is glued to key chars: skip it.
        from = end.max(p + 1);
    }
}

/// AWS access key ids: `AKIA` (long-term) or `ASIA` (temporary) followed by
/// exactly 16 upper-case letters or digits, as a whole token.
pub(crate) fn find_aws_keys(b: &[u8], out: &mut Vec<Span<'_>>) {
    let is_id_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let mut i = 0;
    while let Some(p) = find_from(b, i, b"A") {
        let prefix_ok = matches!(b.get(p..p + 4), Some(b"AKIA" | b"ASIA"));
        let end = p + 20;
        let body_ok = b
            .get(p + 4..end)
            .is_some_and(|s| s.iter().all(|&c| is_id_char(c)));
        if prefix_ok && body_ok && !before_is(b, p, is_word) && !at_is(b, end, is_word) {
            out.push(Span::new(p, end, TAG_AWS_KEY));
            i = end;
        } else {
            i = p + 1;
        }
    }
}

// ---------------------------------------------------------------- Bearer

fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// `Bearer <token>` (scheme matched case-insensitively, as in HTTP). Only the
/// token is masked. Prose like "the bearer of bad news" is left alone: the
/// token must be 8+ characters and contain a digit, a symbol or an inner
/// capital, as real tokens do.
pub(crate) fn find_bearer_tokens(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        let is_scheme = b
            .get(i..i + 6)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"));
        if !is_scheme || before_is(b, i, is_word) {
            i += 1;
            continue;
        }
        let gap = run_all(b, i + 6, |c| c == b' ' || c == b'\t');
        let start = i + 6 + gap;
        let mut end = start + run_all(b, start, is_token68);
        let token = b.get(start..end).unwrap_or_default();
        end += run_all(b, end, |c| c == b'=');
        if gap > 0 && token_like(token) && !at_is(b, end, is_word) {
            out.push(Span::new(start, end, TAG_BEARER));
            i = end;
        } else {
            i += 6;
        }
    }
}

fn token_like(token: &[u8]) -> bool {
    token.len() >= 8
        && token
            .iter()
            .enumerate()
            .any(|(k, &c)| !c.is_ascii_alphabetic() || (k > 0 && c.is_ascii_uppercase()))
}

#[cfg(test)]
mod tests;
