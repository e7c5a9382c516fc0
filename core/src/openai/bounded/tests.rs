use super::*;

#[test]
fn respects_max_including_capacity() {
    let mut buf = Vec::new();
    for _ in 0..100 {
        assert!(push_bounded(&mut buf, b"x", 100));
    }
    assert!(!push_bounded(&mut buf, b"x", 100));
    assert_eq!(buf.len(), 100);
    assert!(buf.capacity() <= 100);
}

#[test]
fn rejects_whole_append_when_too_big() {
    let mut buf = b"abc".to_vec();
    assert!(!push_bounded(&mut buf, b"defg", 6));
    assert_eq!(buf, b"abc");
    assert!(push_bounded(&mut buf, b"def", 6));
    assert_eq!(buf, b"abcdef");
}

#[test]
fn zero_max() {
    let mut buf = Vec::new();
    assert!(push_bounded(&mut buf, b"", 0));
    assert!(!push_bounded(&mut buf, b"a", 0));
}
