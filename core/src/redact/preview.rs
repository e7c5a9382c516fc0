//! Redacted, truncated prompt previews.
//!
//! Order matters: secrets are masked on the untruncated scan window first and
//! only then is the result cut to `max_chars`, so a cut can only ever split a
//! replacement tag, never a secret.

use super::fold::fold_char;
use super::span::Span;
use super::Redactor;

/// Marker appended when content was left out.
const ELLIPSIS: char = '…';

/// Slack scanned past the `4 * max_chars` bytes a preview can show unmasked.
const SCAN_SLACK: usize = 256;

/// How far the scan may run past its limit to finish a space-free token.
const MAX_EXTEND: usize = 4096;

/// Longer than any built-in secret that contains spaces and is only
/// recognized whole (phone and grouped card numbers and grouped IBANs stay
/// under 48 bytes, PEM headers under 60), and than an IPv6 address (at most
/// 45).
/// Secrets recognized by their start (PEM blocks, quoted `password: "…"`
/// values) are masked to the end of the scan window when cut.
const TAIL_MARGIN: usize = 64;

/// Masks sensitive substrings of `text`, then truncates the result to
/// `max_chars` characters, appending `…` when anything was left out.
/// `max_chars == 0` means previews are off and gives an empty string.
///
/// Only about the first `4 * max_chars + 256` bytes are scanned (no preview
/// can show more unmasked text than that); see `scan_window` for how a
/// secret crossing that limit is kept from showing partially.
#[must_use]
pub fn redacted_preview(text: &str, max_chars: usize, rules: &Redactor) -> String {
    if max_chars == 0 {
        return String::new();
    }
    let limit = max_chars.saturating_mul(4).saturating_add(SCAN_SLACK);
    let (end, keep) = scan_window(text, limit);
    let window = text.get(..end).unwrap_or_default();
    render(
        window,
        &rules.spans(window),
        keep,
        text.len(),
        Some(max_chars),
    )
}

/// Chooses how much of `text` to scan (`end`) and up to where the scan
/// result can be trusted (`keep`); the preview never shows text past `keep`.
///
/// A space-free token (key, JWT, e-mail) crossing `limit` is scanned to its
/// end, up to `MAX_EXTEND` extra bytes, so it is masked whole. Secrets with
/// spaces recognized only whole (phone, card and IBAN numbers) are shorter
/// than `TAIL_MARGIN`, so any one crossing `end` starts after `keep`; those
/// recognized by their start (PEM blocks, quoted values) are masked up to
/// `end`. A token longer than the extension cannot be checked at all and is
/// dropped from the preview.
fn scan_window(text: &str, limit: usize) -> (usize, usize) {
    let cut = floor_char_boundary(text, limit);
    if cut >= text.len() {
        return (text.len(), text.len());
    }
    let run = secret_run(text.get(cut..).unwrap_or_default(), MAX_EXTEND + 1);
    if run <= MAX_EXTEND {
        // The run is whole characters, so `end` is a char boundary.
        let end = cut + run;
        if end >= text.len() {
            return (text.len(), text.len());
        }
        return (
            end,
            floor_char_boundary(text, end.saturating_sub(TAIL_MARGIN)),
        );
    }
    (cut, tail_start(text.get(..cut).unwrap_or_default()))
}

/// Masks every sensitive substring of the whole `text` (no truncation).
pub(crate) fn redact_all(text: &str, rules: &Redactor) -> String {
    render(text, &rules.spans(text), text.len(), text.len(), None)
}

/// Largest char boundary `<= limit`.
fn floor_char_boundary(text: &str, limit: usize) -> usize {
    if limit >= text.len() {
        return text.len();
    }
    (0..=limit)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Characters that can be part of a space-free secret: [`in_secret`] bytes
/// and their compatibility forms (`ｓｋ－…` is scanned as `sk-…`).
fn secret_char(c: char) -> bool {
    match u8::try_from(c) {
        Ok(b) if b.is_ascii() => in_secret(b),
        _ => fold_char(c).is_some_and(in_secret),
    }
}

/// Length in bytes of the run of [`secret_char`]s at the start of `text`,
/// counting at most about `cap` bytes.
fn secret_run(text: &str, cap: usize) -> usize {
    let mut len = 0;
    for c in text.chars() {
        if len >= cap || !secret_char(c) {
            break;
        }
        len += c.len_utf8();
    }
    len
}

/// Bytes that can occur inside a space-free secret: everything the built-in
/// scanners match except spaces (phone, card and IBAN groups) and quoted or
/// unquoted `password=…` values, which are masked from the key onwards. The
/// colon and the sub-delimiters keep URL user information (`user:pa$$@host`)
/// and IPv6 addresses in one run.
fn in_secret(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-@()/=~:!$&'*,;".contains(&c)
}

/// Where the trustworthy part of a scan window ends when the window cuts a
/// token too long to finish.
///
/// A secret detected only partly, or not at all, because the window cut it
/// must reach the end of the window. If it has no spaces it lies inside the
/// final run of `secret_char`s; if it has spaces it is shorter than
/// `TAIL_MARGIN`. Nothing before the smaller of the two
/// starts can belong to such a secret. Secrets wholly inside the window are
/// masked normally, even when they straddle the returned position.
fn tail_start(window: &str) -> usize {
    let run_start = window
        .char_indices()
        .rev()
        .take_while(|&(_, c)| secret_char(c))
        .last()
        .map_or(window.len(), |(i, _)| i);
    let margin = floor_char_boundary(window, window.len().saturating_sub(TAIL_MARGIN));
    run_start.min(margin)
}

/// Writes `text[..keep]` with `spans` replaced by their tags, limited to
/// `max_chars` characters when given. A span starting before `keep` is
/// replaced whole even if it extends past `keep`. `total_len` is the length
/// of the full input, to know whether anything was left unshown.
fn render(
    text: &str,
    spans: &[Span<'_>],
    keep: usize,
    total_len: usize,
    max_chars: Option<usize>,
) -> String {
    let mut out = Budget::new(max_chars, text.len().min(keep));
    let mut pos = 0;
    for span in spans.iter().take_while(|s| s.start < keep) {
        let plain = text.get(pos..span.start).unwrap_or_default();
        if !out.push(plain) || !out.push(span.tag) {
            return out.truncated();
        }
        pos = span.end;
    }
    if pos < keep && !out.push(text.get(pos..keep).unwrap_or_default()) {
        return out.truncated();
    }
    if pos.max(keep) < total_len {
        return out.truncated();
    }
    out.done()
}

/// An output string with an optional character budget.
struct Budget {
    out: String,
    left: Option<usize>,
}

impl Budget {
    fn new(max_chars: Option<usize>, expected_bytes: usize) -> Self {
        let cap = max_chars.map_or(expected_bytes, |m| m.saturating_mul(4).min(expected_bytes));
        Budget {
            out: String::with_capacity(cap.saturating_add(3)),
            left: max_chars,
        }
    }

    /// Appends as much of `s` as the budget allows; false if some was dropped.
    fn push(&mut self, s: &str) -> bool {
        let Some(left) = self.left.as_mut() else {
            self.out.push_str(s);
            return true;
        };
        let mut chars = s.chars();
        while *left > 0 {
            match chars.next() {
                Some(c) => {
                    self.out.push(c);
                    *left -= 1;
                }
                None => return true,
            }
        }
        chars.next().is_none()
    }

    fn truncated(mut self) -> String {
        self.out.push(ELLIPSIS);
        self.out
    }

    fn done(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests;
