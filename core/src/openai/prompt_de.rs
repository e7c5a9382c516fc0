//! serde visitors for the prompt-carrying fields: chat `messages`, completions
//! `prompt`, embeddings `input` and Responses API `input`. Same conventions
//! as `request_de.rs`: `null` is absent, the parent tags a failing child.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::request_de::{spec, CowStr, Ctx, FieldSpec, OptStr, Skip, COUNT, OBJECT, STRING};

const CONTENT: &str = "a string or an array of content parts";
const TEXTS_OR_TOKENS: &str = "a string, an array of strings, or an array of token ids";
const TEXT_OR_TOKENS: &str = "a string, a token id, or an array of token ids";

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
    TextsOrTokens => deserialize_any,
    TextOrTokens => deserialize_any,
    ResponsesInput => deserialize_any,
}

/// Field names for a `content` value (chat messages and Responses items).
pub(crate) struct ContentFields {
    content: FieldSpec,
    part: FieldSpec,
    part_type: FieldSpec,
    part_text: FieldSpec,
}

const CHAT_CONTENT: ContentFields = ContentFields {
    content: spec("messages[].content", CONTENT),
    part: spec("messages[].content[]", OBJECT),
    part_type: spec("messages[].content[].type", STRING),
    part_text: spec("messages[].content[].text", STRING),
};

const RESPONSES_CONTENT: ContentFields = ContentFields {
    content: spec("input[].content", CONTENT),
    part: spec("input[].content[]", OBJECT),
    part_type: spec("input[].content[].type", STRING),
    part_text: spec("input[].content[].text", STRING),
};

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

/// Prompt text pieces (borrowed from the body where possible) and the number
/// of token ids given instead of text.
#[derive(Default)]
pub(crate) struct Prompt<'a> {
    pub pieces: Vec<Cow<'a, str>>,
    pub token_ids: u64,
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

/// A chat message or a Responses input item: only `content` is read.
struct Item<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    content: &'static ContentFields,
}

impl<'a> Visitor<'a> for Item<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(name) = map.next_key_seed(CowStr)? {
            if name == "content" {
                let seed = Content {
                    ctx,
                    prompt: &mut *self.prompt,
                    fields: self.content,
                };
                ctx.tag(self.content.content, map.next_value_seed(seed))?;
            } else {
                // Enclosed by: body, messages/input array, this item.
                map.next_value_seed(Skip { depth: 3, ctx })?;
            }
        }
        Ok(())
    }
}

/// `content`: a string or an array of typed parts.
struct Content<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    fields: &'static ContentFields,
}

impl<'a> Visitor<'a> for Content<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(CONTENT)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    text_visits!();
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let part = Part {
                ctx: self.ctx,
                prompt: &mut *self.prompt,
                fields: self.fields,
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

/// One content part; its `text` counts only for text part types.
struct Part<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    fields: &'static ContentFields,
}

impl<'a> Visitor<'a> for Part<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        // `type` may come after `text`, so hold the text until the end.
        let mut kind = None;
        let mut text = None;
        while let Some(name) = map.next_key_seed(CowStr)? {
            match name.as_ref() {
                "type" => kind = ctx.tag(self.fields.part_type, map.next_value_seed(OptStr))?,
                "text" => text = ctx.tag(self.fields.part_text, map.next_value_seed(OptStr))?,
                _ => {
                    // Enclosed by: body, array, item, content array, this part.
                    map.next_value_seed(Skip { depth: 5, ctx })?;
                }
            }
        }
        if let (Some(kind), Some(text)) = (kind, text) {
            if TEXT_PART_TYPES.contains(&kind.as_ref()) {
                self.prompt.pieces.push(text);
            }
        }
        Ok(())
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
    text_visits!();
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let elem = TextOrTokens {
                ctx: self.ctx,
                prompt: &mut *self.prompt,
                fields: self.fields,
            };
            if self
                .ctx
                .tag(self.fields.elem, seq.next_element_seed(elem))?
                .is_none()
            {
                return Ok(());
            }
        }
    }
}

/// One element of a prompt/input array: a string, a token id, or a token array.
struct TextOrTokens<'c, 'p, 'a> {
    ctx: &'c Ctx,
    prompt: &'p mut Prompt<'a>,
    fields: &'static TokenFields,
}

impl<'a> Visitor<'a> for TextOrTokens<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(TEXT_OR_TOKENS)
    }
    text_visits!();
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.prompt.token_ids = self.prompt.token_ids.saturating_add(1);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while self
            .ctx
            .tag(self.fields.token, seq.next_element::<u64>())?
            .is_some()
        {
            self.prompt.token_ids = self.prompt.token_ids.saturating_add(1);
        }
        Ok(())
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
