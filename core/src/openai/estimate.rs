//! Token costs of the billable inputs that are not plain text: images, audio, files and
//! JSON definitions. Each rule gives an upper bound where a documented one exists; the
//! reservation is settled against the upstream's real `usage` afterwards, so the bound
//! only has to be safe, not exact. docs/quotas.md ("What the reservation counts") lists
//! them for users.

use base64::Engine;

use super::request::estimate_tokens_from_chars;

/// An image with `detail: "low"`: a fixed cost whatever its size (OpenAI's image
/// accounting for the GPT-4o family: 85 base tokens).
pub const IMAGE_TOKENS_LOW: u64 = 85;

/// An image with `detail: "high"`, `"auto"` (which may choose high) or none, whose size
/// the gateway does not know: 85 base tokens plus 170 per 512 px tile, at the most tiles
/// an image can have. OpenAI scales it to fit in 2048 x 2048, then its shortest side down
/// to 768, so 2048 x 768 (4 x 2 tiles) is the largest grid: 85 + 8 x 170.
pub const IMAGE_TOKENS_HIGH: u64 = 85 + 8 * 170;

/// Audio tokens per second of input audio: Google's published rate for Gemini (32 a
/// second). OpenAI publishes no fixed rate for its audio models (users report about 10
/// a second), so this is the highest published per-second rule.
pub const AUDIO_TOKENS_PER_SECOND: u64 = 32;

/// When the audio is not a WAV with a readable header, its duration is bounded by
/// assuming the lowest MPEG-1 Layer III bitrate, 32 kbit/s (4,000 bytes a second).
pub const AUDIO_MIN_BYTES_PER_SECOND: u64 = 4_000;

/// A file given inline (`file_data`) counts as if each of its bytes were a character of
/// text: one token per four bytes.
pub const FILE_BYTES_PER_TOKEN: u64 = 4;

/// Tokens of JSON text of `chars` characters (tool definitions, schemas, tool calls).
pub fn json_text_tokens(chars: u64) -> u64 {
    estimate_tokens_from_chars(chars)
}

/// Tokens of one image part with the given `detail`.
pub fn image_tokens(detail: Option<&str>) -> u64 {
    match detail {
        Some("low") => IMAGE_TOKENS_LOW,
        _ => IMAGE_TOKENS_HIGH,
    }
}

/// Tokens of a base64 `input_audio.data` (a `data:` URL prefix is allowed): its duration
/// from the WAV header's byte rate when it has one, else at
/// [`AUDIO_MIN_BYTES_PER_SECOND`], at [`AUDIO_TOKENS_PER_SECOND`], rounded up.
pub fn audio_tokens(data: &str) -> u64 {
    let payload = base64_payload(data);
    let bytes = decoded_len(payload);
    let rate = wav_byte_rate(payload)
        .filter(|r| *r > 0)
        .unwrap_or(AUDIO_MIN_BYTES_PER_SECOND);
    let tokens = u128::from(bytes) * u128::from(AUDIO_TOKENS_PER_SECOND);
    u64::try_from(tokens.div_ceil(u128::from(rate))).unwrap_or(u64::MAX)
}

/// Tokens of a base64 `file_data` (usually a `data:application/pdf;base64,` URL).
pub fn file_tokens(data: &str) -> u64 {
    decoded_len(base64_payload(data)).div_ceil(FILE_BYTES_PER_TOKEN)
}

/// The base64 part of `data`: after the first comma of a `data:` URL, else all of it.
fn base64_payload(data: &str) -> &str {
    if data.starts_with("data:") {
        data.split_once(',').map_or("", |(_, b64)| b64)
    } else {
        data
    }
}

/// Bytes that `b64` decodes to (exact for valid base64; six bits per other character).
fn decoded_len(b64: &str) -> u64 {
    let data = b64.trim_end_matches('=');
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    len / 4 * 3 + (len % 4) * 3 / 4
}

/// The byte rate of a RIFF/WAVE whose first chunk is `fmt ` (the canonical header), read
/// from the first 48 base64 characters (36 bytes); `None` for anything else.
fn wav_byte_rate(b64: &str) -> Option<u64> {
    let head = b64.get(..48)?;
    let mut buf = [0u8; 36];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(head, &mut buf)
        .ok()?;
    let h = buf.get(..n)?;
    if h.get(0..4)? != b"RIFF" || h.get(8..12)? != b"WAVE" || h.get(12..16)? != b"fmt " {
        return None;
    }
    let rate: [u8; 4] = h.get(28..32)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(rate)))
}

#[cfg(test)]
mod tests;
