//! Salted prompt fingerprints: HMAC-SHA-256 (RFC 2104) over the prompt.
//!
//! Equal prompts give equal fingerprints, so audit records can be
//! correlated; without the salt an observer cannot confirm a guessed prompt,
//! which a plain hash would allow.

use sha2::{Digest, Sha256};

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
mod tests {
    use super::*;

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = HmacSha256::new(key);
        mac.update(data);
        to_hex(&mac.finalize())
    }

    /// RFC 4231 section 4, HMAC-SHA-256 results.
    #[test]
    fn rfc4231_vectors() {
        let key4: Vec<u8> = (0x01..=0x19).collect();
        let cases: [(&[u8], &[u8], &str); 6] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &key4,
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &[0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, want)) in cases.iter().enumerate() {
            assert_eq!(hmac_hex(key, data), *want, "case {i}");
        }
        // Test case 5 specifies only the first 128 bits of the output.
        assert!(hmac_hex(&[0x0c; 20], b"Test With Truncation")
            .starts_with("a3b6167473100ee06e0c796c2955552b"));
    }

    #[test]
    fn exactly_block_sized_key_is_not_hashed() {
        // A 64-byte key is used as is; hashing it would give another MAC.
        let key = [0x42u8; 64];
        let hashed: [u8; 32] = Sha256::digest(key).into();
        assert_ne!(hmac_hex(&key, b"x"), hmac_hex(&hashed, b"x"));
        // ...whereas a 65-byte key is equivalent to its hash.
        let long = [0x42u8; 65];
        let hashed: [u8; 32] = Sha256::digest(long).into();
        assert_eq!(hmac_hex(&long, b"x"), hmac_hex(&hashed, b"x"));
    }

    #[test]
    fn fingerprint_is_hmac_of_joined_pieces() {
        let salt = b"0123456789abcdef-salt";
        let fp = prompt_fingerprint(salt, ["system: be brief", "user: hi"]);
        assert_eq!(fp, hmac_hex(salt, b"system: be brief\nuser: hi"));
        assert_eq!(fp.len(), 64);
        assert!(fp
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn fingerprint_stable_and_salt_dependent() {
        let pieces = vec!["hello".to_owned(), "world".to_owned()];
        let a = prompt_fingerprint(b"salt-one-0123456", &pieces);
        assert_eq!(a, prompt_fingerprint(b"salt-one-0123456", &pieces));
        assert_ne!(a, prompt_fingerprint(b"salt-two-0123456", &pieces));
        assert_ne!(
            a,
            prompt_fingerprint(b"salt-one-0123456", ["hello", "world!"])
        );
        // Piece boundaries matter (unlike plain concatenation)...
        assert_ne!(a, prompt_fingerprint(b"salt-one-0123456", ["helloworld"]));
        // ...and equal the newline join.
        assert_eq!(a, prompt_fingerprint(b"salt-one-0123456", ["hello\nworld"]));
        // The empty prompt still has a well-defined fingerprint.
        let none: [&str; 0] = [];
        assert_eq!(
            prompt_fingerprint(b"k", none),
            prompt_fingerprint(b"k", [""])
        );
    }

    #[test]
    fn fingerprint_streams_large_pieces() {
        let big = "x".repeat(1 << 20);
        let fp = prompt_fingerprint(b"salt-0123456789ab", [big.as_str(), "tail"]);
        let mut joined = big.clone();
        joined.push_str("\ntail");
        assert_eq!(fp, hmac_hex(b"salt-0123456789ab", joined.as_bytes()));
    }
}
