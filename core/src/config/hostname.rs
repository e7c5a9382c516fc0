//! The normal form of a hostname, shared by the configuration (tenant `hosts`) and the
//! request's `:authority`: no port, no trailing dot, lower case.

pub fn normalize_host(host: &str) -> String {
    // Strip a port (but not the colons of a bracketed IPv6 literal) and a trailing dot.
    let h = host.trim();
    let h = match h.rfind(':') {
        Some(i)
            if !h.ends_with(']')
                && h.get(i + 1..)
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            h.get(..i).unwrap_or(h)
        }
        _ => h,
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}
