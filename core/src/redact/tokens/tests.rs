use super::*;

type Finder = fn(&[u8], &mut Vec<Span<'_>>);

fn found(f: Finder, text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    f(text.as_bytes(), &mut spans);
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn emails_true_positives() {
    for (text, want) in [
        ("mail jane.doe@example.com.", "jane.doe@example.com"),
        ("<a+tag@mail.example.co.uk>", "a+tag@mail.example.co.uk"),
        (
            "x_y-z%1@sub-domain.example.org,",
            "x_y-z%1@sub-domain.example.org",
        ),
        ("mailto:bob@example.io", "bob@example.io"),
        ("..lead@example.com", "lead@example.com"),
    ] {
        assert_eq!(found(find_emails, text), vec![want], "in {text:?}");
    }
    assert_eq!(
        found(find_emails, "a@b.com,c@d.org"),
        vec!["a@b.com", "c@d.org"]
    );
}

#[test]
fn emails_false_positives() {
    for text in [
        "user@localhost",
        "@example.com",
        "twitter @handle",
        "a@b.c",
        "a@1.2.3.4",
        "price @ 5.00",
        "foo@",
        "x@@y.com",
    ] {
        assert!(found(find_emails, text).is_empty(), "{text:?}");
    }
}

#[test]
fn jwt_true_positives() {
    assert_eq!(found(find_jwts, &format!("token={JWT}&x")), vec![JWT]);
    assert_eq!(found(find_jwts, &format!("\"{JWT}\"")), vec![JWT]);
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    assert_eq!(found(find_jwts, unsigned), vec![unsigned]);
    let jwe = "eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVy.dGFn";
    assert_eq!(found(find_jwts, jwe), vec![jwe]);
}

#[test]
fn jwt_false_positives() {
    for text in [
        "eyJmb28iOiJiYXIifQ==",                 // base64 JSON, no dots
        "SGVsbG8gd29ybGQ=",                     // ordinary base64
        "aeyJhbGciOiJIUzI1NiJ9.eyJ.x",          // glued to a word, short payload
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0", // only two segments
        "eyJhb.eyJzdWIiOiIxIn0.sig",            // header too short
        "file.eyJ",
    ] {
        assert!(found(find_jwts, text).is_empty(), "{text:?}");
    }
}

#[test]
fn api_keys_true_positives() {
    for key in [
        "sk-abcdefghijklmnop0123456789",
        "sk-proj-AbCdEf0123456789_-xyz",
        "sk-ant-api03-AbCdEf0123456789xyz",
        "sk-0123456789abcdef",
    ] {
        assert_eq!(found(find_api_keys, &format!("key: {key}.")), vec![key]);
    }
}

#[test]
fn api_keys_false_positives() {
    for text in [
        "task-list",
        "risk-assessment-framework-document",
        "ask-questions-about-everything-here",
        "sk-abc",
        "sk-0123456789abcde",      // 15 chars
        "sk-proj-0123456789abcde", // 15 after the prefix
        "sk-ant-0123456789abcde",
        "desk-0123456789abcdef0123",
        "sk-",
    ] {
        assert!(found(find_api_keys, text).is_empty(), "{text:?}");
    }
}

#[test]
fn aws_keys() {
    assert_eq!(
        found(find_aws_keys, "id=AKIAIOSFODNN7EXAMPLE;"),
        vec!["AKIAIOSFODNN7EXAMPLE"]
    );
    assert_eq!(
        found(find_aws_keys, "ASIAY34FZKBOKMUTVV7A"),
        vec!["ASIAY34FZKBOKMUTVV7A"]
    );
    for text in [
        "AKIAIOSFODNN7EXAMPL",   // 15 after prefix
        "AKIAIOSFODNN7EXAMPLEX", // 17 after prefix
        "AKIAiosfodnn7example",  // lower case
        "XAKIAIOSFODNN7EXAMPLE", // glued
        "AKIA",
    ] {
        assert!(found(find_aws_keys, text).is_empty(), "{text:?}");
    }
}

#[test]
fn bearer_tokens() {
    for (text, want) in [
        ("Authorization: Bearer abc123def456", "abc123def456"),
        ("authorization: bearer Zm9vOmJhcg==", "Zm9vOmJhcg=="),
        (
            "BEARER  tok_live.1234-5678~x+y/z",
            "tok_live.1234-5678~x+y/z",
        ),
        ("Bearer aBcDeFgHiJkL", "aBcDeFgHiJkL"),
    ] {
        assert_eq!(found(find_bearer_tokens, text), vec![want], "in {text:?}");
    }
    for text in [
        "the bearer of bad news",
        "Bearer bonds",
        "bearer authentication",
        "Bearer abc12",
        "Bearer",
        "Bearer\nabc123def456", // the header value never spans lines
        "forebearer abc123def456",
    ] {
        assert!(found(find_bearer_tokens, text).is_empty(), "{text:?}");
    }
}
