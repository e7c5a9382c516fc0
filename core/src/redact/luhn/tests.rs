use super::*;

fn digits(s: &str) -> Vec<u8> {
    s.bytes().map(|c| c - b'0').collect()
}

#[test]
fn known_valid_numbers() {
    for n in [
        "4111111111111111",    // Visa test number
        "5555555555554444",    // Mastercard test number
        "378282246310005",     // Amex test number
        "6011111111111117",    // Discover test number
        "4222222222222",       // 13-digit Visa
        "6011000990139424",    // Discover
        "79927398713",         // the classic Luhn example
        "6304000000000000000", // 19 digits: Maestro-style length
    ] {
        assert!(luhn_valid(&digits(n)), "{n} should pass");
    }
}

#[test]
fn known_invalid_numbers() {
    for n in ["4111111111111112", "1234567812345678", "79927398710", ""] {
        assert!(!luhn_valid(&digits(n)), "{n:?} should fail");
    }
}
