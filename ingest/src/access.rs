//! Who may see which session: the one access check of the session endpoints.

use locus_session::{Session, SessionStore};
use locus_wire::SessionId;

use crate::auth::{Caller, Role};
use crate::error::ApiError;

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
