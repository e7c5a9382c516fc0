use super::*;

#[test]
fn lanes_are_exact() {
    for b in 0..=255u8 {
        for lane in 0..8 {
            let mut word = [b'a'; 8];
            word[lane] = b;
            let v = u64::from_le_bytes(word);
            let bit = 0x80u64 << (8 * lane);
            assert_eq!(zero_bytes(v) & bit != 0, b == 0);
            assert_eq!(control_bytes(v) & bit != 0, b < 0x20);
            assert_eq!(bytes_equal(v, b'"') & bit != 0, b == b'"');
            assert_eq!(
                zero_bytes(v) & !bit & HIGH_BITS,
                0,
                "no carry into other lanes"
            );
        }
    }
}

#[test]
fn json_escape_needed_anywhere() {
    assert!(!needs_json_escape(b"plain value, even \xc3\xa9 and \x7f"));
    for at in 0..20 {
        for bad in [b'"', b'\\', 0x01, b'\n'] {
            let mut s = vec![b'x'; 20];
            s[at] = bad;
            assert!(needs_json_escape(&s), "{at} {bad}");
        }
    }
}
