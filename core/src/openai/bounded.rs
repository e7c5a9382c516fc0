//! Size-capped buffer growth shared by the response scanners.

/// Appends `bytes` to `buf` if the result stays within `max` bytes; otherwise
/// leaves `buf` unchanged and returns `false`.
///
/// Capacity grows geometrically (so byte-at-a-time appends stay linear) but is
/// clamped to `max`, so the allocation itself, not just the length, respects
/// the configured bound.
pub(crate) fn push_bounded(buf: &mut Vec<u8>, bytes: &[u8], max: usize) -> bool {
    let Some(new_len) = buf.len().checked_add(bytes.len()) else {
        return false;
    };
    if new_len > max {
        return false;
    }
    if new_len > buf.capacity() {
        let target = buf
            .capacity()
            .saturating_mul(2)
            .max(new_len)
            .max(64)
            .min(max);
        buf.reserve_exact(target.saturating_sub(buf.len()));
    }
    buf.extend_from_slice(bytes);
    true
}

#[cfg(test)]
mod tests;
