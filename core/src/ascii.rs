//! Byte scans eight bytes at a time ("SWAR": a `u64` as eight lanes), for the hot loops
//! over prompts and record values. Wasm has no cheaper per-byte path: every byte a
//! plain loop looks at costs several instructions.

/// The high bit of every byte lane.
pub const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// 0x80 in every byte of `v` that is zero, 0 elsewhere (exact: no carries between bytes).
pub fn zero_bytes(v: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((v & LOW7).wrapping_add(LOW7)) | v | LOW7)
}

/// 0x80 in every byte of `v` equal to `b`.
pub fn bytes_equal(v: u64, b: u8) -> u64 {
    zero_bytes(v ^ (u64::from(b) * 0x0101_0101_0101_0101))
}

/// 0x80 in every byte of `v` below 0x20 (the C0 controls).
pub fn control_bytes(v: u64) -> u64 {
    zero_bytes(v & 0xe0e0_e0e0_e0e0_e0e0)
}

/// Whether a JSON string of `s` needs escapes (a control byte, `"` or `\`).
pub fn needs_json_escape(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            return true;
        };
        let v = u64::from_le_bytes(word);
        if control_bytes(v) | bytes_equal(v, b'"') | bytes_equal(v, b'\\') != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests;
