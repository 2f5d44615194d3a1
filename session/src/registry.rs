//! The registry: tenants, their devices, and the devices' credentials.
//!
//! Every change writes its audit row in the same transaction (see [`crate::audit`]), so a
//! change never commits without its record, nor a record without its change. Audit rows
//! hold the views below, which carry no secret and no secret hash.
//!
//! Credentials: the caller generates the secret and passes only its SHA-256 here, so this
//! module never sees a plaintext credential; the plaintext goes back to the client once, in
//! the answer to the request that created it, and nowhere else.
//!
//! Scopes: tenant administration (create, read) and the credential exchange span tenants
//! and run under [`Scope::System`]; everything a tenant admin does runs under
//! [`Scope::Tenant`], so another tenant's device is invisible, not merely filtered. (The
//! replicas' revocation poll is [`crate::revocation::revoked_since`].)

use chrono::{DateTime, Utc};
use locus_wire::{DeviceId, TenantId};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::scope::{Scope, begin};

/// What can go wrong with a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No tenant with that id.
    #[error("tenant not found")]
    TenantNotFound,
    /// A tenant with that id exists.
    #[error("tenant exists")]
    TenantExists,
    /// No device with that id in the caller's tenant (also another tenant's device).
    #[error("device not found")]
    DeviceNotFound,
    /// A device with that id exists in the tenant.
    #[error("device exists")]
    DeviceExists,
    /// The device is revoked: it takes no new credential.
    #[error("device is revoked")]
    DeviceRevoked,
    /// A credential exchange was refused; the reason is for logs only (the client is told
    /// the same thing whatever it is, so a stolen credential reveals nothing).
    #[error("credential refused: {0}")]
    CredentialRefused(&'static str),
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Who makes a change, as the audit log records it.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The token's subject.
    pub subject: &'a str,
    /// The token's role name (`platform_admin`, `tenant_admin`, ...).
    pub role: &'a str,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenant {
    /// Its id.
    pub tenant_id: TenantId,
    /// A display name.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was disabled (its devices get no token while it is).
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A device of a tenant. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Its id (the `sub` of its tokens).
    pub device_id: DeviceId,
    /// A display name.
    pub name: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last started a session.
    pub last_seen_at: DateTime<Utc>,
    /// When it was revoked: it gets no token and starts no session since.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A credential as stored, without its secret or hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credential {
    /// Its id.
    pub credential_id: Uuid,
    /// The device it belongs to.
    pub device_id: DeviceId,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

/// A page of a listing ordered by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, by id.
    pub items: Vec<T>,
    /// The last id of this page when there may be more: pass it as `after` for the next.
    pub next_after: Option<String>,
}

/// Access to the registry tables.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: PgPool,
}

const TENANT_COLUMNS: &str = "id, name, created_at, disabled_at";
const DEVICE_COLUMNS: &str = "tenant_id, id, name, created_at, last_seen_at, revoked_at";

fn decode_error(column: &str, e: locus_wire::IdError) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.into(),
        source: Box::new(e),
    }
}

fn tenant_row(row: &PgRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        tenant_id: TenantId::parse(row.try_get::<String, _>("id")?)
            .map_err(|e| decode_error("id", e))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

fn device_row(row: &PgRow) -> Result<Device, sqlx::Error> {
    Ok(Device {
        tenant_id: TenantId::parse(row.try_get::<String, _>("tenant_id")?)
            .map_err(|e| decode_error("tenant_id", e))?,
        device_id: DeviceId::parse(row.try_get::<String, _>("id")?)
            .map_err(|e| decode_error("id", e))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// PostgreSQL's SQLSTATE of `e`, if it is a database error.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// The audit view of an object: its JSON, which holds no secret by construction.
fn view<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    Some(serde_json::to_value(value).expect("registry views serialize"))
}

/// Splits one extra row off a `LIMIT limit + 1` query: its presence says there is more.
fn page<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_after = if more { items.last().map(id) } else { None };
    Page { items, next_after }
}

impl Registry {
    /// A registry over `pool` (the service role's, migrated with [`crate::migrate`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates tenant `id` (platform administration: system scope).
    pub async fn create_tenant(
        &self,
        actor: Actor<'_>,
        id: &TenantId,
        name: Option<&str>,
    ) -> Result<Tenant, RegistryError> {
        let mut tx = begin(&self.pool, Scope::System).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id.as_str())
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            Some(UNIQUE_VIOLATION) => RegistryError::TenantExists,
            _ => e.into(),
        })?;
        let tenant = tenant_row(&row)?;
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(id),
                actor: actor.subject,
                actor_role: actor.role,
                action: "tenant.created",
                target_kind: "tenant",
                target_id: id.as_str(),
                before: None,
                after: view(&tenant),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Tenant `id` (system scope: for platform admins).
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant, RegistryError> {
        let mut tx = begin(&self.pool, Scope::System).await?;
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RegistryError::TenantNotFound)?;
        tx.commit().await?;
        Ok(tenant_row(&row)?)
    }

    /// Up to `limit` tenants whose ids sort after `after`, by id (system scope).
    pub async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: i64,
    ) -> Result<Page<Tenant>, RegistryError> {
        let mut tx = begin(&self.pool, Scope::System).await?;
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE ($1::text IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        ))
        .bind(after.map(TenantId::as_str))
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let tenants = rows.iter().map(tenant_row).collect::<Result<_, _>>()?;
        Ok(page(tenants, limit, |t: &Tenant| t.tenant_id.to_string()))
    }

    /// Registers `device` in `tenant` with a first credential whose secret hashes to
    /// `secret_hash`. One transaction: the device, its credential and the audit rows of
    /// both, or nothing.
    pub async fn register_device(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        device: &DeviceId,
        name: Option<&str>,
        secret_hash: &[u8; 32],
    ) -> Result<(Device, Credential), RegistryError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO devices (tenant_id, id, name) VALUES ($1, $2, $3) \
             RETURNING {DEVICE_COLUMNS}"
        ))
        .bind(tenant.as_str())
        .bind(device.as_str())
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            Some(UNIQUE_VIOLATION) => RegistryError::DeviceExists,
            // devices.tenant_id references tenants: the admin's tenant was never created.
            Some(FOREIGN_KEY_VIOLATION) => RegistryError::TenantNotFound,
            _ => e.into(),
        })?;
        let registered = device_row(&row)?;
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "device.registered",
                target_kind: "device",
                target_id: device.as_str(),
                before: None,
                after: view(&registered),
            },
        )
        .await?;
        let credential = insert_credential(&mut tx, actor, tenant, device, secret_hash).await?;
        tx.commit().await?;
        Ok((registered, credential))
    }

    /// Up to `limit` devices of `tenant` whose ids sort after `after`, by id.
    pub async fn list_devices(
        &self,
        tenant: &TenantId,
        after: Option<&DeviceId>,
        limit: i64,
    ) -> Result<Page<Device>, RegistryError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices \
             WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(after.map(DeviceId::as_str))
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let devices = rows.iter().map(device_row).collect::<Result<_, _>>()?;
        Ok(page(devices, limit, |d: &Device| d.device_id.to_string()))
    }

    /// Device `device` of `tenant`.
    pub async fn get_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Device, RegistryError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(device.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RegistryError::DeviceNotFound)?;
        tx.commit().await?;
        Ok(device_row(&row)?)
    }

    /// Revokes `device` and every credential of it: it gets no token from now on. Revoking
    /// a revoked device changes nothing (and writes no audit row): the first revocation's
    /// time stands, which is what the replicas' revocation caches hold.
    pub async fn revoke_device(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Device, RegistryError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        // FOR UPDATE: two racing revocations serialize here, so exactly one records the change.
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant.as_str())
        .bind(device.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RegistryError::DeviceNotFound)?;
        let before = device_row(&row)?;
        if before.revoked_at.is_some() {
            tx.commit().await?;
            return Ok(before);
        }
        let row = sqlx::query(&format!(
            "UPDATE devices SET revoked_at = now() WHERE tenant_id = $1 AND id = $2 \
             RETURNING {DEVICE_COLUMNS}"
        ))
        .bind(tenant.as_str())
        .bind(device.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let after = device_row(&row)?;
        // now() is the transaction's start time: the device and its credentials get the
        // same revocation time.
        let credentials = sqlx::query(
            "UPDATE device_credentials SET revoked_at = now() \
             WHERE tenant_id = $1 AND device_id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut after_view = view(&after).expect("a device view");
        after_view["credentials_revoked"] = credentials.into();
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "device.revoked",
                target_kind: "device",
                target_id: device.as_str(),
                before: view(&before),
                after: Some(after_view),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Issues another credential for `device` (whose secret hashes to `secret_hash`); the
    /// device's other credentials keep working. A revoked device takes none.
    pub async fn issue_credential(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        device: &DeviceId,
        secret_hash: &[u8; 32],
    ) -> Result<Credential, RegistryError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        // FOR SHARE: a revocation committing meanwhile waits for this credential, then
        // revokes it too; it cannot slip in between the check and the insert.
        let revoked: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "SELECT revoked_at FROM devices WHERE tenant_id = $1 AND id = $2 FOR SHARE",
        )
        .bind(tenant.as_str())
        .bind(device.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        match revoked {
            None => return Err(RegistryError::DeviceNotFound),
            Some(Some(_)) => return Err(RegistryError::DeviceRevoked),
            Some(None) => {}
        }
        let credential = insert_credential(&mut tx, actor, tenant, device, secret_hash).await?;
        tx.commit().await?;
        Ok(credential)
    }

    /// The device whose credential hashes to `secret_hash`, if the credential and the
    /// device are not revoked and the tenant is not disabled. System scope: the caller has
    /// no token yet, so no tenant to scope by; the hash is the lookup key.
    pub async fn exchange(
        &self,
        secret_hash: &[u8; 32],
    ) -> Result<(TenantId, DeviceId), RegistryError> {
        let mut tx = begin(&self.pool, Scope::System).await?;
        let row = sqlx::query(
            "SELECT c.tenant_id, c.device_id, c.revoked_at AS credential_revoked_at, \
                    d.revoked_at AS device_revoked_at, t.disabled_at AS tenant_disabled_at \
             FROM device_credentials c \
             JOIN devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id \
             JOIN tenants t ON t.id = c.tenant_id \
             WHERE c.secret_hash = $1",
        )
        .bind(&secret_hash[..])
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Err(RegistryError::CredentialRefused("no such credential"));
        };
        let revoked = |column: &str| -> Result<bool, sqlx::Error> {
            Ok(row.try_get::<Option<DateTime<Utc>>, _>(column)?.is_some())
        };
        if revoked("device_revoked_at")? {
            return Err(RegistryError::CredentialRefused("the device is revoked"));
        }
        if revoked("credential_revoked_at")? {
            return Err(RegistryError::CredentialRefused(
                "the credential is revoked",
            ));
        }
        if revoked("tenant_disabled_at")? {
            return Err(RegistryError::CredentialRefused("the tenant is disabled"));
        }
        let tenant = TenantId::parse(row.try_get::<String, _>("tenant_id")?)
            .map_err(|e| decode_error("tenant_id", e))?;
        let device = DeviceId::parse(row.try_get::<String, _>("device_id")?)
            .map_err(|e| decode_error("device_id", e))?;
        Ok((tenant, device))
    }
}

/// Inserts a credential and its audit row in the caller's transaction.
async fn insert_credential(
    tx: &mut sqlx::PgConnection,
    actor: Actor<'_>,
    tenant: &TenantId,
    device: &DeviceId,
    secret_hash: &[u8; 32],
) -> Result<Credential, RegistryError> {
    let id = Uuid::now_v7();
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO device_credentials (id, tenant_id, device_id, secret_hash) \
         VALUES ($1, $2, $3, $4) RETURNING created_at",
    )
    .bind(id)
    .bind(tenant.as_str())
    .bind(device.as_str())
    .bind(&secret_hash[..])
    .fetch_one(&mut *tx)
    .await?;
    let credential = Credential {
        credential_id: id,
        device_id: device.clone(),
        created_at,
    };
    audit::record(
        tx,
        &AuditEntry {
            tenant: Some(tenant),
            actor: actor.subject,
            actor_role: actor.role,
            action: "credential.issued",
            target_kind: "credential",
            target_id: &id.to_string(),
            before: None,
            after: view(&credential),
        },
    )
    .await?;
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_with_an_extra_row_names_its_last_id_as_the_next_cursor() {
        let more = page(vec![1, 2, 3], 2, |n: &i32| n.to_string());
        assert_eq!(more.items, [1, 2]);
        assert_eq!(more.next_after.as_deref(), Some("2"));
        let last = page(vec![1, 2], 2, |n: &i32| n.to_string());
        assert_eq!((last.items, last.next_after), (vec![1, 2], None));
    }

    #[test]
    fn audit_views_of_a_credential_hold_no_secret_or_hash() {
        let c = Credential {
            credential_id: Uuid::nil(),
            device_id: DeviceId::parse("p1").unwrap(),
            created_at: Utc::now(),
        };
        let v = view(&c).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["created_at", "credential_id", "device_id"]);
    }
}
