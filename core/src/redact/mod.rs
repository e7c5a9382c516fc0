//! Privacy helpers for audit records: salted prompt fingerprints and
//! redacted prompt previews.
//!
//! Built-in maskers (hand-written linear scanners, no regex) replace e-mail
//! addresses, phone numbers, Luhn-valid card numbers, IBANs, IPv4 and IPv6
//! addresses, JWTs, `sk-` API keys, vendor tokens (GitHub, Slack, Google,
//! Stripe, Hugging Face), AWS access key ids and secret keys, PEM private
//! keys, `password=…` style secrets, `Bearer` and `Basic` credentials and
//! the user information of URLs with fixed tags such as `[EMAIL]`;
//! configured regex patterns add to them. The built-ins read the text through
//! a compatibility fold (`fold`), so full-width and other NFKC forms of ASCII
//! (`ｓｋ－…`) are caught too.
//!
//! Nothing here logs, and no error message contains matched text or the salt.

mod creds;
mod fingerprint;
mod fold;
mod iban;
mod ipv6;
mod luhn;
mod numbers;
mod preview;
mod span;
mod tokens;
mod user;
mod vendor;

use std::fmt;

use serde::Deserialize;

pub use fingerprint::{prompt_fingerprint, FingerprintAlgorithm, FingerprintKey, KEY_CONTEXT};
pub use preview::redacted_preview;

use span::Span;
use user::UserRule;

/// Shortest accepted salt: shorter ones make guessing the salt itself cheap.
pub const MIN_SALT_BYTES: usize = 16;

/// Largest accepted `prompt_preview_chars`; previews land in log records.
pub const MAX_PREVIEW_CHARS: usize = 65_536;

/// The `redaction` section of the filter configuration.
///
/// `Debug` is written by hand so the salt is never printed.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Fingerprint salt given inline (its UTF-8 bytes are the HMAC key).
    #[serde(default)]
    pub fingerprint_salt: Option<String>,
    /// Name of an environment variable holding the salt; resolved by the
    /// host, which then calls [`Redactor::with_salt`].
    #[serde(default)]
    pub fingerprint_salt_env: Option<String>,
    /// The keyed hash behind the record's prompt fingerprint (`blake3`, the default, or
    /// `hmac_sha256`); each writes its own field (`prompt_blake3`, `prompt_sha256`).
    #[serde(default)]
    pub fingerprint_algorithm: FingerprintAlgorithm,
    /// Maximum characters of redacted prompt preview; 0 turns previews off.
    #[serde(default)]
    pub prompt_preview_chars: usize,
    /// Extra patterns masked in previews, after the built-in ones.
    #[serde(default)]
    pub patterns: Vec<UserPattern>,
}

impl fmt::Debug for RedactionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionConfig")
            .field(
                "fingerprint_salt",
                &self.fingerprint_salt.as_ref().map(|_| "<redacted>"),
            )
            .field("fingerprint_salt_env", &self.fingerprint_salt_env)
            .field("fingerprint_algorithm", &self.fingerprint_algorithm)
            .field("prompt_preview_chars", &self.prompt_preview_chars)
            .field("patterns", &self.patterns)
            .finish()
    }
}

/// A user-supplied regex (regex-lite syntax) and the tag that replaces its
/// matches (default `[REDACTED]`). The tag is literal: `$1` is not expanded.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserPattern {
    pub pattern: String,
    #[serde(default)]
    pub replacement: Option<String>,
}

/// Compiled redaction rules plus the fingerprint salt, built once per
/// configuration and shared read-only by all requests.
///
/// `Default` gives the built-in maskers only, previews off, no salt.
#[derive(Clone, Default)]
pub struct Redactor {
    user: Vec<UserRule>,
    preview_chars: usize,
    salt: Option<Vec<u8>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("user_patterns", &self.user.len())
            .field("preview_chars", &self.preview_chars)
            .field("salt", &self.salt.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Redactor {
    /// Validates `config` and compiles its patterns. Errors name the field
    /// (`redaction.patterns[2]: invalid regex: ...`) and never the salt.
    ///
    /// An inline `fingerprint_salt` is taken as is; `fingerprint_salt_env`
    /// is only checked for shape: the host resolves it and calls
    /// [`Redactor::with_salt`].
    ///
    /// # Errors
    /// A message naming the offending field when the configuration is invalid.
    pub fn from_config(config: &RedactionConfig) -> Result<Redactor, String> {
        if config.fingerprint_salt.is_some() && config.fingerprint_salt_env.is_some() {
            return Err(
                "redaction: set fingerprint_salt or fingerprint_salt_env, not both".to_owned(),
            );
        }
        if let Some(name) = &config.fingerprint_salt_env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(
                    "redaction.fingerprint_salt_env: not a valid environment variable name"
                        .to_owned(),
                );
            }
        }
        let salt = match &config.fingerprint_salt {
            Some(s) => Some(checked_salt(s.as_bytes(), "redaction.fingerprint_salt")?),
            None => None,
        };
        if config.prompt_preview_chars > MAX_PREVIEW_CHARS {
            return Err(format!(
                "redaction.prompt_preview_chars: must be at most {MAX_PREVIEW_CHARS}"
            ));
        }
        if config.patterns.len() > user::MAX_PATTERNS {
            return Err(format!(
                "redaction.patterns: at most {} patterns are allowed",
                user::MAX_PATTERNS
            ));
        }
        let user = config
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| UserRule::compile(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Redactor {
            user,
            preview_chars: config.prompt_preview_chars,
            salt,
        })
    }

    /// Sets the fingerprint salt (e.g. the value the host read from
    /// `fingerprint_salt_env`).
    ///
    /// # Errors
    /// If the salt is shorter than [`MIN_SALT_BYTES`].
    pub fn with_salt(mut self, salt: &[u8]) -> Result<Redactor, String> {
        self.salt = Some(checked_salt(salt, "redaction.fingerprint_salt_env")?);
        Ok(self)
    }

    /// Whether a salt is set, i.e. [`Redactor::fingerprint`] returns `Some`.
    #[must_use]
    pub fn has_salt(&self) -> bool {
        self.salt.is_some()
    }

    /// Configured preview length; 0 means previews are off.
    #[must_use]
    pub fn preview_chars(&self) -> usize {
        self.preview_chars
    }

    /// [`prompt_fingerprint`] with the configured salt; `None` without one.
    #[must_use]
    pub fn fingerprint(
        &self,
        normalized_prompt_pieces: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Option<String> {
        let salt = self.salt.as_deref()?;
        Some(prompt_fingerprint(salt, normalized_prompt_pieces))
    }

    /// [`redacted_preview`] with the configured length; empty when off.
    #[must_use]
    pub fn preview(&self, text: &str) -> String {
        redacted_preview(text, self.preview_chars, self)
    }

    /// Masks every sensitive substring of `text` without truncating it.
    #[must_use]
    pub fn redact(&self, text: &str) -> String {
        preview::redact_all(text, self)
    }

    /// All regions to mask in `text`, sorted and non-overlapping.
    ///
    /// User patterns go first so that, on a tie, their tag wins; they see the
    /// text as is. The built-ins see the text and, when some of it folds, its
    /// compatibility fold too (positions mapped back to whole characters):
    /// both, because folding can also glue a secret to a neighbouring
    /// full-width word (`ＡＰＩsk-…`) that hid nothing before.
    fn spans<'r>(&'r self, text: &str) -> Vec<Span<'r>> {
        let mut spans = Vec::new();
        for rule in &self.user {
            rule.find(text, &mut spans);
        }
        builtin_spans(text.as_bytes(), &mut spans);
        if let Some(folded) = fold::fold(text) {
            let mut found = Vec::new();
            builtin_spans(&folded.bytes, &mut found);
            spans.extend(
                found
                    .into_iter()
                    .map(|s| Span::new(folded.offset(s.start), folded.offset(s.end), s.tag)),
            );
        }
        span::merge(spans)
    }
}

/// Runs every built-in scanner over `b`. The order is the tie-break of
/// [`span::merge`]: more specific scanners go first, so `api_key=sk-…` is an
/// `[API_KEY]` rather than a `[SECRET]`.
fn builtin_spans(b: &[u8], spans: &mut Vec<Span<'_>>) {
    creds::find_private_keys(b, spans);
    tokens::find_jwts(b, spans);
    tokens::find_api_keys(b, spans);
    vendor::find_prefixed_tokens(b, spans);
    vendor::find_slack_webhooks(b, spans);
    tokens::find_aws_keys(b, spans);
    vendor::find_aws_secrets(b, spans);
    tokens::find_bearer_tokens(b, spans);
    creds::find_basic_credentials(b, spans);
    creds::find_url_credentials(b, spans);
    creds::find_key_values(b, spans);
    tokens::find_emails(b, spans);
    ipv6::find_ipv6(b, spans);
    numbers::find_ipv4(b, spans);
    iban::find_ibans(b, spans);
    numbers::find_cards(b, spans);
    numbers::find_phones(b, spans);
}

/// Copies a salt after checking its length; the error names `field` only.
fn checked_salt(salt: &[u8], field: &str) -> Result<Vec<u8>, String> {
    if salt.len() < MIN_SALT_BYTES {
        return Err(format!("{field}: must be at least {MIN_SALT_BYTES} bytes"));
    }
    Ok(salt.to_vec())
}

#[cfg(test)]
mod tests;
