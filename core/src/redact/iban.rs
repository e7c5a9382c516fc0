//! IBANs (ISO 13616): country code, two check digits and a BBAN, validated
//! with the ISO 7064 mod-97 check so that look-alike codes stay visible.

use super::span::{at, at_is, before_is, is_word, Span};

pub(crate) const TAG_IBAN: &str = "[IBAN]";

/// The shortest IBAN (Norway) has 15 characters, the longest 34 (the standard's cap).
const IBAN_MIN: usize = 15;
const IBAN_MAX: usize = 34;

fn is_bban(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

/// IBANs written compactly (`DE89370400440532013000`) or in the printed form,
/// groups of four separated by single spaces (`DE89 3704 0044 0532 0130 00`):
/// two upper-case letters, check digits 02–98, then upper-case letters and
/// digits, 15–34 characters in all, passing mod-97. Only a whole token
/// matches; a valid IBAN followed by more groups (`… 0130 00 EUR`) is still
/// found.
pub(crate) fn find_ibans(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while i < b.len() {
        if starts_iban(b, i) {
            if let Some(end) = iban_at(b, i) {
                out.push(Span::new(i, end, TAG_IBAN));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

fn starts_iban(b: &[u8], i: usize) -> bool {
    let Some(head) = b.get(i..i + 4) else {
        return false;
    };
    let check = head
        .get(2..4)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .map(|d| d.iter().fold(0u8, |v, &c| v * 10 + (c - b'0')));
    head.iter().take(2).all(u8::is_ascii_uppercase)
        && check.is_some_and(|c| (2..=98).contains(&c))
        && !before_is(b, i, is_word)
}

/// End of the longest valid IBAN at `start`, if any.
fn iban_at(b: &[u8], start: usize) -> Option<usize> {
    let mut chars = [0u8; IBAN_MAX];
    let mut n = 0usize;
    let mut i = start;
    let mut best = None;
    // Grouped form: after the first group of four, a space then a group.
    let grouped = at(b, start + 4) == Some(b' ');
    loop {
        let cap = if grouped { 4 } else { IBAN_MAX + 1 };
        let mut run = 0;
        while run < cap && at_is(b, i + run, is_bban) {
            run += 1;
        }
        if run == 0 || n + run > IBAN_MAX || (!grouped && at_is(b, i + run, is_word)) {
            break;
        }
        for (k, &c) in b.get(i..i + run).unwrap_or_default().iter().enumerate() {
            if let Some(slot) = chars.get_mut(n + k) {
                *slot = c;
            }
        }
        n += run;
        i += run;
        if n >= IBAN_MIN && !at_is(b, i, is_word) && mod97_valid(chars.get(..n)?) {
            best = Some(i);
        }
        // Only full groups of four continue; a shorter one ends the IBAN.
        if !grouped || run < 4 || at(b, i) != Some(b' ') || !at_is(b, i + 1, is_bban) {
            break;
        }
        i += 1;
    }
    best
}

/// ISO 7064 mod 97-10 as IBANs use it: the first four characters moved to the
/// end, letters read as 10–35, and the number taken mod 97 must be 1.
pub(crate) fn mod97_valid(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut r: u32 = 0;
    for &c in tail.iter().chain(head) {
        r = match c {
            b'0'..=b'9' => (r * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (r * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    r == 1
}

#[cfg(test)]
mod tests;
