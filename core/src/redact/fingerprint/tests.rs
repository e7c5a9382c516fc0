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
