use super::*;

type Finder = fn(&[u8], &mut Vec<Span<'_>>);

fn found(f: Finder, text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    f(text.as_bytes(), &mut spans);
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

#[test]
fn cards_true_positives() {
    for (text, want) in [
        ("pay 4111111111111111 now", "4111111111111111"),
        ("pay 4111 1111 1111 1111.", "4111 1111 1111 1111"),
        ("pay 4111-1111-1111-1111,", "4111-1111-1111-1111"),
        ("amex 3782 822463 10005", "3782 822463 10005"),
        ("amex 378282246310005", "378282246310005"),
        ("mc:5555555555554444", "5555555555554444"),
        ("13 digits 4222222222222 ok", "4222222222222"),
        ("19 digits 6304000000000000000", "6304000000000000000"),
        ("(4111111111111111)", "4111111111111111"),
    ] {
        assert_eq!(found(find_cards, text), vec![want], "in {text:?}");
    }
}

#[test]
fn card_followed_or_preceded_by_other_numbers() {
    assert_eq!(
        found(find_cards, "4111 1111 1111 1111 2026"),
        vec!["4111 1111 1111 1111"]
    );
    assert_eq!(
        found(find_cards, "ref 1234 4111 1111 1111 1111"),
        vec!["4111 1111 1111 1111"]
    );
}

#[test]
fn cards_false_positives() {
    for text in [
        "4111111111111112",                // fails Luhn
        "4111 1111 1111 1112",             // fails Luhn, grouped
        "1234567812345678",                // fails Luhn
        "411111111111",                    // 12 digits
        "41111111111111111111",            // 20 digits, too long
        "x4111111111111111",               // glued to a word
        "4111111111111111abc",             // glued to a word
        "3.4111111111111111",              // decimal fraction
        "4111111111111111.5",              // decimal
        "4111 1111-1111 1111",             // mixed separators
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", // a list of digits
        "2026-03-10",
    ] {
        assert!(found(find_cards, text).is_empty(), "{text:?}");
    }
}

#[test]
fn ipv4_true_positives() {
    for (text, want) in [
        ("host 192.168.1.1 up", "192.168.1.1"),
        ("8.8.8.8", "8.8.8.8"),
        ("ip=10.0.0.255:8080", "10.0.0.255"),
        ("net 10.1.2.0/24", "10.1.2.0"),
        ("at 255.255.255.255.", "255.255.255.255"),
        ("(127.0.0.1)", "127.0.0.1"),
    ] {
        assert_eq!(found(find_ipv4, text), vec![want], "in {text:?}");
    }
}

#[test]
fn ipv4_lists() {
    assert_eq!(
        found(find_ipv4, "10.0.0.1,10.0.0.2"),
        vec!["10.0.0.1", "10.0.0.2"]
    );
    assert_eq!(
        found(find_ipv4, "10.0.0.1-10.0.0.9"),
        vec!["10.0.0.1", "10.0.0.9"]
    );
}

#[test]
fn ipv4_false_positives() {
    for text in [
        "999.1.1.1",
        "999.999.1.1",
        "256.1.1.1",
        "1.2.3.256",
        "version 1.2.3",
        "1.2.3.4.5",
        "v1.2.3.4",
        "1.2.3.4a",
        "1.2.3.1000",
        "1..2.3.4",
        "3.14",
    ] {
        assert!(found(find_ipv4, text).is_empty(), "{text:?}");
    }
}

#[test]
fn phones_true_positives() {
    for (text, want) in [
        ("call +1 (555) 123-4567 now", "+1 (555) 123-4567"),
        ("call +1-555-123-4567.", "+1-555-123-4567"),
        ("+44 20 7946 0958", "+44 20 7946 0958"),
        ("+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
        ("tel:+4915112345678", "+4915112345678"),
        ("+33 1 23 45 67 89", "+33 1 23 45 67 89"),
        ("(555) 123-4567", "(555) 123-4567"),
        ("(555)123-4567", "(555)123-4567"),
        ("555-123-4567", "555-123-4567"),
        ("555.123.4567", "555.123.4567"),
        ("555 123 4567", "555 123 4567"),
        ("dial 555-1234 today", "555-1234"),
        ("1-800-555-1234", "1-800-555-1234"),
        ("020 7946 0958", "020 7946 0958"),
        ("06-12345678", "06-12345678"),
        ("06 12 34 56 78", "06 12 34 56 78"),
        ("Tel: 555-123-4567, ok", "555-123-4567"),
        ("555-123-4567 2 times", "555-123-4567"),
    ] {
        assert_eq!(found(find_phones, text), vec![want], "in {text:?}");
    }
}

#[test]
fn long_international_keeps_valid_prefix() {
    assert_eq!(
        found(find_phones, "+1 555 123 4567 8910 11"),
        vec!["+1 555 123 4567 8910"]
    );
}

#[test]
fn phones_false_positives() {
    for text in [
        "in 2026 we",
        "2026-03-10",
        "10.03.2026",
        "03-10-2026",
        "1990-2020",
        "3.14159",
        "3.14159265",
        "12345.6789",
        "version 1.2.3",
        "10.15.7",
        "1.22.333.4444",
        "192.168.1.1",
        "5551234567",        // bare digits: could be any id
        "1,234,567.89",      // amount
        "12 345",            // too short
        "100 200 300",       // list of numbers
        "+5 points",         // too short
        "1+2345678",         // arithmetic
        "+1234567890123456", // 16 digits without groups
        "abc555-123-4567",   // glued to a word
        "555-123-4567x",     // glued to a word
        "555-123-4567.5",    // decimal continuation
        "4111111111111111",
        "12-3-4567", // single-digit inner group
    ] {
        assert!(found(find_phones, text).is_empty(), "{text:?}");
    }
}
