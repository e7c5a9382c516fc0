//! Luhn (mod 10) check used to tell payment card numbers from other digit runs.

/// True when `digits` (values 0–9, most significant first) pass the Luhn check.
///
/// An empty sequence does not pass: a check digit is required.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                // Doubling a digit: 2*d - 9 equals the sum of the digits of 2*d.
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
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
}
