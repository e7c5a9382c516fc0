//! serde visitors for the prompt-carrying fields: chat `messages`, completions
//! `prompt`, embeddings `input` and Responses API `input`. Same conventions
//! as `request_de.rs`: `null` is absent, the parent tags a failing child.
//!
//! Two kinds of billable input come out: prompt text pieces (message and input
//! `content` text, which the fingerprint covers) and extra tokens for everything else
//! the model reads (names, tool calls and their results outside `content`, refusals,
//! images, audio, files; rules in `estimate.rs`), which only the estimate covers.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::estimate::{audio_tokens, file_tokens, image_tokens, json_text_tokens};
use super::request::estimate_tokens_from_chars;
use super::request_de::{
    spec, CowStr, Ctx, FieldSpec, JsonText, OptStr, Skip, COUNT, OBJECT, STRING,
};

const CONTENT: &str = "a string or an array of content parts";
const TEXTS_OR_TOKENS: &str = "a string, an array of strings, or an array of token ids";
const TEXT_OR_TOKENS: &str = "a string, a token id, or an array of token ids";
const STRING_OR_OBJECT: &str = "a string or an object";

pub(crate) const F_MESSAGES: FieldSpec = spec("messages", "an array");
const F_MESSAGE: FieldSpec = spec("messages[]", OBJECT);
pub(crate) const F_RESPONSES_INPUT: FieldSpec =
    spec("input", "a string or an array of input items");
const F_RESPONSES_ITEM: FieldSpec = spec("input[]", OBJECT);

/// Each visitor below is its own seed: `deserialize` hands it to the named method.
macro_rules! self_seed {
    ($($ty:ident => $method:ident),* $(,)?) => {$(
        impl<'a> DeserializeSeed<'a> for $ty<'_, '_, 'a> {
            type Value = ();
            fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
                d.$method(self)
            }
        }
    )*};
}

/// A string value is prompt text, borrowed from the body when it has no escapes.
macro_rules! text_visits {
    () => {
        fn visit_borrowed_str<E: de::Error>(self, v: &'a str) -> Result<(), E> {
            self.prompt.pieces.push(Cow::Borrowed(v));
            Ok(())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.prompt.pieces.push(Cow::Owned(v.to_owned()));
            Ok(())
        }
    };
}

self_seed! {
    Messages => deserialize_option,
    Item => deserialize_map,
    Content => deserialize_any,
    Part => deserialize_map,
    Output => deserialize_any,
    TextsOrTokens => deserialize_any,
    ResponsesInput => deserialize_any,
}

/// Field names for a `content` value (chat messages, Responses items, and the `output`
/// of a Responses tool result).
pub(crate) struct ContentFields {
    content: FieldSpec,
    part: FieldSpec,
    part_type: FieldSpec,
    part_text: FieldSpec,
    refusal: FieldSpec,
    image_url: FieldSpec,
    image_detail: FieldSpec,
    detail: FieldSpec,
    audio: FieldSpec,
    audio_data: FieldSpec,
    file: FieldSpec,
    file_file_data: FieldSpec,
    file_data: FieldSpec,
}

macro_rules! content_fields {
    ($c:literal) => {
        ContentFields {
            content: spec($c, CONTENT),
            part: spec(concat!($c, "[]"), OBJECT),
            part_type: spec(concat!($c, "[].type"), STRING),
            part_text: spec(concat!($c, "[].text"), STRING),
            refusal: spec(concat!($c, "[].refusal"), STRING),
            image_url: spec(concat!($c, "[].image_url"), STRING_OR_OBJECT),
            image_detail: spec(concat!($c, "[].image_url.detail"), STRING),
            detail: spec(concat!($c, "[].detail"), STRING),
            audio: spec(concat!($c, "[].input_audio"), OBJECT),
            audio_data: spec(concat!($c, "[].input_audio.data"), STRING),
            file: spec(concat!($c, "[].file"), OBJECT),
            file_file_data: spec(concat!($c, "[].file.file_data"), STRING),
            file_data: spec(concat!($c, "[].file_data"), STRING),
        }
    };
}

const CHAT_CONTENT: ContentFields = content_fields!("messages[].content");
const RESPONSES_CONTENT: ContentFields = content_fields!("input[].content");
const RESPONSES_OUTPUT: ContentFields = content_fields!("input[].output");

/// Field names for a text-or-token-ids value (`prompt`, embeddings `input`).
pub(crate) struct TokenFields {
    pub top: FieldSpec,
    elem: FieldSpec,
    token: FieldSpec,
}

pub(crate) const PROMPT_FIELDS: TokenFields = TokenFields {
    top: spec("prompt", TEXTS_OR_TOKENS),
    elem: spec("prompt[]", TEXT_OR_TOKENS),
    token: spec("prompt[][]", COUNT),
};

pub(crate) const EMBEDDINGS_FIELDS: TokenFields = TokenFields {
    top: spec("input", TEXTS_OR_TOKENS),
    elem: spec("input[]", TEXT_OR_TOKENS),
    token: spec("input[][]", COUNT),
};

/// Content part types whose `text` the model reads. `output_text` is an
/// assistant turn replayed as Responses API input: still prompt tokens.
const TEXT_PART_TYPES: [&str; 3] = ["text", "input_text", "output_text"];

/// Billable input read from the body: prompt text pieces (borrowed from the body where
/// possible), token ids given instead of text, and the tokens of everything else.
#[derive(Default)]
pub(crate) struct Prompt<'a> {
    pub pieces: Vec<Cow<'a, str>>,
    pub token_ids: u64,
    /// Tokens of billable input outside the prompt text pieces (see the module doc).
    pub extra_tokens: u64,
    /// Completions `prompt`: how many prompts it holds (a string or one token array is
    /// one; a list, one per string or token array); 0 when absent or empty.
    pub prompts: u64,
}

impl Prompt<'_> {
    pub(crate) fn add_tokens(&mut self, tokens: u64) {
        self.extra_tokens = self.extra_tokens.saturating_add(tokens);
    }

    /// Text outside the pieces, estimated like a piece.
    pub(crate) fn add_text(&mut self, text: &str) {
        let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
        self.add_tokens(estimate_tokens_from_chars(chars));
    }
}

/// Chat `messages`.
pub(crate) struct Messages<'c, 'p, 'a> {
    pub ctx: &'c Ctx,
    pub prompt: &'p mut Prompt<'a>,
}

impl<'a> Visitor<'a> for Messages<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(F_MESSAGES.expected)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let item = Item {
                ctx: self.ctx,
                prompt: &mut *self.prompt,
                content: &CHAT_CONTENT,
            };
            if self
                .ctx
                .tag(F_MESSAGE, seq.next_element_seed(item))?
                .is_none()
            {
                return Ok(());
            }
        }
    }
}

/// A chat message or a Responses input item. `content` is prompt text; the other fields
/// the model reads count as extra tokens: `name`, chat `tool_calls` and legacy
/// `function_call` and `refusal`, Responses `arguments` / `input` of a tool call (all
/// by their JSON text), and the `output` of a Responses tool result.
struct Item<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    content: &'static ContentFields,
}

/// Containers enclosing a message's (or input item's) fields: body, array, item.
const ITEM_DEPTH: u32 = 3;

impl<'a> Visitor<'a> for Item<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(name) = map.next_key_seed(CowStr)? {
            // `content` first: it and `role` are nearly every key of a conversation.
            if name == "content" {
                let seed = Content {
                    ctx,
                    prompt: &mut *self.prompt,
                    fields: self.content,
                    pieces: true,
                };
                ctx.tag(self.content.content, map.next_value_seed(seed))?;
            } else {
                item_field(&name, &mut map, ctx, self.prompt)?;
            }
        }
        Ok(())
    }
}

/// A message or item field other than `content`. Out of line, so the loop over a plain
/// conversation's keys stays small.
#[inline(never)]
fn item_field<'a, A: MapAccess<'a>>(
    name: &str,
    map: &mut A,
    ctx: &Ctx,
    prompt: &mut Prompt<'a>,
) -> Result<(), A::Error> {
    match name {
        "name" | "tool_calls" | "function_call" | "refusal" | "arguments" | "input" => {
            let chars = map.next_value_seed(JsonText::top(ITEM_DEPTH, ctx))?;
            prompt.add_tokens(json_text_tokens(chars));
        }
        "output" => map.next_value_seed(Output { ctx, prompt })?,
        _ => {
            map.next_value_seed(Skip {
                depth: ITEM_DEPTH,
                ctx,
            })?;
        }
    }
    Ok(())
}

/// `content`: a string or an array of typed parts. With `pieces`, text goes to the
/// prompt text pieces, else to the extra tokens.
struct Content<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    fields: &'static ContentFields,
    pieces: bool,
}

impl<'a> Visitor<'a> for Content<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(CONTENT)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'a str) -> Result<(), E> {
        if self.pieces {
            self.prompt.pieces.push(Cow::Borrowed(v));
        } else {
            self.prompt.add_text(v);
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.pieces {
            self.prompt.pieces.push(Cow::Owned(v.to_owned()));
        } else {
            self.prompt.add_text(v);
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let part = Part {
                ctx: self.ctx,
                prompt: &mut *self.prompt,
                fields: self.fields,
                pieces: self.pieces,
                depth: PART_DEPTH,
            };
            if self
                .ctx
                .tag(self.fields.part, seq.next_element_seed(part))?
                .is_none()
            {
                return Ok(());
            }
        }
    }
}

/// Containers enclosing a content part's fields: body, array, item, content array, part.
const PART_DEPTH: u32 = 5;

/// Part types that carry an image (a Responses computer-use screenshot is one too).
const IMAGE_PART_TYPES: [&str; 3] = ["image_url", "input_image", "computer_screenshot"];

/// One content part. Text part types give prompt text (or extra tokens, see
/// [`Content`]); images, audio and files their fixed or size-based cost; any other part
/// its `text` as extra tokens; a `refusal` counts as text.
struct Part<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    fields: &'static ContentFields,
    pieces: bool,
    /// Containers enclosing the part's fields.
    depth: u32,
}

impl<'a> Visitor<'a> for Part<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }
    #[inline(never)]
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, f, depth) = (self.ctx, self.fields, self.depth);
        // `type` may come after the other fields, so hold them until the end.
        let mut kind = None;
        let mut text = None;
        let mut refusal = None;
        let mut detail = None;
        let mut media: u64 = 0;
        while let Some(name) = map.next_key_seed(CowStr)? {
            match name.as_ref() {
                "type" => kind = ctx.tag(f.part_type, map.next_value_seed(OptStr))?,
                "text" => text = ctx.tag(f.part_text, map.next_value_seed(OptStr))?,
                "refusal" => refusal = ctx.tag(f.refusal, map.next_value_seed(OptStr))?,
                "detail" => {
                    // A part-level `detail` (Responses) wins over `image_url.detail`.
                    let d = ctx.tag(f.detail, map.next_value_seed(OptStr))?;
                    detail = d.or(detail);
                }
                "image_url" => {
                    let seed = ImageUrl { ctx, f, depth };
                    let d = ctx.tag(f.image_url, map.next_value_seed(seed))?;
                    detail = detail.or(d);
                }
                "input_audio" => {
                    let seed = Media {
                        ctx,
                        depth,
                        key: "data",
                        field: f.audio_data,
                        tokens: audio_tokens,
                    };
                    media = ctx.tag(f.audio, map.next_value_seed(seed))?;
                }
                "file" => {
                    let seed = Media {
                        ctx,
                        depth,
                        key: "file_data",
                        field: f.file_file_data,
                        tokens: file_tokens,
                    };
                    media = ctx.tag(f.file, map.next_value_seed(seed))?;
                }
                "file_data" => {
                    let data = ctx.tag(f.file_data, map.next_value_seed(OptStr))?;
                    media = data.map_or(0, |d| file_tokens(&d));
                }
                _ => {
                    map.next_value_seed(Skip { depth, ctx })?;
                }
            }
        }
        let kind = kind.as_deref();
        match (kind, text) {
            (Some(k), Some(text)) if TEXT_PART_TYPES.contains(&k) => {
                if self.pieces {
                    self.prompt.pieces.push(text);
                } else {
                    self.prompt.add_text(&text);
                }
            }
            (_, Some(text)) => self.prompt.add_text(&text),
            (_, None) => {}
        }
        if kind.is_some_and(|k| IMAGE_PART_TYPES.contains(&k)) {
            self.prompt.add_tokens(image_tokens(detail.as_deref()));
        } else if matches!(kind, Some("input_audio" | "file" | "input_file")) {
            self.prompt.add_tokens(media);
        }
        if let Some(refusal) = refusal {
            self.prompt.add_text(&refusal);
        }
        Ok(())
    }
}

/// An `image_url`: a URL string (Responses) or `{url, detail}` (chat); yields `detail`.
struct ImageUrl<'c> {
    ctx: &'c Ctx,
    f: &'static ContentFields,
    /// Containers enclosing the part's fields (this value is one of them).
    depth: u32,
}

impl<'a> DeserializeSeed<'a> for ImageUrl<'_> {
    type Value = Option<Cow<'a, str>>;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for ImageUrl<'_> {
    type Value = Option<Cow<'a, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(STRING_OR_OBJECT)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let depth = self.ctx.enter(self.depth)?;
        let mut detail = None;
        while let Some(name) = map.next_key_seed(CowStr)? {
            if name == "detail" {
                detail = self
                    .ctx
                    .tag(self.f.image_detail, map.next_value_seed(OptStr))?;
            } else {
                map.next_value_seed(Skip {
                    depth,
                    ctx: self.ctx,
                })?;
            }
        }
        Ok(detail)
    }
}

/// An object holding base64 media under `key` (`input_audio.data`, `file.file_data`):
/// yields its tokens by `tokens`, 0 when absent.
struct Media<'c> {
    ctx: &'c Ctx,
    depth: u32,
    key: &'static str,
    field: FieldSpec,
    tokens: fn(&str) -> u64,
}

impl<'a> DeserializeSeed<'a> for Media<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'a> Visitor<'a> for Media<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }
    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_some<D: Deserializer<'a>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<u64, A::Error> {
        let depth = self.ctx.enter(self.depth)?;
        let mut tokens = 0;
        while let Some(name) = map.next_key_seed(CowStr)? {
            if name == self.key {
                let data = self.ctx.tag(self.field, map.next_value_seed(OptStr))?;
                tokens = data.map_or(0, |d| (self.tokens)(&d));
            } else {
                map.next_value_seed(Skip {
                    depth,
                    ctx: self.ctx,
                })?;
            }
        }
        Ok(tokens)
    }
}

/// The `output` of a Responses tool result: a string or content parts (extra tokens),
/// or a single part such as a computer-use screenshot; other values are skipped.
struct Output<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
}

impl<'a> Visitor<'a> for Output<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.prompt.add_text(v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'a>>(self, seq: A) -> Result<(), A::Error> {
        let content = Content {
            ctx: self.ctx,
            prompt: self.prompt,
            fields: &RESPONSES_OUTPUT,
            pieces: false,
        };
        content.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<(), A::Error> {
        let depth = self.ctx.enter(ITEM_DEPTH)?;
        let part = Part {
            ctx: self.ctx,
            prompt: self.prompt,
            fields: &RESPONSES_OUTPUT,
            pieces: false,
            depth,
        };
        part.visit_map(map)
    }
}

/// Completions `prompt` / embeddings `input`: text, texts, or token ids.
pub(crate) struct TextsOrTokens<'c, 'p, 'a> {
    pub ctx: &'c Ctx,
    pub prompt: &'p mut Prompt<'a>,
    pub fields: &'static TokenFields,
}

impl<'a> Visitor<'a> for TextsOrTokens<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(TEXTS_OR_TOKENS)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'a str) -> Result<(), E> {
        self.prompt.pieces.push(Cow::Borrowed(v));
        self.prompt.prompts = 1;
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.prompt.pieces.push(Cow::Owned(v.to_owned()));
        self.prompt.prompts = 1;
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        // Bare token ids side by side are one prompt; each string or token array is one.
        let mut bare_ids = false;
        loop {
            let elem = TextOrTokens {
                ctx: self.ctx,
                prompt: &mut *self.prompt,
                fields: self.fields,
            };
            match self
                .ctx
                .tag(self.fields.elem, seq.next_element_seed(elem))?
            {
                None => break,
                Some(Elem::TokenId) => bare_ids = true,
                Some(Elem::Prompt) => self.prompt.prompts = self.prompt.prompts.saturating_add(1),
            }
        }
        if bare_ids {
            self.prompt.prompts = self.prompt.prompts.saturating_add(1);
        }
        Ok(())
    }
}

/// What one element of a prompt/input array was.
enum Elem {
    /// A string or an array of token ids: a prompt of its own.
    Prompt,
    /// A bare token id (the array is one tokenized prompt).
    TokenId,
}

/// One element of a prompt/input array: a string, a token id, or a token array.
struct TextOrTokens<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    fields: &'static TokenFields,
}

impl<'a> DeserializeSeed<'a> for TextOrTokens<'_, '_, 'a> {
    type Value = Elem;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<Elem, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for TextOrTokens<'_, '_, 'a> {
    type Value = Elem;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(TEXT_OR_TOKENS)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'a str) -> Result<Elem, E> {
        self.prompt.pieces.push(Cow::Borrowed(v));
        Ok(Elem::Prompt)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Elem, E> {
        self.prompt.pieces.push(Cow::Owned(v.to_owned()));
        Ok(Elem::Prompt)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Elem, E> {
        self.prompt.token_ids = self.prompt.token_ids.saturating_add(1);
        Ok(Elem::TokenId)
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<Elem, A::Error> {
        while self
            .ctx
            .tag(self.fields.token, seq.next_element::<u64>())?
            .is_some()
        {
            self.prompt.token_ids = self.prompt.token_ids.saturating_add(1);
        }
        Ok(Elem::Prompt)
    }
}

/// Responses API `input`: a string or an array of items.
pub(crate) struct ResponsesInput<'c, 'p, 'a> {
    pub ctx: &'c Ctx,
    pub prompt: &'p mut Prompt<'a>,
}

impl<'a> Visitor<'a> for ResponsesInput<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(F_RESPONSES_INPUT.expected)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    text_visits!();
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let item = Item {
                ctx: self.ctx,
                prompt: &mut *self.prompt,
                content: &RESPONSES_CONTENT,
            };
            if self
                .ctx
                .tag(F_RESPONSES_ITEM, seq.next_element_seed(item))?
                .is_none()
            {
                return Ok(());
            }
        }
    }
}
