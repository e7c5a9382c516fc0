use super::*;
use crate::quota::global::CounterKind;

#[test]
fn large_budgets_are_counted_in_coarser_units_that_fit_the_protocol() {
    let small = Counter::spend(
        CounterKind::SpendDay,
        None,
        4_000_000_000,
        OnUnavailable::Local,
    );
    assert_eq!((small.scale, small.limit), (1, 4_000_000_000));
    // $10,000 a month: 1e10 µ$ does not fit a u32, 3 µ$ units do.
    let large = Counter::spend(
        CounterKind::SpendMonth,
        None,
        10_000_000_000,
        OnUnavailable::Local,
    );
    assert_eq!(large.scale, 3);
    assert_eq!(large.limit, 3_333_333_333);
    assert_eq!(large.unit, Unit::Month);
    // A cost is rounded up to whole units: never under-counted.
    let costs = crate::quota::global::Costs {
        tokens: 0,
        spend_micros: 7,
    };
    assert_eq!(large.cost(&costs), 3);
    assert_eq!(small.cost(&costs), 7);
}

#[test]
fn the_maximum_cost_is_rounded_up_and_uses_the_dearer_input_price() {
    let p = Prices {
        input: 0.2,
        cached_input: 0.1,
        output: 0.6,
    };
    // 10 × 0.2 + 3 × 0.6 = 3.8 µ$ -> 4.
    assert_eq!(p.max_micros(10, 3), 4);
    assert_eq!(Prices::default().max_micros(1_000, 1_000), 0);
}

#[test]
fn spend_keys_separate_tenants_periods_and_models() {
    let b = |period, model: Option<&str>| Budget {
        period,
        model: model.map(str::to_owned),
        limit_micros: 1,
    };
    assert_eq!(b(Period::Day, None).key("p", "t:x"), "p:b:t%3Ax:day");
    assert_eq!(b(Period::Month, Some("m")).key("p", "t"), "p:b:t:month:m");
}
