//! Scanners for credentials recognized by their surroundings: PEM private-key
//! blocks, `password=…` style key-value secrets, HTTP `Basic` credentials and
//! the user information of URLs (`scheme://user:password@host`).
//!
//! Each is anchored on a cheap literal (`-----BEGIN `, `=`/`:`, `basic`,
//! `://`) and skips past each match, so a scan is linear.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

use super::span::{at, at_is, before, before_is, find_from, is_word, run_all, Span};

pub(crate) const TAG_PRIVATE_KEY: &str = "[PRIVATE_KEY]";
pub(crate) const TAG_SECRET: &str = "[SECRET]";
pub(crate) const TAG_BASIC: &str = "[BASIC]";
pub(crate) const TAG_CREDENTIALS: &str = "[CREDENTIALS]";

// ---------------------------------------------------------------- PEM

const PEM_BEGIN: &[u8] = b"-----BEGIN ";
const PEM_END: &[u8] = b"-----END ";
const PEM_DASHES: &[u8] = b"-----";
/// Labels are short (`ENCRYPTED PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`).
const PEM_MAX_LABEL: usize = 40;

/// `-----BEGIN <label>-----` where the label names a private key (`PRIVATE
/// KEY`, `RSA PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`,
/// …), through the next `-----END <label>-----`. Without an end line (the text
/// was cut, e.g. by the preview's scan window) the block runs to the end of
/// the text: everything after a private-key header is key material.
/// Certificates and public keys are left alone.
pub(crate) fn find_private_keys(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut from = 0;
    while let Some(p) = find_from(b, from, PEM_BEGIN) {
        let label_start = p + PEM_BEGIN.len();
        let label = run_all(b, label_start, |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
        });
        let header_end = label_start + label;
        let is_private = label <= PEM_MAX_LABEL
            && b.get(label_start..header_end)
                .is_some_and(|l| l.windows(11).any(|w| w == b"PRIVATE KEY"))
            && b.get(header_end..)
                .is_some_and(|r| r.starts_with(PEM_DASHES));
        if !is_private {
            from = p + 1;
            continue;
        }
        let end = find_from(b, header_end + PEM_DASHES.len(), PEM_END)
            .and_then(|e| find_from(b, e + PEM_END.len(), PEM_DASHES))
            .map_or(b.len(), |d| d + PEM_DASHES.len());
        out.push(Span::new(p, end, TAG_PRIVATE_KEY));
        from = end;
    }
}

// ---------------------------------------------------------------- key = value

/// Key names (lower case, `_`/`-`/`.` removed) whose value is a secret: a key
/// matches when its normalized form ends with one of these, so `DB_PASSWORD`,
/// `client_secret`, `X-Api-Key`, `accessToken` and `aws_secret_access_key`
/// all do, while `max_tokens`, `token_count` or `pwd` do not.
const SECRET_KEYS: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"passphrase",
    b"secret",
    b"token",
    b"apikey",
    b"accesskey",
    b"secretkey",
    b"privatekey",
    b"signingkey",
    b"encryptionkey",
];
/// Longest entry of [`SECRET_KEYS`].
const KEY_SUFFIX_MAX: usize = 13;

fn is_key_char(c: u8) -> bool {
    is_word(c) || matches!(c, b'-' | b'.')
}

/// Bytes that end an unquoted value: whitespace, quotes, and the punctuation
/// that separates fields in JSON-ish, query-string and list syntax.
fn ends_value(c: u8) -> bool {
    c.is_ascii_whitespace()
        || matches!(
            c,
            b'"' | b'\'' | b'`' | b',' | b';' | b'&' | b')' | b']' | b'}' | b'<' | b'>'
        )
}

/// `key = value`, `key: value`, `"key": "value"`, `key => 'value'`,
/// `key := value` where the key names a secret (see [`SECRET_KEYS`]); only
/// the value is masked.
///
/// A quoted value runs to its closing quote (backslash escapes honoured, and
/// `\"…\"` as found in JSON inside a JSON string); unterminated, to the end
/// of the line. An unquoted value runs to whitespace or a field separator
/// (see [`ends_value`]). No value, an empty one (`password=""`), stars
/// (`password: ****`) or an object or list (`"token": {`) is not masked; nor
/// is a key mentioned in prose without `=` or `:`.
pub(crate) fn find_key_values(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        // One check per separator token: `:=`, `=>`, `==` are looked at once.
        let first_of_token = !before_is(b, i, |p| matches!(p, b':' | b'=' | b'!' | b'<' | b'>'));
        if (c == b'=' || c == b':') && first_of_token && secret_key_before(b, i) {
            if let Some((start, end)) = value_after(b, i) {
                out.push(Span::new(start, end, TAG_SECRET));
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
}

/// Whether the key before the separator at `sep` names a secret.
fn secret_key_before(b: &[u8], sep: usize) -> bool {
    let mut i = sep;
    while before_is(b, i, |c| c == b' ' || c == b'\t' || c == b'*') {
        i -= 1;
    }
    if before_is(b, i, |c| c == b'"' || c == b'\'') {
        i -= 1;
        if before(b, i) == Some(b'\\') {
            i -= 1;
        }
    }
    // The key's last KEY_SUFFIX_MAX letters and digits, lower-cased, in order.
    let mut tail = [0u8; KEY_SUFFIX_MAX];
    let mut n = 0;
    while n < KEY_SUFFIX_MAX && before_is(b, i, is_key_char) {
        i -= 1;
        let c = at(b, i).unwrap_or_default();
        if c.is_ascii_alphanumeric() {
            n += 1;
            if let Some(slot) = tail.get_mut(KEY_SUFFIX_MAX - n) {
                *slot = c.to_ascii_lowercase();
            }
        }
    }
    let tail = tail.get(KEY_SUFFIX_MAX - n..).unwrap_or_default();
    if !SECRET_KEYS.iter().any(|k| tail.ends_with(k)) {
        return false;
    }
    // `https://token:…@host` is user information: the URL scanner's.
    while before_is(b, i, is_key_char) {
        i -= 1;
    }
    !(i >= 3 && b.get(i - 3..i) == Some(b"://".as_slice()))
}

/// The value after the separator starting at `sep`, as a byte range.
fn value_after(b: &[u8], sep: usize) -> Option<(usize, usize)> {
    let mut i = sep + 1;
    // The rest of `:=`, `=>`, `==`; `::` is a path or an IPv6 address.
    match (at(b, sep), at(b, i)) {
        (Some(b':'), Some(b':')) => return None,
        (_, Some(b'=' | b'>')) => i += 1,
        _ => {}
    }
    // `**Password:** x` in Markdown: the bold marker closes after the colon.
    i += run_all(b, i, |c| c == b'*');
    i += run_all(b, i, |c| c == b' ' || c == b'\t');
    let escaped = at(b, i) == Some(b'\\') && matches!(at(b, i + 1), Some(b'"' | b'\''));
    let open = if escaped { i + 1 } else { i };
    match at(b, open) {
        Some(q @ (b'"' | b'\'' | b'`')) => {
            let start = open + 1;
            let end = closing_quote(b, start, q, escaped);
            (end > start).then_some((start, end))
        }
        Some(b'{' | b'[' | b'(') | None => None,
        Some(_) => {
            let end = i + run_all(b, i, |c| !ends_value(c));
            // `password: ****` shows a value that was already masked.
            let stars = b.get(i..end).is_some_and(|v| v.iter().all(|&c| c == b'*'));
            (end > i && !stars).then_some((i, end))
        }
    }
}

/// Position of the quote `q` closing a value that starts at `start` (`\q`
/// when the opening quote was escaped), or the end of the line or text.
fn closing_quote(b: &[u8], start: usize, q: u8, escaped: bool) -> usize {
    let mut i = start;
    while let Some(c) = at(b, i) {
        if c == b'\n' {
            return i;
        }
        if c == b'\\' {
            if escaped && at(b, i + 1) == Some(q) {
                return i;
            }
            i += 2;
            continue;
        }
        if c == q && !escaped {
            return i;
        }
        i += 1;
    }
    b.len()
}

// ---------------------------------------------------------------- Basic

/// Accepts padded and unpadded base64 alike, as HTTP clients differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

/// `Basic <credentials>` (scheme matched case-insensitively, as in HTTP)
/// where the credentials are base64 of printable `user:password` text; only
/// the credentials are masked. Prose ("basic usage", "Basic Auth") does not
/// decode to that, so it is left alone.
pub(crate) fn find_basic_credentials(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        let is_scheme = b
            .get(i..i + 5)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"basic"));
        if !is_scheme || before_is(b, i, is_word) {
            i += 1;
            continue;
        }
        let gap = run_all(b, i + 5, |c| c == b' ' || c == b'\t');
        let start = i + 5 + gap;
        let mut end = start + run_all(b, start, is_base64);
        end += run_all(b, end, |c| c == b'=');
        let token = b.get(start..end).unwrap_or_default();
        if gap > 0 && !at_is(b, end, is_word) && decodes_to_user_password(token) {
            out.push(Span::new(start, end, TAG_BASIC));
            i = end;
        } else {
            i += 5;
        }
    }
}

fn decodes_to_user_password(token: &[u8]) -> bool {
    if token.len() < 4 {
        return false;
    }
    let Ok(raw) = BASE64.decode(token) else {
        return false;
    };
    std::str::from_utf8(&raw).is_ok_and(|s| s.contains(':') && !s.chars().any(char::is_control))
}

// ---------------------------------------------------------------- URL userinfo

/// Characters of a URL's user information (RFC 3986: unreserved,
/// percent-encoded, sub-delims and `:`).
pub(crate) fn is_userinfo(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
        )
}

fn is_authority(c: u8) -> bool {
    is_userinfo(c) || matches!(c, b'@' | b'[' | b']')
}

/// `scheme://user:password@host`: the whole user information before the
/// host's `@` (the last `@` of the authority, as URL parsers read it) is
/// masked, user name included, so `https://[CREDENTIALS]@host` keeps the
/// host. A user without a password (`https://ghp_…@github.com`,
/// `https://alice@host`) is masked too: tokens are often passed that way.
pub(crate) fn find_url_credentials(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut from = 0;
    while let Some(p) = find_from(b, from, b"://") {
        let start = p + 3;
        let run = run_all(b, start, is_authority);
        let authority = b.get(start..start + run).unwrap_or_default();
        let at_sign = authority.iter().rposition(|&c| c == b'@');
        match at_sign {
            Some(a) if a > 0 && before_is(b, p, |c| c.is_ascii_alphabetic()) => {
                out.push(Span::new(start, start + a, TAG_CREDENTIALS));
            }
            _ => {}
        }
        from = (start + run).max(p + 1);
    }
}

/// Whether the `@` at `at_sign` ends the user information of a URL (the
/// run before it, back to `://`, is user information): the e-mail scanner
/// leaves such an `@` to [`find_url_credentials`].
pub(crate) fn is_url_userinfo_end(b: &[u8], at_sign: usize) -> bool {
    let mut i = at_sign;
    while before_is(b, i, is_userinfo) {
        i -= 1;
    }
    i < at_sign && i >= 3 && b.get(i - 3..i) == Some(b"://".as_slice())
}

#[cfg(test)]
mod tests;
