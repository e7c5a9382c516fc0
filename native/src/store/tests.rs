use super::*;

#[test]
fn compare_and_swap() {
    let s = ProcessStore;
    let key = "store-test:cas";
    // A missing key ignores the version.
    s.set(key, b"a", Some(77)).unwrap();
    let (v, cas) = s.get(key).unwrap();
    assert_eq!(v.as_deref(), Some(&b"a"[..]));
    let cas = cas.unwrap();
    s.set(key, b"b", Some(cas)).unwrap();
    assert_eq!(s.set(key, b"c", Some(cas)), Err(StoreError::CasMismatch));
    s.set(key, b"d", None).unwrap();
    assert_eq!(s.get(key).unwrap().0.as_deref(), Some(&b"d"[..]));
    assert_eq!(s.get("store-test:missing").unwrap(), (None, None));
}

#[test]
fn shared_across_threads() {
    let key = "store-test:threads";
    // Without a version a write always lands, so the key exists before the race.
    ProcessStore.set(key, &0u64.to_le_bytes(), None).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    loop {
                        let (v, cas) = ProcessStore.get(key).unwrap();
                        let n = v.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
                        if ProcessStore.set(key, &(n + 1).to_le_bytes(), cas).is_ok() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let v = ProcessStore.get(key).unwrap().0.unwrap();
    assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 4000);
}
