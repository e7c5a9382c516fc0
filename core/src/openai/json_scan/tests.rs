use super::*;

/// Returns (key matched?, value text) for each top-level member.
fn members(body: &str, key: &str) -> Vec<(bool, String)> {
    let mut s = TopLevelScanner::new();
    let mut out = Vec::new();
    let mut cur: Option<(bool, Vec<u8>)> = None;
    for &b in body.as_bytes() {
        match s.step(b) {
            Step::ValueStart => cur = Some((s.key_is(key), vec![b])),
            Step::ValueByte => cur.as_mut().unwrap().1.push(b),
            Step::ValueEnd => {
                let (m, v) = cur.take().unwrap();
                out.push((m, String::from_utf8(v).unwrap().trim_end().to_string()));
            }
            Step::Outside => {}
        }
    }
    out
}

#[test]
fn splits_members() {
    let m = members(
        r#" { "a" : 1 , "usage":{"x":[1,{"y":"}]"}]}, "s":"a\"b,}" ,"n":null}"#,
        "usage",
    );
    assert_eq!(
        m,
        vec![
            (false, "1".to_string()),
            (true, r#"{"x":[1,{"y":"}]"}]}"#.to_string()),
            (false, r#""a\"b,}""#.to_string()),
            (false, "null".to_string()),
        ]
    );
}

#[test]
fn escaped_key_is_decoded() {
    let m = members(r#"{"us\u0061ge":1,"u\"sage":2}"#, "usage");
    assert_eq!(m, vec![(true, "1".into()), (false, "2".into())]);
}

#[test]
fn long_key_never_matches() {
    let key = "k".repeat(500);
    let body = format!(r#"{{"{key}":1,"usage":2}}"#);
    assert_eq!(
        members(&body, "usage"),
        vec![(false, "1".into()), (true, "2".into())]
    );
    assert_eq!(
        members(&body, &key),
        vec![(false, "1".into()), (false, "2".into())]
    );
}

#[test]
fn not_an_object_yields_nothing() {
    assert!(members(r#"[{"usage":1}]"#, "usage").is_empty());
    assert!(members(r#""usage""#, "usage").is_empty());
}

#[test]
fn plain_string_run_skips_only_inert_bytes() {
    let mut s = TopLevelScanner::new();
    let body = br#"{"k":"abc\"de"}"#;
    let mut i = 0;
    let mut skipped = Vec::new();
    while i < body.len() {
        let n = s.plain_string_run(&body[i..]);
        if n > 0 {
            skipped.push(String::from_utf8(body[i..i + n].to_vec()).unwrap());
            i += n;
            continue;
        }
        s.step(body[i]);
        i += 1;
    }
    assert!(s.is_done());
    // The escaped quote is stepped over, not skipped.
    assert_eq!(skipped, vec!["abc", "de"]);
}

#[test]
fn done_after_close() {
    let mut s = TopLevelScanner::new();
    for &b in b"{\"a\":[1,2]}" {
        s.step(b);
    }
    assert!(s.is_done());
    let mut s = TopLevelScanner::new();
    for &b in b"{}" {
        s.step(b);
    }
    assert!(s.is_done());
}
