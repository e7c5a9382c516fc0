//! Unit tests for `estimate.rs`.

use super::*;
use base64::engine::general_purpose::STANDARD;

/// A canonical 44-byte PCM WAV header at `byte_rate`, followed by `data` zero bytes.
fn wav(byte_rate: u32, data: usize) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&(byte_rate / 2).to_le_bytes()); // sample rate
    w.extend_from_slice(&byte_rate.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes()); // block align
    w.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data as u32).to_le_bytes());
    w.resize(44 + data, 0);
    w
}

#[test]
fn image_costs_depend_on_detail_only() {
    assert_eq!(IMAGE_TOKENS_LOW, 85);
    assert_eq!(IMAGE_TOKENS_HIGH, 1445);
    assert_eq!(image_tokens(Some("low")), 85);
    for detail in [Some("high"), Some("auto"), None, Some("LOW"), Some("other")] {
        assert_eq!(image_tokens(detail), 1445, "{detail:?}");
    }
}

#[test]
fn wav_audio_is_timed_by_its_header() {
    // One second at 24 kHz, 16-bit mono: 48,000 bytes of samples + the header.
    let one_second = STANDARD.encode(wav(48_000, 48_000));
    assert_eq!(wav_byte_rate(&one_second), Some(48_000));
    // 48,044 bytes: a bit over one second, rounded up.
    assert_eq!(audio_tokens(&one_second), 33);
    let ten_seconds = STANDARD.encode(wav(48_000, 480_000));
    assert_eq!(audio_tokens(&ten_seconds), 321);
    // As a data: URL too.
    let url = format!("data:audio/wav;base64,{ten_seconds}");
    assert_eq!(audio_tokens(&url), 321);
}

#[test]
fn other_audio_is_bounded_by_the_lowest_bitrate() {
    // 4,000 bytes of MP3 (or anything without a WAV header): one second at 32 kbit/s.
    let mp3 = STANDARD.encode([0xffu8; 4_000]);
    assert_eq!(wav_byte_rate(&mp3), None);
    assert_eq!(audio_tokens(&mp3), 32);
    // A header claiming a zero byte rate falls back too.
    let broken = STANDARD.encode(wav(0, 3_956));
    assert_eq!(audio_tokens(&broken), 32);
    // Not base64, too short, empty: still bounded by size, never a panic.
    assert_eq!(audio_tokens(""), 0);
    assert_eq!(audio_tokens("!!!!"), 1);
    assert_eq!(audio_tokens("===="), 0);
    assert_eq!(audio_tokens("data:audio/mp3;base64"), 0);
    assert_eq!(audio_tokens(&"é".repeat(100)), 2);
}

#[test]
fn files_count_one_token_per_four_bytes() {
    let pdf = STANDARD.encode(vec![b'%'; 4_000]);
    assert_eq!(file_tokens(&pdf), 1_000);
    assert_eq!(
        file_tokens(&format!("data:application/pdf;base64,{pdf}")),
        1_000
    );
    assert_eq!(file_tokens(""), 0);
    assert_eq!(file_tokens("QQ=="), 1);
}

#[test]
fn decoded_length_is_exact_for_base64() {
    for n in 0..64usize {
        let b64 = STANDARD.encode(vec![7u8; n]);
        assert_eq!(decoded_len(&b64), n as u64, "{b64}");
        let unpadded = b64.trim_end_matches('=');
        assert_eq!(decoded_len(unpadded), n as u64, "{unpadded}");
    }
}

#[test]
fn json_text_is_four_characters_a_token() {
    assert_eq!(json_text_tokens(0), 0);
    assert_eq!(json_text_tokens(9), 3);
}
