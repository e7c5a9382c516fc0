use super::*;

fn found(text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    find_ibans(text.as_bytes(), &mut spans);
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

/// Published example IBANs (valid check digits, fictitious accounts).
const VALID: &[&str] = &[
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "CH9300762011623852957",
    "NO9386011117947",
    "MT84MALT011000012345MTLCAST001S",
    "LC55HEMM000100010012001200023015",
];

fn grouped(iban: &str) -> String {
    iban.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn mod97_accepts_valid_and_rejects_changed_digits() {
    for iban in VALID {
        assert!(mod97_valid(iban.as_bytes()), "{iban}");
        // Any single changed digit breaks the check.
        let mut bytes = iban.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        assert!(!mod97_valid(&bytes), "{iban}");
    }
    assert!(!mod97_valid(b"DE89"));
    assert!(!mod97_valid(b"de89370400440532013000"));
}

#[test]
fn compact_and_grouped_ibans() {
    for iban in VALID {
        assert_eq!(found(&format!("IBAN: {iban}.")), vec![*iban]);
        let g = grouped(iban);
        assert_eq!(found(&format!("pay to {g}, thanks")), vec![g.as_str()]);
    }
    // A grouped IBAN followed by more words.
    assert_eq!(
        found("DE89 3704 0044 0532 0130 00 EUR 12"),
        vec!["DE89 3704 0044 0532 0130 00"]
    );
    assert_eq!(
        found("(GB82WEST12345698765432)"),
        vec!["GB82WEST12345698765432"]
    );
}

#[test]
fn iban_near_misses() {
    for text in [
        // Wrong check digits / one digit changed.
        "DE88370400440532013000",
        "DE89370400440532013001",
        "DE89 3704 0044 0532 0130 01",
        // Check digits 00, 01 and 99 are never issued.
        "DE00370400440532013000",
        // Too short, glued to a word, lower case.
        "DE8937040044",
        "XDE89370400440532013000",
        "DE89370400440532013000X",
        "de89370400440532013000",
        // Irregular grouping is not the printed form.
        "DE89 37040044 0532013000",
        // Upper-case codes of the same shape.
        "ISO8601 ABCD1234EFGH5678",
        "SN12345678901234567890",
    ] {
        assert!(found(text).is_empty(), "{text:?}");
    }
}
