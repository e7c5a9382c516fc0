//! Scanners for numeric secrets: payment cards, IPv4 addresses, phone numbers.
//!
//! Each scanner only tries positions that start a number (not glued to a
//! preceding word or dotted/dashed digit chain), and each attempt looks at a
//! bounded number of bytes, so a scan is linear in the text length.

use super::luhn::luhn_valid;
use super::span::{at, at_is, before, before_is, is_word, run_len, Span};

pub(crate) const TAG_CARD: &str = "[CARD]";
pub(crate) const TAG_IPV4: &str = "[IPV4]";
pub(crate) const TAG_PHONE: &str = "[PHONE]";

const CARD_MIN_DIGITS: usize = 13;
const CARD_MAX_DIGITS: usize = 19;
const PHONE_MIN_DIGITS: usize = 7;
/// E.164 caps a full international number at 15 digits.
const PHONE_MAX_DIGITS: usize = 15;

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// True when a number may start at `i`: the previous byte is not part of a
/// word, and not a `.`/`,`/`-`/`/` continuing an earlier digit chain (which
/// would make this the tail of a decimal, version or date).
fn starts_number(b: &[u8], i: usize) -> bool {
    match before(b, i) {
        None => true,
        Some(p) if is_word(p) => false,
        Some(b'.' | b',' | b'-' | b'/' | b'+') => {
            !before_is(b, i.saturating_sub(1), |c| c.is_ascii_alphanumeric())
        }
        Some(_) => true,
    }
}

/// True when a number may end at `end`: not glued to a following word, and
/// not continued as a decimal fraction or another dotted/dashed component.
fn ends_number(b: &[u8], end: usize) -> bool {
    match at(b, end) {
        None => true,
        Some(c) if is_word(c) => false,
        Some(b'.' | b',' | b'-' | b'/') => !at_is(b, end + 1, is_digit),
        Some(_) => true,
    }
}

// ---------------------------------------------------------------- cards

/// Payment card numbers: 13–19 digits, optionally grouped by one kind of
/// separator (space or dash), passing the Luhn check.
pub(crate) fn find_cards(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        if at_is(b, i, is_digit) && starts_number(b, i) {
            if let Some(end) = card_at(b, i) {
                out.push(Span::new(i, end, TAG_CARD));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

/// Longest Luhn-valid card number starting at `start`, if any.
///
/// Groups are tried left to right so a card followed by another number
/// ("4111 1111 1111 1111 2026") is still found.
fn card_at(b: &[u8], start: usize) -> Option<usize> {
    let mut digits = [0u8; CARD_MAX_DIGITS];
    let mut n = 0usize;
    let mut groups = 0usize;
    let mut first_len = 0usize;
    let mut sep: Option<u8> = None;
    let mut best = None;
    let mut i = start;
    loop {
        let run = run_len(b, i, CARD_MAX_DIGITS + 1, is_digit);
        // Real cards group in blocks of 3+ digits; tiny groups are lists of numbers.
        if groups > 0 && (run < 3 || first_len < 3) {
            break;
        }
        if run == 0 || n + run > CARD_MAX_DIGITS {
            break;
        }
        for (k, &c) in b.get(i..i + run).unwrap_or_default().iter().enumerate() {
            if let Some(slot) = digits.get_mut(n + k) {
                *slot = c - b'0';
            }
        }
        n += run;
        i += run;
        if groups == 0 {
            first_len = run;
        }
        groups += 1;
        if n >= CARD_MIN_DIGITS && ends_number(b, i) && luhn_valid(digits.get(..n)?) {
            best = Some(i);
        }
        match at(b, i) {
            Some(c @ (b' ' | b'-')) if sep.is_none_or(|s| s == c) && at_is(b, i + 1, is_digit) => {
                sep = Some(c);
                i += 1;
            }
            _ => break,
        }
    }
    best
}

// ---------------------------------------------------------------- IPv4

/// Dotted-quad IPv4 addresses with every octet in 0–255.
///
/// Exactly four components: `1.2.3` and `1.2.3.4.5` are version-like and
/// left alone.
pub(crate) fn find_ipv4(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        if at_is(b, i, is_digit) && ipv4_may_start(b, i) {
            if let Some(end) = ipv4_at(b, i) {
                out.push(Span::new(i, end, TAG_IPV4));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

fn ipv4_may_start(b: &[u8], i: usize) -> bool {
    // Any preceding dot means this is the tail of a longer dotted string.
    !before_is(b, i, |c| is_word(c) || c == b'.')
}

pub(crate) fn ipv4_at(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    for octet in 0..4 {
        if octet > 0 {
            if at(b, i) != Some(b'.') {
                return None;
            }
            i += 1;
        }
        let run = run_len(b, i, 4, is_digit);
        if !(1..=3).contains(&run) {
            return None;
        }
        let value = b
            .get(i..i + run)?
            .iter()
            .fold(0u32, |v, &c| v * 10 + u32::from(c - b'0'));
        if value > 255 {
            return None;
        }
        i += run;
    }
    // A trailing ".5" would make this a five-part version string; a "/24"
    // prefix length or a ",10.0.0.2" list item is fine.
    let version_tail = at(b, i) == Some(b'.') && at_is(b, i + 1, is_digit);
    (!at_is(b, i, is_word) && !version_tail).then_some(i)
}

// ---------------------------------------------------------------- phones

/// Phone numbers with 7–15 digits.
///
/// International form: `+` then digit groups joined by single spaces, dashes
/// or dots, with at most one parenthesised group (`+1 (555) 123-4567`,
/// `+44 (0)20 7946 0958`, `+4915112345678`).
///
/// National forms need separators, so bare digit runs (ids, amounts) are
/// left alone: `(555) 123-4567`, `555-123-4567`, `555.123.4567`,
/// `555 123 4567`, `555-1234`, and trunk-prefixed `020 7946 0958`,
/// `06-12345678`, `06 12 34 56 78`. Dates (`2026-03-10`, `10.03.2026`),
/// decimals and version strings are rejected by shape.
pub(crate) fn find_phones(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        let c = at(b, i).unwrap_or_default();
        let candidate = (c == b'+' || c == b'(' || is_digit(c)) && starts_number(b, i);
        if candidate {
            if let Some(end) = phone_at(b, i) {
                out.push(Span::new(i, end, TAG_PHONE));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

/// Digit-group lengths of a phone candidate (at most 15, as each has a digit).
struct Groups {
    lens: [usize; PHONE_MAX_DIGITS],
    n: usize,
}

impl Groups {
    fn push(&mut self, len: usize) {
        if let Some(slot) = self.lens.get_mut(self.n) {
            *slot = len;
            self.n += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        self.lens.get(..self.n).unwrap_or_default()
    }
}

fn phone_at(b: &[u8], start: usize) -> Option<usize> {
    let intl = at(b, start) == Some(b'+');
    let mut i = if intl { start + 1 } else { start };
    let mut groups = Groups {
        lens: [0; PHONE_MAX_DIGITS],
        n: 0,
    };
    let mut digits = 0usize;
    // National numbers use one separator throughout; a change ends the number.
    let mut sep: Option<u8> = None;
    let mut paren_used = false;
    let mut first_zero = false;
    let mut end = None;
    loop {
        // "(555)" opens a national number; "+44 (0)20" / "+1 (555)" follow a country code.
        let paren_ok = !paren_used && if intl { groups.n == 1 } else { groups.n == 0 };
        let paren = paren_ok && at(b, i) == Some(b'(');
        let group_start = if paren { i + 1 } else { i };
        let run = run_len(b, group_start, PHONE_MAX_DIGITS + 1, is_digit);
        if run == 0 {
            break;
        }
        let mut group_end = group_start + run;
        if paren {
            if at(b, group_end) != Some(b')') {
                break;
            }
            group_end += 1;
            paren_used = true;
        }
        if digits + run > PHONE_MAX_DIGITS {
            if intl {
                break; // keep the valid prefix: over-masking beats leaking
            }
            return None; // too long for a national number: an id or a card
        }
        if groups.n == 0 {
            first_zero = at(b, group_start) == Some(b'0');
        }
        digits += run;
        groups.push(run);
        end = Some(group_end);
        i = group_end;

        let next = at(b, i);
        let digit_after = at_is(b, i + 1, is_digit);
        if paren {
            // "(555) 123-4567", "(555)123-4567", "+44 (0)20 ..."; this space
            // or dash is not the number's main separator.
            if matches!(next, Some(b' ' | b'-')) && digit_after {
                i += 1;
                continue;
            }
            if next.is_some_and(is_digit) {
                continue;
            }
            break;
        }
        match next {
            Some(c @ (b' ' | b'-' | b'.')) => {
                let paren_next = intl && !paren_used && groups.n == 1;
                if !(digit_after || (paren_next && at(b, i + 1) == Some(b'('))) {
                    break;
                }
                if !intl {
                    if sep.is_some_and(|s| s != c) {
                        break;
                    }
                    sep = Some(c);
                }
                i += 1;
            }
            Some(b'(') if intl && !paren_used && groups.n == 1 => {}
            _ => break,
        }
    }
    let end = end?;
    if !(PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&digits) || !ends_number(b, end) {
        return None;
    }
    if intl {
        return Some(end);
    }
    national_shape_ok(groups.as_slice(), sep, paren_used, first_zero).then_some(end)
}

/// Shape rules that keep national phone matching away from dates, decimals,
/// version strings and lists of numbers.
fn national_shape_ok(lens: &[usize], sep: Option<u8>, paren: bool, first_zero: bool) -> bool {
    if lens.len() < 2 || looks_like_date(lens) {
        return false;
    }
    // After the first group (which may be a 1-digit trunk code as in
    // 1-800-...), single digits mean versions or lists, not phones.
    if lens.iter().skip(1).any(|&l| l < 2) {
        return false;
    }
    if paren {
        return true;
    }
    match sep {
        // Two dotted groups is a decimal; 555.123.4567 has three or more,
        // none of them as short as a version component.
        Some(b'.') => lens.len() >= 3 && lens.iter().all(|&l| l >= 2),
        // Spaces also separate lists of numbers: require a trunk 0 or 3-3-4.
        Some(b' ') => first_zero || lens == [3, 3, 4],
        // 555-1234, 06-12345678; "1990-2020" is a range, not a phone.
        Some(b'-') => lens.len() >= 3 || first_zero || lens == [3, 4],
        _ => false,
    }
}

/// YYYY-MM-DD, DD.MM.YYYY and friends.
fn looks_like_date(lens: &[usize]) -> bool {
    match lens {
        [4, m, d] => *m <= 2 && *d <= 2,
        [d, m, 4] => *d <= 2 && *m <= 2,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
