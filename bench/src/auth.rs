//! Device tokens the bench mints for its simulated devices (HS256, the claims ingest checks).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// Claims of a device token, as ingest expects them.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'static str,
    sub: &'a str,
    tenant: &'a str,
    role: &'static str,
    iat: i64,
    exp: i64,
}

/// Signs a device token for `device` of `tenant`, valid for `ttl_secs` from now.
pub fn device_token(
    secret: &SecretString,
    tenant: &str,
    device: &str,
    ttl_secs: i64,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "locus",
        aud: "locus",
        sub: device,
        tenant,
        role: "device",
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn a_device_token_decodes_with_the_claims_ingest_checks() {
        let secret = SecretString::from("s3cret");
        let token = device_token(&secret, "acme", "bench-x-1", 60).expect("token");
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["locus"]);
        v.set_audience(&["locus"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .expect("valid token");
        assert_eq!(data.claims["sub"], "bench-x-1");
        assert_eq!(data.claims["tenant"], "acme");
        assert_eq!(data.claims["role"], "device");
    }
}
