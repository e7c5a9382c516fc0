//! User-supplied redaction patterns, compiled once at configuration time.
//!
//! `regex-lite` guarantees O(pattern × text) matching (no backtracking
//! blow-up), which keeps a hostile or careless pattern from stalling a worker.

use regex_lite::{Regex, RegexBuilder};

use super::span::Span;
use super::UserPattern;

/// Tag used when a pattern has no `replacement`.
pub(crate) const TAG_DEFAULT: &str = "[REDACTED]";

/// Patterns longer than this are almost certainly a mistake; refuse them
/// rather than compile something huge.
const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled-program budget per pattern (regex-lite's default is 10 MiB).
const MAX_COMPILED_BYTES: usize = 1 << 20;
pub(crate) const MAX_PATTERNS: usize = 64;

#[derive(Clone)]
pub(crate) struct UserRule {
    regex: Regex,
    tag: String,
}

impl UserRule {
    /// Compiles pattern number `index`; errors name the field, e.g.
    /// `redaction.patterns[2]: invalid regex: ...`.
    pub(crate) fn compile(index: usize, p: &UserPattern) -> Result<Self, String> {
        let field = format!("redaction.patterns[{index}]");
        if p.pattern.is_empty() {
            return Err(format!("{field}: pattern must not be empty"));
        }
        if p.pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "{field}: pattern longer than {MAX_PATTERN_BYTES} bytes"
            ));
        }
        let regex = RegexBuilder::new(&p.pattern)
            .size_limit(MAX_COMPILED_BYTES)
            .build()
            .map_err(|e| format!("{field}: invalid regex: {}", one_line(&e.to_string())))?;
        let tag = p
            .replacement
            .clone()
            .unwrap_or_else(|| TAG_DEFAULT.to_owned());
        Ok(UserRule { regex, tag })
    }

    /// Adds a span for every non-empty match in `text`.
    pub(crate) fn find<'r>(&'r self, text: &str, out: &mut Vec<Span<'r>>) {
        out.extend(
            self.regex
                .find_iter(text)
                .filter(|m| !m.is_empty())
                .map(|m| Span::new(m.start(), m.end(), self.tag.as_str())),
        );
    }
}

/// regex-lite errors span several lines (pattern, caret, message); a config
/// error should be one log line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
