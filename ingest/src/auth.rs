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
    /// Runs the platform: creates tenants and partners. Belongs to no tenant.
    PlatformAdmin,
    /// A tenant administrator: the tenant's devices, sinks and grants; reads and stops any
    /// session of the tenant.
    TenantAdmin,
    /// A device: starts its own sessions and posts fixes to them.
    Device,
    /// A partner: reads the sessions of the tenants that granted it, nothing else.
    Partner,
}

impl Role {
    /// The role's name in tokens, the OpenAPI document and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform_admin",
            Self::TenantAdmin => "tenant_admin",
            Self::Device => "device",
            Self::Partner => "partner",
        }
    }
}

/// Whoever a verified token stands for, whatever the role. Admin routes take this; the
/// device and session routes take [`Caller`].
#[derive(Debug, Clone)]
pub struct Identity {
    /// The role.
    pub role: Role,
    /// The token's subject: a device id, an admin user, or a partner id.
    pub subject: String,
    /// The tenant, for tenant admins and devices.
    pub tenant: Option<TenantId>,
}

impl Identity {
    /// Refuses (403) an identity whose role is not one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "this route takes the role(s) {}; the token's role is {}",
            names.join(", "),
            self.role.as_str()
        )))
    }

    /// The identity's tenant; 403 for roles that have none.
    pub fn tenant(&self) -> Result<&TenantId, ApiError> {
        self.tenant.as_ref().ok_or_else(|| {
            ApiError::Forbidden(format!(
                "this route acts on one tenant, and a {} token names none",
                self.role.as_str()
            ))
        })
    }
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
    /// Tenant the subject belongs to (none for platform admins and partners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
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
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
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
        let tenant = data
            .claims
            .tenant
            .map(|t| {
                TenantId::parse(t).map_err(|e| {
                    ApiError::Unauthorized(format!("the token's tenant claim is invalid: {e}"))
                })
            })
            .transpose()?;
        Ok(Identity {
            role: data.claims.role,
            subject: data.claims.sub,
            tenant,
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
        tenant: Some(tenant.to_string()),
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

/// The bearer token of a request, or why there is none.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("the request has no Authorization header".into()))?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into())
        })
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.verify(bearer(parts)?)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A device or a tenant admin: the roles that act inside one tenant.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let identity = Identity::from_request_parts(parts, state).await?;
        identity.require(&[Role::Device, Role::TenantAdmin])?;
        let tenant = identity.tenant()?.clone();
        let subject = match identity.role {
            Role::Device => DeviceId::parse(identity.subject).map_err(|e| {
                ApiError::Unauthorized(format!("the token's sub claim is invalid: {e}"))
            })?,
            // Admins' subjects (e-mail addresses, say) are no device ids and are never
            // compared with one.
            _ => DeviceId::parse("-").expect("a valid id"),
        };
        Ok(Caller {
            tenant,
            subject,
            role: identity.role,
        })
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
