//! serde visitors for request bodies.
//!
//! Hand-written instead of derived so that (a) a type error can name the
//! offending field (derive only reports "invalid type ... at line 1 column 9"),
//! (b) strings stay borrowed from the body unless they contain escapes, and
//! (c) nesting depth is bounded everywhere, including in fields we skip
//! (serde_json's `IgnoredAny` skips iteratively without any depth limit).
//!
//! Conventions: `null` counts as absent for every optional field. A failing
//! child is tagged with its field by the parent ([`Ctx::tag`]); the innermost
//! tag wins, so errors name the most specific field.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::estimate::json_text_tokens;
use super::prompt_de::{
    Messages, Prompt, ResponsesInput, TextsOrTokens, EMBEDDINGS_FIELDS, F_MESSAGES,
    F_RESPONSES_INPUT, PROMPT_FIELDS,
};
use super::request::Api;

/// Deepest container nesting accepted anywhere in a request body (the
/// top-level object counts as 1). Below serde_json's own limit of 128 so we
/// can report it precisely; real requests (even deep JSON schemas in `tools`)
/// stay far below.
pub(crate) const MAX_NESTING: u32 = 100;

/// A field name as shown to clients, and what it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldSpec {
    pub name: &'static str,
    pub expected: &'static str,
}

pub(crate) const fn spec(name: &'static str, expected: &'static str) -> FieldSpec {
    FieldSpec { name, expected }
}

pub(crate) const STRING: &str = "a string";
const BOOL: &str = "a boolean";
pub(crate) const COUNT: &str = "a non-negative integer";
pub(crate) const OBJECT: &str = "an object";

pub(crate) const F_MODEL: FieldSpec = spec("model", STRING);
const F_STREAM: FieldSpec = spec("stream", BOOL);
const F_STREAM_OPTIONS: FieldSpec = spec("stream_options", OBJECT);
const F_INCLUDE_USAGE: FieldSpec = spec("stream_options.include_usage", BOOL);
const F_MAX_TOKENS: FieldSpec = spec("max_tokens", COUNT);
const F_MAX_COMPLETION_TOKENS: FieldSpec = spec("max_completion_tokens", COUNT);
const F_MAX_OUTPUT_TOKENS: FieldSpec = spec("max_output_tokens", COUNT);
const F_N: FieldSpec = spec("n", COUNT);
pub(crate) const F_BEST_OF: FieldSpec = spec("best_of", COUNT);
const F_SUFFIX: FieldSpec = spec("suffix", STRING);
const F_RESPONSE_FORMAT: FieldSpec = spec("response_format", "valid JSON");
const F_TEXT: FieldSpec = spec("text", "valid JSON");
const F_TOOLS: FieldSpec = spec("tools", "valid JSON");
const F_TOOL_CHOICE: FieldSpec = spec("tool_choice", "valid JSON");
const F_FUNCTIONS: FieldSpec = spec("functions", "valid JSON");
const F_INSTRUCTIONS: FieldSpec = spec("instructions", STRING);
/// Never reported: unknown fields are only skipped (which cannot fail on type).
const F_OTHER: FieldSpec = spec("(other)", "any value");

/// Why deserialization stopped, beyond what serde_json's error says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    TooDeep,
    Duplicate(&'static str),
}

/// Side channel from the visitors to the error classifier.
#[derive(Default)]
pub(crate) struct Ctx {
    pub wrong: Cell<Option<FieldSpec>>,
    pub failure: Cell<Option<Failure>>,
}

impl Ctx {
    pub(crate) fn tag<T, E>(&self, field: FieldSpec, r: Result<T, E>) -> Result<T, E> {
        if r.is_err() && self.wrong.get().is_none() {
            self.wrong.set(Some(field));
        }
        r
    }

    pub(crate) fn enter<E: de::Error>(&self, depth: u32) -> Result<u32, E> {
        let inner = depth.saturating_add(1);
        if inner > MAX_NESTING {
            self.failure.set(Some(Failure::TooDeep));
            return Err(E::custom("nesting too deep"));
        }
        Ok(inner)
    }
}

/// Everything read from the body, before semantic checks.
#[derive(Default)]
pub(crate) struct RawRequest<'a> {
    pub model: Option<Cow<'a, str>>,
    pub stream: Option<bool>,
    pub include_usage: Option<bool>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub n: Option<u64>,
    pub best_of: Option<u64>,
    pub has_tools: bool,
    pub instructions: Option<Cow<'a, str>>,
    pub prompt: Prompt<'a>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Model,
    Stream,
    StreamOptions,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    N,
    BestOf,
    Tools,
    ToolChoice,
    Functions,
    ResponseFormat,
    Text,
    Messages,
    Prompt,
    Suffix,
    Input,
    Instructions,
    Other,
}

impl Key {
    fn from_name(name: &str) -> Key {
        match name {
            "model" => Key::Model,
            "stream" => Key::Stream,
            "stream_options" => Key::StreamOptions,
            "max_tokens" => Key::MaxTokens,
            "max_completion_tokens" => Key::MaxCompletionTokens,
            "max_output_tokens" => Key::MaxOutputTokens,
            "n" => Key::N,
            "best_of" => Key::BestOf,
            "tools" => Key::Tools,
            "tool_choice" => Key::ToolChoice,
            "functions" => Key::Functions,
            "response_format" => Key::ResponseFormat,
            "text" => Key::Text,
            "messages" => Key::Messages,
            "prompt" => Key::Prompt,
            "suffix" => Key::Suffix,
            "input" => Key::Input,
            "instructions" => Key::Instructions,
            _ => Key::Other,
        }
    }

    /// Fields of other APIs are skipped, not validated: upstream ignores or
    /// rejects them, and it is not our place to reject them for it.
    fn for_api(self, api: Api) -> Key {
        let relevant = match self {
            Key::Model | Key::Tools | Key::ToolChoice | Key::Other => true,
            Key::Stream | Key::StreamOptions => api != Api::Embeddings,
            Key::MaxTokens | Key::N => matches!(api, Api::ChatCompletions | Api::Completions),
            Key::MaxCompletionTokens | Key::Functions | Key::ResponseFormat | Key::Messages => {
                api == Api::ChatCompletions
            }
            Key::MaxOutputTokens | Key::Instructions | Key::Text => api == Api::Responses,
            Key::Prompt | Key::BestOf | Key::Suffix => api == Api::Completions,
            Key::Input => matches!(api, Api::Embeddings | Api::Responses),
        };
        if relevant {
            self
        } else {
            Key::Other
        }
    }

    fn spec(self, api: Api) -> FieldSpec {
        match self {
            Key::Model => F_MODEL,
            Key::Other => F_OTHER,
            Key::Stream => F_STREAM,
            Key::StreamOptions => F_STREAM_OPTIONS,
            Key::MaxTokens => F_MAX_TOKENS,
            Key::MaxCompletionTokens => F_MAX_COMPLETION_TOKENS,
            Key::MaxOutputTokens => F_MAX_OUTPUT_TOKENS,
            Key::N => F_N,
            Key::BestOf => F_BEST_OF,
            Key::Tools => F_TOOLS,
            Key::ToolChoice => F_TOOL_CHOICE,
            Key::Functions => F_FUNCTIONS,
            Key::ResponseFormat => F_RESPONSE_FORMAT,
            Key::Text => F_TEXT,
            Key::Messages => F_MESSAGES,
            Key::Prompt => PROMPT_FIELDS.top,
            Key::Suffix => F_SUFFIX,
            Key::Input if api == Api::Embeddings => EMBEDDINGS_FIELDS.top,
            Key::Input => F_RESPONSES_INPUT,
            Key::Instructions => F_INSTRUCTIONS,
        }
    }
}

/// A string borrowed from the input when it has no escapes.
pub(crate) struct CowStr;

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(STRING)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

/// Optional string (`null` = absent).
pub(crate) struct OptStr;

impl<'de> Visitor<'de> for OptStr {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(STRING)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        CowStr.deserialize(d).map(Some)
    }
}

impl<'de> DeserializeSeed<'de> for OptStr {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

/// Skips any value, enforcing [`MAX_NESTING`]; yields whether it was non-null.
/// `depth` is the number of containers enclosing the value.
pub(crate) struct Skip<'c> {
    pub depth: u32,
    pub ctx: &'c Ctx,
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let depth = self.ctx.enter(self.depth)?;
        while seq
            .next_element_seed(Skip {
                depth,
                ctx: self.ctx,
            })?
            .is_some()
        {}
        Ok(true)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let depth = self.ctx.enter(self.depth)?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip {
                depth,
                ctx: self.ctx,
            })?;
        }
        Ok(true)
    }
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

/// Walks any value like [`Skip`] (same depth limit) and measures its JSON text: the
/// length of its minified form in characters, strings counted as decoded (so an escaped
/// `arguments` string is not inflated by its escapes) and non-integer numbers as 8.
/// `null` as the value itself (`top`) is absent and measures 0.
pub(crate) struct JsonText<'c> {
    depth: u32,
    ctx: &'c Ctx,
    top: bool,
}

/// Characters of a non-integer number in [`JsonText`] (its text is not kept).
const FLOAT_CHARS: u64 = 8;

impl<'c> JsonText<'c> {
    /// A field value enclosed by `depth` containers.
    pub(crate) fn top(depth: u32, ctx: &'c Ctx) -> JsonText<'c> {
        JsonText {
            depth,
            ctx,
            top: true,
        }
    }

    fn inner(depth: u32, ctx: &'c Ctx) -> JsonText<'c> {
        JsonText {
            depth,
            ctx,
            top: false,
        }
    }
}

/// Decimal digits of `v`.
fn digits(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

fn chars_of(s: &str) -> u64 {
    u64::try_from(s.chars().count()).unwrap_or(u64::MAX)
}

impl<'de> Visitor<'de> for JsonText<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(if self.top { 0 } else { 4 })
    }
    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<u64, E> {
        Ok(if v { 4 } else { 5 })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        Ok(digits(v.unsigned_abs()).saturating_add(u64::from(v < 0)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(digits(v))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(FLOAT_CHARS)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Ok(chars_of(v).saturating_add(2))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<u64, E> {
        Ok(u64::try_from(v.len()).unwrap_or(u64::MAX).saturating_add(2))
    }
    #[inline(never)]
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let depth = self.ctx.enter(self.depth)?;
        // `[` and `]`, then each element and the comma before all but the first.
        let mut total: u64 = 1;
        while let Some(n) = seq.next_element_seed(JsonText::inner(depth, self.ctx))? {
            total = total.saturating_add(n).saturating_add(1);
        }
        Ok(total.max(2))
    }
    #[inline(never)]
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let depth = self.ctx.enter(self.depth)?;
        let mut total: u64 = 1;
        while let Some(key) = map.next_key_seed(CowStr)? {
            let value = map.next_value_seed(JsonText::inner(depth, self.ctx))?;
            // `"key":value` and a comma (or the closing brace).
            total = total
                .saturating_add(chars_of(&key))
                .saturating_add(3)
                .saturating_add(value)
                .saturating_add(1);
        }
        Ok(total.max(2))
    }
}

impl<'de> DeserializeSeed<'de> for JsonText<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

/// The top-level request object.
pub(crate) struct RequestSeed<'c> {
    pub api: Api,
    pub ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = RawRequest<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = RawRequest<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (api, ctx) = (self.api, self.ctx);
        let mut out = RawRequest::default();
        // Duplicates of fields we read are rejected: if we and the upstream
        // server picked different copies (first vs last), quota and routing
        // decisions would be made on values upstream does not use.
        let mut seen: u32 = 0;
        while let Some(name) = map.next_key_seed(CowStr)? {
            let key = Key::from_name(&name).for_api(api);
            let f = key.spec(api);
            if key != Key::Other {
                let bit = 1u32 << (key as u32);
                if seen & bit != 0 {
                    ctx.failure.set(Some(Failure::Duplicate(f.name)));
                    return Err(de::Error::custom("duplicate field"));
                }
                seen |= bit;
            }
            match key {
                Key::Model => out.model = ctx.tag(f, map.next_value_seed(OptStr))?,
                Key::Stream => out.stream = ctx.tag(f, map.next_value())?,
                Key::StreamOptions => {
                    out.include_usage = ctx.tag(f, map.next_value_seed(StreamOptions { ctx }))?;
                }
                Key::MaxTokens => out.max_tokens = ctx.tag(f, map.next_value())?,
                Key::MaxCompletionTokens => {
                    out.max_completion_tokens = ctx.tag(f, map.next_value())?;
                }
                Key::MaxOutputTokens => out.max_output_tokens = ctx.tag(f, map.next_value())?,
                Key::N => out.n = ctx.tag(f, map.next_value())?,
                Key::BestOf => out.best_of = ctx.tag(f, map.next_value())?,
                Key::Tools | Key::ToolChoice | Key::Functions
                    if matches!(api, Api::ChatCompletions | Api::Responses) =>
                {
                    // Definitions the model reads: billed as prompt tokens.
                    let chars = ctx.tag(f, json_text_value(&mut map, ctx))?;
                    out.has_tools |= chars > 0;
                    out.prompt.add_tokens(json_text_tokens(chars));
                }
                Key::Tools | Key::ToolChoice | Key::Functions => {
                    let present = ctx.tag(f, map.next_value_seed(Skip { depth: 1, ctx }))?;
                    out.has_tools |= present;
                }
                Key::ResponseFormat | Key::Text => {
                    // A JSON schema the output must follow is part of the prompt.
                    let chars = ctx.tag(f, json_text_value(&mut map, ctx))?;
                    out.prompt.add_tokens(json_text_tokens(chars));
                }
                Key::Suffix => {
                    if let Some(suffix) = ctx.tag(f, map.next_value_seed(OptStr))? {
                        out.prompt.add_text(&suffix);
                    }
                }
                Key::Messages => {
                    let prompt = &mut out.prompt;
                    ctx.tag(f, map.next_value_seed(Messages { ctx, prompt }))?;
                }
                Key::Prompt | Key::Input if api != Api::Responses => {
                    let fields = if api == Api::Embeddings {
                        &EMBEDDINGS_FIELDS
                    } else {
                        &PROMPT_FIELDS
                    };
                    let prompt = &mut out.prompt;
                    let seed = TextsOrTokens {
                        ctx,
                        prompt,
                        fields,
                    };
                    ctx.tag(f, map.next_value_seed(seed))?;
                }
                Key::Input => {
                    let prompt = &mut out.prompt;
                    ctx.tag(f, map.next_value_seed(ResponsesInput { ctx, prompt }))?;
                }
                Key::Instructions => out.instructions = ctx.tag(f, map.next_value_seed(OptStr))?,
                Key::Prompt | Key::Other => {
                    map.next_value_seed(Skip { depth: 1, ctx })?;
                }
            }
        }
        Ok(out)
    }
}

/// The next value of the body object measured by [`JsonText`]. Out of line, so the loop
/// over the body's keys stays small for the requests that have none of these fields.
#[inline(never)]
fn json_text_value<'de, A: MapAccess<'de>>(map: &mut A, ctx: &Ctx) -> Result<u64, A::Error> {
    map.next_value_seed(JsonText::top(1, ctx))
}

/// `stream_options`: yields `include_usage`.
struct StreamOptions<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for StreamOptions<'_> {
    type Value = Option<bool>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for StreamOptions<'_> {
    type Value = Option<bool>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut include_usage = None;
        while let Some(name) = map.next_key_seed(CowStr)? {
            if name == "include_usage" {
                include_usage = self.ctx.tag(F_INCLUDE_USAGE, map.next_value())?;
            } else {
                map.next_value_seed(Skip {
                    depth: 2,
                    ctx: self.ctx,
                })?;
            }
        }
        Ok(include_usage)
    }
}
