//! Bearer-token authentication: HS256 JWTs whose claims name the tenant, the subject and
//! its role. The algorithm is pinned, and `exp`, `iss` and `aud` are required.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use locus_wire::{DeviceId, TenantId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::routes::AppState;

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A device: starts its own sessions and posts fixes to them.
    Device,
    /// A tenant administrator: reads and stops any session of the tenant.
    TenantAdmin,
}

/// Claims Locus reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the device id for devices, the user for admins.
    pub sub: String,
    /// Tenant the subject belongs to.
    pub tenant: String,
    /// Role of the subject.
    pub role: Role,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's tenant: every lookup is scoped to it.
    pub tenant: TenantId,
    /// The subject (a device id for devices).
    pub subject: DeviceId,
    /// The caller's role.
    pub role: Role,
}

impl Caller {
    /// Refuses callers that are not devices.
    pub fn require_device(&self) -> Result<(), ApiError> {
        if self.role == Role::Device {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only device tokens (role \"device\") may do this".into(),
            ))
        }
    }
}

/// Verifies tokens.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with `secret`, from `issuer` for `audience`.
    pub fn new(secret: &SecretString, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
        }
    }

    /// The caller a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                ApiError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired".into(),
                    ErrorKind::InvalidSignature => "the token's signature is not valid".into(),
                    ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
                    ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
                    ErrorKind::InvalidAlgorithm => "the token must be signed with HS256".into(),
                    ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                    _ => format!("the token is not valid ({e})"),
                })
            })?;
        let tenant = TenantId::parse(data.claims.tenant).map_err(|e| {
            ApiError::Unauthorized(format!("the token's tenant claim is invalid: {e}"))
        })?;
        let subject = DeviceId::parse(data.claims.sub).map_err(|e| {
            ApiError::Unauthorized(format!("the token's sub claim is invalid: {e}"))
        })?;
        Ok(Caller {
            tenant,
            subject,
            role: data.claims.role,
        })
    }
}

/// Mints a token (for `locus-ingest token` and local use).
pub fn mint(
    secret: &SecretString,
    issuer: &str,
    audience: &str,
    tenant: &TenantId,
    subject: &DeviceId,
    role: Role,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: subject.to_string(),
        tenant: tenant.to_string(),
        role,
        iat: now,
        exp: now + ttl_secs,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("the request has no Authorization header".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into())
            })?;
        state.auth.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_caller() {
        let s = secret("k");
        let a = Authenticator::new(&s, "locus", "locus");
        let t = TenantId::parse("acme").unwrap();
        let d = DeviceId::parse("phone-1").unwrap();
        let tok = mint(&s, "locus", "locus", &t, &d, Role::Device, 60).unwrap();
        let c = a.verify(&tok).unwrap();
        assert_eq!((c.tenant, c.subject, c.role), (t, d, Role::Device));
    }

    #[test]
    fn tokens_with_another_secret_audience_or_past_expiry_are_refused() {
        let a = Authenticator::new(&secret("k"), "locus", "locus");
        let t = TenantId::parse("acme").unwrap();
        let d = DeviceId::parse("p").unwrap();
        for tok in [
            mint(&secret("other"), "locus", "locus", &t, &d, Role::Device, 60).unwrap(),
            mint(&secret("k"), "locus", "elsewhere", &t, &d, Role::Device, 60).unwrap(),
            mint(&secret("k"), "locus", "locus", &t, &d, Role::Device, -120).unwrap(),
        ] {
            assert!(matches!(a.verify(&tok), Err(ApiError::Unauthorized(_))));
        }
    }
}
