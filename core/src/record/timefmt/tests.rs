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

#[test]
fn days_from_civil_inverts_civil_from_days() {
    for days in [
        0u64, 59, 60, 365, 10_957, 11_016, 20_454, 20_789, 47_482, 100_000,
    ] {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
    }
}

#[test]
fn month_bounds_follow_the_calendar() {
    let day = 86_400_000u64;
    // 2024-02-29 12:00 UTC: February of a leap year.
    let feb29 = days_from_civil(2024, 2, 29) * day + day / 2;
    assert_eq!(
        month_bounds(feb29),
        (
            days_from_civil(2024, 2, 1) * day,
            days_from_civil(2024, 3, 1) * day
        )
    );
    assert_eq!(
        rfc3339_millis(month_bounds(feb29).1),
        "2024-03-01T00:00:00.000Z"
    );
    // December rolls into January.
    let dec = days_from_civil(2026, 12, 31) * day + day - 1;
    assert_eq!(
        rfc3339_millis(month_bounds(dec).0),
        "2026-12-01T00:00:00.000Z"
    );
    assert_eq!(
        rfc3339_millis(month_bounds(dec).1),
        "2027-01-01T00:00:00.000Z"
    );
    // The first millisecond of a month belongs to it.
    let start = days_from_civil(2026, 3, 1) * day;
    assert_eq!(month_bounds(start).0, start);
}
