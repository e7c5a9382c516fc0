use super::*;

#[test]
fn frames() {
    assert_eq!(frame(b"ab").unwrap(), vec![0, 0, 0, 0, 2, b'a', b'b']);
    assert!(decode_frame(&[]).is_err());
    assert!(decode_frame(&[0, 0, 0, 0, 9, 1]).is_err());
    // An empty RateLimitResponse is a valid message.
    assert!(decode_frame(&[0, 0, 0, 0, 0]).is_ok());
}
