//! Bearer-token verification: which key a token is checked with, and every check it must pass.
//!
//! The order is the logic: nothing about a token is trusted before its signature verifies,
//! so the unverified parts are used only to *choose* a key, never to relax a check.
//!
//! 0. The [`VerifiedCache`] (after the size cap): the very same token string verified
//!    before, still before `exp + leeway`, and (a provider's) verified with the key set
//!    still current, is served without the steps below. Only successes are inserted.
//! 1. Size cap (`max_token_bytes`), before any decoding.
//! 2. The header, parsed here (not by jsonwebtoken, whose error for `alg: none` is a JSON
//!    error): `alg` must be a known signature algorithm (`none` is refused by name), `typ`
//!    if present JWT or at+jwt, no `crit`. `jku`, `x5u` and embedded `jwk` are ignored:
//!    a token never says where its key is.
//! 3. The key, chosen by (iss, alg, kid), iss peeked from the payload:
//!    - iss = `locus_issuer`, ES256: the Locus public key with that kid;
//!    - iss = `locus_issuer`, HS256: the development secret (refused if none);
//!    - iss = the provider's: its JWKS key with that kid, whose alg (the JWK's `alg`, or
//!      RSA -> RS256, EC P-256 -> ES256, OKP Ed25519 -> EdDSA) the header's must equal.
//!      HMAC is never pinned to a provider key, so an HS256 token "signed" with the
//!      provider's public key as secret is refused before any key is touched.
//! 4. jsonwebtoken's `decode` with a `Validation` pinned to that one alg: signature, `iss`,
//!    `aud`, and the presence of `exp`, `sub`, `iss`, `aud`.
//! 5. Times ([`crate::claims::check_times`]) and claims to [`Principal`], with this
//!    verifier's clock and leeway.
//!
//! Cost per verification, cache off (release, `verification_cost` test, 2-core machine at
//! load average 4, so ±20%): HS256 about 5 µs, Locus ES256 about 100 µs, a provider EdDSA
//! token with a cached key about 120 µs. `jsonwebtoken::decode` alone measures the same
//! within that noise: the signature check is the cost; this module adds one header parse
//! and one `iss` peek (two small JSON parses), no I/O once a provider key is cached.
//! Signing a device token (ES256) costs about 30-40 µs.
//!
//! With the cache (default 65,536 entries), two runs of 100,000 verifications each, release,
//! same machine at load average about 2-3: a cache hit costs 0.39/0.44 µs (HS256),
//! 0.48/0.56 µs (ES256), 0.49/0.51 µs (EdDSA provider): one SHA-256 of the token, one
//! shard lock, one `Principal` clone. A miss (100,000 distinct ES256 tokens, evictions
//! included past 65,536) costs 105/112 µs, against 98/94 µs uncached: the hash and insert
//! add a few µs to the signature check, once per token. So a device reusing its 15-minute
//! token pays the ES256 check once, then under 1 µs per request.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::claims::{LocusClaims, provider_principal};
use crate::jwks::{ProviderKeys, is_asymmetric};
use crate::{
    AuthError, ConfigError, LocusPublicKeys, Principal, ProviderConfig, VerifiedCache,
    VerifierConfig,
};

/// Verifies bearer tokens. Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    leeway: u64,
    max_lifetime: u64,
    max_bytes: usize,
    locus_issuer: String,
    locus_keys: LocusPublicKeys,
    es256: Validation,
    dev: Option<(DecodingKey, Validation)>,
    provider: Option<Provider>,
    /// Tokens that verified; `None` when `cache_capacity` is 0.
    cache: Option<VerifiedCache>,
    /// Signature checks made (each `decode` call): how tests tell a cache hit from a miss.
    #[cfg(test)]
    signature_checks: std::sync::atomic::AtomicU64,
}

struct Provider {
    config: ProviderConfig,
    keys: Arc<ProviderKeys>,
    /// One `Validation` per algorithm a provider key may pin, built once.
    validations: Vec<(Algorithm, Validation)>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the development secret.
        f.debug_struct("Verifier")
            .field("locus_issuer", &self.inner.locus_issuer)
            .field("locus_kids", &self.inner.locus_keys)
            .field("dev_secret", &self.inner.dev.is_some())
            .field(
                "provider",
                &self.inner.provider.as_ref().map(|p| &p.config.issuer),
            )
            .finish()
    }
}

/// The header members this verifier reads.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<IgnoredAny>,
}

/// The only claim read before the signature is checked: it chooses the key.
#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

const PROVIDER_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Verifier {
    /// A verifier accepting Locus ES256 tokens signed by `locus_keys`, development HS256
    /// tokens if a secret is configured, and the provider's tokens if one is.
    pub fn new(config: VerifierConfig, locus_keys: LocusPublicKeys) -> Result<Self, ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if config.audience.is_empty() {
            return invalid("the audience (LOCUS_JWT_AUDIENCE) is empty");
        }
        if config.locus_issuer.is_empty() {
            return invalid("the Locus issuer (LOCUS_JWT_ISSUER) is empty");
        }
        let dev = match &config.dev_secret {
            Some(s) if s.expose_secret().is_empty() => {
                return invalid("the development secret (LOCUS_JWT_SECRET) is empty");
            }
            Some(s) => Some((
                DecodingKey::from_secret(s.expose_secret().as_bytes()),
                validation(Algorithm::HS256, &config.locus_issuer, &config.audience),
            )),
            None => None,
        };
        let provider = match config.provider {
            None => None,
            Some(p) => {
                if p.issuer == config.locus_issuer {
                    return invalid(
                        "the provider's issuer is LOCUS_JWT_ISSUER: the key of a token could not be chosen",
                    );
                }
                if p.issuer.is_empty() {
                    return invalid("the provider's issuer is empty");
                }
                let audience = p.audience.as_deref().unwrap_or(&config.audience);
                let validations = PROVIDER_ALGS
                    .iter()
                    .map(|&alg| (alg, validation(alg, &p.issuer, audience)))
                    .collect();
                let keys = ProviderKeys::new(
                    p.jwks_url.clone(),
                    p.min_refresh,
                    p.refresh_every,
                    p.fetch_timeout,
                )?;
                Some(Provider {
                    config: p,
                    keys: Arc::new(keys),
                    validations,
                })
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                leeway: config.leeway_secs,
                max_lifetime: config.max_lifetime_secs,
                max_bytes: config.max_token_bytes,
                es256: validation(Algorithm::ES256, &config.locus_issuer, &config.audience),
                locus_issuer: config.locus_issuer,
                locus_keys,
                dev,
                provider,
                cache: (config.cache_capacity > 0)
                    .then(|| VerifiedCache::new(config.cache_capacity, config.leeway_secs)),
                #[cfg(test)]
                signature_checks: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The principal `token` stands for. May fetch the provider's JWKS (bounded by its
    /// timeout, rate-limited by `min_refresh`); Locus and development tokens never wait.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, crate::unix_now()).await
    }

    /// [`Self::verify`] with the clock read as `now` (unix seconds).
    pub(crate) async fn verify_at(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        if token.len() > inner.max_bytes {
            return Err(AuthError::TooLarge {
                len: token.len(),
                max: inner.max_bytes,
            });
        }
        let Some(cache) = &inner.cache else {
            return self.verify_uncached(token, now).await.map(|(p, _)| p);
        };
        if let Some(hit) = cache.get(token, now) {
            let current = match hit.generation {
                // Locus keys and the development secret never change in a verifier.
                None => true,
                Some(g) => inner
                    .provider
                    .as_ref()
                    .is_some_and(|p| p.keys.current_generation() == g),
            };
            if current {
                return Ok(hit.principal);
            }
        }
        let (principal, generation) = self.verify_uncached(token, now).await?;
        cache.insert(token, principal.clone(), now, generation);
        Ok(principal)
    }

    /// Every check, no cache: the principal, and the generation of the provider key set
    /// that verified it (`None` for Locus and development tokens).
    async fn verify_uncached(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Principal, Option<u64>), AuthError> {
        let inner = &*self.inner;
        let (header, iss) = parse_unverified(token)?;
        let alg = match header.alg.as_str() {
            a if a.eq_ignore_ascii_case("none") => return Err(AuthError::AlgNone),
            a => a
                .parse::<Algorithm>()
                .map_err(|_| AuthError::UnsupportedAlg(a.to_owned()))?,
        };
        if let Some(typ) = &header.typ {
            let t = typ.strip_prefix("application/").unwrap_or(typ);
            if !t.eq_ignore_ascii_case("JWT") && !t.eq_ignore_ascii_case("at+jwt") {
                return Err(AuthError::BadTyp(typ.clone()));
            }
        }
        if header.crit.is_some() {
            return Err(AuthError::CritHeader);
        }
        let not_allowed = || AuthError::AlgNotAllowed {
            alg: header.alg.clone(),
            issuer: iss.clone(),
        };

        if iss == inner.locus_issuer {
            let (key, validation) = match alg {
                Algorithm::ES256 => {
                    let kid = header.kid.as_deref().ok_or(AuthError::MissingKid)?;
                    let key = inner
                        .locus_keys
                        .find(kid)
                        .ok_or_else(|| AuthError::UnknownKid(kid.to_owned()))?;
                    (key, &inner.es256)
                }
                Algorithm::HS256 => {
                    let (key, validation) = inner.dev.as_ref().ok_or(AuthError::NoDevSecret)?;
                    (key, validation)
                }
                _ => return Err(not_allowed()),
            };
            #[cfg(test)]
            self.count_signature_check();
            let claims: LocusClaims = decode(token, key, validation)?;
            return claims
                .into_principal(now, inner.leeway, inner.max_lifetime)
                .map(|p| (p, None));
        }

        let Some(provider) = inner.provider.as_ref().filter(|p| p.config.issuer == iss) else {
            return Err(AuthError::UnknownIssuer(iss));
        };
        // Before the kid is looked up: an HMAC token must not cost a JWKS fetch.
        if !is_asymmetric(alg) {
            return Err(not_allowed());
        }
        let kid = header.kid.as_deref().ok_or(AuthError::MissingKid)?;
        let set = provider.keys.find(kid).await?;
        let key = &set.keys[kid];
        if key.alg != alg {
            return Err(AuthError::AlgMismatch {
                token: header.alg.clone(),
                key: format!("{:?}", key.alg),
            });
        }
        let validation = provider
            .validations
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
            .ok_or_else(not_allowed)?;
        #[cfg(test)]
        self.count_signature_check();
        let claims: serde_json::Value = decode(token, &key.key, validation)?;
        provider_principal(
            &claims,
            &provider.config.claims,
            now,
            inner.leeway,
            inner.max_lifetime,
        )
        .map(|p| (p, Some(set.generation)))
    }

    #[cfg(test)]
    fn count_signature_check(&self) {
        self.inner
            .signature_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A `Validation` pinned to one algorithm, issuer and audience. Times are checked by
/// [`crate::claims::check_times`] with the verifier's own clock, so jsonwebtoken's are off;
/// it still requires the presence of `exp`.
fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v
}

/// The header and the `iss` claim, neither verified.
fn parse_unverified(token: &str) -> Result<(RawHeader, String), AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_owned());
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|e| AuthError::Malformed(format!("the header is not a JWS header: {e}")))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed("the payload is not base64url"))?;
    let peek: Peek = serde_json::from_slice(&payload)
        .map_err(|e| AuthError::Malformed(format!("the payload is not a JSON object: {e}")))?;
    let iss = peek
        .iss
        .ok_or_else(|| AuthError::MissingClaim("iss".to_owned()))?;
    Ok((header, iss))
}

fn decode<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<T, AuthError> {
    jsonwebtoken::decode::<T>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.into_kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAudience => AuthError::WrongAudience(
                validation
                    .aud
                    .iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_default(),
            ),
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c),
            ErrorKind::InvalidAlgorithm => AuthError::AlgMismatch {
                token: "the header's".to_owned(),
                key: format!("{:?}", validation.algorithms),
            },
            ErrorKind::Json(e) => AuthError::InvalidClaim {
                claim: "(claims)".to_owned(),
                reason: e.to_string(),
            },
            other => AuthError::Malformed(format!("{other:?}")),
        })
}

#[cfg(test)]
mod tests;
