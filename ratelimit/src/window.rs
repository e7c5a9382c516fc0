//! Fixed windows aligned to their unit.
//!
//! A limit of N per unit counts the hits of the window that contains the instant:
//!
//! - seconds, minutes, hours and days have a fixed length, and a window starts at the Unix
//!   time in whole seconds rounded down to a multiple of it: minutes start at :00 seconds,
//!   hours at :00:00, days at 00:00:00 UTC (Unix time has no leap seconds, so every day is
//!   86,400 s);
//! - a month is the calendar month in UTC, from 00:00:00 of its 1st to 00:00:00 of the
//!   next month's 1st (28 to 31 days, February 29 in leap years of the Gregorian calendar).
//!
//! Every replica of the service that reads the same clock therefore counts into the same
//! window.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as ProtoUnit;

/// The units of a configured limit (the RLS v3 units this service implements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Month,
}

/// Every unit, in the order of their length.
pub const UNITS: [Unit; 5] = [
    Unit::Second,
    Unit::Minute,
    Unit::Hour,
    Unit::Day,
    Unit::Month,
];

const DAY_SECONDS: u64 = 86_400;

impl Unit {
    /// Case-insensitive, like envoyproxy/ratelimit (`minute`, `MINUTE`).
    pub fn parse(name: &str) -> Option<Unit> {
        UNITS
            .into_iter()
            .find(|u| u.name().eq_ignore_ascii_case(name))
    }

    /// The unit of an RLS v3 enum value (a descriptor's limit override), if implemented.
    pub fn from_proto(value: i32) -> Option<Unit> {
        match ProtoUnit::try_from(value).ok()? {
            ProtoUnit::Second => Some(Unit::Second),
            ProtoUnit::Minute => Some(Unit::Minute),
            ProtoUnit::Hour => Some(Unit::Hour),
            ProtoUnit::Day => Some(Unit::Day),
            ProtoUnit::Month => Some(Unit::Month),
            ProtoUnit::Unknown | ProtoUnit::Week | ProtoUnit::Year => None,
        }
    }

    pub fn proto(self) -> ProtoUnit {
        match self {
            Unit::Second => ProtoUnit::Second,
            Unit::Minute => ProtoUnit::Minute,
            Unit::Hour => ProtoUnit::Hour,
            Unit::Day => ProtoUnit::Day,
            Unit::Month => ProtoUnit::Month,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Month => "month",
        }
    }

    /// The length of every window of the unit; None for months, whose length varies.
    fn fixed_seconds(self) -> Option<u64> {
        match self {
            Unit::Second => Some(1),
            Unit::Minute => Some(60),
            Unit::Hour => Some(3_600),
            Unit::Day => Some(DAY_SECONDS),
            Unit::Month => None,
        }
    }
}

/// The window that contains an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds of the window's first second.
    pub start: u64,
    /// Milliseconds from the instant to the end of the window, in `1..=` the window's length.
    pub until_reset_ms: u64,
    /// Seconds a counter of this window is kept in Redis: to the end of the window
    /// rounded up, plus one, so a replica whose clock is a little behind still finds it.
    pub ttl_seconds: u64,
}

impl Window {
    /// The window of `unit` containing `now_ms` (Unix milliseconds).
    pub fn at(now_ms: u64, unit: Unit) -> Window {
        let now_s = now_ms / 1_000;
        let (start, end) = match unit.fixed_seconds() {
            Some(len) => {
                let start = now_s - now_s % len;
                (start, start.saturating_add(len))
            }
            None => month_bounds(now_s),
        };
        // `end` is a whole second after `now_s`: this is in 1..=length, and the TTL is
        // `end - now_s + 1` seconds (to the end of the window, plus one).
        let until_reset_ms = end.saturating_mul(1_000).saturating_sub(now_ms).max(1);
        Window {
            start,
            until_reset_ms,
            ttl_seconds: until_reset_ms.div_ceil(1_000).saturating_add(1),
        }
    }
}

/// Unix seconds of the first second of the UTC calendar month containing `now_s`, and of
/// the next month's.
fn month_bounds(now_s: u64) -> (u64, u64) {
    let (year, month, _) = civil_from_days(now_s / DAY_SECONDS);
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let start = days_from_civil(year, month, 1).saturating_mul(DAY_SECONDS);
    let end = days_from_civil(next_year, next_month, 1).saturating_mul(DAY_SECONDS);
    (start, end)
}

// The Gregorian calendar as days since 1970-01-01, by counting from 0000-03-01: with the
// year starting in March, the leap day is the last day of a year, and every month's first
// day is `(153 * m + 2) / 5` days into the year (m = 0 for March). A 400-year era has
// 146,097 days. Only instants from 1970 on are needed (Unix time as u64), so no negative
// years: 1970-01-01 is day 719,468 counted from 0000-03-01.

const DAYS_0000_03_01_TO_1970: u64 = 719_468;
const ERA_DAYS: u64 = 146_097;

/// Days since 1970-01-01 of the date `year-month-day` (year ≥ 1970, month 1..=12).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Years starting in March: January and February belong to the previous one.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y % 400;
    let march_month = (month + 9) % 12;
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * ERA_DAYS + day_of_era).saturating_sub(DAYS_0000_03_01_TO_1970)
}

/// The date `(year, month 1..=12, day 1..=31)` of a day counted from 1970-01-01.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + DAYS_0000_03_01_TO_1970;
    let era = z / ERA_DAYS;
    let day_of_era = z % ERA_DAYS;
    // Undo the leap days: one every 4 years (1,460 days), none every 100 (36,524), one
    // every 400 (the era's last day, 146,096).
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-01T23:37:00.250Z
    const T: u64 = 1_796_168_220_250;

    #[test]
    fn windows_are_aligned_to_their_unit() {
        let w = Window::at(T, Unit::Second);
        assert_eq!(
            (w.start, w.until_reset_ms, w.ttl_seconds),
            (1_796_168_220, 750, 2)
        );
        let w = Window::at(T, Unit::Minute);
        assert_eq!(w.start % 60, 0);
        assert_eq!((w.start, w.until_reset_ms), (1_796_168_220, 59_750));
        assert_eq!(w.ttl_seconds, 61);
        let w = Window::at(T, Unit::Hour);
        // 23:00:00 that day; 23 min 0.25 s gone.
        assert_eq!(
            (w.start, w.until_reset_ms),
            (1_796_166_000, 3_600_000 - 2_220_250)
        );
        let w = Window::at(T, Unit::Day);
        assert_eq!(
            (w.start, w.until_reset_ms),
            (1_796_083_200, 86_400_000 - 85_020_250)
        );
        assert_eq!(w.start % 86_400, 0);
    }

    #[test]
    fn the_first_millisecond_opens_a_new_window_and_the_last_closes_it() {
        let start_ms = 1_796_168_220_000;
        let first = Window::at(start_ms, Unit::Minute);
        assert_eq!((first.start, first.until_reset_ms), (1_796_168_220, 60_000));
        let last = Window::at(start_ms + 59_999, Unit::Minute);
        assert_eq!(
            (last.start, last.until_reset_ms, last.ttl_seconds),
            (1_796_168_220, 1, 2)
        );
        let next = Window::at(start_ms + 60_000, Unit::Minute);
        assert_eq!(next.start, 1_796_168_280);
    }

    #[test]
    fn reset_is_never_zero_and_never_longer_than_the_unit() {
        for unit in UNITS {
            // The longest month.
            let len = unit.fixed_seconds().unwrap_or(31 * DAY_SECONDS);
            for now in [0, 1, 999, 1_000, T, T + 1, u64::MAX / 2] {
                let w = Window::at(now, unit);
                assert!(w.until_reset_ms >= 1 && w.until_reset_ms <= len * 1_000);
                assert_eq!(w.start % unit.fixed_seconds().unwrap_or(DAY_SECONDS), 0);
                assert!(w.start * 1_000 <= now && now < w.start * 1_000 + len * 1_000);
                assert_eq!(w.ttl_seconds, w.until_reset_ms.div_ceil(1_000) + 1);
            }
        }
    }

    #[test]
    fn units_parse_like_envoyproxy_ratelimit_and_map_to_rls_v3() {
        assert_eq!(Unit::parse("minute"), Some(Unit::Minute));
        assert_eq!(Unit::parse("HOUR"), Some(Unit::Hour));
        assert_eq!(Unit::parse("Day"), Some(Unit::Day));
        assert_eq!(Unit::parse("MONTH"), Some(Unit::Month));
        assert_eq!(Unit::parse("week"), None);
        assert_eq!(Unit::parse("year"), None);
        assert_eq!(Unit::parse("minutes"), None);
        assert_eq!(Unit::parse(""), None);
        for unit in UNITS {
            assert_eq!(Unit::from_proto(unit.proto() as i32), Some(unit));
            assert_eq!(Unit::parse(unit.name()), Some(unit));
        }
        assert_eq!(Unit::from_proto(ProtoUnit::Month as i32), Some(Unit::Month));
        assert_eq!(Unit::from_proto(ProtoUnit::Week as i32), None);
        assert_eq!(Unit::from_proto(ProtoUnit::Year as i32), None);
        assert_eq!(Unit::from_proto(0), None);
        assert_eq!(Unit::from_proto(99), None);
    }

    /// Unix seconds of `year-month-day`T`hh:mm:ss`Z, by the functions under test.
    fn utc(year: u64, month: u64, day: u64, hms: (u64, u64, u64)) -> u64 {
        days_from_civil(year, month, day) * DAY_SECONDS + hms.0 * 3_600 + hms.1 * 60 + hms.2
    }

    #[test]
    fn known_dates_match_their_unix_days() {
        // Checked against Python's datetime.
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(utc(2026, 12, 1, (0, 0, 0)), 1_796_083_200);
        assert_eq!(utc(2027, 1, 1, (0, 0, 0)), 1_798_761_600);
        assert_eq!(utc(2028, 2, 29, (12, 0, 0)), 1_835_438_400);
        assert_eq!(utc(2100, 3, 1, (0, 0, 0)), 4_107_542_400);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    fn is_leap(year: u64) -> bool {
        (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
    }

    fn month_days(year: u64, month: u64) -> u64 {
        match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn the_calendar_agrees_with_a_day_by_day_walk_over_one_era_and_more() {
        // From 1970-01-01, 500 years a day at a time (leap years every 4, not every
        // 100, again every 400: 2000 and 2400 have a February 29, 2100 and 2200 do not).
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..500 * 366 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
            d += 1;
            if d > month_days(y, m) {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
        assert_eq!(
            civil_from_days(days_from_civil(2000, 2, 28) + 1),
            (2000, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2100, 2, 28) + 1),
            (2100, 3, 1)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2400, 2, 28) + 1),
            (2400, 2, 29)
        );
    }

    #[test]
    fn months_are_utc_calendar_months() {
        // T is in December 2026: the window runs to 2027-01-01, the year's rollover.
        let w = Window::at(T, Unit::Month);
        let (dec, jan) = (utc(2026, 12, 1, (0, 0, 0)), utc(2027, 1, 1, (0, 0, 0)));
        assert_eq!(w.start, dec);
        assert_eq!(w.until_reset_ms, jan * 1_000 - T);
        assert_eq!(w.ttl_seconds, jan - T / 1_000 + 1);
        let next = Window::at(jan * 1_000, Unit::Month);
        assert_eq!(next.start, jan);
        assert_eq!(next.until_reset_ms, 31 * DAY_SECONDS * 1_000);
        assert_eq!(next.ttl_seconds, 31 * DAY_SECONDS + 1);
        // The last millisecond of December is still December's window.
        let last = Window::at(jan * 1_000 - 1, Unit::Month);
        assert_eq!(
            (last.start, last.until_reset_ms, last.ttl_seconds),
            (dec, 1, 2)
        );
    }

    #[test]
    fn february_has_29_days_in_leap_years_only() {
        let feb29 = utc(2028, 2, 29, (12, 0, 0));
        let w = Window::at(feb29 * 1_000, Unit::Month);
        assert_eq!(w.start, utc(2028, 2, 1, (0, 0, 0)));
        assert_eq!(w.until_reset_ms, 12 * 3_600 * 1_000);
        assert_eq!(w.ttl_seconds, 12 * 3_600 + 1);
        let lengths = |year| {
            let start = utc(year, 2, 1, (0, 0, 0));
            let w = Window::at(start * 1_000, Unit::Month);
            assert_eq!(w.start, start);
            w.until_reset_ms / 1_000 / DAY_SECONDS
        };
        assert_eq!(lengths(2027), 28);
        assert_eq!(lengths(2028), 29);
        assert_eq!(lengths(2100), 28);
        assert_eq!(lengths(2400), 29);
        // March 1 after a February 29 opens March's window.
        let march = utc(2028, 3, 1, (0, 0, 0));
        assert_eq!(Window::at(march * 1_000, Unit::Month).start, march);
        assert_eq!(
            Window::at(march * 1_000 - 1, Unit::Month).start,
            utc(2028, 2, 1, (0, 0, 0))
        );
    }

    #[test]
    fn every_month_of_a_year_has_its_length() {
        let lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for (month, days) in (1..).zip(lengths) {
            let mid = utc(2027, month, 15, (6, 30, 0));
            let w = Window::at(mid * 1_000, Unit::Month);
            assert_eq!(w.start, utc(2027, month, 1, (0, 0, 0)));
            assert_eq!(
                w.until_reset_ms,
                (w.start + days * DAY_SECONDS - mid) * 1_000
            );
        }
    }
}
