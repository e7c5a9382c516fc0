//! Matching a request path to a configured route prefix.
//!
//! Envoy normalizes paths when the bootstrap sets `normalize_path` and `merge_slashes`;
//! this check is defence in depth for deployments that do not: a path that is not in
//! canonical form (dot segments, encoded separators or unreserved characters, backslashes,
//! empty segments) is refused rather than guessed at, so
//! `/v1/chat/completions/../embeddings` can never be authorized as one route and served as
//! another.

use crate::config::Config;

/// The path without query string or fragment.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// True when the path is canonical enough to match on.
pub fn is_canonical(path: &str) -> bool {
    let p = path_only(path);
    if !p.starts_with('/') || p.contains('\\') || p.contains("//") {
        return false;
    }
    // Encoded '/', '\' and '%' could become separators upstream, and an encoded unreserved
    // character ('%63' for 'c', '%2e' for '.') spells a path the prefix match does not see
    // but a backend that decodes it serves. Canonical form never encodes them.
    let bytes = p.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'%' {
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => {
                let decoded = u8::try_from(hi * 16 + lo).unwrap_or(0);
                if decoded.is_ascii_alphanumeric()
                    || matches!(decoded, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b'%')
                {
                    return false;
                }
            }
            // A '%' that starts no escape is not canonical either.
            _ => return false,
        }
    }
    !p.split('/').any(|seg| seg == "." || seg == "..")
}

/// Index of the most specific route whose prefix matches on a segment boundary.
///
/// Matching ignores ASCII case. Envoy's prefix match is case-sensitive by default, so a
/// `/V1/CHAT/COMPLETIONS` that the filter treats as chat finds no Envoy route (404); but
/// where a route table sets `case_sensitive: false`, a case-sensitive filter would let
/// that path through unparsed and skip the model allowlist. Erring towards the stricter
/// policy is safe either way.
pub fn match_route(cfg: &Config, path: &str) -> Option<usize> {
    let p = path_only(path);
    let p = if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    };
    cfg.routes.iter().position(|r| {
        let n = r.prefix.len();
        let head_matches = p
            .get(..n)
            .is_some_and(|head| head.eq_ignore_ascii_case(&r.prefix));
        head_matches && (p.len() == n || p.as_bytes().get(n) == Some(&b'/'))
    })
}
