//! Compatibility folding: a view of the text in which full-width, mathematical,
//! circled, super/subscript and other compatibility forms of ASCII characters
//! are ASCII, so the built-in scanners catch `ｓｋ－…` or `𝐀𝐊𝐈𝐀…` like `sk-…`
//! and `AKIA…`.
//!
//! Every code point whose NFKC form is one printable ASCII character or a space
//! folds to that character (Unicode 14.0 data); so do the hyphen look-alikes
//! U+2010, U+2011, U+2012 and U+2212, which NFKC leaves alone. Forms whose NFKC
//! form is several characters (`ﬁ`, `⑩`) and letters of other scripts that
//! merely look Latin (Cyrillic `ѕ`) are not folded.
//!
//! The folded view has exactly one byte per character of the text, so a byte
//! range of the view maps back to a range of whole characters.

/// Stands for a character that does not fold: not ASCII, so no scanner treats
/// it as part of an ASCII secret, while the "any non-ASCII byte" rules (values
/// of `password=…`) still accept it.
const OTHER: u8 = 0x80;

/// Hyphen-shaped characters that NFKC does not map to `-`.
const HYPHENS: [u32; 4] = [0x2010, 0x2011, 0x2012, 0x2212];

/// `(first, last, ascii, counting)`: code points `first..=last` fold to
/// `ascii`, or to `ascii + (cp - first)` when `counting`. Sorted, disjoint.
const TABLE: &[(u32, u32, u8, bool)] = &[
    (0x00A0, 0x00A0, b' ', false),
    (0x00AA, 0x00AA, b'a', false),
    (0x00B2, 0x00B3, b'2', true),
    (0x00B9, 0x00B9, b'1', false),
    (0x00BA, 0x00BA, b'o', false),
    (0x017F, 0x017F, b's', false),
    (0x02B0, 0x02B0, b'h', false),
    (0x02B2, 0x02B2, b'j', false),
    (0x02B3, 0x02B3, b'r', false),
    (0x02B7, 0x02B7, b'w', false),
    (0x02B8, 0x02B8, b'y', false),
    (0x02E1, 0x02E1, b'l', false),
    (0x02E2, 0x02E2, b's', false),
    (0x02E3, 0x02E3, b'x', false),
    (0x037E, 0x037E, b';', false),
    (0x1D2C, 0x1D2C, b'A', false),
    (0x1D2E, 0x1D2E, b'B', false),
    (0x1D30, 0x1D31, b'D', true),
    (0x1D33, 0x1D3A, b'G', true),
    (0x1D3C, 0x1D3C, b'O', false),
    (0x1D3E, 0x1D3E, b'P', false),
    (0x1D3F, 0x1D3F, b'R', false),
    (0x1D40, 0x1D41, b'T', true),
    (0x1D42, 0x1D42, b'W', false),
    (0x1D43, 0x1D43, b'a', false),
    (0x1D47, 0x1D47, b'b', false),
    (0x1D48, 0x1D49, b'd', true),
    (0x1D4D, 0x1D4D, b'g', false),
    (0x1D4F, 0x1D4F, b'k', false),
    (0x1D50, 0x1D50, b'm', false),
    (0x1D52, 0x1D52, b'o', false),
    (0x1D56, 0x1D56, b'p', false),
    (0x1D57, 0x1D58, b't', true),
    (0x1D5B, 0x1D5B, b'v', false),
    (0x1D62, 0x1D62, b'i', false),
    (0x1D63, 0x1D63, b'r', false),
    (0x1D64, 0x1D65, b'u', true),
    (0x1D9C, 0x1D9C, b'c', false),
    (0x1DA0, 0x1DA0, b'f', false),
    (0x1DBB, 0x1DBB, b'z', false),
    (0x1FEF, 0x1FEF, b'`', false),
    (0x2000, 0x200A, b' ', false),
    (0x2024, 0x2024, b'.', false),
    (0x202F, 0x202F, b' ', false),
    (0x205F, 0x205F, b' ', false),
    (0x2070, 0x2070, b'0', false),
    (0x2071, 0x2071, b'i', false),
    (0x2074, 0x2079, b'4', true),
    (0x207A, 0x207A, b'+', false),
    (0x207C, 0x207C, b'=', false),
    (0x207D, 0x207E, b'(', true),
    (0x207F, 0x207F, b'n', false),
    (0x2080, 0x2089, b'0', true),
    (0x208A, 0x208A, b'+', false),
    (0x208C, 0x208C, b'=', false),
    (0x208D, 0x208E, b'(', true),
    (0x2090, 0x2090, b'a', false),
    (0x2091, 0x2091, b'e', false),
    (0x2092, 0x2092, b'o', false),
    (0x2093, 0x2093, b'x', false),
    (0x2095, 0x2095, b'h', false),
    (0x2096, 0x2099, b'k', true),
    (0x209A, 0x209A, b'p', false),
    (0x209B, 0x209C, b's', true),
    (0x2102, 0x2102, b'C', false),
    (0x210A, 0x210A, b'g', false),
    (0x210B, 0x210D, b'H', false),
    (0x210E, 0x210E, b'h', false),
    (0x2110, 0x2111, b'I', false),
    (0x2112, 0x2112, b'L', false),
    (0x2113, 0x2113, b'l', false),
    (0x2115, 0x2115, b'N', false),
    (0x2119, 0x211B, b'P', true),
    (0x211C, 0x211D, b'R', false),
    (0x2124, 0x2124, b'Z', false),
    (0x2128, 0x2128, b'Z', false),
    (0x212A, 0x212A, b'K', false),
    (0x212C, 0x212D, b'B', true),
    (0x212F, 0x212F, b'e', false),
    (0x2130, 0x2131, b'E', true),
    (0x2133, 0x2133, b'M', false),
    (0x2134, 0x2134, b'o', false),
    (0x2139, 0x2139, b'i', false),
    (0x2145, 0x2145, b'D', false),
    (0x2146, 0x2147, b'd', true),
    (0x2148, 0x2149, b'i', true),
    (0x2160, 0x2160, b'I', false),
    (0x2164, 0x2164, b'V', false),
    (0x2169, 0x2169, b'X', false),
    (0x216C, 0x216C, b'L', false),
    (0x216D, 0x216E, b'C', true),
    (0x216F, 0x216F, b'M', false),
    (0x2170, 0x2170, b'i', false),
    (0x2174, 0x2174, b'v', false),
    (0x2179, 0x2179, b'x', false),
    (0x217C, 0x217C, b'l', false),
    (0x217D, 0x217E, b'c', true),
    (0x217F, 0x217F, b'm', false),
    (0x2460, 0x2468, b'1', true),
    (0x24B6, 0x24CF, b'A', true),
    (0x24D0, 0x24E9, b'a', true),
    (0x24EA, 0x24EA, b'0', false),
    (0x2C7C, 0x2C7C, b'j', false),
    (0x2C7D, 0x2C7D, b'V', false),
    (0x3000, 0x3000, b' ', false),
    (0xA7F2, 0xA7F2, b'C', false),
    (0xA7F3, 0xA7F3, b'F', false),
    (0xA7F4, 0xA7F4, b'Q', false),
    (0xFB29, 0xFB29, b'+', false),
    (0xFE10, 0xFE10, b',', false),
    (0xFE13, 0xFE14, b':', true),
    (0xFE15, 0xFE15, b'!', false),
    (0xFE16, 0xFE16, b'?', false),
    (0xFE33, 0xFE34, b'_', false),
    (0xFE35, 0xFE36, b'(', true),
    (0xFE37, 0xFE37, b'{', false),
    (0xFE38, 0xFE38, b'}', false),
    (0xFE47, 0xFE47, b'[', false),
    (0xFE48, 0xFE48, b']', false),
    (0xFE4D, 0xFE4F, b'_', false),
    (0xFE50, 0xFE50, b',', false),
    (0xFE52, 0xFE52, b'.', false),
    (0xFE54, 0xFE54, b';', false),
    (0xFE55, 0xFE55, b':', false),
    (0xFE56, 0xFE56, b'?', false),
    (0xFE57, 0xFE57, b'!', false),
    (0xFE59, 0xFE5A, b'(', true),
    (0xFE5B, 0xFE5B, b'{', false),
    (0xFE5C, 0xFE5C, b'}', false),
    (0xFE5F, 0xFE5F, b'#', false),
    (0xFE60, 0xFE60, b'&', false),
    (0xFE61, 0xFE62, b'*', true),
    (0xFE63, 0xFE63, b'-', false),
    (0xFE64, 0xFE64, b'<', false),
    (0xFE65, 0xFE65, b'>', false),
    (0xFE66, 0xFE66, b'=', false),
    (0xFE68, 0xFE68, b'\\', false),
    (0xFE69, 0xFE6A, b'$', true),
    (0xFE6B, 0xFE6B, b'@', false),
    (0xFF01, 0xFF5E, b'!', true),
    (0x107A5, 0x107A5, b'q', false),
    (0x1D400, 0x1D419, b'A', true),
    (0x1D41A, 0x1D433, b'a', true),
    (0x1D434, 0x1D44D, b'A', true),
    (0x1D44E, 0x1D454, b'a', true),
    (0x1D456, 0x1D467, b'i', true),
    (0x1D468, 0x1D481, b'A', true),
    (0x1D482, 0x1D49B, b'a', true),
    (0x1D49C, 0x1D49C, b'A', false),
    (0x1D49E, 0x1D49F, b'C', true),
    (0x1D4A2, 0x1D4A2, b'G', false),
    (0x1D4A5, 0x1D4A6, b'J', true),
    (0x1D4A9, 0x1D4AC, b'N', true),
    (0x1D4AE, 0x1D4B5, b'S', true),
    (0x1D4B6, 0x1D4B9, b'a', true),
    (0x1D4BB, 0x1D4BB, b'f', false),
    (0x1D4BD, 0x1D4C3, b'h', true),
    (0x1D4C5, 0x1D4CF, b'p', true),
    (0x1D4D0, 0x1D4E9, b'A', true),
    (0x1D4EA, 0x1D503, b'a', true),
    (0x1D504, 0x1D505, b'A', true),
    (0x1D507, 0x1D50A, b'D', true),
    (0x1D50D, 0x1D514, b'J', true),
    (0x1D516, 0x1D51C, b'S', true),
    (0x1D51E, 0x1D537, b'a', true),
    (0x1D538, 0x1D539, b'A', true),
    (0x1D53B, 0x1D53E, b'D', true),
    (0x1D540, 0x1D544, b'I', true),
    (0x1D546, 0x1D546, b'O', false),
    (0x1D54A, 0x1D550, b'S', true),
    (0x1D552, 0x1D56B, b'a', true),
    (0x1D56C, 0x1D585, b'A', true),
    (0x1D586, 0x1D59F, b'a', true),
    (0x1D5A0, 0x1D5B9, b'A', true),
    (0x1D5BA, 0x1D5D3, b'a', true),
    (0x1D5D4, 0x1D5ED, b'A', true),
    (0x1D5EE, 0x1D607, b'a', true),
    (0x1D608, 0x1D621, b'A', true),
    (0x1D622, 0x1D63B, b'a', true),
    (0x1D63C, 0x1D655, b'A', true),
    (0x1D656, 0x1D66F, b'a', true),
    (0x1D670, 0x1D689, b'A', true),
    (0x1D68A, 0x1D6A3, b'a', true),
    (0x1D7CE, 0x1D7D7, b'0', true),
    (0x1D7D8, 0x1D7E1, b'0', true),
    (0x1D7E2, 0x1D7EB, b'0', true),
    (0x1D7EC, 0x1D7F5, b'0', true),
    (0x1D7F6, 0x1D7FF, b'0', true),
    (0x1F12B, 0x1F12B, b'C', false),
    (0x1F12C, 0x1F12C, b'R', false),
    (0x1F130, 0x1F149, b'A', true),
    (0x1FBF0, 0x1FBF9, b'0', true),
];

/// The text seen through the fold: `bytes[k]` stands for the character that
/// starts at byte `starts[k]` of the text; `starts` has one extra entry, the
/// text length.
pub(crate) struct Folded {
    pub(crate) bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl Folded {
    /// Byte offset in the text of position `k` of the view (a char boundary).
    pub(crate) fn offset(&self, k: usize) -> usize {
        self.starts
            .get(k)
            .or_else(|| self.starts.last())
            .copied()
            .unwrap_or(0)
    }
}

/// The ASCII character `c` folds to, if any. ASCII characters are not asked.
pub(crate) fn fold_char(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if HYPHENS.contains(&cp) {
        return Some(b'-');
    }
    let idx = TABLE.partition_point(|&(first, _, _, _)| first <= cp);
    let &(first, last, ascii, counting) = TABLE.get(idx.checked_sub(1)?)?;
    if cp > last {
        return None;
    }
    if !counting {
        return Some(ascii);
    }
    u8::try_from(cp - first)
        .ok()
        .and_then(|d| ascii.checked_add(d))
}

/// The folded view of `text`, or `None` when no character folds (then the
/// scanners read the text itself: same result, no copy).
pub(crate) fn fold(text: &str) -> Option<Folded> {
    if text.is_ascii()
        || !text
            .chars()
            .any(|c| !c.is_ascii() && fold_char(c).is_some())
    {
        return None;
    }
    let n = text.chars().count();
    let mut bytes = Vec::with_capacity(n);
    let mut starts = Vec::with_capacity(n + 1);
    for (i, c) in text.char_indices() {
        let byte = if c.is_ascii() {
            u8::try_from(c).unwrap_or(OTHER)
        } else {
            fold_char(c).unwrap_or(OTHER)
        };
        bytes.push(byte);
        starts.push(i);
    }
    starts.push(text.len());
    Some(Folded { bytes, starts })
}

#[cfg(test)]
mod tests;
