//! What the tenant, device and credential routes share: the registry handle, the answer
//! bodies (views without any secret), id and cursor parsing, and what each registry error
//! means to a client.

use chrono::{DateTime, Utc};
use locus_session::registry::{Actor, Credential, Device, Registry, RegistryError, Tenant};
use locus_wire::{DeviceId, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Largest body the registry routes read (the token exchange's too): a few short fields.
pub const REGISTRY_BODY_LIMIT: usize = 16 * 1024;

/// The registry over the state's pool (a pool clone is a reference count).
pub fn registry(state: &AppState) -> Registry {
    Registry::new(state.store.pool().clone())
}

/// The identity as the audit log names it.
pub fn actor(identity: &Identity) -> Actor<'_> {
    Actor {
        subject: &identity.subject,
        role: identity.role.as_str(),
    }
}

/// A tenant id from a body or path, or 400 `invalid_id` naming the rule it broke.
pub fn tenant_id(s: impl Into<String>) -> Result<TenantId, ApiError> {
    TenantId::parse(s).map_err(|e| ApiError::coded(ErrorCode::InvalidId, format!("{e}")))
}

/// A device id from a body or path, or 400 `invalid_id` naming the rule it broke.
pub fn device_id(s: impl Into<String>) -> Result<DeviceId, ApiError> {
    DeviceId::parse(s).map_err(|e| ApiError::coded(ErrorCode::InvalidId, format!("{e}")))
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A display name as given, or 400 `invalid_body` when it is empty, too long or holds
/// control characters (names end up in logs and admin screens).
pub fn display_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(name) = name else { return Ok(None) };
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidBody,
            format!(
                "`name` must be 1 to {MAX_NAME_CHARS} characters without control characters; leave it out for none"
            ),
        ));
    }
    Ok(Some(name))
}

/// Query parameters of the registry's listings.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many items (1 to 500, default 100; values outside are clamped).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The limit, clamped.
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 500)
    }
}

/// The cursor of the page after the one ending at id `last`: opaque to clients (hex, so
/// the ordering can change without clients having parsed ids out of it).
pub fn encode_cursor(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

fn invalid_cursor() -> ApiError {
    ApiError::coded(
        ErrorCode::InvalidCursor,
        "`cursor` is not one this API gave out; pass the `next_cursor` of the previous page unchanged, or leave it out for the first page",
    )
}

/// The id a cursor made by [`encode_cursor`] names, or 400 `invalid_cursor`.
pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    if !cursor.len().is_multiple_of(2) || !cursor.is_ascii() {
        return Err(invalid_cursor());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid_cursor())?;
    String::from_utf8(bytes).map_err(|_| invalid_cursor())
}

/// The id after which a page starts: none without a cursor; 400 `invalid_cursor` for a
/// cursor that does not decode to an id of the listing's kind.
pub fn cursor_after<T>(
    cursor: Option<&str>,
    parse: impl FnOnce(String) -> Result<T, locus_wire::IdError>,
) -> Result<Option<T>, ApiError> {
    cursor
        .map(|c| parse(decode_cursor(c)?).map_err(|_| invalid_cursor()))
        .transpose()
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// Its id.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]+$")]
    pub tenant_id: TenantId,
    /// Its display name.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was disabled: its devices get no token since.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            tenant_id: t.tenant_id,
            name: t.name,
            created_at: t.created_at,
            disabled_at: t.disabled_at,
        }
    }
}

/// A device as the API shows it: never a credential (those are shown once, when issued).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// The tenant it belongs to.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]+$")]
    pub tenant_id: TenantId,
    /// Its id: the `sub` of its tokens.
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub device_id: DeviceId,
    /// Its display name.
    pub name: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last started a session.
    pub last_seen_at: DateTime<Utc>,
    /// When it was revoked: it gets no token and starts no session since.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            tenant_id: d.tenant_id,
            device_id: d.device_id,
            name: d.name,
            created_at: d.created_at,
            last_seen_at: d.last_seen_at,
            revoked_at: d.revoked_at,
        }
    }
}

/// A credential just issued: the only answer that ever holds its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedCredential {
    /// The credential's id (audit rows name it).
    #[schema(value_type = String, format = "uuid")]
    pub credential_id: Uuid,
    /// The device it belongs to.
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// The secret (`lcd_` and 43 base64url characters), shown this once: only its hash is
    /// kept. The device exchanges it for a token with `POST /v1/auth/token`.
    #[schema(min_length = 47, max_length = 47, pattern = "^lcd_[A-Za-z0-9_-]{43}$")]
    pub credential: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

impl IssuedCredential {
    /// The answer for `stored`, whose secret is `plain`.
    pub fn new(stored: Credential, plain: String) -> Self {
        Self {
            credential_id: stored.credential_id,
            device_id: stored.device_id,
            credential: plain,
            created_at: stored.created_at,
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::TenantNotFound => Self::coded(
                ErrorCode::TenantNotFound,
                "no such tenant; a platform admin creates it with POST /v1/tenants",
            ),
            RegistryError::TenantExists => Self::coded(
                ErrorCode::TenantExists,
                "a tenant with this id exists; pick another id, or use the existing tenant",
            ),
            RegistryError::DeviceNotFound => Self::coded(
                ErrorCode::DeviceNotFound,
                "no such device in this tenant; list them with GET /v1/devices, register one with POST /v1/devices",
            ),
            RegistryError::DeviceExists => Self::coded(
                ErrorCode::DeviceExists,
                "a device with this id is registered in this tenant; pick another id, or issue the existing device a new credential with POST /v1/devices/{device_id}/credentials",
            ),
            RegistryError::DeviceRevoked => Self::coded(
                ErrorCode::DeviceRevoked,
                "this device is revoked and takes no new credential; register a new device",
            ),
            RegistryError::CredentialRefused(_) => invalid_credential(),
            RegistryError::Database(e) => {
                tracing::warn!(error = %e, "PostgreSQL failed during a registry request.");
                Self::Unavailable {
                    code: ErrorCode::DatabaseUnavailable,
                    message: "the registry is unavailable; retry later".into(),
                    retry_after_secs: 1,
                }
            }
        }
    }
}

/// The one answer to a credential that does not get a token, whatever the reason (unknown,
/// malformed, revoked, its device revoked, its tenant disabled): telling them apart would
/// only help someone holding a stolen or guessed credential.
pub fn invalid_credential() -> ApiError {
    ApiError::coded(
        ErrorCode::InvalidCredential,
        "the credential is not valid (unknown, malformed or revoked); ask your tenant admin for a new credential for this device",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_id_it_was_made_from() {
        for id in ["a", "p-1:x.y_z", &"z".repeat(128)] {
            assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        }
    }

    #[test]
    fn a_cursor_the_api_did_not_make_is_refused() {
        for bad in ["abc", "zz", "ff", "é0"] {
            let e = decode_cursor(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidCursor, "{bad}");
        }
        // Hex of something that is no device id ("a b").
        let e = cursor_after(Some("612062"), DeviceId::parse).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidCursor);
        assert_eq!(cursor_after(None, DeviceId::parse).unwrap(), None);
    }

    #[test]
    fn a_name_is_short_printable_text_or_absent() {
        assert_eq!(display_name(None).unwrap(), None);
        assert_eq!(
            display_name(Some("Van 1".into())).unwrap().as_deref(),
            Some("Van 1")
        );
        for bad in [String::new(), "x".repeat(201), "a\nb".into()] {
            assert_eq!(
                display_name(Some(bad)).unwrap_err().code(),
                ErrorCode::InvalidBody
            );
        }
    }
}
