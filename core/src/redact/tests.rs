//! End-to-end tests of configuration, masking and previews.

use super::*;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const SALT: &str = "a-salt-of-at-least-16-bytes";

fn builtin() -> Redactor {
    Redactor::default()
}

fn config(json: &str) -> Result<RedactionConfig, serde_json::Error> {
    serde_json::from_str(json)
}

fn redactor(json: &str) -> Result<Redactor, String> {
    Redactor::from_config(&config(json).map_err(|e| e.to_string())?)
}

fn mask(text: &str) -> String {
    builtin().redact(text)
}

// ---------------------------------------------------------------- config

#[test]
fn config_defaults() {
    let c = config("{}").unwrap();
    assert_eq!(c.fingerprint_salt, None);
    assert_eq!(c.fingerprint_salt_env, None);
    assert_eq!(c.prompt_preview_chars, 0);
    assert!(c.patterns.is_empty());
    let r = Redactor::from_config(&c).unwrap();
    assert!(!r.has_salt());
    assert_eq!(r.preview_chars(), 0);
    assert_eq!(r.preview("mail a@example.com"), "");
    assert_eq!(r.fingerprint(["x"]), None);
}

#[test]
fn config_full() {
    let r = redactor(&format!(
        r#"{{"fingerprint_salt": "{SALT}", "prompt_preview_chars": 40,
            "patterns": [{{"pattern": "ACME-[0-9]+", "replacement": "[TICKET]"}},
                         {{"pattern": "(?i)secret"}}]}}"#
    ))
    .unwrap();
    assert!(r.has_salt());
    assert_eq!(r.preview_chars(), 40);
    assert_eq!(
        r.fingerprint(["a", "b"]),
        Some(prompt_fingerprint(SALT.as_bytes(), ["a", "b"]))
    );
    assert_eq!(
        r.preview("ACME-42 is SECRET, mail a@b.io"),
        "[TICKET] is [REDACTED], mail [EMAIL]"
    );
}

#[test]
fn config_rejects_unknown_fields() {
    assert!(config(r#"{"prompt_preview": 5}"#).is_err());
    assert!(config(r#"{"patterns": [{"pattern": "x", "tag": "[X]"}]}"#).is_err());
    assert!(config(r#"{"patterns": [{"replacement": "[X]"}]}"#).is_err());
}

#[test]
fn config_errors_name_the_field() {
    let err = redactor(r#"{"patterns": [{"pattern": "a"}, {"pattern": "b"}, {"pattern": "(x"}]}"#)
        .unwrap_err();
    assert!(
        err.starts_with("redaction.patterns[2]: invalid regex"),
        "{err}"
    );

    let err = redactor(r#"{"fingerprint_salt": "short-secret"}"#).unwrap_err();
    assert_eq!(err, "redaction.fingerprint_salt: must be at least 16 bytes");
    assert!(!err.contains("short-secret"));

    let err = redactor(&format!(
        r#"{{"fingerprint_salt": "{SALT}", "fingerprint_salt_env": "SALT"}}"#
    ))
    .unwrap_err();
    assert!(err.contains("not both"), "{err}");
    assert!(!err.contains(SALT));

    let err = redactor(r#"{"fingerprint_salt_env": ""}"#).unwrap_err();
    assert!(err.starts_with("redaction.fingerprint_salt_env:"), "{err}");

    let err = redactor(r#"{"prompt_preview_chars": 1000000}"#).unwrap_err();
    assert!(err.starts_with("redaction.prompt_preview_chars:"), "{err}");

    let many = vec![r#"{"pattern": "x"}"#; user::MAX_PATTERNS + 1].join(",");
    let err = redactor(&format!(r#"{{"patterns": [{many}]}}"#)).unwrap_err();
    assert!(err.starts_with("redaction.patterns:"), "{err}");
}

#[test]
fn salt_from_env_is_set_by_host() {
    let r = redactor(r#"{"fingerprint_salt_env": "GATEWAY_SALT"}"#).unwrap();
    assert!(!r.has_salt());
    let err = r.clone().with_salt(b"tiny").unwrap_err();
    assert_eq!(
        err,
        "redaction.fingerprint_salt_env: must be at least 16 bytes"
    );
    let r = r.with_salt(SALT.as_bytes()).unwrap();
    assert_eq!(
        r.fingerprint(["p"]),
        Some(prompt_fingerprint(SALT.as_bytes(), ["p"]))
    );
}

#[test]
fn debug_never_prints_the_salt() {
    let c = config(&format!(r#"{{"fingerprint_salt": "{SALT}"}}"#)).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains(SALT), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let r = Redactor::from_config(&c).unwrap();
    let shown = format!("{r:?}");
    assert!(!shown.contains(SALT), "{shown}");
    assert!(!format!(
        "{:?}",
        r.clone().with_salt(b"another-salt-0123456").unwrap()
    )
    .contains("another-salt"));
}

// ---------------------------------------------------------------- masking

#[test]
fn each_masker_in_context() {
    for (text, want) in [
        ("write to jane@example.com!", "write to [EMAIL]!"),
        ("call +1 (555) 123-4567.", "call [PHONE]."),
        ("card 4111 1111 1111 1111 exp", "card [CARD] exp"),
        ("host 10.0.0.1:80", "host [IPV4]:80"),
        (&format!("jwt {JWT}"), "jwt [JWT]"),
        ("key sk-proj-abcdefghij0123456789", "key [API_KEY]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [AWS_KEY]"),
        (
            "Authorization: Bearer abc123def456ghi",
            "Authorization: Bearer [BEARER]",
        ),
    ] {
        assert_eq!(mask(text), want, "in {text:?}");
    }
}

#[test]
fn false_positives_stay_verbatim() {
    for text in [
        "In 2026 the release 1.2.3 shipped on 2026-03-10.",
        "Pi is 3.14159 and e is 2.71828; 1,234,567.89 dollars.",
        "Order 4111111111111112 and 1234567812345678 are ids.",
        "Grouped 4111 1111 1111 1112 and 4111-1111-1111-1112 fail Luhn too.",
        "Version 999.999.1.1 and 999.1.1.1 are not addresses; nor is 1.2.3.4.5.",
        "The task-list and sk-abc are harmless.",
        "Base64 SGVsbG8gd29ybGQ= and eyJmb28iOiJiYXIifQ== are not JWTs.",
        "the bearer of bad news, user@localhost, room 12 345",
        "1990-2020, 10.03.2026, v10.15.7, 5551234567",
    ] {
        assert_eq!(mask(text), text);
    }
}

#[test]
fn mixed_text_with_several_secrets() {
    let text = format!(
        "Hi, I'm jane.doe@corp.example (tel +44 20 7946 0958). My card is \
         5555-5555-5555-4444, server 192.168.10.20, token {JWT}, \
         OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx and AKIAIOSFODNN7EXAMPLE. \
         Meeting on 2026-03-10 about v1.2.3."
    );
    assert_eq!(
        mask(&text),
        "Hi, I'm [EMAIL] (tel [PHONE]). My card is [CARD], server [IPV4], \
         token [JWT], OPENAI_API_KEY=[API_KEY] and [AWS_KEY]. \
         Meeting on 2026-03-10 about v1.2.3."
    );
}

const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAMwAAAAtzc2gtZWQyNTUxOQAAACDx\n-----END OPENSSH PRIVATE KEY-----";

#[test]
fn each_new_class_in_context() {
    for (text, want) in [
        (
            "gh ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5 ok",
            "gh [GITHUB_TOKEN] ok",
        ),
        (
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx ok",
            "slack [SLACK_TOKEN] ok",
        ),
        (
            "hook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX ok",
            "hook [SLACK_WEBHOOK] ok",
        ),
        (
            "google AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY ok",
            "google [GOOGLE_API_KEY] ok",
        ),
        (
            "oauth ya29.a0AfH6SMBx3Yq_example-Token.Part_0123456789 ok",
            "oauth [GOOGLE_OAUTH] ok",
        ),
        (
            "stripe sk_live_51H8abcDEFghiJKLmnoPQRstu ok",
            "stripe [STRIPE_KEY] ok",
        ),
        (
            "hf hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh ok",
            "hf [HF_TOKEN] ok",
        ),
        (
            "aws secret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok",
            "aws secret: [AWS_SECRET] ok",
        ),
        (&format!("key {PEM} ok"), "key [PRIVATE_KEY] ok"),
        ("password=hunter2 ok", "password=[SECRET] ok"),
        (
            r#"{"password": "correct horse", "user": "bob"}"#,
            r#"{"password": "[SECRET]", "user": "bob"}"#,
        ),
        (
            "Authorization: Basic dXNlcjpwYXNz",
            "Authorization: Basic [BASIC]",
        ),
        (
            "db postgres://admin:s3cret@db.example.com:5432/app ok",
            "db postgres://[CREDENTIALS]@db.example.com:5432/app ok",
        ),
        ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN [IBAN] ok"),
        ("host 2001:db8::8a2e:370:7334 ok", "host [IPV6] ok"),
        ("mapped ::ffff:192.0.2.128 ok", "mapped [IPV6] ok"),
    ] {
        assert_eq!(mask(text), want, "in {text:?}");
    }
}

#[test]
fn new_class_near_misses_stay_verbatim() {
    for text in [
        // A git SHA-1 and a UUID, with "aws"/"secret" context nearby.
        "aws secret rotated in 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "secret id 123e4567-e89b-12d3-a456-426614174000",
        // Prefixes inside words or without a body.
        "the task-list, ghp_ prefix, xoxb- tokens, hf_hub_download, sk_live_mode",
        // Times, scope paths, slices, MAC addresses.
        "at 10:20:30 use std::map and std::vector; a[1::2]; mac 00:1A:2B:3C:4D:5E",
        // An IBAN with a wrong checksum.
        "IBAN GB82 WEST 1234 5698 7654 31 or GB82WEST12345698765431",
        // A password mentioned without a value, or already masked.
        "Reset your password. password: ****",
        // Basic in prose; a URL with a port but no user information.
        "Basic usage needs basic auth at https://example.com:8443/login",
        // Certificates are public.
        "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----",
    ] {
        assert_eq!(mask(text), text);
    }
}

#[test]
fn url_user_without_password_is_masked() {
    assert_eq!(
        mask("clone https://ghp_token123@github.com/o/r and https://alice@example.com/"),
        "clone https://[CREDENTIALS]@github.com/o/r and https://[CREDENTIALS]@example.com/"
    );
    // An e-mail address outside a URL is still an e-mail address.
    assert_eq!(mask("mailto:alice@example.com"), "mailto:[EMAIL]");
}

#[test]
fn compatibility_forms_of_secrets_are_masked() {
    for (text, want) in [
        (
            "key ｓｋ－ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒ end",
            "key [API_KEY] end",
        ),
        (
            "key ｓｋ－ｐｒｏｊ－ABCDEFGHIJ0123456789 end",
            "key [API_KEY] end",
        ),
        ("key 𝐬𝐤-abcdefghijklmnop12 end", "key [API_KEY] end"),
        ("key ⓢⓚ﹣abcdefghijklmnop12 end", "key [API_KEY] end"),
        ("key sk‐abcdefghijklmnop12 end", "key [API_KEY] end"),
        // Folding glues this key to the full-width word; the text as is still shows it.
        ("ＡＰＩsk-abcdefghijklmnop12 end", "ＡＰＩ[API_KEY] end"),
        (
            "aws ＡＫＩＡＩＯＳＦＯＤＮＮ７ＥＸＡＭＰＬＥ end",
            "aws [AWS_KEY] end",
        ),
        (
            "gh ｇｈｐ＿aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5 end",
            "gh [GITHUB_TOKEN] end",
        ),
        ("mail ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ。", "mail [EMAIL]。"),
        ("電話０３－１２３４－５６７８です", "電話[PHONE]です"),
        (
            "ｐａｓｓｗｏｒｄ＝ｈｕｎｔｅｒ２ end",
            "ｐａｓｓｗｏｒｄ＝[SECRET] end",
        ),
    ] {
        assert_eq!(mask(text), want, "in {text:?}");
    }
    // Full-width text that is no secret is left as it was.
    for text in [
        "ｔａｓｋ－ｌｉｓｔ",
        "ｓｋ－ａｂｃ",
        "２０２６年３月１０日",
        "ＡＢＣ：１２",
    ] {
        assert_eq!(mask(text), text);
    }
}

#[test]
fn overlapping_matches_are_masked_as_their_union() {
    let r = redactor(
        r#"{"patterns": [{"pattern": "corp\\.example\\.com/[a-z]+", "replacement": "[URL]"}]}"#,
    )
    .unwrap();
    // The e-mail and the URL pattern overlap: neither part may leak.
    assert_eq!(r.redact("x jane@corp.example.com/path y"), "x [EMAIL] y");
    // Bearer + JWT cover the same token: one tag, no residue.
    let out = mask(&format!("Bearer {JWT}"));
    assert!(out == "Bearer [JWT]" || out == "Bearer [BEARER]", "{out}");
}

#[test]
fn utf8_around_secrets() {
    assert_eq!(
        mask("联系我：test@example.com，谢谢😀"),
        "联系我：[EMAIL]，谢谢😀"
    );
    assert_eq!(
        mask("😀4111111111111111😀 ☎️+49 30 1234567☎️"),
        "😀[CARD]😀 ☎️[PHONE]☎️"
    );
    assert_eq!(mask("été sk-ABCDEFGHIJKLMNOPQRSTUV ß"), "été [API_KEY] ß");
}

#[test]
fn user_patterns_with_and_without_replacement() {
    let r = redactor(
        r#"{"patterns": [
            {"pattern": "EMP-[0-9]{6}", "replacement": "[EMPLOYEE]"},
            {"pattern": "(?i)project\\s+falcon"}
        ]}"#,
    )
    .unwrap();
    assert_eq!(
        r.redact("EMP-123456 works on Project  Falcon; EMP-12 does not."),
        "[EMPLOYEE] works on [REDACTED]; EMP-12 does not."
    );
    // User patterns apply on top of the built-ins.
    assert_eq!(
        r.redact("EMP-000001 <emp@corp.example.com>"),
        "[EMPLOYEE] <[EMAIL]>"
    );
    // Replacements are literal.
    let r = redactor(r#"{"patterns": [{"pattern": "(a)b", "replacement": "$1"}]}"#).unwrap();
    assert_eq!(r.redact("xaby"), "x$1y");
}

// ---------------------------------------------------------------- previews

#[test]
fn preview_masks_then_truncates() {
    let r = builtin();
    assert_eq!(redacted_preview("hello world", 5, &r), "hello…");
    assert_eq!(redacted_preview("hello", 5, &r), "hello");
    assert_eq!(redacted_preview("", 5, &r), "");
    assert_eq!(
        redacted_preview("mail jane.doe@example.com now", 12, &r),
        "mail [EMAIL]…"
    );
    // The cut falls inside the tag, never inside the secret.
    assert_eq!(
        redacted_preview("key sk-abcdefghijklmnopqrstuvwxyz", 8, &r),
        "key [API…"
    );
}

#[test]
fn preview_max_chars_zero_is_off() {
    assert_eq!(redacted_preview("anything a@b.io", 0, &builtin()), "");
    assert_eq!(redacted_preview("", 0, &builtin()), "");
}

#[test]
fn preview_secret_straddling_the_cut_is_never_partial() {
    let r = builtin();
    let secrets = [
        "jane.doe@example.com",
        "sk-ant-api03-abcdefghijklmnop0123",
        "AKIAIOSFODNN7EXAMPLE",
        "4111 1111 1111 1111",
        "+44 20 7946 0958",
        "192.168.100.200",
        JWT,
    ];
    for secret in secrets {
        for prefix_len in 0..40 {
            let text = format!("{} {secret} tail", "p".repeat(prefix_len));
            for max in 1..text.chars().count() + 2 {
                let out = redacted_preview(&text, max, &r);
                assert_no_partial(&out, secret);
            }
        }
    }
}

#[test]
fn preview_new_classes_straddling_the_cut_are_never_partial() {
    let r = builtin();
    // (text, the part of it that must never show)
    let cases = [
        (PEM, &PEM[36..PEM.len() - 34]),
        ("DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
        (
            "2001:db8:85a3::8a2e:370:7334",
            "2001:db8:85a3::8a2e:370:7334",
        ),
        ("https://admin:s3cretpw@db.example.com", "admin:s3cretpw"),
        (
            "password: \"correct horse battery\"",
            "correct horse battery",
        ),
        (
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        ),
        (
            "github_pat_11ABCDEFG0aB3dE5fG7hI9_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_pat_11ABCDEFG0aB3dE5fG7hI9_abcdefghijklmnopqrstuvwxyz0123456789",
        ),
        (
            "ｓｋ－ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒ",
            "ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒ",
        ),
    ];
    for (secret, hidden) in cases {
        for prefix_len in 0..40 {
            let text = format!("{} {secret} tail", "p".repeat(prefix_len));
            for max in 1..text.chars().count() + 2 {
                let out = redacted_preview(&text, max, &r);
                assert_no_partial(&out, hidden);
            }
        }
    }
}

#[test]
fn preview_block_secrets_cut_by_the_scan_window_show_nothing() {
    let r = builtin();
    let max = 20;
    let long_key = format!("sk-{}", "a".repeat(320));
    let body = "TUlJRW93SUJBQUtDQVFFQXg0WnE ".repeat(40);
    for shift in 0..80 {
        let pad = "x".repeat(shift);
        // A private key whose end line lies far beyond the scan window.
        let text = format!(
            "{long_key} {pad} -----BEGIN PRIVATE KEY----- {body}-----END PRIVATE KEY----- end"
        );
        let out = redacted_preview(&text, max, &r);
        assert!(!out.contains("TUlJ") && !out.contains("BEGIN"), "{out}");
        // A quoted value with spaces, cut by the window.
        let text = format!("{long_key} {pad} password: \"{body}\" end");
        let out = redacted_preview(&text, max, &r);
        assert!(!out.contains("TUlJ"), "{out}");
    }
}

#[test]
fn preview_secret_straddling_the_scan_window_is_dropped() {
    let r = builtin();
    let max = 20;
    let window = max * 4 + 256;
    // A long masked key compresses ~320 bytes into one tag, so the preview
    // can reach the end of the scan window, where a second key is cut.
    let long_key = format!("sk-{}", "a".repeat(320));
    for shift in 0..80 {
        let text = format!(
            "{long_key} {} sk-{} end",
            "x".repeat(shift),
            "k".repeat(400)
        );
        assert!(text.len() > window);
        let out = redacted_preview(&text, max, &r);
        assert!(out.starts_with("[API_KEY]"), "{out}");
        assert!(!out.contains("sk-"), "{out}");
        assert!(!out.contains('k'), "{out}");
        assert!(out.ends_with('…'), "{out}");
    }
    // Same with a space-containing secret (a grouped card number) at the cut.
    for shift in 0..80 {
        let text = format!(
            "{long_key} {} 4111 1111 1111 1111 end {}",
            "x".repeat(shift),
            "y".repeat(1000)
        );
        let out = redacted_preview(&text, max, &r);
        assert!(!out.contains("4111"), "{out}");
        assert!(!out.contains("1111"), "{out}");
    }
    // A token crossing the scan limit is scanned to its end and masked whole.
    let text = format!("{long_key} {JWT} end {}", "z".repeat(1000));
    assert_eq!(redacted_preview(&text, max, &r), "[API_KEY] [JWT]…");
    let email = "jane.doe.with.a.rather.long.address.for.testing@example-corporation.com";
    let text = format!("{long_key} {email}, more text {}", "z ".repeat(500));
    assert_eq!(redacted_preview(&text, max, &r), "[API_KEY] [EMAIL]…");
    // A token too long to finish shows nothing of it.
    let blob = format!("eyJ{}", "A".repeat(5000));
    assert_eq!(redacted_preview(&blob, 10, &r), "…");
    // A whole JWT inside the window is masked even when the tag is cut.
    assert_eq!(redacted_preview(&format!("{JWT} and more"), 2, &r), "[J…");
}

#[test]
fn preview_long_text_without_secrets_is_unaffected_by_tail_guard() {
    let r = builtin();
    let text = "lorem ipsum dolor sit amet ".repeat(1000);
    let out = redacted_preview(&text, 100, &r);
    assert_eq!(out.chars().count(), 101);
    assert!(text.starts_with(out.trim_end_matches('…')));
    let cjk = "漢字かな交じり文".repeat(2000);
    let out = redacted_preview(&cjk, 100, &r);
    assert_eq!(out.chars().count(), 101);
    assert!(cjk.starts_with(out.trim_end_matches('…')));
}

#[test]
fn preview_multibyte_at_the_cut() {
    let r = builtin();
    assert_eq!(redacted_preview("😀😀😀", 2, &r), "😀😀…");
    assert_eq!(redacted_preview("日本語テキスト", 3, &r), "日本語…");
    assert_eq!(redacted_preview("日本語", 3, &r), "日本語");
    assert_eq!(redacted_preview("é@x", 1, &r), "é…");
    assert_eq!(redacted_preview("😀 a@b.io 😀", 4, &r), "😀 [E…");
    // Every cut of a multi-byte text is valid UTF-8 and never longer than asked.
    let text = "ß😀 联系 test@example.com 😀 +1 555-123-4567 ☎️ 終わり";
    for max in 1..60 {
        let out = redacted_preview(text, max, &r);
        assert!(out.trim_end_matches('…').chars().count() <= max);
        assert!(!out.contains("test@"), "{out}");
        assert!(!out.contains("555"), "{out}");
    }
}

#[test]
fn huge_input_scans_only_the_window() {
    // 4 MB with a secret at the very end: the preview is still cheap and correct.
    let mut text = "word ".repeat(800_000);
    text.push_str("jane@example.com");
    let out = redacted_preview(&text, 10, &builtin());
    assert_eq!(out, "word word …");
}

#[test]
fn redact_is_linear_on_adversarial_input() {
    // Inputs that would make a naive scanner quadratic finish quickly.
    let inputs = [
        "@".repeat(200_000),
        "a@".repeat(100_000),
        "1.".repeat(100_000),
        "1 ".repeat(100_000),
        "1-".repeat(100_000),
        "eyJ.".repeat(50_000),
        "eyJaaaaaaaaaaa.bb.".repeat(10_000),
        "sk-".repeat(70_000),
        "+(".repeat(100_000),
        "bearer ".repeat(30_000),
        "A".repeat(200_000),
        "9".repeat(200_000),
    ];
    let start = std::time::Instant::now();
    for input in &inputs {
        let _ = mask(input);
    }
    // Generous bound: each input is ~200 KB; quadratic would take minutes.
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

#[test]
fn redact_is_linear_on_adversarial_input_for_context_scanners() {
    let inputs = [
        "password=".repeat(20_000),
        "token:".repeat(30_000),
        ":".repeat(200_000),
        "1:".repeat(100_000),
        "a::".repeat(60_000),
        "_".repeat(200_000) + "=x",
        "-----BEGIN PRIVATE KEY-----".repeat(7_000),
        "-----BEGIN ".repeat(18_000),
        "basic ".repeat(30_000),
        "Basic dXNlcjpwYXNz".repeat(10_000),
        "://".repeat(60_000),
        "a://b@".repeat(30_000),
        "ghp_".repeat(50_000),
        "DE89 ".repeat(40_000),
        "hooks.slack.com/".repeat(12_000),
        "aws ".repeat(50_000),
        "ｓｋ－".repeat(25_000),
        "\"password\": \"".repeat(12_000),
    ];
    let start = std::time::Instant::now();
    for input in &inputs {
        let _ = mask(input);
    }
    // Generous bound: each input is ~200 KB; quadratic would take minutes.
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

/// Fails if `out` shows a prefix of `secret` long enough to be a leak
/// (six characters or more of it, in order, outside a tag).
fn assert_no_partial(out: &str, secret: &str) {
    let body = out.trim_end_matches('…');
    let chars: Vec<char> = secret.chars().collect();
    for start in 0..chars.len().saturating_sub(6) {
        let piece: String = chars[start..start + 6].iter().collect();
        assert!(!body.contains(&piece), "{out:?} leaks part of {secret:?}");
    }
}

/// Deterministic xorshift generator: property tests without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random texts made of secrets, near-misses, separators and multi-byte text.
fn random_text(rng: &mut Rng, pieces: usize) -> String {
    const FRAGMENTS: &[&str] = &[
        "a@example.com",
        "jane.doe@corp.example",
        "@",
        ".",
        "-",
        " ",
        "  ",
        "(",
        ")",
        "+",
        "4111 1111 1111 1111",
        "4111111111111111",
        "4111111111111112",
        "555-123-4567",
        "+44 20 7946 0958",
        "2026-03-10",
        "1.2.3",
        "192.168.1.1",
        "999.1.1.1",
        "3.14",
        "sk-",
        "sk-abcdefghijklmnop12",
        "task-list",
        "AKIAIOSFODNN7EXAMPLE",
        "AKIA",
        "Bearer ",
        "bearer",
        "abc123def456",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJzdWIiOiIxIn0",
        "😀",
        "日本語",
        "é",
        "☎️",
        "\n",
        "0",
        "12",
        "345",
        "6789",
        "x",
        "=",
        "/",
        ",",
        ":",
        "::",
        "\"",
        "password=",
        "\"password\": \"",
        "hunter2",
        "token: ",
        "Basic dXNlcjpwYXNz",
        "basic ",
        "https://",
        "user:pass@",
        "db.example.com",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA",
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "10:20:30",
        "std::map",
        "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
        "xoxb-123456789012-abcdefABCDEF",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
        "aws secret ",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "ｓｋ－",
        "ａｂｃｄｅｆｇｈｉｊ",
        "－",
    ];
    let long_key = format!("sk-{}", "Q1".repeat(150));
    let long_word = "w".repeat(300);
    (0..pieces)
        .map(|_| match rng.below(20) {
            // Long masked tokens compress the text, so previews reach far.
            0..=3 => long_key.as_str(),
            4 => JWT,
            5 => long_word.as_str(),
            _ => FRAGMENTS[rng.below(FRAGMENTS.len())],
        })
        .collect()
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[test]
fn property_short_preview_is_truncated_redaction() {
    let r = builtin();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..1500 {
        let pieces = 1 + rng.below(30);
        let text = random_text(&mut rng, pieces);
        let full = r.redact(&text);
        let max = 1 + rng.below(80);
        let preview = redacted_preview(&text, max, &r);
        if text.len() <= max * 4 + 256 {
            assert_eq!(preview, truncate_chars(&full, max), "text {text:?}");
        }
    }
}

#[test]
fn property_long_preview_is_prefix_of_redaction() {
    let r = builtin();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..600 {
        let pieces = 20 + rng.below(120);
        let text = random_text(&mut rng, pieces);
        let full = r.redact(&text);
        let max = 1 + rng.below(40);
        let preview = redacted_preview(&text, max, &r);
        let body = preview.strip_suffix('…').unwrap_or(&preview);
        assert!(body.chars().count() <= max);
        assert!(full.starts_with(body), "preview {preview:?} of {text:?}");
        if body.chars().count() < max || preview.ends_with('…') {
            // Either everything was shown or the ellipsis says it was not.
            assert!(preview.ends_with('…') || body == full);
        }
    }
}
