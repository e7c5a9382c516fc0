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
mod tests;
