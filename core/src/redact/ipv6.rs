//! IPv6 addresses: full, `::`-compressed and with an embedded IPv4 address.
//!
//! Colons also appear in times, MAC addresses, scope paths (`std::vector`)
//! and Python slices (`a[1::2]`), so the rules are strict: a full address has
//! exactly eight groups, a compressed one needs enough of an address around
//! the `::` to be one (see [`ipv6_at`]).

use super::numbers::ipv4_at;
use super::span::{at, at_is, before, is_word, Span};

pub(crate) const TAG_IPV6: &str = "[IPV6]";

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// IPv6 addresses in the RFC 4291 text forms, as whole tokens. A zone
/// (`%eth0`) or prefix length (`/64`) after the address is left visible.
pub(crate) fn find_ipv6(b: &[u8], out: &mut Vec<Span<'_>>) {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if (is_hex(c) || c == b':') && may_start(b, i) {
            if let Some(end) = ipv6_at(b, i) {
                out.push(Span::new(i, end, TAG_IPV6));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

/// Not glued to a word, a dotted chain, or a colon list (`12:30:45`); a
/// label before a colon (`addr:2001:db8::1`) is fine.
fn may_start(b: &[u8], i: usize) -> bool {
    match before(b, i) {
        None => true,
        Some(p) if is_word(p) || p == b'.' => false,
        Some(b':') => !before(b, i - 1).is_some_and(|c| is_hex(c) || c == b':'),
        Some(_) => true,
    }
}

/// What an address candidate is made of.
#[derive(Default)]
struct Shape {
    /// 16-bit groups, an embedded IPv4 address counting as two.
    groups: usize,
    compressed: bool,
    longest_group: usize,
    decimal_digit: bool,
    ipv4_tail: bool,
}

/// End of the IPv6 address at `start`, if the text there is one.
///
/// Full form: exactly eight groups (or six and an IPv4 address). Compressed
/// form: one `::`, at most seven groups, at least two of them, one with three
/// or more hex digits (`fe80`, `2001`, `ffff`) or an IPv4 tail, and a decimal
/// digit somewhere. So `fe80::1`, `2001:db8::` and `::ffff:192.0.2.1` match,
/// while `::1`, `a[1::2]`, `x[10::20]` and `dead::beef` do not.
pub(crate) fn ipv6_at(b: &[u8], start: usize) -> Option<usize> {
    let mut s = Shape::default();
    let mut i = start;
    if b.get(i..i + 2) == Some(b"::".as_slice()) {
        s.compressed = true;
        i += 2;
    }
    loop {
        if s.groups <= 6 && at_is(b, i, |c| c.is_ascii_digit()) {
            if let Some(end) = ipv4_at(b, i) {
                s.groups += 2;
                s.ipv4_tail = true;
                s.decimal_digit = true;
                i = end;
                break;
            }
        }
        let run = (0..5).take_while(|&k| at_is(b, i + k, is_hex)).count();
        if run == 0 {
            break;
        }
        if run > 4 || s.groups >= 8 {
            return None;
        }
        let group = b.get(i..i + run).unwrap_or_default();
        s.decimal_digit |= group.iter().any(u8::is_ascii_digit);
        s.longest_group = s.longest_group.max(run);
        s.groups += 1;
        i += run;
        if b.get(i..i + 2) == Some(b"::".as_slice()) {
            if s.compressed {
                return None;
            }
            s.compressed = true;
            i += 2;
        } else if at(b, i) == Some(b':') && at_is(b, i + 1, is_hex) {
            i += 1;
        } else {
            break;
        }
    }
    // A colon or dot that only ends a sentence ("at fe80::1: done") is fine.
    let glued = at_is(b, i, is_word)
        || (matches!(at(b, i), Some(b':' | b'.')) && at_is(b, i + 1, |c| is_hex(c) || c == b':'));
    (!glued && shape_ok(&s)).then_some(i)
}

fn shape_ok(s: &Shape) -> bool {
    if !s.compressed {
        return s.groups == 8;
    }
    s.groups <= 7 && s.groups >= 2 && (s.longest_group >= 3 || s.ipv4_tail) && s.decimal_digit
}

#[cfg(test)]
mod tests;
