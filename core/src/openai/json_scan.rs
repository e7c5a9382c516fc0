//! Byte-at-a-time walker over the members of a top-level JSON object.
//!
//! It tracks only what is needed to know, for every byte, whether it belongs to
//! the value of a top-level member (and which key that member has): the nesting
//! depth inside the current value, whether we are inside a string, and whether
//! the previous byte was a backslash. All state is O(1) (plus a key capture
//! capped at [`KEY_CAPTURE_MAX`]), so it works on bodies that arrive in
//! arbitrary chunks and never buffers them.
//!
//! It is not a validator: on malformed input it either stops in `Invalid` or
//! reports nonsense boundaries; callers either validate first
//! (`with_include_usage`) or re-parse what they capture with serde_json
//! (`JsonUsageScanner`).

/// Raw key bytes kept for comparison. The keys we look for are short ASCII
/// names; even fully `\uXXXX`-escaped they stay under this, so a longer key is
/// never one of ours.
const KEY_CAPTURE_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// After `{` or `,`: expecting a key (or `}`).
    KeyOrEnd,
    /// Inside a key string.
    Key,
    /// After a key, expecting `:`.
    AfterKey,
    /// After `:`, expecting the first byte of the value.
    BeforeValue,
    /// Inside a top-level member's value.
    Value,
    /// The top-level object has been closed.
    Done,
    /// Input is not a JSON object; everything else is ignored.
    Invalid,
}

/// What a byte was, relative to top-level member values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not part of any member value (structure, keys, whitespace between).
    Outside,
    /// First byte of a member value; [`TopLevelScanner::key_is`] now refers to its key.
    ValueStart,
    /// A later byte of the member value (may include trailing whitespace).
    ValueByte,
    /// The `,` or `}` that terminated the member value (not part of it).
    ValueEnd,
}

pub(crate) struct TopLevelScanner {
    state: State,
    /// Open `{`/`[` inside the current value. Only a counter, so deep nesting
    /// costs nothing.
    depth: u64,
    in_string: bool,
    escaped: bool,
    key: [u8; KEY_CAPTURE_MAX],
    key_len: usize,
    key_overflow: bool,
    key_has_escape: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl TopLevelScanner {
    pub(crate) fn new() -> Self {
        TopLevelScanner {
            state: State::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            key: [0; KEY_CAPTURE_MAX],
            key_len: 0,
            key_overflow: false,
            key_has_escape: false,
        }
    }

    /// True once the top-level object has been closed.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the key of the current (or last) member equals `name`,
    /// comparing the JSON-decoded key (so `"us\u0061ge"` matches `usage`).
    pub(crate) fn key_is(&self, name: &str) -> bool {
        if self.key_overflow {
            return false;
        }
        let raw = self.key.get(..self.key_len).unwrap_or_default();
        if !self.key_has_escape {
            return raw == name.as_bytes();
        }
        // Rare: decode the escapes with serde_json (bounded: at most 130 bytes).
        let mut quoted = Vec::with_capacity(raw.len().saturating_add(2));
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == name)
    }

    fn push_key(&mut self, b: u8) {
        match self.key.get_mut(self.key_len) {
            Some(slot) => {
                *slot = b;
                self.key_len = self.key_len.saturating_add(1);
            }
            None => self.key_overflow = true,
        }
    }

    /// How many leading bytes of `bytes` are plain string content inside a
    /// member value (no quote, no backslash, no pending escape). Feeding them
    /// to [`TopLevelScanner::step`] would only return `ValueByte` without
    /// changing any state, so a caller that does not need them can skip them.
    /// This is the fast path: most of a response body is string content.
    pub(crate) fn plain_string_run(&self, bytes: &[u8]) -> usize {
        if self.state == State::Value && self.in_string && !self.escaped {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .unwrap_or(bytes.len())
        } else {
            0
        }
    }

    pub(crate) fn step(&mut self, b: u8) -> Step {
        match self.state {
            State::Start => {
                if b == b'{' {
                    self.state = State::KeyOrEnd;
                } else if !is_ws(b) {
                    self.state = State::Invalid;
                }
                Step::Outside
            }
            State::KeyOrEnd => {
                if b == b'"' {
                    self.state = State::Key;
                    self.key_len = 0;
                    self.key_overflow = false;
                    self.key_has_escape = false;
                    self.escaped = false;
                } else if b == b'}' {
                    self.state = State::Done;
                } else if !is_ws(b) {
                    self.state = State::Invalid;
                }
                Step::Outside
            }
            State::Key => {
                self.key_byte(b);
                Step::Outside
            }
            State::AfterKey => {
                if b == b':' {
                    self.state = State::BeforeValue;
                } else if !is_ws(b) {
                    self.state = State::Invalid;
                }
                Step::Outside
            }
            State::BeforeValue => {
                if is_ws(b) {
                    return Step::Outside;
                }
                if matches!(b, b',' | b'}' | b']' | b':') {
                    self.state = State::Invalid;
                    return Step::Outside;
                }
                self.state = State::Value;
                self.depth = 0;
                self.in_string = false;
                self.escaped = false;
                self.value_byte(b);
                Step::ValueStart
            }
            State::Value => self.member_value_byte(b),
            State::Done | State::Invalid => Step::Outside,
        }
    }

    /// A byte of a member name (escapes kept as written).
    fn key_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
            self.push_key(b);
        } else if b == b'\\' {
            self.escaped = true;
            self.key_has_escape = true;
            self.push_key(b);
        } else if b == b'"' {
            self.state = State::AfterKey;
        } else {
            self.push_key(b);
        }
    }

    /// A byte of a member value: a `,` or `}` at depth 0 outside strings ends it.
    fn member_value_byte(&mut self, b: u8) -> Step {
        if !self.in_string && self.depth == 0 {
            match b {
                b',' => {
                    self.state = State::KeyOrEnd;
                    return Step::ValueEnd;
                }
                b'}' => {
                    self.state = State::Done;
                    return Step::ValueEnd;
                }
                b']' => {
                    self.state = State::Invalid;
                    return Step::Outside;
                }
                _ => {}
            }
        }
        self.value_byte(b);
        Step::ValueByte
    }

    /// Tracks strings and nesting inside a member value.
    fn value_byte(&mut self, b: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth = self.depth.saturating_add(1),
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
