use super::*;

fn model() -> Model {
    Model {
        name: "m".into(),
        input_usd_per_million: 10.0,
        output_usd_per_million: 30.0,
        cached_input_usd_per_million: 1.0,
        clusters: None,
        credential: None,
    }
}

#[test]
fn prices() {
    let u = Usage {
        prompt_tokens: 612,
        completion_tokens: 238,
        total_tokens: 850,
        cached_tokens: None,
        reasoning_tokens: None,
    };
    assert_eq!(estimate_usd(&model(), &u), 0.01326);
    let cached = Usage {
        cached_tokens: Some(600),
        ..u
    };
    assert_eq!(estimate_usd(&model(), &cached), 0.00786);
    assert_eq!(to_micros(0.0194), 19_400);
    assert_eq!(to_micros(f64::NAN), 0);
    let weird = Usage {
        cached_tokens: Some(10_000),
        ..u
    };
    assert_eq!(estimate_usd(&model(), &weird), 0.007752);
}
