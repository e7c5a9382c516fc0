use super::*;

#[test]
fn hex_roundtrip_and_rejects() {
    let d = sha256(b"sk-tenant-a-demo");
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(parse_hex_digest(&hex), Some(d));
    assert_eq!(parse_hex_digest(&hex.to_uppercase()), Some(d));
    assert_eq!(parse_hex_digest(&hex[..63]), None);
    assert_eq!(parse_hex_digest(&format!("{}g", &hex[..63])), None);
}

#[test]
fn map_lookup() {
    let mut m = DigestMap::default();
    assert!(m.insert(sha256(b"a"), 1));
    assert!(!m.insert(sha256(b"a"), 2));
    assert_eq!(m.get(&sha256(b"a")), Some(&1));
    assert_eq!(m.get(&sha256(b"b")), None);
    assert!(ct_eq(&sha256(b"x"), &sha256(b"x")));
    assert!(!ct_eq(&sha256(b"x"), &sha256(b"y")));
}
