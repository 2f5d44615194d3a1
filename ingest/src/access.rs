//! Who may see which session: the one access check of the session endpoints.
//!
//! Three kinds of reader: a device (its own sessions), a tenant admin (its tenant's), and a
//! partner (the sessions of the tenants that granted it, looked up on every request so a
//! withdrawn grant stops access at once). For a partner, a tenant that has not granted it
//! and a tenant that does not exist answer the same 404, body for body: a partner cannot
//! learn which tenants exist by probing.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use locus_session::{Scope, Session, SessionStore};
use locus_wire::{SessionId, TenantId};

use crate::auth::{Caller, Identity, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Whoever reads sessions: one tenant's own caller, or a partner.
#[derive(Debug, Clone)]
pub enum Reader {
    /// A device or a tenant admin, inside its tenant.
    Tenant(Caller),
    /// A partner, by id (its token's subject).
    Partner(String),
}

impl Reader {
    /// The tenant for the trace span: the caller's, or `-` for a partner (which names
    /// its tenant per request).
    pub fn tenant_label(&self) -> &str {
        match self {
            Self::Tenant(c) => c.tenant.as_str(),
            Self::Partner(_) => "-",
        }
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    /// A device, a tenant admin or a partner: the roles that read sessions.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let identity = Identity::from_request_parts(parts, state).await?;
        identity.require(&[Role::Device, Role::TenantAdmin, Role::Partner])?;
        if identity.role == Role::Partner {
            return Ok(Self::Partner(identity.subject));
        }
        // Converted, not extracted: the token is verified once.
        Ok(Self::Tenant(Caller::try_from(identity)?))
    }
}

/// The one answer for a tenant the reader may not see, whether it exists or not.
pub fn tenant_not_found() -> ApiError {
    ApiError::coded(
        ErrorCode::TenantNotFound,
        "no such tenant for this token: it does not exist, or it has not granted this partner access (a tenant admin grants it with PUT /v1/grants/{partner_id})",
    )
}

/// The tenant a partner asked for, if that tenant granted it; otherwise the same 404 as
/// for a tenant that does not exist. Also returns every granted tenant: the scope of the
/// partner's transaction, so row-level security bounds the query even if this check did
/// not.
pub async fn granted_tenant(
    store: &SessionStore,
    partner: &str,
    tenant: &str,
) -> Result<(TenantId, Vec<TenantId>), ApiError> {
    let granted = store.granted_tenants(partner).await?;
    let wanted = TenantId::parse(tenant).map_err(|_| tenant_not_found())?;
    if granted.contains(&wanted) {
        Ok((wanted, granted))
    } else {
        Err(tenant_not_found())
    }
}

/// Loads a session the caller may see: its tenant's, and for a device only its own. Any
/// other id reads as not found, so ids of other tenants (or devices) cannot be probed.
pub async fn visible_session(
    store: &SessionStore,
    caller: &Caller,
    id: &str,
) -> Result<Session, ApiError> {
    let id = SessionId::parse(id).map_err(|_| ApiError::SessionNotFound)?;
    let session = store.get(&caller.tenant, id).await?;
    if caller.role == Role::Device && session.device_id != caller.subject {
        return Err(ApiError::SessionNotFound);
    }
    Ok(session)
}

/// [`visible_session`] for any reader: a partner finds a session only in a tenant that
/// granted it, and gets the same 404 as for an id that exists nowhere.
pub async fn readable_session(
    store: &SessionStore,
    reader: &Reader,
    id: &str,
) -> Result<Session, ApiError> {
    match reader {
        Reader::Tenant(caller) => visible_session(store, caller, id).await,
        Reader::Partner(partner) => {
            let id = SessionId::parse(id).map_err(|_| ApiError::SessionNotFound)?;
            let granted = store.granted_tenants(partner).await?;
            Ok(store.get_scoped(Scope::Tenants(&granted), id).await?)
        }
    }
}
