//! Tokens the bench mints: HS256 development tokens (ingest accepts them with
//! `LOCUS_DEV_MODE=true` and the same `LOCUS_JWT_SECRET`) for its simulated devices, and for
//! the admin calls that register those devices ([`crate::register`]).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// The longest lifetime (`exp - iat`) ingest accepts by default
/// (`LOCUS_JWT_MAX_LIFETIME_SECS`); a longer token is refused with 401, so none is minted.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 86_400;

/// Validity of the simulated devices' tokens: the longest ingest accepts, so a day-long soak
/// keeps its tokens (no margin is added on top: `exp - iat` is exactly this).
pub const DEVICE_TOKEN_TTL_SECS: i64 = MAX_TOKEN_LIFETIME_SECS;

/// Validity of the admin tokens of a registration: it takes seconds.
pub const ADMIN_TOKEN_TTL_SECS: i64 = 900;

/// Subject of the bench's admin tokens (it shows as the actor in the audit log).
const ADMIN_SUBJECT: &str = "locus-bench";

/// Claims of a development token, as ingest expects them; `tenant` only for the roles that
/// have one (`tenant_admin`, `device`).
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'static str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    role: &'static str,
    iat: i64,
    exp: i64,
}

/// Signs a token of `role` for `sub`, valid for `ttl_secs` from now (at most
/// [`MAX_TOKEN_LIFETIME_SECS`]).
fn sign(
    secret: &SecretString,
    role: &'static str,
    sub: &str,
    tenant: Option<&str>,
    ttl_secs: i64,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        (1..=MAX_TOKEN_LIFETIME_SECS).contains(&ttl_secs),
        "a token lifetime of {ttl_secs} s is outside 1..={MAX_TOKEN_LIFETIME_SECS} s: ingest \
         refuses tokens living longer than LOCUS_JWT_MAX_LIFETIME_SECS"
    );
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "locus",
        aud: "locus",
        sub,
        tenant,
        role,
        iat: now,
        exp: now + ttl_secs,
    };
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// Signs a device token for `device` of `tenant`, valid for `ttl_secs` from now.
pub fn device_token(
    secret: &SecretString,
    tenant: &str,
    device: &str,
    ttl_secs: i64,
) -> anyhow::Result<String> {
    sign(secret, "device", device, Some(tenant), ttl_secs)
}

/// Signs a `platform_admin` token (no tenant): it creates tenants.
pub fn platform_admin_token(secret: &SecretString) -> anyhow::Result<String> {
    sign(
        secret,
        "platform_admin",
        ADMIN_SUBJECT,
        None,
        ADMIN_TOKEN_TTL_SECS,
    )
}

/// Signs a `tenant_admin` token of `tenant`: it registers that tenant's devices.
pub fn tenant_admin_token(secret: &SecretString, tenant: &str) -> anyhow::Result<String> {
    sign(
        secret,
        "tenant_admin",
        ADMIN_SUBJECT,
        Some(tenant),
        ADMIN_TOKEN_TTL_SECS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn decode(token: &str) -> serde_json::Value {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["locus"]);
        v.set_audience(&["locus"]);
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(b"s3cret"), &v)
            .expect("valid token")
            .claims
    }

    fn lifetime(claims: &serde_json::Value) -> i64 {
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
    }

    #[test]
    fn a_device_token_decodes_with_the_claims_ingest_checks() {
        let secret = SecretString::from("s3cret");
        let token = device_token(&secret, "acme", "bench-x-1", 60).expect("token");
        let claims = decode(&token);
        assert_eq!(claims["sub"], "bench-x-1");
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["role"], "device");
    }

    #[test]
    fn the_device_token_lifetime_is_within_what_ingest_accepts() {
        let secret = SecretString::from("s3cret");
        let token = device_token(&secret, "acme", "d", DEVICE_TOKEN_TTL_SECS).expect("token");
        let life = lifetime(&decode(&token));
        assert!(life <= 86_400, "exp - iat = {life}");
    }

    #[test]
    fn a_token_living_longer_than_ingest_accepts_is_not_minted() {
        let secret = SecretString::from("s3cret");
        let err = device_token(&secret, "acme", "d", 86_401).unwrap_err();
        assert!(
            err.to_string().contains("LOCUS_JWT_MAX_LIFETIME_SECS"),
            "{err}"
        );
    }

    #[test]
    fn admin_tokens_carry_their_role_and_only_the_tenant_admin_a_tenant() {
        let secret = SecretString::from("s3cret");
        let platform = decode(&platform_admin_token(&secret).unwrap());
        assert_eq!(platform["role"], "platform_admin");
        assert!(platform.get("tenant").is_none(), "{platform}");
        let tenant = decode(&tenant_admin_token(&secret, "globex").unwrap());
        assert_eq!(tenant["role"], "tenant_admin");
        assert_eq!(tenant["tenant"], "globex");
        assert!(lifetime(&tenant) <= 86_400);
    }
}
