//! SHA-256 digests of credentials, and a map keyed by them.
//!
//! The configuration holds only digests, so a presented key is hashed once and looked up.
//! The map hashes by the digest's own first bytes (already uniformly distributed), so a
//! lookup costs the same with ten keys or a million, and the final equality check is
//! constant-time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};

pub type DigestKey = [u8; 32];

pub fn sha256(bytes: &[u8]) -> DigestKey {
    Sha256::digest(bytes).into()
}

/// Parse a 64-character hex digest (either case).
pub fn parse_hex_digest(hex: &str) -> Option<DigestKey> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_val(*pair.first()?)?;
        let lo = hex_val(*pair.get(1)?)?;
        *slot = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Constant-time equality of two digests.
pub fn ct_eq(a: &DigestKey, b: &DigestKey) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Hasher for keys that are already SHA-256 digests: the first 8 bytes are the hash.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // A [u8; 32] is hashed as one write of its 32 bytes (the length prefix of slices
        // does not apply to arrays). Fold every write in so any input stays well-defined.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(chunk) {
                *w = *b;
            }
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// Map from a credential digest to what it identifies.
#[derive(Debug)]
pub struct DigestMap<V> {
    map: HashMap<DigestKey, V, BuildHasherDefault<DigestHasher>>,
}

impl<V> Default for DigestMap<V> {
    fn default() -> Self {
        DigestMap {
            map: HashMap::default(),
        }
    }
}

impl<V> DigestMap<V> {
    pub fn with_capacity(n: usize) -> Self {
        DigestMap {
            map: HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default()),
        }
    }
    /// Returns false if the digest was already present (the value is not replaced).
    pub fn insert(&mut self, key: DigestKey, value: V) -> bool {
        match self.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(value);
                true
            }
        }
    }
    /// Look up the digest of a presented credential.
    pub fn get(&self, presented: &DigestKey) -> Option<&V> {
        let (stored, value) = self.map.get_key_value(presented)?;
        ct_eq(stored, presented).then_some(value)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests;
