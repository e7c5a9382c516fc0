use super::*;

#[test]
fn known_instants() {
    assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(1_773_156_131_418),
        "2026-03-10T15:22:11.418Z"
    );
    assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(4_102_444_799_999),
        "2099-12-31T23:59:59.999Z"
    );
}
