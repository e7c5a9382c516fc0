use super::*;

#[test]
fn a_request_is_the_protobuf_envoy_sends() {
    let d = [
        Descriptor {
            entries: vec![("kind", "requests"), ("tenant", "t")],
            hits: Some(2),
            limit: None,
        },
        Descriptor {
            entries: vec![("kind", "tokens")],
            hits: Some(0),
            limit: None,
        },
    ];
    let b = encode_request("ai", &d);
    let want: Vec<u8> = [
        &[0x0a, 2][..],
        b"ai",
        // descriptor 1: two entries and hits_addend { value: 2 }
        &[0x12, 35, 0x0a, 16, 0x0a, 4],
        b"kind",
        &[0x12, 8],
        b"requests",
        &[0x0a, 11, 0x0a, 6],
        b"tenant",
        &[0x12, 1],
        b"t",
        &[0x1a, 2, 0x08, 2],
        // descriptor 2: one entry and an empty UInt64Value (an explicit 0: a pure read)
        &[0x12, 18, 0x0a, 14, 0x0a, 4],
        b"kind",
        &[0x12, 6],
        b"tokens",
        &[0x1a, 0],
    ]
    .concat();
    assert_eq!(b, want);
}

#[test]
fn a_response_is_read_and_unknown_fields_are_skipped() {
    let status = [
        &[0x08, 2][..],                         // code OVER_LIMIT
        &[0x12, 4, 0x08, 100, 0x10, 2],         // current_limit 100 per minute
        &[0x18, 0],                             // limit_remaining 0
        &[0x22, 5, 0x08, 42, 0x10, 0x80, 0x5a], // duration 42 s + 11,520 ns
        &[0x2a, 0],                             // quota (unknown here): skipped
    ]
    .concat();
    let mut buf = vec![0x08, 2, 0x12, status.len() as u8];
    buf.extend_from_slice(&status);
    buf.extend_from_slice(&[0x2a, 3, b'a', b'b', b'c']); // raw_body: skipped
    let r = decode_response(&buf).unwrap();
    assert_eq!(r.overall, Code::OverLimit);
    assert_eq!(
        r.statuses,
        vec![Status {
            code: Code::OverLimit,
            limit: 100,
            unit: 2,
            remaining: 0,
            reset_ms: 42_000,
        }]
    );
}

#[test]
fn malformed_responses_are_refused_not_guessed() {
    assert_eq!(decode_response(&[0x12, 5, 0x08]), None);
    assert_eq!(decode_response(&[0x08]), None);
    assert_eq!(decode_response(&[0x0f]), None);
    assert_eq!(
        decode_response(&[]),
        Some(Response {
            overall: Code::Unknown,
            statuses: Vec::new()
        })
    );
}

#[test]
fn varints_round_trip() {
    for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
        let mut out = Vec::new();
        varint(&mut out, v);
        let mut f = Fields { buf: &out };
        assert_eq!(f.read_varint(), Some(v));
        assert!(f.buf.is_empty());
    }
}
