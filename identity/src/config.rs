//! What the verifier accepts: audience, clock leeway, limits, the Locus issuer, the
//! development secret and one external OIDC provider.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::Role;

/// Settings of a [`crate::Verifier`]. `Default` gives the documented defaults with neither a
/// development secret nor a provider, so only Locus-signed ES256 tokens verify.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The audience every token's `aud` must contain (`LOCUS_JWT_AUDIENCE`, `locus`).
    pub audience: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (`LOCUS_JWT_LEEWAY_SECS`, 30).
    pub leeway_secs: u64,
    /// Longest lifetime accepted, `exp - iat` (or `exp - now` without `iat`), in seconds
    /// (`LOCUS_JWT_MAX_LIFETIME_SECS`, 86400): a leaked long-lived token is refused.
    pub max_lifetime_secs: u64,
    /// Longest token accepted, in bytes (`LOCUS_JWT_MAX_BYTES`, 8192): checked before any
    /// decoding, so an oversized header costs nothing.
    pub max_token_bytes: usize,
    /// The `iss` of Locus device tokens and development HS256 tokens (`LOCUS_JWT_ISSUER`,
    /// `locus`).
    pub locus_issuer: String,
    /// The development HS256 secret (`LOCUS_JWT_SECRET`). Without it, HS256 is refused.
    /// Check it with [`crate::check_hs256_secret`] before putting it here.
    pub dev_secret: Option<SecretString>,
    /// An external OIDC provider whose tokens are accepted too.
    pub provider: Option<ProviderConfig>,
    /// Most verified tokens remembered, so a token's signature is checked once rather than
    /// per request (`LOCUS_JWT_CACHE_ENTRIES`, 65,536; 0 turns the cache off). See
    /// [`crate::VerifiedCache`] for what a hit is and when entries go.
    pub cache_capacity: usize,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            audience: "locus".to_owned(),
            leeway_secs: 30,
            max_lifetime_secs: 86_400,
            max_token_bytes: 8192,
            locus_issuer: "locus".to_owned(),
            dev_secret: None,
            provider: None,
            cache_capacity: 65_536,
        }
    }
}

/// An external OIDC provider: its issuer, where its keys are, and how its claims map to
/// Locus's.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Its `iss`, exactly as in its tokens.
    pub issuer: String,
    /// Its JWKS document (`jwks_uri` of its discovery document).
    pub jwks_url: Url,
    /// The audience its tokens carry for Locus; `None` uses [`VerifierConfig::audience`].
    pub audience: Option<String>,
    /// Where its tokens keep tenant, role and partner id.
    pub claims: ClaimMapping,
    /// Least time between two fetches of the JWKS (60 s): a token with an unknown kid
    /// triggers a refetch at most this often, so junk kids cannot hammer the provider.
    pub min_refresh: Duration,
    /// Age after which the key set is replaced by a fresh fetch (3600 s); keys the
    /// provider withdrew stop verifying then.
    pub refresh_every: Duration,
    /// Timeout of one JWKS fetch (5 s), connect included: a provider that hangs costs a
    /// request this long at most, then it is refused.
    pub fetch_timeout: Duration,
}

impl ProviderConfig {
    /// A provider with the default claim mapping, refresh periods and timeout.
    pub fn new(issuer: impl Into<String>, jwks_url: Url) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_url,
            audience: None,
            claims: ClaimMapping::default(),
            min_refresh: Duration::from_secs(60),
            refresh_every: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Where a provider's tokens keep the tenant, the role and a partner's id.
///
/// A path is first looked up as one top-level claim name (so `custom:tenant` and
/// `https://example.com/tenant` work as written); if there is no such claim and the path has
/// dots, it is walked through nested objects (`app_metadata.tenant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The tenant id claim (`tenant`).
    pub tenant: String,
    /// The role claim (`role`): a string or an array of strings.
    pub role: String,
    /// Provider role values to Locus roles. The four snake_case role names map to
    /// themselves unless listed here. Values that map to nothing are ignored (a groups
    /// array holds unrelated groups); exactly one distinct Locus role must remain.
    pub roles: BTreeMap<String, Role>,
    /// The claim holding a partner's id (`sub`).
    pub partner: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            tenant: "tenant".to_owned(),
            role: "role".to_owned(),
            roles: BTreeMap::new(),
            partner: "sub".to_owned(),
        }
    }
}
