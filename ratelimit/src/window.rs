//! Fixed windows aligned to their unit.
//!
//! A limit of N per unit counts the hits of the window `[start, start + unit)` where
//! `start` is the Unix time in whole seconds rounded down to a multiple of the unit's
//! length: minutes start at :00 seconds, hours at :00:00, days at 00:00:00 UTC (Unix time
//! has no leap seconds, so every day is 86,400 s). Every replica of the service that reads
//! the same clock therefore counts into the same window.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as ProtoUnit;

/// The units of a configured limit (the RLS v3 units this service implements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    /// Case-insensitive, like envoyproxy/ratelimit (`minute`, `MINUTE`).
    pub fn parse(name: &str) -> Option<Unit> {
        match name.to_ascii_lowercase().as_str() {
            "second" => Some(Unit::Second),
            "minute" => Some(Unit::Minute),
            "hour" => Some(Unit::Hour),
            "day" => Some(Unit::Day),
            _ => None,
        }
    }

    /// The unit of an RLS v3 enum value (a descriptor's limit override), if implemented.
    pub fn from_proto(value: i32) -> Option<Unit> {
        match ProtoUnit::try_from(value).ok()? {
            ProtoUnit::Second => Some(Unit::Second),
            ProtoUnit::Minute => Some(Unit::Minute),
            ProtoUnit::Hour => Some(Unit::Hour),
            ProtoUnit::Day => Some(Unit::Day),
            ProtoUnit::Unknown | ProtoUnit::Week | ProtoUnit::Month | ProtoUnit::Year => None,
        }
    }

    pub fn proto(self) -> ProtoUnit {
        match self {
            Unit::Second => ProtoUnit::Second,
            Unit::Minute => ProtoUnit::Minute,
            Unit::Hour => ProtoUnit::Hour,
            Unit::Day => ProtoUnit::Day,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
        }
    }
}

/// The window that contains an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds of the window's first second.
    pub start: u64,
    /// Milliseconds from the instant to the end of the window, in `1..=unit`.
    pub until_reset_ms: u64,
    /// Seconds a counter of this window is kept in Redis: to the end of the window
    /// rounded up, plus one, so a replica whose clock is a little behind still finds it.
    pub ttl_seconds: u64,
}

impl Window {
    /// The window of `unit` containing `now_ms` (Unix milliseconds).
    pub fn at(now_ms: u64, unit: Unit) -> Window {
        let len_ms = unit.seconds().saturating_mul(1_000);
        let start_ms = now_ms - now_ms % len_ms;
        let until_reset_ms = start_ms.saturating_add(len_ms).saturating_sub(now_ms);
        Window {
            start: start_ms / 1_000,
            until_reset_ms,
            ttl_seconds: until_reset_ms.div_ceil(1_000).saturating_add(1),
        }
    }
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
        for unit in [Unit::Second, Unit::Minute, Unit::Hour, Unit::Day] {
            for now in [0, 1, 999, 1_000, T, T + 1, u64::MAX / 2] {
                let w = Window::at(now, unit);
                assert!(w.until_reset_ms >= 1 && w.until_reset_ms <= unit.seconds() * 1_000);
                assert_eq!(w.start % unit.seconds(), 0);
                assert!(w.start * 1_000 <= now && now < w.start * 1_000 + unit.seconds() * 1_000);
            }
        }
    }

    #[test]
    fn units_parse_like_envoyproxy_ratelimit_and_map_to_rls_v3() {
        assert_eq!(Unit::parse("minute"), Some(Unit::Minute));
        assert_eq!(Unit::parse("HOUR"), Some(Unit::Hour));
        assert_eq!(Unit::parse("Day"), Some(Unit::Day));
        assert_eq!(Unit::parse("week"), None);
        assert_eq!(Unit::parse("minutes"), None);
        assert_eq!(Unit::parse(""), None);
        for unit in [Unit::Second, Unit::Minute, Unit::Hour, Unit::Day] {
            assert_eq!(Unit::from_proto(unit.proto() as i32), Some(unit));
            assert_eq!(Unit::parse(unit.name()), Some(unit));
        }
        assert_eq!(Unit::from_proto(ProtoUnit::Week as i32), None);
        assert_eq!(Unit::from_proto(0), None);
        assert_eq!(Unit::from_proto(99), None);
    }
}
