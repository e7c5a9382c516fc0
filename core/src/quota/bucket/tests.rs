use super::*;

const TEN_YEARS_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// 60/min = exactly 1 unit per second, burst 10.
fn per_sec() -> Limit {
    Limit::new(60.0, 10.0, 0.0).unwrap()
}

fn state(level_units: i64, last: u64) -> BucketState {
    BucketState {
        level_milli: level_units * MILLI,
        last_refill_ms: last,
    }
}

#[test]
fn limit_new_converts_and_rejects() {
    let l = Limit::new(90.5, 120.0, 0.25).unwrap();
    assert_eq!(l.per_minute(), 90);
    assert_eq!(l.burst(), 120);
    assert_eq!(l.floor_for(TrafficClass::Batch), 30_000);
    assert_eq!(l.floor_for(TrafficClass::Interactive), 0);
    for bad in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        0.0001,
    ] {
        assert_eq!(Limit::new(bad, 10.0, 0.0), None, "rate {bad}");
    }
    for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0, 0.5] {
        assert_eq!(Limit::new(10.0, bad, 0.0), None, "burst {bad}");
    }
    for bad in [f64::NAN, -0.1, 1.0, 2.0] {
        assert_eq!(Limit::new(10.0, 10.0, bad), None, "reserve {bad}");
    }
    // Absurdly large values clamp instead of overflowing.
    let huge = Limit::new(1e300, 1e300, 0.0).unwrap();
    assert_eq!(huge.burst(), 1_000_000_000_000);
    assert_eq!(huge.per_minute(), 1_000_000_000_000);
}

#[test]
fn refill_exact_values() {
    let l = per_sec();
    let mut s = state(0, 1_000);
    s.refill(&l, 2_500);
    assert_eq!(
        s,
        BucketState {
            level_milli: 1_500,
            last_refill_ms: 2_500
        }
    );
    s.refill(&l, 2_501);
    assert_eq!(s.level_milli, 1_501);
    s.refill(&l, 100_000);
    assert_eq!(s, state(10, 100_000), "capped at burst");
}

#[test]
fn slow_rate_carries_fractions_instead_of_rounding_them_away() {
    // 1 per minute = 1/60 milli per ms: each 1 ms step alone rounds to 0.
    let l = Limit::new(1.0, 5.0, 0.0).unwrap();
    let mut s = state(0, 0);
    for now in 1..=60_000 {
        s.refill(&l, now);
    }
    assert_eq!(s.level_milli, 1_000, "exactly one unit after one minute");

    let mut s = state(0, 0);
    s.refill(&l, 59_999);
    assert_eq!(s.level_milli, 999);
    assert_eq!(
        s.last_refill_ms, 59_940,
        "only the converted time is credited"
    );
    s.refill(&l, 60_000);
    assert_eq!(s.level_milli, 1_000);
}

#[test]
fn clock_backwards_freezes_refill_and_keeps_timestamp() {
    let l = per_sec();
    let mut s = state(0, 10_000);
    s.refill(&l, 9_000);
    assert_eq!(s, state(0, 10_000));
    s.refill(&l, 11_000);
    assert_eq!(
        s,
        state(1, 11_000),
        "no double credit for the rewound second"
    );
}

#[test]
fn huge_backwards_jump_reanchors_without_credit() {
    let l = per_sec();
    let mut s = state(2, 10_000_000);
    s.refill(&l, 1_000);
    assert_eq!(s, state(2, 1_000));
    let mut s = state(2, u64::MAX);
    s.refill(&l, 0);
    assert_eq!(s, state(2, 0));
}

#[test]
fn ten_year_idle_and_extreme_inputs_cap_without_overflow() {
    let l = per_sec();
    let mut s = state(-3, 0);
    s.refill(&l, TEN_YEARS_MS);
    assert_eq!(s, state(10, TEN_YEARS_MS));

    let max = Limit::new(1e12, 1e12, 0.0).unwrap();
    let mut s = BucketState {
        level_milli: -MAX_LEVEL_MILLI,
        last_refill_ms: 0,
    };
    s.refill(&max, u64::MAX);
    assert_eq!(s.level_milli, MAX_LEVEL_MILLI);
    assert_eq!(s.last_refill_ms, u64::MAX);

    let slow = Limit::new(0.001, 1e12, 0.0).unwrap();
    let mut s = BucketState {
        level_milli: -MAX_LEVEL_MILLI,
        last_refill_ms: 0,
    };
    s.refill(&slow, u64::MAX);
    let gain = (u64::MAX / 60_000) as i64; // 1 milli per minute
    assert_eq!(s.level_milli, -MAX_LEVEL_MILLI + gain);
    assert_eq!(
        s.last_refill_ms,
        gain as u64 * 60_000,
        "the fraction is carried"
    );
    let d = try_take(&mut s, u64::MAX / 2, u64::MAX, &slow, TrafficClass::Batch);
    assert_eq!(d.verdict, Verdict::TooLarge);
    let d = try_take(
        &mut s,
        1_000_000_000_000,
        u64::MAX,
        &slow,
        TrafficClass::Batch,
    );
    assert!(matches!(
        d.verdict,
        Verdict::Denied { .. } | Verdict::Allowed
    ));
}

#[test]
fn encode_decode_round_trip() {
    for s in [
        state(7, 123),
        state(-5, u64::MAX),
        BucketState {
            level_milli: 1,
            last_refill_ms: 0,
        },
    ] {
        let bytes = s.encode();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(BucketState::decode(&bytes), Some(s));
    }
}

#[test]
fn garbage_decodes_as_none() {
    let good = state(3, 9).encode();
    assert_eq!(BucketState::decode(&[]), None);
    assert_eq!(BucketState::decode(&good[..16]), None, "short");
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(BucketState::decode(&long), None, "long");
    let mut wrong_tag = good;
    wrong_tag[0] = 2;
    assert_eq!(BucketState::decode(&wrong_tag), None);
    let mut insane = BucketState {
        level_milli: i64::MIN,
        last_refill_ms: 0,
    }
    .encode();
    assert_eq!(BucketState::decode(&insane), None);
    insane = BucketState {
        level_milli: MAX_LEVEL_MILLI + 1,
        last_refill_ms: 0,
    }
    .encode();
    assert_eq!(BucketState::decode(&insane), None);
    assert_eq!(BucketState::decode(b"not a bucket at all"), None);
}

#[test]
fn try_take_allows_and_reports() {
    let l = per_sec();
    let mut s = BucketState::full(&l, 0);
    let d = try_take(&mut s, 3, 0, &l, TrafficClass::Interactive);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Allowed,
            remaining: 7,
            reset_ms: 3_000
        }
    );
    assert_eq!(s, state(7, 0));
    assert!(d.allowed());
}

#[test]
fn try_take_denies_with_exact_retry_after() {
    let l = per_sec();
    let mut s = state(2, 0);
    let d = try_take(&mut s, 5, 0, &l, TrafficClass::Interactive);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Denied {
                retry_after_ms: 3_000
            },
            remaining: 2,
            reset_ms: 8_000
        }
    );
    assert_eq!(s, state(2, 0), "a denial takes nothing");
    let d = try_take(&mut s, 5, 2_999, &l, TrafficClass::Interactive);
    assert_eq!(d.verdict, Verdict::Denied { retry_after_ms: 1 });
    let d = try_take(&mut s, 5, 3_000, &l, TrafficClass::Interactive);
    assert_eq!(d.verdict, Verdict::Allowed);
}

#[test]
fn retry_after_accounts_for_carried_time_on_slow_buckets() {
    let l = Limit::new(1.0, 5.0, 0.0).unwrap();
    let mut s = state(0, 0);
    let d = try_take(&mut s, 1, 30_000, &l, TrafficClass::Interactive);
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            retry_after_ms: 30_000
        }
    );
    let d = try_take(&mut s, 1, 59_999, &l, TrafficClass::Interactive);
    assert_eq!(d.verdict, Verdict::Denied { retry_after_ms: 1 });
    let d = try_take(&mut s, 1, 60_000, &l, TrafficClass::Interactive);
    assert_eq!(d.verdict, Verdict::Allowed);
}

#[test]
fn retry_after_includes_rewound_clock() {
    let l = per_sec();
    let mut s = state(0, 10_000);
    let d = try_take(&mut s, 1, 9_500, &l, TrafficClass::Interactive);
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            retry_after_ms: 1_500
        }
    );
}

#[test]
fn too_large_is_distinct_and_takes_nothing() {
    let l = per_sec();
    let mut s = BucketState::full(&l, 0);
    let d = try_take(&mut s, 11, 0, &l, TrafficClass::Interactive);
    assert_eq!(d.verdict, Verdict::TooLarge);
    assert_eq!(s, state(10, 0));
    assert_eq!(
        try_take(&mut s, u64::MAX, 0, &l, TrafficClass::Interactive).verdict,
        Verdict::TooLarge
    );
    // Exactly the burst is fine.
    assert_eq!(
        try_take(&mut s, 10, 0, &l, TrafficClass::Interactive).verdict,
        Verdict::Allowed
    );
}

#[test]
fn batch_stops_at_reserve_line_interactive_passes() {
    let l = Limit::new(60.0, 10.0, 0.2).unwrap(); // floor 2 units for batch
    let mut s = BucketState::full(&l, 0);
    let d = try_take(&mut s, 8, 0, &l, TrafficClass::Batch);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Allowed,
            remaining: 0,
            reset_ms: 8_000
        }
    );
    let d = try_take(&mut s, 1, 0, &l, TrafficClass::Batch);
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            retry_after_ms: 1_000
        }
    );
    assert_eq!(s, state(2, 0));
    let d = try_take(&mut s, 2, 0, &l, TrafficClass::Interactive);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Allowed,
            remaining: 0,
            reset_ms: 10_000
        }
    );
    // Batch can never take more than burst - reserve; interactive can.
    let mut full = BucketState::full(&l, 0);
    assert_eq!(
        try_take(&mut full, 9, 0, &l, TrafficClass::Batch).verdict,
        Verdict::TooLarge
    );
    assert_eq!(
        try_take(&mut full, 9, 0, &l, TrafficClass::Interactive).verdict,
        Verdict::Allowed
    );
}

#[test]
fn settle_refunds_capped_at_burst() {
    let l = per_sec();
    let mut s = state(7, 0);
    settle(&mut s, -2, 0, &l);
    assert_eq!(s, state(9, 0));
    settle(&mut s, -1_000_000, 0, &l);
    assert_eq!(s, state(10, 0));
}

#[test]
fn settle_charges_into_debt_then_requests_wait() {
    let l = per_sec();
    let mut s = state(3, 0);
    settle(&mut s, 8, 0, &l);
    assert_eq!(s, state(-5, 0));
    let d = try_take(&mut s, 1, 0, &l, TrafficClass::Interactive);
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            retry_after_ms: 6_000
        }
    );
    assert_eq!(d.remaining, 0, "never negative");
    assert_eq!(d.reset_ms, 15_000);
    assert_eq!(
        try_take(&mut s, 1, 5_999, &l, TrafficClass::Interactive).verdict,
        Verdict::Denied { retry_after_ms: 1 }
    );
    assert_eq!(
        try_take(&mut s, 1, 6_000, &l, TrafficClass::Interactive).verdict,
        Verdict::Allowed
    );
    assert_eq!(s, state(0, 6_000));
}

#[test]
fn zero_cost_still_waits_out_debt() {
    let l = per_sec();
    let mut s = state(-1, 0);
    assert_eq!(
        try_take(&mut s, 0, 0, &l, TrafficClass::Interactive).verdict,
        Verdict::Denied {
            retry_after_ms: 1_000
        }
    );
    assert_eq!(
        try_take(&mut s, 0, 1_000, &l, TrafficClass::Interactive).verdict,
        Verdict::Allowed
    );
}

#[test]
fn settle_extremes_clamp() {
    let l = per_sec();
    let mut s = state(5, 0);
    settle(&mut s, i64::MAX, 0, &l);
    assert_eq!(s.level_milli, -MAX_LEVEL_MILLI);
    let d = try_take(&mut s, 1, u64::MAX, &l, TrafficClass::Interactive);
    assert_eq!(d.verdict, Verdict::Allowed, "enough time heals any debt");
    settle(&mut s, i64::MIN, u64::MAX, &l);
    assert_eq!(s.level_milli, 10 * MILLI);
}

#[test]
fn smaller_burst_after_reload_clamps_stored_level() {
    let old = Limit::new(600.0, 100.0, 0.0).unwrap();
    let mut s = BucketState::full(&old, 0);
    let new = Limit::new(60.0, 5.0, 0.0).unwrap();
    let d = try_take(&mut s, 1, 0, &new, TrafficClass::Interactive);
    assert_eq!(d.remaining, 4);
    assert_eq!(s, state(4, 0));
}
