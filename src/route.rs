//! Matching a request path to a configured route prefix.
//!
//! Envoy normalizes paths when the bootstrap sets `normalize_path` and `merge_slashes`;
//! this check is defence in depth for deployments that do not: a path that is not in
//! canonical form (dot segments, encoded separators, backslashes, empty segments) is
//! refused rather than guessed at, so `/v1/chat/completions/../embeddings` can never be
//! authorized as one route and served as another.

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
    let lower = p.to_ascii_lowercase();
    // Encoded '.', '/', '\' and '%' could turn into dot segments or separators upstream.
    if ["%2e", "%2f", "%5c", "%25"]
        .iter()
        .any(|e| lower.contains(e))
    {
        return false;
    }
    !p.split('/').any(|seg| seg == "." || seg == "..")
}

/// Index of the most specific route whose prefix matches on a segment boundary.
/// Matching is case-sensitive, as Envoy's prefix match is by default.
pub fn match_route(cfg: &Config, path: &str) -> Option<usize> {
    let p = path_only(path);
    let p = if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    };
    cfg.routes.iter().position(|r| {
        p == r.prefix
            || (p.starts_with(r.prefix.as_str()) && p.as_bytes().get(r.prefix.len()) == Some(&b'/'))
    })
}
