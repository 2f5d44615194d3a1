//! The audit log: every change made through the admin API writes one row, in the same
//! transaction as the change, saying who did what to which object, with the object before
//! and after (never a secret: callers pass views without them). A relay publishes the rows
//! to the tenant-events topic and marks them published.

use chrono::{DateTime, Utc};
use locus_wire::TenantId;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// One change, as the audit log records it.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// The tenant the change belongs to (`None` for platform objects such as partners).
    pub tenant: Option<&'a TenantId>,
    /// Who: the token's subject.
    pub actor: &'a str,
    /// The actor's role name.
    pub actor_role: &'a str,
    /// What: `tenant.created`, `device.registered`, `device.revoked`, `grant.created`...
    pub action: &'a str,
    /// The kind of object changed: `tenant`, `device`, `credential`, `partner`, `grant`, `sink`.
    pub target_kind: &'a str,
    /// Its id.
    pub target_id: &'a str,
    /// The object before the change (`None` when created).
    pub before: Option<serde_json::Value>,
    /// The object after the change (`None` when deleted).
    pub after: Option<serde_json::Value>,
}

/// A row of the audit log, as read back and as published on the tenant-events topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the log.
    pub id: i64,
    /// Stable id of the event (the topic's consumers dedupe on it).
    pub event_id: Uuid,
    /// The tenant, if any.
    pub tenant_id: Option<String>,
    /// Who.
    pub actor: String,
    /// The actor's role.
    pub actor_role: String,
    /// What.
    pub action: String,
    /// The kind of object.
    pub target_kind: String,
    /// Its id.
    pub target_id: String,
    /// Before.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Writes `entry` in the caller's transaction (`&mut *tx`), so the change and its audit
/// row commit together. Returns the event id.
pub async fn record(conn: &mut PgConnection, entry: &AuditEntry<'_>) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit_log (event_id, tenant_id, actor, actor_role, action, target_kind, \
                                target_id, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(event_id)
    .bind(entry.tenant.map(TenantId::as_str))
    .bind(entry.actor)
    .bind(entry.actor_role)
    .bind(entry.action)
    .bind(entry.target_kind)
    .bind(entry.target_id)
    .bind(&entry.before)
    .bind(&entry.after)
    .execute(conn)
    .await?;
    Ok(event_id)
}

/// Columns of [`AuditRecord`], for queries that read the log.
pub const AUDIT_COLUMNS: &str =
    "id, event_id, tenant_id, actor, actor_role, action, target_kind, target_id, before, after, at";

/// Decodes a row selected with [`AUDIT_COLUMNS`].
pub fn audit_record(row: &sqlx::postgres::PgRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        tenant_id: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        actor_role: row.try_get("actor_role")?,
        action: row.try_get("action")?,
        target_kind: row.try_get("target_kind")?,
        target_id: row.try_get("target_id")?,
        before: row.try_get("before")?,
        after: row.try_get("after")?,
        at: row.try_get("at")?,
    })
}
