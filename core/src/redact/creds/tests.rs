use super::*;

type Finder = fn(&[u8], &mut Vec<Span<'_>>);

fn found(f: Finder, text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    f(text.as_bytes(), &mut spans);
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Zq\nW1vb3JkZW5\n-----END RSA PRIVATE KEY-----";

#[test]
fn private_key_blocks() {
    assert_eq!(
        found(find_private_keys, &format!("key:\n{PEM}\nthanks")),
        vec![PEM]
    );
    for label in [
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
    ] {
        let block = format!("-----BEGIN {label}----- AAAA BBBB -----END {label}-----");
        assert_eq!(
            found(find_private_keys, &format!("x {block} y")),
            vec![block.as_str()]
        );
    }
    let pgp =
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----";
    assert_eq!(found(find_private_keys, pgp), vec![pgp]);
    // Two blocks, each masked separately.
    let two = format!("{PEM} and {PEM}");
    assert_eq!(found(find_private_keys, &two), vec![PEM, PEM]);
}

#[test]
fn truncated_private_key_runs_to_the_end() {
    // Cut inside the body, inside the end line, and right after the header.
    for cut in [40, PEM.len() - 10, PEM.len() - 2, 31] {
        let text = format!("here: {}", &PEM[..cut]);
        assert_eq!(
            found(find_private_keys, &text),
            vec![&text[6..]],
            "cut {cut}"
        );
    }
}

#[test]
fn private_key_near_misses() {
    for text in [
        "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        "a PRIVATE KEY is secret; -----BEGIN is how PEM starts",
        "-----BEGIN RSA PRIVATE KEY (no dashes)",
    ] {
        assert!(found(find_private_keys, text).is_empty(), "{text:?}");
    }
}

#[test]
fn key_value_secrets() {
    for (text, value) in [
        ("password=hunter2", "hunter2"),
        ("passwd: hunter2", "hunter2"),
        ("secret: s3cr3t-value", "s3cr3t-value"),
        ("api_key=abc123", "abc123"),
        ("token: abc.def", "abc.def"),
        ("DB_PASSWORD=p@ss!w0rd#1 next", "p@ss!w0rd#1"),
        ("export GITHUB_TOKEN='abc def'", "abc def"),
        (
            r#"{"password": "correct horse battery staple", "user": "bob"}"#,
            "correct horse battery staple",
        ),
        (r#"{'client_secret':'xyz'}"#, "xyz"),
        (r#"{\"password\":\"hunter2\"}"#, "hunter2"),
        (r#""password": "a\"b", x"#, r#"a\"b"#),
        ("X-Api-Key: k-123", "k-123"),
        ("accessToken := tok_1", "tok_1"),
        ("'passphrase' => 'open sesame'", "open sesame"),
        ("?user=bob&access_token=abc123&next=1", "abc123"),
        ("**Password:** hunter2", "hunter2"),
        ("aws_secret_access_key = wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ("password: `hunter2`", "hunter2"),
        ("пароль password=pässwörd!", "pässwörd!"),
    ] {
        assert_eq!(found(find_key_values, text), vec![value], "in {text:?}");
    }
}

#[test]
fn key_value_unterminated_quote_runs_to_end_of_line() {
    assert_eq!(
        found(find_key_values, "password: \"abc def\nnext line"),
        vec!["abc def"]
    );
    assert_eq!(found(find_key_values, "token = 'abc de"), vec!["abc de"]);
}

#[test]
fn key_value_near_misses() {
    for text in [
        // Mentioned, no value.
        "Please reset your password.",
        "my password is weak",
        "password:",
        "password = ",
        "password:\nnext",
        r#"password="""#,
        "password: ****",
        r#""token": {"id": 1}"#,
        "secret: [1, 2]",
        // Keys that only contain a secret word, or are not secrets.
        "max_tokens: 100",
        "token_count=5",
        "tokens: 12",
        "PWD=/home/user",
        "keyword: value",
        "user: bob",
        // Comparison and scope syntax.
        "if password != x",
        "std::token::Kind",
        // User information of a URL is the URL scanner's.
        "https://x-access-token:abc123@github.com",
    ] {
        assert!(found(find_key_values, text).is_empty(), "{text:?}");
    }
}

#[test]
fn basic_credentials() {
    // "user:pass", "aladdin:opensesame", ":token" (unpadded).
    for (text, token) in [
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        (
            "basic QWxhZGRpbjpvcGVuIHNlc2FtZQ== rest",
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        ),
        ("Proxy-Authorization: BASIC OnRva2Vu", "OnRva2Vu"),
    ] {
        assert_eq!(found(find_basic_credentials, text), vec![token], "{text:?}");
    }
    for text in [
        "Basic usage: run it",
        "basic Auth needs a header",
        "Basic SGVsbG8gd29ybGQ=", // "Hello world": no colon
        "Basic dXNlcjpwYXNz_x",
        "BasicdXNlcjpwYXNz",
        "the Basic",
    ] {
        assert!(found(find_basic_credentials, text).is_empty(), "{text:?}");
    }
}

#[test]
fn url_user_information() {
    for (text, userinfo) in [
        ("https://user:pa55@db.example.com/x", "user:pa55"),
        (
            "postgres://admin:s3cr%40t@10.0.0.5:5432/db",
            "admin:s3cr%40t",
        ),
        (
            "git clone https://x-access-token:abc123@github.com/o/r",
            "x-access-token:abc123",
        ),
        ("see (https://u:p@h.io)", "u:p"),
        // The last `@` of the authority ends the user information.
        ("redis://:p@ss@cache:6379", ":p@ss"),
        // A user without a password is masked as well.
        ("https://alice@example.com/", "alice"),
        ("https://ghp_token123@github.com", "ghp_token123"),
    ] {
        assert_eq!(
            found(find_url_credentials, text),
            vec![userinfo],
            "{text:?}"
        );
    }
    for text in [
        "https://example.com:8080/path",
        "https://example.com/a@b",
        "https://example.com/?mail=a@b.com",
        "mailto:bob@example.com",
        "://user:pass@host",
        "https://@host",
    ] {
        assert!(found(find_url_credentials, text).is_empty(), "{text:?}");
    }
}

#[test]
fn url_userinfo_end_is_known_to_the_email_scanner() {
    let text = b"https://user:pass@host.com and bob@host.com";
    assert!(is_url_userinfo_end(text, 17));
    assert!(!is_url_userinfo_end(text, 34));
    assert!(!is_url_userinfo_end(b"@x", 0));
}
