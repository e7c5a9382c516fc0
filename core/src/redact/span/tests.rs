use super::*;

#[test]
fn merge_unions_overlaps_and_keeps_first_tag() {
    let spans = vec![
        Span::new(10, 20, "[B]"),
        Span::new(0, 5, "[A]"),
        Span::new(15, 30, "[C]"),
        Span::new(30, 31, "[D]"),
        Span::new(7, 7, "[EMPTY]"),
    ];
    let merged = merge(spans);
    assert_eq!(
        merged,
        vec![
            Span::new(0, 5, "[A]"),
            Span::new(10, 30, "[B]"),
            Span::new(30, 31, "[D]"),
        ]
    );
}

#[test]
fn merge_tie_prefers_push_order_whatever_the_length() {
    let merged = merge(vec![
        Span::new(0, 4, "[FIRST]"),
        Span::new(0, 9, "[LONGER]"),
        Span::new(0, 9, "[THIRD]"),
    ]);
    assert_eq!(merged, vec![Span::new(0, 9, "[FIRST]")]);
}

#[test]
fn helpers_never_panic_out_of_range() {
    let b = b"ab";
    assert_eq!(at(b, 5), None);
    assert_eq!(before(b, 0), None);
    assert_eq!(run_len(b, 9, 3, |c| c == b'a'), 0);
    assert_eq!(run_len(b"aaaa", 0, 3, |c| c == b'a'), 3);
    assert_eq!(find_from(b"xxeyJ", 0, b"eyJ"), Some(2));
    assert_eq!(find_from(b"xxeyJ", 3, b"eyJ"), None);
    assert_eq!(find_from(b"x", 7, b"eyJ"), None);
}
