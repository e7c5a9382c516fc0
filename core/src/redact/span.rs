//! Masked regions and the small byte helpers every scanner shares.
//!
//! Scanners work on `&[u8]` and only ever start or end a span at an ASCII byte
//! (or at the ends of the text), so every span boundary is a UTF-8 char
//! boundary and `str::get(start..end)` on it always succeeds.

/// A byte range of the scanned text to be replaced by `tag`.
///
/// Holds positions only, never the matched text, so it is safe to debug-print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span<'a> {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) tag: &'a str,
}

impl<'a> Span<'a> {
    pub(crate) fn new(start: usize, end: usize, tag: &'a str) -> Self {
        Span { start, end, tag }
    }
}

/// Sorts spans and merges overlapping ones into their union.
///
/// A union (rather than "first match wins") guarantees that no byte any
/// scanner flagged is ever shown. The tag of a merged region is that of the
/// span starting first, and on a tie the one pushed first, so callers push
/// higher-priority scanners first. Ends play no part: a preview's scan window
/// can shorten a span (a value masked to the window's end), never move its
/// start, so a preview's tags are those of the full text.
pub(crate) fn merge(mut spans: Vec<Span<'_>>) -> Vec<Span<'_>> {
    spans.retain(|s| s.start < s.end);
    // Stable sort: equal starts keep push order, i.e. priority.
    spans.sort_by_key(|s| s.start);
    let mut out: Vec<Span<'_>> = Vec::with_capacity(spans.len());
    for span in spans {
        match out.last_mut() {
            Some(last) if span.start < last.end => last.end = last.end.max(span.end),
            _ => out.push(span),
        }
    }
    out
}

/// The byte at `i`, if any.
pub(crate) fn at(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).copied()
}

/// The byte just before `i`, if any.
pub(crate) fn before(b: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| b.get(j).copied())
}

/// ASCII letters, digits and `_`: bytes that glue a match to a longer word.
pub(crate) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether the byte at `i` exists and satisfies `f`.
pub(crate) fn at_is(b: &[u8], i: usize, f: impl Fn(u8) -> bool) -> bool {
    at(b, i).is_some_and(f)
}

/// Whether the byte before `i` exists and satisfies `f`.
pub(crate) fn before_is(b: &[u8], i: usize, f: impl Fn(u8) -> bool) -> bool {
    before(b, i).is_some_and(f)
}

/// Length of the run of bytes satisfying `f` starting at `i`, counting at
/// most `cap` bytes (so callers can bound their work on huge inputs).
pub(crate) fn run_len(b: &[u8], i: usize, cap: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(i..).map_or(0, |rest| {
        rest.iter().take(cap).take_while(|&&c| f(c)).count()
    })
}

/// Length of the unbounded run of bytes satisfying `f` starting at `i`.
pub(crate) fn run_all(b: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    run_len(b, i, usize::MAX, f)
}

/// Positions of `needle` in `b`, left to right, starting the search at `from`.
pub(crate) fn find_from(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let rest = b.get(from..)?;
    if needle.is_empty() {
        return None;
    }
    rest.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests;
