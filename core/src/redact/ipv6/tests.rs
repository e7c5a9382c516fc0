use super::*;

fn found(text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    find_ipv6(text.as_bytes(), &mut spans);
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

#[test]
fn full_compressed_and_mapped_forms() {
    for addr in [
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:db8:85a3:0:0:8a2e:370:7334",
        "2001:db8::8a2e:370:7334",
        "2001:db8::",
        "fe80::1",
        "FE80::0202:B3FF:FE1E:8329",
        "::ffff:192.0.2.128",
        "::FFFF:10.0.0.1",
        "64:ff9b::192.0.2.33",
        "0:0:0:0:0:ffff:192.0.2.1",
        "::1234:5678",
    ] {
        for text in [
            format!("host {addr} up"),
            format!("[{addr}]:443"),
            format!("addr={addr}, next"),
            format!("ip:{addr}"),
        ] {
            assert_eq!(found(&text), vec![addr], "in {text:?}");
        }
    }
    // Zone and prefix length stay visible; a sentence may end after it.
    assert_eq!(found("fe80::1%eth0"), vec!["fe80::1"]);
    assert_eq!(found("route 2001:db8::/32 via"), vec!["2001:db8::"]);
    assert_eq!(
        found("at fe80::1: done. Or 2001:db8::2."),
        vec!["fe80::1", "2001:db8::2"]
    );
}

#[test]
fn ipv6_near_misses() {
    for text in [
        // Times and timestamps.
        "at 10:20:30 and 12:30:45.123, 2026-03-10T10:20:30Z",
        "ratio 1:2:3:4",
        // Scope paths in C++ and Rust, Haskell signatures.
        "std::vector<int> v; std::map m; f64::EPSILON; Vec::new(); x :: Int",
        "Base::Add, Cafe::Babe, dead::beef",
        // Python slices.
        "a[::1] a[1::2] x[10::20] y[::-1]",
        // Loopback and unspecified: no address worth hiding.
        "bind ::1 or ::",
        // MAC addresses have six groups.
        "mac 00:1A:2B:3C:4D:5E",
        // Seven groups without `::`, nine groups, two `::`, an oversized group.
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "2001::db8::1",
        "2001:db8::12345",
        // Glued to a word.
        "x2001:db8::1 fe80::1y",
    ] {
        assert!(found(text).is_empty(), "{text:?}: {:?}", found(text));
    }
}
