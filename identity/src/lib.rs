//! Who is calling: the bearer tokens Locus accepts, the device tokens it signs, the device
//! credentials it hands out and the devices it has revoked.
//!
//! Pure logic plus one kind of I/O, fetching an OIDC provider's JWKS; no database. The
//! services decide what a [`Principal`] may do; this crate only says who it is.
//!
//! - [`Verifier`] checks a token and returns its [`Principal`], or an [`AuthError`] naming
//!   the check that failed (for logs; the HTTP body stays generic). Tokens that verified
//!   are remembered in a [`VerifiedCache`], so a token's signature is checked once.
//! - [`TokenSigner`] signs Locus device tokens with an ES256 key and publishes its
//!   [`LocusPublicKeys`] as a JWKS.
//! - [`credential`] makes and hashes the long-lived device credentials (`lcd_...`) that a
//!   device exchanges for a short-lived token.
//! - [`check_hs256_secret`] refuses weak development secrets outside development.
//! - [`Revocations`] answers "was this device revoked after its token was issued?".

mod cache;
mod claims;
mod config;
pub mod credential;
mod error;
mod jwks;
mod revocation;
mod role;
mod secret;
mod signer;
mod verifier;

pub use cache::{CachedPrincipal, VerifiedCache};
pub use config::{ClaimMapping, ProviderConfig, VerifierConfig};
pub use error::{AuthError, ConfigError};
pub use revocation::Revocations;
pub use role::{Principal, Role, UnknownRoleName};
pub use secret::{MIN_HS256_SECRET_BYTES, PUBLISHED_DEV_SECRETS, WeakSecret, check_hs256_secret};
pub use signer::{LocusPublicKeys, TokenSigner};
pub use verifier::Verifier;

/// Unix time now, in seconds: the clock every token check reads.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
