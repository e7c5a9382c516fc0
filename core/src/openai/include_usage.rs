//! Rewriting a streaming request so the server reports usage in the stream.

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::json_scan::{Step, TopLevelScanner};

const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// Returns a copy of `body` in which `stream_options.include_usage` is `true`,
/// or `None` if the body is not a valid JSON object or has a `stream_options`
/// that is neither an object nor null (or appears twice).
///
/// Everything outside `stream_options` is kept byte for byte: a missing
/// `stream_options` is inserted right after the opening `{`, and an existing
/// one has only its own value re-serialized (other members of it are kept;
/// their order may change). Only meaningful for chat/completions requests with
/// `stream: true` (OpenAI rejects `stream_options` otherwise); callers should
/// check [`super::ParsedRequest::include_usage`] first to skip needless copies.
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    // Validate first so the byte-level scan below only ever sees valid JSON.
    // IgnoredAny skips iteratively, so deep nesting cannot overflow the stack.
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<IgnoredAny>(text).ok()?;
    rewrite_valid(body)
}

/// [`with_include_usage`] for a body that [`super::parse_request`] has accepted, which
/// is valid JSON already: skips the second validation pass (a third of the cost on
/// large bodies). Same result as [`with_include_usage`] for any such body.
pub fn with_include_usage_parsed(
    body: &[u8],
    parsed: &super::ParsedRequest<'_>,
) -> Option<Vec<u8>> {
    // The borrow proves the body was parsed; the parse is not needed otherwise.
    let _ = parsed;
    rewrite_valid(body)
}

/// The byte-level rewrite; `body` must be valid JSON.
fn rewrite_valid(body: &[u8]) -> Option<Vec<u8>> {
    let open = body
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if body.get(open) != Some(&b'{') {
        return None;
    }

    let mut scan = TopLevelScanner::new();
    let mut members = 0usize;
    let mut start = None;
    let mut span = None;
    let mut i = 0usize;
    while let Some(&b) = body.get(i) {
        // Fast path: string content (most of a prompt) cannot change the scan state.
        let run = scan.plain_string_run(body.get(i..).unwrap_or_default());
        if run > 0 {
            i = i.saturating_add(run);
            continue;
        }
        let at = i;
        i = i.saturating_add(1);
        match scan.step(b) {
            Step::ValueStart => {
                members = members.saturating_add(1);
                if scan.key_is("stream_options") {
                    if span.is_some() {
                        // Duplicate key: which one upstream uses is unknowable.
                        return None;
                    }
                    start = Some(at);
                }
            }
            Step::ValueEnd => {
                if let Some(s) = start.take() {
                    span = Some((s, at));
                }
            }
            Step::ValueByte | Step::Outside => {}
        }
    }
    if !scan.is_done() {
        return None;
    }

    let after_open = open.checked_add(1)?;
    let (head, tail) = body.split_at_checked(after_open)?;
    let mut out = Vec::with_capacity(body.len().saturating_add(MEMBER.len() + 1));
    match span {
        None => {
            out.extend_from_slice(head);
            out.extend_from_slice(MEMBER);
            if members > 0 {
                out.push(b',');
            }
            out.extend_from_slice(tail);
        }
        Some((s, e)) => {
            let value = serde_json::from_slice::<Value>(body.get(s..e)?).ok()?;
            let mut options = match value {
                Value::Null => Map::new(),
                Value::Object(map) => map,
                _ => return None,
            };
            options.insert("include_usage".to_string(), Value::Bool(true));
            out.extend_from_slice(body.get(..s)?);
            serde_json::to_writer(&mut out, &options).ok()?;
            out.extend_from_slice(body.get(e..)?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
