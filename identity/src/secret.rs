//! The development HS256 secret: refused outside development when anyone could know it.

/// Shortest HS256 secret accepted outside development, in bytes (RFC 7518 §3.2: at least
/// the hash output, 256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Secrets that appear in Locus's own compose files, scripts and docs: whoever read them
/// can mint tokens for any tenant.
pub const PUBLISHED_DEV_SECRETS: [&str; 5] = [
    "locus-local-dev-secret-change-me",
    "locus-test-secret",
    "locus-faults-jwt-secret",
    "change-me",
    "secret",
];

/// Why an HS256 secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    /// It is one of [`PUBLISHED_DEV_SECRETS`].
    #[error(
        "LOCUS_JWT_SECRET is a published development secret; set a random one \
         (`openssl rand -base64 48`) or unset it and use ES256 device tokens"
    )]
    Published,
    /// It is shorter than [`MIN_HS256_SECRET_BYTES`].
    #[error(
        "LOCUS_JWT_SECRET is {len} bytes; at least {MIN_HS256_SECRET_BYTES} are needed \
         (`openssl rand -base64 48`)"
    )]
    TooShort {
        /// Its length in bytes.
        len: usize,
    },
}

/// Refuses a published or short HS256 secret unless `dev_mode` (where convenience wins).
pub fn check_hs256_secret(secret: &str, dev_mode: bool) -> Result<(), WeakSecret> {
    if dev_mode {
        return Ok(());
    }
    if PUBLISHED_DEV_SECRETS.contains(&secret) {
        return Err(WeakSecret::Published);
    }
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(WeakSecret::TooShort { len: secret.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_defaults_are_refused_outside_dev_mode_even_when_long_enough() {
        for s in PUBLISHED_DEV_SECRETS {
            assert_eq!(
                check_hs256_secret(s, false),
                Err(WeakSecret::Published),
                "{s}"
            );
            assert_eq!(check_hs256_secret(s, true), Ok(()));
        }
        assert_eq!(
            PUBLISHED_DEV_SECRETS[0].len(),
            32,
            "long enough, still refused"
        );
    }

    #[test]
    fn secrets_under_32_bytes_are_refused_outside_dev_mode() {
        let short = "x".repeat(31);
        assert_eq!(
            check_hs256_secret(&short, false),
            Err(WeakSecret::TooShort { len: 31 })
        );
        assert_eq!(check_hs256_secret(&short, true), Ok(()));
        assert_eq!(check_hs256_secret(&"x".repeat(32), false), Ok(()));
    }
}
