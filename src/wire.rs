//! Proxy-Wasm wire formats (header maps, property paths), without panics on bad input.
//! Pure functions so they are tested natively; the host layer uses them.

/// Header map: u32 count, then (u32 key_len, u32 value_len) per pair, then each key and
/// value followed by a NUL byte. Malformed input yields the pairs read so far; non-UTF-8
/// bytes are replaced (a header value is never trusted to be text).
pub fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    let Some(count) = read_u32(bytes, 0) else {
        return Vec::new();
    };
    let count = count as usize;
    let mut out = Vec::with_capacity(count.min(256));
    let mut p = count.saturating_mul(8).saturating_add(4);
    for n in 0..count {
        let s = 4 + n * 8;
        let (Some(klen), Some(vlen)) = (read_u32(bytes, s), read_u32(bytes, s + 4)) else {
            break;
        };
        let (klen, vlen) = (klen as usize, vlen as usize);
        let Some(key) = bytes.get(p..p.saturating_add(klen)) else {
            break;
        };
        p = p.saturating_add(klen).saturating_add(1);
        let Some(value) = bytes.get(p..p.saturating_add(vlen)) else {
            break;
        };
        p = p.saturating_add(vlen).saturating_add(1);
        out.push((text(key), text(value)));
    }
    out
}

/// The bytes as text: valid UTF-8 (the usual case) is copied as is, anything else has
/// its invalid sequences replaced.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        bytes.extend_from_slice(&(k.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Property path segments joined by NUL, e.g. `["ai.tenant"]` or `["request", "id"]`.
pub fn serialize_path(path: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            bytes.push(0);
        }
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests;
