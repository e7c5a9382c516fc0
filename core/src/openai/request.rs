//! Request body parsing for the OpenAI-compatible APIs.
//!
//! [`parse_request`] reads the few fields the gateway needs (model, streaming
//! flags, output limits, tools) and sizes the prompt, validating the types of
//! exactly the fields it reads; everything else is skipped unvalidated.

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeSeed;

use crate::ascii::{bytes_equal, control_bytes, HIGH_BITS};

use super::request_de::{
    spec, Ctx, Failure, FieldSpec, RawRequest, RequestSeed, F_BEST_OF, F_MODEL,
};

pub use super::include_usage::{with_include_usage, with_include_usage_parsed};

/// Which endpoint a body was sent to; decides which fields are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `/v1/chat/completions`: `messages`, `max_tokens`, `max_completion_tokens`, `n`.
    ChatCompletions,
    /// `/v1/completions`: `prompt`, `suffix`, `max_tokens`, `n`, `best_of`.
    Completions,
    /// `/v1/embeddings`: `input`; never streamed.
    Embeddings,
    /// `/v1/responses`: `input`, `instructions`, `max_output_tokens`.
    Responses,
}

impl Api {
    /// The API served at `path` (query string ignored), matched on the path
    /// suffix so prefixes like `/openai/v1/` work; `None` for other endpoints.
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = path.strip_suffix('/').unwrap_or(path);
        // `/chat/completions` also ends with `/completions`: check it first.
        if path.ends_with("/chat/completions") {
            Some(Api::ChatCompletions)
        } else if path.ends_with("/completions") {
            Some(Api::Completions)
        } else if path.ends_with("/embeddings") {
            Some(Api::Embeddings)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else {
            None
        }
    }

    /// The API called `name` (its [`Api::as_str`] spelling).
    pub fn from_name(name: &str) -> Option<Api> {
        [
            Api::ChatCompletions,
            Api::Completions,
            Api::Embeddings,
            Api::Responses,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }

    /// Stable name for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Responses => "responses",
        }
    }
}

/// Rough token estimate: about four characters per token (ceil).
pub fn estimate_tokens_from_chars(chars: u64) -> u64 {
    chars.div_ceil(4)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyErrorKind {
    /// The body is empty or only whitespace.
    EmptyBody,
    /// Not JSON, not UTF-8, or trailing garbage.
    InvalidJson,
    /// Valid JSON but not an object.
    NotAnObject,
    /// A required field is absent (or `null`).
    MissingField,
    /// A field we read has the wrong JSON type (or a negative/fractional count).
    WrongType,
    /// A required string is empty.
    EmptyValue,
    /// A value of the right type that the API does not accept (`best_of` below `n`).
    InvalidValue,
    /// A field we read appears more than once.
    DuplicateField,
    /// Containers nested deeper than the gateway accepts.
    TooDeep,
}

/// Why a body was rejected. Carries only field names and categories, never
/// body content, so it is safe to log and to return to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError {
    pub kind: BodyErrorKind,
    /// The offending field, e.g. `"stream"` or `"messages[].content"`.
    pub field: Option<&'static str>,
    /// What the field must be, for [`BodyError::message`].
    expected: Option<&'static str>,
}

impl BodyError {
    fn new(kind: BodyErrorKind) -> Self {
        BodyError {
            kind,
            field: None,
            expected: None,
        }
    }

    fn at(kind: BodyErrorKind, f: FieldSpec) -> Self {
        BodyError {
            kind,
            field: Some(f.name),
            expected: Some(f.expected),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self.kind {
            BodyErrorKind::EmptyBody => "empty_body",
            BodyErrorKind::InvalidJson => "invalid_json",
            BodyErrorKind::NotAnObject => "invalid_body",
            BodyErrorKind::MissingField if self.field == Some(F_MODEL.name) => "missing_model",
            BodyErrorKind::MissingField => "missing_field",
            BodyErrorKind::WrongType => "invalid_type",
            BodyErrorKind::EmptyValue | BodyErrorKind::InvalidValue => "invalid_value",
            BodyErrorKind::DuplicateField => "duplicate_field",
            BodyErrorKind::TooDeep => "nesting_too_deep",
        }
    }

    /// Human-readable message, safe to return to the client.
    pub fn message(&self) -> String {
        let field = self.field.unwrap_or("field");
        match self.kind {
            BodyErrorKind::EmptyBody => "request body is empty".to_string(),
            BodyErrorKind::InvalidJson => "request body is not valid JSON".to_string(),
            BodyErrorKind::NotAnObject => "request body must be a JSON object".to_string(),
            BodyErrorKind::MissingField => format!("`{field}` is required"),
            BodyErrorKind::WrongType => {
                format!("`{field}` must be {}", self.expected.unwrap_or("valid"))
            }
            BodyErrorKind::EmptyValue => format!("`{field}` must not be empty"),
            BodyErrorKind::InvalidValue => {
                format!("`{field}` must be {}", self.expected.unwrap_or("valid"))
            }
            BodyErrorKind::DuplicateField => format!("`{field}` must not appear more than once"),
            BodyErrorKind::TooDeep => "request body is nested too deeply".to_string(),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for BodyError {}

/// What the gateway needs from a request body. Prompt text is borrowed from
/// the body (owned only where it had JSON escapes); drop this before the body.
pub struct ParsedRequest<'a> {
    pub api: Api,
    pub model: Cow<'a, str>,
    /// `stream` (absent/null = false; always false for embeddings).
    pub stream: bool,
    /// `stream_options.include_usage` (absent/null = false).
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub n: Option<u64>,
    /// Completions `best_of` (at least `n`; only without `stream`, or 1).
    pub best_of: Option<u64>,
    /// Completions: prompts in `prompt` (each gets its own choices), at least 1; 1 for
    /// the other APIs.
    pub prompts: u64,
    /// Non-null `tools`, `tool_choice` or (chat only) legacy `functions`.
    pub has_tools: bool,
    /// Characters (Unicode scalar values) of the prompt text pieces.
    pub prompt_chars: u64,
    /// Token ids given directly (completions `prompt`, embeddings `input`).
    pub prompt_token_ids: u64,
    /// Every billable input: `ceil(chars / 4)` per prompt text piece, one per token id,
    /// plus the other inputs the model reads (names, tool calls and results, tool and
    /// response-format definitions, completions `suffix`, images, audio, files: rules in
    /// [`super::estimate`]); at least 1.
    pub estimated_prompt_tokens: u64,
    pieces: Vec<Cow<'a, str>>,
}

/// Hand-written so prompt text can never end up in a log via `{:?}`.
impl fmt::Debug for ParsedRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedRequest")
            .field("api", &self.api)
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("include_usage", &self.include_usage)
            .field("max_tokens", &self.max_tokens)
            .field("max_completion_tokens", &self.max_completion_tokens)
            .field("max_output_tokens", &self.max_output_tokens)
            .field("n", &self.n)
            .field("best_of", &self.best_of)
            .field("prompts", &self.prompts)
            .field("has_tools", &self.has_tools)
            .field("prompt_chars", &self.prompt_chars)
            .field("prompt_token_ids", &self.prompt_token_ids)
            .field("estimated_prompt_tokens", &self.estimated_prompt_tokens)
            .field("prompt_pieces", &self.pieces.len())
            .finish()
    }
}

impl ParsedRequest<'_> {
    /// The normalized prompt as `&str` fragments to feed a hasher in order,
    /// without building one big string: each text piece with surrounding
    /// whitespace trimmed and inner whitespace runs collapsed to one space,
    /// pieces joined by `"\n"`. Whitespace-only pieces are left out, and token
    /// id prompts contribute nothing. Order: `instructions` first, then the
    /// message/input texts in body order.
    pub fn normalized_prompt(&self) -> impl Iterator<Item = &str> + '_ {
        self.pieces
            .iter()
            .map(AsRef::as_ref)
            .filter(|p: &&str| p.split_whitespace().next().is_some())
            .enumerate()
            .flat_map(|(i, piece)| {
                let sep = (i > 0).then_some("\n");
                let words = piece.split_whitespace().enumerate().flat_map(|(j, w)| {
                    (j > 0).then_some(" ").into_iter().chain(std::iter::once(w))
                });
                sep.into_iter().chain(words)
            })
    }

    /// The normalized prompt as one entry per text piece (same normalization
    /// as [`ParsedRequest::normalized_prompt`]; joining the entries with `"\n"`
    /// gives the same text). Pieces that are already normalized are borrowed,
    /// so only pieces with whitespace to collapse are copied.
    pub fn normalized_pieces(&self) -> Vec<Cow<'_, str>> {
        self.pieces.iter().filter_map(|p| normalize(p)).collect()
    }

    /// The same normalized text as [`ParsedRequest::normalized_prompt`], handed to `sink`
    /// in blocks of up to [`NORMALIZED_BLOCK`] bytes (whitespace-free runs longer than a
    /// block go through whole): one pass over the bytes, no allocation, few sink calls.
    pub fn feed_normalized(&self, sink: &mut dyn FnMut(&[u8])) {
        let mut out = BlockWriter {
            buf: [0; NORMALIZED_BLOCK],
            len: 0,
            sink,
        };
        let mut first = true;
        for piece in &self.pieces {
            let piece: &str = piece.as_ref();
            if is_normalized(piece) {
                // The common case: one copy-free write of the whole piece.
                if !first {
                    out.write(b"\n");
                }
                first = false;
                out.write(piece.as_bytes());
                continue;
            }
            let mut words = Words { rest: piece };
            let Some(word) = words.next() else {
                continue; // whitespace only: left out, no separator
            };
            if !first {
                out.write(b"\n");
            }
            first = false;
            out.write(word.as_bytes());
            for word in words {
                out.write(b" ");
                out.write(word.as_bytes());
            }
        }
        out.flush();
    }

    /// [`ParsedRequest::normalized_prompt`] collected into one string.
    pub fn normalized_prompt_string(&self) -> String {
        self.normalized_prompt().collect()
    }

    /// Number of prompt text pieces (messages, parts, strings).
    pub fn prompt_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Same as [`ParsedRequest::output_token_limit`] (the effective cap, not
    /// the raw `max_completion_tokens` field).
    pub fn max_completion_tokens(&self) -> Option<u64> {
        self.output_token_limit()
    }

    /// The effective cap on generated tokens per choice, if the client set one:
    /// chat `max_completion_tokens` (which supersedes `max_tokens`), completions
    /// `max_tokens`, responses `max_output_tokens`.
    pub fn output_token_limit(&self) -> Option<u64> {
        match self.api {
            Api::ChatCompletions => self.max_completion_tokens.or(self.max_tokens),
            Api::Completions => self.max_tokens,
            Api::Responses => self.max_output_tokens,
            Api::Embeddings => None,
        }
    }

    /// How many completions of up to [`ParsedRequest::output_token_limit`] the upstream
    /// may generate (and bill) for this request: completions `max(n, best_of)` for each
    /// prompt (`best_of` candidates are generated, `n` of them returned), chat `n`, else
    /// 1; never 0.
    pub fn generated_choices(&self) -> u64 {
        let per_prompt = match self.api {
            Api::Completions => self.n.unwrap_or(1).max(self.best_of.unwrap_or(1)),
            Api::ChatCompletions => self.n.unwrap_or(1),
            Api::Embeddings | Api::Responses => 1,
        };
        let per_prompt = per_prompt.max(1);
        // A branch, not a multiplication, for the usual single prompt: a checked 64-bit
        // multiply is a 128-bit library call in Wasm.
        if self.prompts <= 1 {
            per_prompt
        } else {
            per_prompt.saturating_mul(self.prompts)
        }
    }
}

/// Block size of [`ParsedRequest::feed_normalized`].
pub const NORMALIZED_BLOCK: usize = 1024;

/// Collects small writes into blocks for a sink (a hasher pays per call).
struct BlockWriter<'s> {
    buf: [u8; NORMALIZED_BLOCK],
    len: usize,
    sink: &'s mut dyn FnMut(&[u8]),
}

impl BlockWriter<'_> {
    fn write(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
            return;
        }
        self.flush();
        if let Some(dst) = self.buf.get_mut(..bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len = bytes.len();
        } else {
            (self.sink)(bytes);
        }
    }

    fn flush(&mut self) {
        if let Some(full) = self.buf.get(..self.len) {
            if !full.is_empty() {
                (self.sink)(full);
            }
        }
        self.len = 0;
    }
}

/// True when `piece` is non-empty and already in normal form: no leading or trailing
/// whitespace, no whitespace but single spaces. One tight pass over the bytes: the
/// multi-byte Unicode `White_Space` characters (U+0085, U+00A0, U+1680, U+2000..U+200A,
/// U+2028, U+2029, U+202F, U+205F, U+3000) are recognised by their UTF-8 bytes.
fn is_normalized(piece: &str) -> bool {
    let bytes = piece.as_bytes();
    if bytes.first().is_none_or(|b| *b == b' ') || bytes.last() == Some(&b' ') {
        return false;
    }
    // Eight bytes at a time: a word of printable ASCII whose spaces are single goes by in
    // a few operations; any other word is looked at byte by byte.
    let mut i = 0;
    let mut prev_space = false;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            return false;
        };
        let v = u64::from_le_bytes(word);
        let control = control_bytes(v);
        let spaces = bytes_equal(v, b' ');
        let double = spaces & ((spaces << 8) | u64::from(prev_space) << 7);
        if control | (v & HIGH_BITS) | double != 0 && !bytes_normal(bytes, i, 8) {
            return false;
        }
        prev_space = spaces >> 63 != 0;
        i += 8;
    }
    bytes_normal(bytes, i, bytes.len() - i)
}

/// The byte-by-byte check of `bytes[start..start + len]` (the byte before `start`, if
/// any, decides whether a space there is a double one).
fn bytes_normal(bytes: &[u8], start: usize, len: usize) -> bool {
    let mut prev = start
        .checked_sub(1)
        .and_then(|p| bytes.get(p))
        .copied()
        .unwrap_or(0);
    for i in start..start.saturating_add(len) {
        let Some(&b) = bytes.get(i) else {
            break;
        };
        if b <= b' ' {
            if b == b' ' && prev == b' ' || (0x09..=0x0d).contains(&b) {
                return false;
            }
        } else if matches!(b, 0xc2 | 0xe1 | 0xe2 | 0xe3) && multibyte_space(bytes, i) {
            return false;
        }
        prev = b;
    }
    true
}

/// Whether a Unicode `White_Space` character starts at `bytes[i]` (a lead byte 0xC2,
/// 0xE1, 0xE2 or 0xE3 of valid UTF-8).
fn multibyte_space(bytes: &[u8], i: usize) -> bool {
    let at = |k: usize| bytes.get(i.saturating_add(k)).copied().unwrap_or(0);
    matches!(
        (at(0), at(1), at(2)),
        (0xc2, 0x85 | 0xa0, _)
            | (0xe1, 0x9a, 0x80)
            | (0xe2, 0x80, 0x80..=0x8a | 0xa8 | 0xa9 | 0xaf)
            | (0xe2, 0x81, 0x9f)
            | (0xe3, 0x80, 0x80)
    )
}

/// `str::split_whitespace` with an ASCII fast path: runs of non-whitespace bytes are
/// found bytewise, and only non-ASCII bytes are decoded to test Unicode `White_Space`.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let start = next_boundary(self.rest, true)?;
        let tail = self.rest.get(start..)?;
        let len = next_boundary(tail, false).unwrap_or(tail.len());
        let (word, rest) = tail.split_at(len);
        self.rest = rest;
        Some(word)
    }
}

/// Byte offset of the first char of `s` that is (`want_word`: is not) whitespace.
fn next_boundary(s: &str, want_word: bool) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (ws, len) = if b < 0x80 {
            (matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'), 1)
        } else {
            let c = s.get(i..).and_then(|t| t.chars().next())?;
            (c.is_whitespace(), c.len_utf8())
        };
        if ws != want_word {
            return Some(i);
        }
        i += len;
    }
    None
}

/// Trims `piece` and collapses inner whitespace runs to one space; `None` if
/// nothing but whitespace. Borrows when there is nothing to change.
fn normalize(piece: &str) -> Option<Cow<'_, str>> {
    let trimmed = piece.trim();
    if trimmed.is_empty() {
        return None;
    }
    let mut prev_ws = false;
    let clean = trimmed.chars().all(|c| {
        let ws = c.is_whitespace();
        let ok = !ws || (c == ' ' && !prev_ws);
        prev_ws = ws;
        ok
    });
    if clean {
        return Some(Cow::Borrowed(trimmed));
    }
    let mut out = String::with_capacity(trimmed.len());
    for (i, word) in trimmed.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    Some(Cow::Owned(out))
}

fn classify(ctx: &Ctx, err: &serde_json::Error) -> BodyError {
    match ctx.failure.get() {
        Some(Failure::TooDeep) => return BodyError::new(BodyErrorKind::TooDeep),
        Some(Failure::Duplicate(name)) => {
            return BodyError {
                kind: BodyErrorKind::DuplicateField,
                field: Some(name),
                expected: None,
            }
        }
        None => {}
    }
    if !err.is_data() {
        // Syntax, premature end, serde_json's own recursion limit.
        return BodyError::new(BodyErrorKind::InvalidJson);
    }
    match ctx.wrong.get() {
        Some(f) => BodyError::at(BodyErrorKind::WrongType, f),
        // A data error outside any field: the top level was not an object.
        None => BodyError::new(BodyErrorKind::NotAnObject),
    }
}

/// Parses a request body for `api`.
///
/// # Errors
/// A [`BodyError`] (safe to return to the client) when the body is empty, not
/// UTF-8 JSON, not an object, lacks a non-empty `model`, repeats a field we
/// read, nests deeper than 100 levels, or a field we read has the wrong type.
pub fn parse_request(api: Api, body: &[u8]) -> Result<ParsedRequest<'_>, BodyError> {
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(BodyError::new(BodyErrorKind::EmptyBody));
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::new(BodyErrorKind::InvalidJson))?;
    let ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = RequestSeed { api, ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|raw| de.end().map(|()| raw))
        .map_err(|e| classify(&ctx, &e))?;
    build(api, raw)
}

const F_BEST_OF_AT_LEAST_N: FieldSpec = spec(F_BEST_OF.name, "greater than or equal to `n`");
const F_BEST_OF_STREAM: FieldSpec = spec(F_BEST_OF.name, "1 when `stream` is true");

fn build(api: Api, raw: RawRequest<'_>) -> Result<ParsedRequest<'_>, BodyError> {
    let model = raw
        .model
        .ok_or(BodyError::at(BodyErrorKind::MissingField, F_MODEL))?;
    if model.trim().is_empty() {
        return Err(BodyError::at(BodyErrorKind::EmptyValue, F_MODEL));
    }
    let stream = raw.stream.unwrap_or(false);
    if let Some(best_of) = raw.best_of {
        // As the OpenAI API: `best_of` candidates are ranked server-side, so it cannot be
        // fewer than the `n` returned, and its results cannot be streamed.
        if best_of < raw.n.unwrap_or(1) {
            return Err(BodyError::at(
                BodyErrorKind::InvalidValue,
                F_BEST_OF_AT_LEAST_N,
            ));
        }
        if stream && best_of > 1 {
            return Err(BodyError::at(BodyErrorKind::InvalidValue, F_BEST_OF_STREAM));
        }
    }
    let mut pieces = raw.prompt.pieces;
    if let Some(instructions) = raw.instructions {
        pieces.insert(0, instructions);
    }
    let mut prompt_chars: u64 = 0;
    let mut estimate: u64 = raw.prompt.token_ids.saturating_add(raw.prompt.extra_tokens);
    for piece in &pieces {
        let chars = u64::try_from(piece.chars().count()).unwrap_or(u64::MAX);
        prompt_chars = prompt_chars.saturating_add(chars);
        estimate = estimate.saturating_add(estimate_tokens_from_chars(chars));
    }
    Ok(ParsedRequest {
        api,
        model,
        stream,
        include_usage: raw.include_usage.unwrap_or(false),
        max_tokens: raw.max_tokens,
        max_completion_tokens: raw.max_completion_tokens,
        max_output_tokens: raw.max_output_tokens,
        n: raw.n,
        best_of: raw.best_of,
        prompts: if api == Api::Completions {
            raw.prompt.prompts.max(1)
        } else {
            1
        },
        has_tools: raw.has_tools,
        prompt_chars,
        prompt_token_ids: raw.prompt.token_ids,
        estimated_prompt_tokens: estimate.max(1),
        pieces,
    })
}

#[cfg(test)]
mod tests;
