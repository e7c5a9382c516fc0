use super::*;

#[test]
fn roundtrip() {
    let map = [(":path", "/v1/models"), ("x-api-key", "k"), ("empty", "")];
    let bytes = serialize_map(&map);
    let back = deserialize_map(&bytes);
    assert_eq!(back.len(), 3);
    assert_eq!(back[0], (":path".to_string(), "/v1/models".to_string()));
    assert_eq!(back[2], ("empty".to_string(), String::new()));
}

#[test]
fn malformed_never_panics() {
    let bytes = serialize_map(&[("a", "b"), ("c", "d")]);
    for cut in 0..bytes.len() {
        let _ = deserialize_map(&bytes[..cut]);
    }
    assert!(deserialize_map(&[0xff, 0xff, 0xff, 0xff]).is_empty());
    assert_eq!(
        deserialize_map(&[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0, 0x80, 0]).len(),
        1
    );
}

#[test]
fn paths() {
    assert_eq!(serialize_path(&["ai.tenant"]), b"ai.tenant".to_vec());
    assert_eq!(serialize_path(&["request", "id"]), b"request\0id".to_vec());
}
