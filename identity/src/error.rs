//! Why a token is refused and why a configuration is not usable.
//!
//! [`AuthError`]'s `Display` is written for logs: it names the check that failed and the
//! value that failed it, so an operator can tell a clock skew from a wrong audience. It must
//! never reach an HTTP body, which stays generic (a client probing the verifier learns
//! nothing from it); the services log it at debug/info and answer 401.

/// Why a bearer token was refused. Every check has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Longer than `LOCUS_JWT_MAX_BYTES`: refused before anything is decoded.
    #[error("the token is {len} bytes long, over the limit of {max} (LOCUS_JWT_MAX_BYTES)")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts with a JSON header and payload.
    #[error("the token is not a well-formed JWS compact JWT: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("the token's header says alg \"none\": unsigned tokens are never accepted")]
    AlgNone,
    /// An `alg` this crate does not know.
    #[error("the token's alg {0:?} is not a supported signature algorithm")]
    UnsupportedAlg(String),
    /// A `typ` header other than `JWT` or `at+jwt`.
    #[error("the token's typ header is {0:?}; only JWT and at+jwt are accepted")]
    BadTyp(String),
    /// A `crit` header: it names extensions that must be understood, and none are.
    #[error("the token has a crit header; no JWS extension is supported")]
    CritHeader,
    /// The `iss` claim is neither Locus's nor the configured provider's.
    #[error("the token's issuer {0:?} is neither LOCUS_JWT_ISSUER nor the configured provider")]
    UnknownIssuer(String),
    /// The issuer is known, but does not sign with this algorithm (for example HS256 claimed
    /// by the OIDC provider, or RS256 claimed by Locus).
    #[error("issuer {issuer:?} does not sign with {alg}")]
    AlgNotAllowed {
        /// The header's alg.
        alg: String,
        /// The token's issuer.
        issuer: String,
    },
    /// An HS256 token from the Locus issuer, but no development secret is configured.
    #[error("the token is HS256 but no development secret (LOCUS_JWT_SECRET) is configured")]
    NoDevSecret,
    /// A token for a key set (Locus keys, provider JWKS) without a `kid` header.
    #[error("the token has no kid header, so no key can be chosen")]
    MissingKid,
    /// No key with this `kid`, even after refetching the provider's JWKS (or the refetch was
    /// rate-limited by `min_refresh`).
    #[error("no key has kid {0:?}")]
    UnknownKid(String),
    /// The header's alg differs from the alg of the key its kid names.
    #[error("the token's alg {token} differs from the alg {key} of the key its kid names")]
    AlgMismatch {
        /// The header's alg.
        token: String,
        /// The key's alg.
        key: String,
    },
    /// The provider's JWKS could not be fetched (down, slow, not JSON, no usable key).
    #[error("the identity provider's keys could not be fetched: {0}")]
    KeysUnavailable(String),
    /// The signature does not verify with the chosen key.
    #[error("the token's signature is not valid for its key")]
    BadSignature,
    /// The `aud` claim does not contain the expected audience.
    #[error("the token's aud does not contain {0:?} (LOCUS_JWT_AUDIENCE)")]
    WrongAudience(String),
    /// The `iss` claim failed jsonwebtoken's check (it was peeked before; cannot differ).
    #[error("the token's iss is not the issuer its key belongs to")]
    WrongIssuer,
    /// A required claim is absent (or not of the right type for jsonwebtoken's checks).
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    /// A claim is present but not valid (a tenant id with spaces, a non-numeric time...).
    #[error("the token's {claim} claim is not valid: {reason}")]
    InvalidClaim {
        /// The claim (for provider tokens, the configured path).
        claim: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `exp` (plus leeway) is in the past.
    #[error("the token expired at {exp}; it is now {now} (leeway {leeway}s)")]
    Expired {
        /// Its `exp`.
        exp: i64,
        /// The verifier's clock.
        now: i64,
        /// The leeway.
        leeway: u64,
    },
    /// `nbf` (minus leeway) is in the future.
    #[error("the token is not valid before {nbf}; it is now {now}")]
    NotYetValid {
        /// Its `nbf`.
        nbf: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// `iat` (minus leeway) is in the future: the issuer's clock or the token is wrong.
    #[error("the token says it was issued at {iat}, in the future; it is now {now}")]
    IssuedInFuture {
        /// Its `iat`.
        iat: i64,
        /// The verifier's clock.
        now: i64,
    },
    /// `exp - iat` (or `exp - now` without `iat`) is over `LOCUS_JWT_MAX_LIFETIME_SECS`.
    #[error("the token lives {lifetime}s, over the limit of {max}s (LOCUS_JWT_MAX_LIFETIME_SECS)")]
    LifetimeTooLong {
        /// Its lifetime in seconds.
        lifetime: i64,
        /// The limit.
        max: u64,
    },
    /// The role claim has no value that maps to a Locus role.
    #[error("the token's role {0:?} maps to no Locus role")]
    UnknownRole(String),
    /// The role claim maps to more than one Locus role: refused rather than guessed.
    #[error("the token's role claim maps to several Locus roles ({0}); exactly one is needed")]
    AmbiguousRole(String),
    /// The device was revoked at or after the token was issued.
    #[error("the device was revoked after this token was issued")]
    Revoked,
}

/// Why a verifier or signer cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The PEM text is not a PKCS#8 P-256 private key.
    #[error(
        "the signing key is not a PKCS#8 PEM P-256 private key ({0}); make one with \
         `locus-ingest keygen` or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
    )]
    SigningKey(String),
    /// A configuration value is empty or contradicts another.
    #[error("invalid token verification setting: {0}")]
    Invalid(String),
    /// The HTTP client for JWKS fetches could not be built.
    #[error("the HTTP client for the JWKS could not be built: {0}")]
    HttpClient(String),
}
