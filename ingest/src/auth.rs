//! Bearer-token authentication at the HTTP edge: the token is checked by
//! [`locus_identity::Verifier`] (Locus's own ES256 device tokens, an external OIDC
//! provider's tokens through its JWKS, HS256 tokens in development), then a device's token
//! against the revocation list this replica keeps in memory. No PostgreSQL round trip per
//! request: the list is reloaded in the background (see [`RevocationRefresher`]).
//!
//! A refused token is a 401 whose body does not say which check failed (that only helps
//! someone forging tokens); the reason is logged.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use locus_identity::{Revocations, Verifier};
use locus_wire::{DeviceId, TenantId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::routes::AppState;

pub use locus_identity::Role;

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

/// Verifies tokens and refuses those of revoked devices.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Verifier,
    revocations: Arc<Revocations>,
    freshness: Arc<Freshness>,
    max_staleness: Duration,
}

/// When the revocation list was last reloaded, so that an old list is not trusted forever.
#[derive(Debug)]
pub struct Freshness {
    origin: std::time::Instant,
    /// Milliseconds from `origin` to the last successful reload; `u64::MAX` before the first.
    loaded_ms: std::sync::atomic::AtomicU64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            origin: std::time::Instant::now(),
            loaded_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }
}

impl Freshness {
    /// Notes a successful reload now.
    pub fn loaded(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.loaded_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last successful reload; `None` before the first.
    pub fn age(&self) -> Option<Duration> {
        let at = self.loaded_ms.load(std::sync::atomic::Ordering::Relaxed);
        (at != u64::MAX).then(|| {
            self.origin
                .elapsed()
                .saturating_sub(Duration::from_millis(at))
        })
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    /// Checks tokens with `verifier`, and device tokens against `revocations`.
    pub fn new(verifier: Verifier, revocations: Arc<Revocations>) -> Self {
        Self {
            verifier,
            revocations,
            freshness: Arc::default(),
            // Marked fresh by the refresher; generous until `with_max_staleness`.
            max_staleness: Duration::from_secs(30),
        }
    }

    /// The same authenticator, answering device tokens 503 once the revocation list went
    /// `max` without a successful reload.
    pub fn with_max_staleness(mut self, max: Duration) -> Self {
        self.max_staleness = max;
        self
    }

    /// When the revocation list was last reloaded (the refresher marks it).
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// The revocation list this authenticator reads.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The identity a bearer token stands for.
    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let principal = self.verifier.verify(token).await.map_err(|e| {
            tracing::info!(reason = %e, "Refused a bearer token.");
            ApiError::Unauthorized(e.to_string())
        })?;
        // Only device tokens are revocable; a list too old to trust (PostgreSQL away past
        // the bound, or never loaded) refuses them rather than letting a revoked one pass.
        if principal.role == locus_identity::Role::Device {
            let age = self.freshness.age();
            if age.is_none_or(|age| age > self.max_staleness) {
                tracing::warn!(
                    ?age,
                    "Revocation list too old to trust; answering a device 503."
                );
                return Err(ApiError::Unavailable {
                    code: crate::error::ErrorCode::DatabaseUnavailable,
                    message: format!(
                        "the list of revoked devices could not be reloaded from the database for longer than {} ms (LOCUS_REVOCATION_MAX_STALENESS_MS), so device tokens cannot be checked; retry after Retry-After seconds",
                        self.max_staleness.as_millis()
                    ),
                    retry_after_secs: 1,
                });
            }
        }
        if self.revocations.is_revoked(&principal) {
            tracing::info!(subject = %principal.subject, "Refused the token of a revoked device.");
            return Err(ApiError::Unauthorized("the device is revoked".into()));
        }
        Ok(Identity {
            role: principal.role,
            subject: principal.subject,
            tenant: principal.tenant,
        })
    }
}

/// Reloads the revoked devices from PostgreSQL every `every`, so that a revocation made
/// through any replica refuses the device's older tokens on this one within `every` plus
/// one query. Only revocations younger than the longest token lifetime are kept: an older
/// revocation has no unexpired token left to refuse.
pub struct RevocationRefresher {
    /// Where the revocations are read.
    pub store: locus_session::SessionStore,
    /// The list the authenticator reads.
    pub revocations: Arc<Revocations>,
    /// Time between reloads.
    pub every: Duration,
    /// How far back revocations matter: the longest accepted token lifetime plus leeway.
    pub horizon: chrono::Duration,
    /// Marked at each successful reload (the authenticator's).
    pub freshness: Arc<Freshness>,
}

impl RevocationRefresher {
    /// Reloads until `shutdown`. A failed reload keeps the last list (and is retried on the
    /// next tick): authorization never fails open on a list it has, and a device revoked
    /// during a PostgreSQL outage cannot get new tokens either (the exchange needs it).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.reload().await;
        }
    }

    /// One reload.
    pub async fn reload(&self) {
        let since = chrono::Utc::now() - self.horizon;
        match locus_session::revocation::revoked_since(self.store.pool(), since).await {
            Ok(rows) => {
                self.revocations.replace(
                    rows.into_iter()
                        .map(|(t, d, at)| ((t, d), at.timestamp()))
                        .collect(),
                );
                self.freshness.loaded();
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not reload revoked devices; keeping the last list.")
            }
        }
    }
}

/// Mints an HS256 development token (for `locus-ingest token`): `tenant` is required for
/// tenant admins and devices and left out for platform admins and partners.
pub fn mint(
    secret: &SecretString,
    issuer: &str,
    audience: &str,
    tenant: Option<&TenantId>,
    subject: &str,
    role: Role,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: subject.to_owned(),
        tenant: tenant.filter(|_| role.has_tenant()).map(|t| t.to_string()),
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
        .ok_or(ApiError::MissingToken(
            "the request has no Authorization header",
        ))?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::MissingToken(
            "the Authorization header is not `Bearer <token>`",
        ))
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.verify(bearer(parts)?).await
    }
}

impl TryFrom<Identity> for Caller {
    type Error = ApiError;

    /// A device or a tenant admin (the roles that act inside one tenant), from an identity
    /// already verified.
    fn try_from(identity: Identity) -> Result<Self, ApiError> {
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A device or a tenant admin: the roles that act inside one tenant.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Identity::from_request_parts(parts, state).await?.try_into()
    }
}
