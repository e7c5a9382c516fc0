use super::*;

fn view(text: &str) -> String {
    fold(text).map_or_else(
        || text.to_owned(),
        |f| {
            f.bytes
                .iter()
                .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
                .collect()
        },
    )
}

#[test]
fn compatibility_forms_fold_to_ascii() {
    for (text, want) in [
        ("ｓｋ－ｐｒｏｊ－ＡＢＣ１２３", "sk-proj-ABC123"),
        ("𝐀𝐊𝐈𝐀 𝚐𝚑𝚙_ 𝟏𝟐", "AKIA ghp_ 12"),
        ("ⓢⓚ﹣ ①⓪ ²³ ₁", "sk- 10 23 1"),
        ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "jane@example.com"),
        ("x\u{a0}y\u{3000}z", "x y z"),
        ("ſk", "sk"),
        ("sk‐a sk‑b sk‒c sk−d", "sk-a sk-b sk-c sk-d"),
    ] {
        assert_eq!(view(text), want, "{text:?}");
    }
}

#[test]
fn other_characters_are_one_placeholder_each() {
    assert_eq!(view("ｓ日本😀é"), "s????");
    // Nothing folds: no view is built.
    assert!(fold("plain ascii").is_none());
    assert!(fold("日本語 é ß – — ‘’ ѕк").is_none());
    assert!(fold("").is_none());
}

#[test]
fn offsets_map_back_to_char_boundaries() {
    let text = "aｓ😀b";
    let f = fold(text).unwrap();
    assert_eq!(f.bytes.len(), 4);
    assert_eq!(
        (0..=4).map(|k| f.offset(k)).collect::<Vec<_>>(),
        vec![0, 1, 4, 8, 9]
    );
    assert_eq!(f.offset(99), text.len());
}

#[test]
fn table_is_sorted_disjoint_and_ascii() {
    let mut prev_last = 0x7f;
    for &(first, last, ascii, counting) in TABLE {
        assert!(first > prev_last && first <= last, "{first:#x}");
        let top = if counting {
            last - first + u32::from(ascii)
        } else {
            u32::from(ascii)
        };
        assert!((0x20..=0x7e).contains(&top) && ascii >= 0x20, "{first:#x}");
        prev_last = last;
    }
}

#[test]
fn fold_char_edges() {
    assert_eq!(fold_char('\u{ff01}'), Some(b'!'));
    assert_eq!(fold_char('\u{ff5e}'), Some(b'~'));
    assert_eq!(fold_char('\u{ff5f}'), None);
    assert_eq!(fold_char('\u{1d7ff}'), Some(b'9'));
    assert_eq!(fold_char('\u{212a}'), Some(b'K'));
    assert_eq!(fold_char('ß'), None);
    assert_eq!(fold_char('\u{2013}'), None); // en dash: prose, not a hyphen
}
