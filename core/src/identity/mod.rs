//! Who is calling: tenant and subject from mTLS peer identity, a JWT payload verified by
//! Envoy's `jwt_authn`, or an API key — and whether they may use this host.
//!
//! Order and rules (documented in the README):
//! 1. mTLS peer URI SAN (SPIFFE ID) listed under a tenant's `spiffe_ids`;
//! 2. the JWT payload header written by `jwt_authn`, claim `tenant_claim` listed under a
//!    tenant's `jwt_claim_values`;
//! 3. an API key from `Authorization: Bearer`, `x-api-key` or `api-key`.
//!
//! Every credential presented must be valid, and all of them must name the same tenant;
//! the first source in the order above gives the subject. Several API-key headers (or
//! repeated ones) must all carry the same key. Anything else is refused, so no header
//! trick can select a different identity than the credentials prove.
//!
//! Details of the rule (each is a unit test in `identity_tests.rs`):
//! - header names match case-insensitively; values are trimmed of surrounding whitespace;
//! - `Authorization` must be `Bearer <token>` (scheme in any case, one token without inner
//!   whitespace); another scheme, an empty value or two comma-joined values is
//!   `invalid_credentials`, never ignored;
//! - an empty `x-api-key` / `api-key` is `invalid_credentials`;
//! - a JWT-shaped bearer token is skipped only when a verified JWT payload is present (it
//!   is that token, forwarded by `jwt_authn` with `forward: true`);
//! - the JWT payload header is read only when `identity.jwt` is configured, and must occur
//!   once; the bootstrap must make sure only `jwt_authn` can set it (see docs/identity.md);
//! - a peer certificate SAN that no tenant lists is not a credential (neither grants nor
//!   denies): the mesh may present workload identities of other proxies.

use base64::Engine;

use crate::config::digest::sha256;
use crate::config::hostname::normalize_host;
use crate::config::{Config, UnownedHosts};
use crate::contract::header;
use crate::deny::Denial;
use crate::record::sanitize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Mtls,
    Jwt,
    ApiKey,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mtls => "mtls",
            Source::Jwt => "jwt",
            Source::ApiKey => "api_key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: usize,
    pub subject: String,
    pub source: Source,
}

/// All values of a header (names compared case-insensitively).
fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Bearer <token>`, scheme case-insensitive, any surrounding whitespace. `Err` for
/// another scheme or an empty token.
fn bearer_token(value: &str) -> Result<&str, ()> {
    let v = value.trim();
    let (scheme, rest) = v.split_once([' ', '\t']).ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(());
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(());
    }
    Ok(token)
}

/// True for a compact JWS (`header.payload.signature`, base64url segments): the shape of
/// a token `jwt_authn` verifies, never of an API key this filter looks up.
fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for seg in token.split('.') {
        parts += 1;
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// Longest subject taken from a JWT claim; longer values are cut.
const MAX_SUBJECT: usize = 128;

/// What one source says: nothing presented, or a valid identity (refusals are `Err`).
enum Found {
    Nothing,
    Valid(Identity),
}

fn from_mtls(cfg: &Config, peer_uri_san: Option<&str>) -> Found {
    // A peer identity that no tenant lists is not a credential for us (it may be another
    // proxy's workload identity), so it neither grants nor denies.
    match peer_uri_san.and_then(|san| cfg.spiffe_ids.get(san).map(|t| (san, *t))) {
        Some((san, tenant)) => Found::Valid(Identity {
            tenant,
            subject: san.to_string(),
            source: Source::Mtls,
        }),
        None => Found::Nothing,
    }
}

fn from_jwt(cfg: &Config, headers: &[(String, String)]) -> Result<Found, Denial> {
    let Some(jwt) = &cfg.jwt else {
        return Ok(Found::Nothing);
    };
    let mut it = values(headers, &jwt.payload_header);
    let Some(payload) = it.next() else {
        return Ok(Found::Nothing);
    };
    if it.next().is_some() {
        return Err(Denial::conflicting_credentials());
    }
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decoded = engine
        .decode(payload.trim().trim_end_matches('='))
        .map_err(|_| Denial::invalid_credentials())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&decoded).map_err(|_| Denial::invalid_credentials())?;
    let tenant_claim = claims
        .get(&jwt.tenant_claim)
        .and_then(|v| v.as_str())
        .ok_or_else(Denial::invalid_credentials)?;
    let tenant = *cfg
        .jwt_claims
        .get(tenant_claim)
        .ok_or_else(Denial::invalid_credentials)?;
    // The subject goes into a request header and the audit log: printable ASCII, bounded.
    let subject = claims
        .get(&jwt.subject_claim)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| format!("jwt:{}", sanitize(s, MAX_SUBJECT)))
        .unwrap_or_else(|| "jwt:unknown".to_string());
    Ok(Found::Valid(Identity {
        tenant,
        subject,
        source: Source::Jwt,
    }))
}

/// API keys from every credential header. `jwt_verified`: a verified JWT payload was
/// found, so a JWT-shaped bearer token is that token (when `jwt_authn` runs with
/// `forward: true`) and not an API key. Any other `Authorization` value still counts.
fn from_api_key<'h>(
    cfg: &Config,
    headers: &'h [(String, String)],
    jwt_verified: bool,
) -> Result<Found, Denial> {
    let mut key: Option<&str> = None;
    let mut offer = |candidate: &'h str| -> Result<(), Denial> {
        let c = candidate.trim();
        if c.is_empty() {
            return Err(Denial::invalid_credentials());
        }
        match key {
            Some(k) if k != c => Err(Denial::conflicting_credentials()),
            _ => {
                key = Some(c);
                Ok(())
            }
        }
    };
    for v in values(headers, header::AUTHORIZATION) {
        let token = bearer_token(v).map_err(|_| Denial::invalid_credentials())?;
        if jwt_verified && looks_like_jwt(token) {
            continue;
        }
        offer(token)?;
    }
    for v in values(headers, header::X_API_KEY).chain(values(headers, header::AZURE_API_KEY)) {
        offer(v)?;
    }
    let Some(key) = key else {
        return Ok(Found::Nothing);
    };
    let principal = cfg
        .keys
        .get(&sha256(key.as_bytes()))
        .ok_or_else(Denial::invalid_credentials)?;
    Ok(Found::Valid(Identity {
        tenant: principal.tenant,
        subject: principal.subject.clone(),
        source: Source::ApiKey,
    }))
}

/// Resolve the caller. `peer_uri_san` is the downstream peer certificate's URI SAN, if any.
pub fn identify(
    cfg: &Config,
    headers: &[(String, String)],
    peer_uri_san: Option<&str>,
) -> Result<Identity, Denial> {
    let mtls = from_mtls(cfg, peer_uri_san);
    let jwt = from_jwt(cfg, headers)?;
    // With jwt_authn in front, `Authorization` may carry the JWT itself, not an API key.
    let jwt_verified = matches!(jwt, Found::Valid(_));
    let key = from_api_key(cfg, headers, jwt_verified)?;

    let mut chosen: Option<Identity> = None;
    for found in [mtls, jwt, key] {
        if let Found::Valid(id) = found {
            match &chosen {
                None => chosen = Some(id),
                Some(first) if first.tenant != id.tenant => {
                    return Err(Denial::conflicting_credentials())
                }
                Some(_) => {}
            }
        }
    }
    chosen.ok_or_else(Denial::missing_credentials)
}

/// Host binding: a tenant bound to hostnames may only be used there, and a hostname bound
/// to one tenant refuses every other tenant's credentials.
pub fn check_host(cfg: &Config, identity: &Identity, authority: &str) -> Result<(), Denial> {
    let host = normalize_host(authority);
    // A tenant's own hostname serves that tenant only (a hostname is bound to at most one
    // tenant, checked when the configuration is loaded).
    if let Some(owner) = cfg.host_owner.get(&host) {
        return if *owner == identity.tenant {
            Ok(())
        } else {
            Err(Denial::host_mismatch())
        };
    }
    let tenant = cfg.tenant(identity.tenant);
    if tenant.is_some_and(|t| t.own_hosts_only) {
        return Err(Denial::host_mismatch());
    }
    // A shared hostname serves every tenant; so does any other, unless configured not to.
    let shared = cfg.unowned_hosts == UnownedHosts::Shared || cfg.shared_hosts.contains(&host);
    if shared {
        Ok(())
    } else {
        Err(Denial::host_mismatch())
    }
}

#[cfg(test)]
mod tests;
