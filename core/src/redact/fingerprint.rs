//! Salted prompt fingerprints: a keyed hash of the normalized prompt.
//!
//! Equal prompts give equal fingerprints, so audit records can be
//! correlated; without the salt an observer cannot confirm a guessed prompt,
//! which a plain hash would allow. Two algorithms, named by the record field
//! that carries the result: BLAKE3 in keyed mode (`prompt_blake3`, the
//! default: about a quarter of SHA-256's instructions per byte in Wasm) and
//! HMAC-SHA-256 (RFC 2104, `prompt_sha256`).

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `redaction.fingerprint_algorithm`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintAlgorithm {
    /// BLAKE3 keyed with `derive_key(KEY_CONTEXT, salt)`; `prompt_blake3`.
    #[default]
    Blake3,
    /// HMAC-SHA-256 keyed with the salt; `prompt_sha256`.
    HmacSha256,
}

/// BLAKE3 key-derivation context: the salt becomes a 32-byte key once, at configuration.
pub const KEY_CONTEXT: &str = "ai-gateway-filter 2026 prompt fingerprint";

/// A fingerprint key, prepared once per configuration.
#[derive(Clone)]
pub enum FingerprintKey {
    Blake3([u8; 32]),
    HmacSha256(Vec<u8>),
}

impl FingerprintKey {
    pub fn new(algorithm: FingerprintAlgorithm, salt: &[u8]) -> FingerprintKey {
        match algorithm {
            FingerprintAlgorithm::Blake3 => {
                FingerprintKey::Blake3(blake3::derive_key(KEY_CONTEXT, salt))
            }
            FingerprintAlgorithm::HmacSha256 => FingerprintKey::HmacSha256(salt.to_vec()),
        }
    }

    pub fn algorithm(&self) -> FingerprintAlgorithm {
        match self {
            FingerprintKey::Blake3(_) => FingerprintAlgorithm::Blake3,
            FingerprintKey::HmacSha256(_) => FingerprintAlgorithm::HmacSha256,
        }
    }

    /// Lower-case hex fingerprint of everything `feed` hands its sink, in order (the
    /// prompt is streamed in: no copy of it is made).
    pub fn fingerprint(&self, feed: impl FnOnce(&mut dyn FnMut(&[u8]))) -> String {
        match self {
            FingerprintKey::Blake3(key) => {
                let mut h = blake3::Hasher::new_keyed(key);
                feed(&mut |bytes| {
                    h.update(bytes);
                });
                to_hex(h.finalize().as_bytes())
            }
            FingerprintKey::HmacSha256(salt) => {
                let mut mac = HmacSha256::new(salt);
                feed(&mut |bytes| mac.update(bytes));
                to_hex(&mac.finalize())
            }
        }
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        write!(f, "FingerprintKey({:?})", self.algorithm())
    }
}

const BLOCK: usize = 64;
const IPAD: u8 = 0x36;
const OPAD: u8 = 0x5c;

/// Streaming HMAC-SHA-256, so multi-megabyte prompts are never copied.
pub(crate) struct HmacSha256 {
    inner: Sha256,
    outer_key: [u8; BLOCK],
}

impl HmacSha256 {
    pub(crate) fn new(key: &[u8]) -> Self {
        // RFC 2104: keys longer than a block are hashed first, then every
        // key is zero-padded to the block size.
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            let digest = Sha256::digest(key);
            block
                .iter_mut()
                .zip(digest.iter())
                .for_each(|(b, d)| *b = *d);
        } else {
            block.iter_mut().zip(key.iter()).for_each(|(b, k)| *b = *k);
        }
        let mut inner_key = block;
        let mut outer_key = block;
        for (i, o) in inner_key.iter_mut().zip(outer_key.iter_mut()) {
            *i ^= IPAD;
            *o ^= OPAD;
        }
        let mut inner = Sha256::new();
        inner.update(inner_key);
        HmacSha256 { inner, outer_key }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    pub(crate) fn finalize(self) -> [u8; 32] {
        let inner_hash = self.inner.finalize();
        let mut outer = Sha256::new();
        outer.update(self.outer_key);
        outer.update(inner_hash);
        outer.finalize().into()
    }
}

/// Lower-case hex HMAC-SHA-256 of the pieces joined by `"\n"`, keyed by `salt`.
///
/// The pieces are streamed into the MAC one by one (no concatenated copy).
/// As with any join, `["a\nb"]` and `["a", "b"]` give the same fingerprint;
/// callers normalise prompts into pieces so that this does not matter.
#[must_use]
pub fn prompt_fingerprint(
    salt: &[u8],
    normalized_prompt_pieces: impl IntoIterator<Item = impl AsRef<str>>,
) -> String {
    let mut mac = HmacSha256::new(salt);
    for (i, piece) in normalized_prompt_pieces.into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\n");
        }
        mac.update(piece.as_ref().as_bytes());
    }
    to_hex(&mac.finalize())
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
