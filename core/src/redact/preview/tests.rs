use super::*;

#[test]
fn floor_boundary_never_splits_a_char() {
    let s = "aé😀";
    assert_eq!(floor_char_boundary(s, 0), 0);
    assert_eq!(floor_char_boundary(s, 2), 1);
    assert_eq!(floor_char_boundary(s, 3), 3);
    assert_eq!(floor_char_boundary(s, 5), 3);
    assert_eq!(floor_char_boundary(s, 7), 7);
    assert_eq!(floor_char_boundary(s, 100), 7);
}

#[test]
fn budget_counts_chars_not_bytes() {
    let mut b = Budget::new(Some(3), 0);
    assert!(b.push("日本"));
    assert!(!b.push("語です"));
    assert_eq!(b.truncated(), "日本語…");
    let mut b = Budget::new(Some(2), 0);
    assert!(b.push("ab"));
    assert!(b.push(""));
    assert!(!b.push("c"));
}

#[test]
fn tail_start_backs_over_space_free_runs() {
    let window = format!("{} hello sk-{}", "x ".repeat(40), "a".repeat(100));
    let q = tail_start(&window);
    assert_eq!(&window[..q], format!("{} hello ", "x ".repeat(40)));
    // A window of CJK text has no secret characters to back over.
    let cjk = "漢".repeat(100);
    let q = tail_start(&cjk);
    assert!(cjk.is_char_boundary(q));
    assert!(q >= cjk.len() - TAIL_MARGIN - 3);
}
