//! A tenant's webhook sink: where the stream bridge delivers the tenant's records, and the
//! secret it signs them with. The API writes the row (in the tenant's scope); the bridge
//! reads every tenant's rows in the system scope. The secret goes in and never comes out:
//! [`Sink`] has no secret field, and the audit rows carry the URL only.

use chrono::{DateTime, Utc};
use locus_wire::TenantId;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::SessionStore;
use crate::audit::{self, AuditEntry};
use crate::partners::Actor;
use crate::scope::{Scope, begin};

/// What can go wrong with a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The tenant has no sink.
    #[error("sink not found")]
    NotFound,
    /// The tenant is not in the tenants table (a platform admin creates it).
    #[error("tenant not found")]
    TenantNotFound,
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A tenant's sink, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Sink {
    /// The sink's id.
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: String,
    /// Where records are delivered.
    pub url: String,
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// Result of [`SessionStore::put_sink`].
#[derive(Debug, Clone, PartialEq)]
pub struct PutSinkOutcome {
    /// The sink as it is now.
    pub sink: Sink,
    /// Whether the tenant had none before.
    pub created: bool,
}

/// Result of [`SessionStore::rotate_sink_secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct RotatedSecret {
    /// Until when the previous secret signs too.
    pub previous_expires_at: DateTime<Utc>,
}

/// A tenant's endpoint health, as the stream bridge reported it (`sink_health`) with the
/// sink's own state.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SinkHealth {
    /// The sink's URL.
    pub url: String,
    /// When a 410 Gone disabled it (cleared by setting the sink again).
    pub disabled_by_410_at: Option<DateTime<Utc>>,
    /// What the webhook answered then.
    pub disabled_by_410_reason: Option<String>,
    /// While a secret rollover runs: until when the previous secret signs too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When the webhook last took a delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the last attempt failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Its HTTP status (none for a timeout or a connection error).
    pub last_failure_status: Option<i32>,
    /// What went wrong.
    pub last_failure_reason: Option<String>,
    /// Failed attempts since the last success.
    pub failure_streak: i32,
    /// Whether the tenant's delivery is paused.
    pub paused: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// When the bridge last wrote this (none: it has not reported yet).
    pub reported_at: Option<DateTime<Utc>>,
}

/// Columns of [`Sink`]: never the secret.
const SINK_COLUMNS: &str = "id, tenant_id, url, created_at, updated_at";

/// What an audit row says of a sink: its URL, never its secret.
fn audited(sink: &Sink) -> serde_json::Value {
    json!({ "id": sink.id, "tenant_id": sink.tenant_id, "url": sink.url })
}

impl SessionStore {
    /// Sets `tenant`'s sink to `url`, signed with `secret` (both checked by the caller),
    /// replacing the one it had.
    pub async fn put_sink(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        url: &str,
        secret: &str,
    ) -> Result<PutSinkOutcome, SinkError> {
        let mut tx = begin(self.pool(), Scope::Tenant(tenant)).await?;
        // Locked, so two concurrent puts audit the right `before`.
        let before: Option<Sink> = sqlx::query_as(&format!(
            "SELECT {SINK_COLUMNS} FROM sinks WHERE tenant_id = $1 FOR UPDATE"
        ))
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        // A re-enabled sink: setting it again is the way to turn a disabled one back on,
        // also one disabled by a 410 Gone. A PUT replaces the secret outright: a rollover
        // in progress ends (the rotate route is the way to change it without a gap).
        let upserted: Result<Sink, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO sinks (id, tenant_id, url, secret) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE \
               SET url = EXCLUDED.url, secret = EXCLUDED.secret, updated_at = now(), \
                   disabled_at = NULL, disabled_by_410_at = NULL, \
                   disabled_by_410_reason = NULL, previous_secret = NULL, \
                   previous_secret_expires_at = NULL \
             RETURNING {SINK_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(tenant.as_str())
        .bind(url)
        .bind(secret)
        .fetch_one(&mut *tx)
        .await;
        let sink = match upserted {
            Ok(s) => s,
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(SinkError::TenantNotFound);
            }
            Err(e) => return Err(e.into()),
        };
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "sink.set",
                target_kind: "sink",
                target_id: &sink.id.to_string(),
                before: before.as_ref().map(audited),
                after: Some(audited(&sink)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(PutSinkOutcome {
            created: before.is_none(),
            sink,
        })
    }

    /// `tenant`'s sink, without its secret.
    pub async fn get_sink(&self, tenant: &TenantId) -> Result<Sink, SinkError> {
        sqlx::query_as(&format!(
            "SELECT {SINK_COLUMNS} FROM sinks WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .fetch_optional(&mut *begin(self.pool(), Scope::Tenant(tenant)).await?)
        .await?
        .ok_or(SinkError::NotFound)
    }

    /// Replaces `tenant`'s secret with `secret` (checked by the caller); the old one keeps
    /// signing (a second signature) for `rollover` more, so a partner can switch over
    /// without refusing a delivery. A rollover already in progress is cut short: its
    /// previous secret is dropped, the current one becomes the previous. Audited without
    /// either secret.
    pub async fn rotate_sink_secret(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        secret: &str,
        rollover: std::time::Duration,
    ) -> Result<RotatedSecret, SinkError> {
        let mut tx = begin(self.pool(), Scope::Tenant(tenant)).await?;
        let rollover_ms = i64::try_from(rollover.as_millis()).unwrap_or(i64::MAX);
        let rotated: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE sinks SET previous_secret = secret, secret = $2, \
               previous_secret_expires_at = now() + make_interval(secs => $3::float8 / 1000), \
               updated_at = now() \
             WHERE tenant_id = $1 \
             RETURNING id, previous_secret_expires_at",
        )
        .bind(tenant.as_str())
        .bind(secret)
        .bind(rollover_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let (id, previous_expires_at) = rotated.ok_or(SinkError::NotFound)?;
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "sink.secret_rotated",
                target_kind: "sink",
                target_id: &id.to_string(),
                before: None,
                after: Some(json!({
                    "id": id,
                    "tenant_id": tenant.as_str(),
                    "previous_secret_expires_at": previous_expires_at,
                })),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(RotatedSecret {
            previous_expires_at,
        })
    }

    /// `tenant`'s endpoint health: what the bridge last reported, and whether a 410
    /// disabled the sink.
    pub async fn sink_health(&self, tenant: &TenantId) -> Result<SinkHealth, SinkError> {
        sqlx::query_as(
            "SELECT s.url, s.disabled_by_410_at, s.disabled_by_410_reason, \
                    s.previous_secret_expires_at, h.last_success_at, h.last_failure_at, \
                    h.last_failure_status, h.last_failure_reason, \
                    COALESCE(h.failure_streak, 0) AS failure_streak, \
                    COALESCE(h.paused, false) AS paused, \
                    COALESCE(h.circuit, 'closed') AS circuit, h.reported_at \
             FROM sinks s LEFT JOIN sink_health h ON h.tenant_id = s.tenant_id \
             WHERE s.tenant_id = $1 AND s.disabled_at IS NULL",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut *begin(self.pool(), Scope::Tenant(tenant)).await?)
        .await?
        .ok_or(SinkError::NotFound)
    }

    /// Removes `tenant`'s sink: the bridge stops delivering to it at its next refresh.
    pub async fn delete_sink(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
    ) -> Result<Sink, SinkError> {
        let mut tx = begin(self.pool(), Scope::Tenant(tenant)).await?;
        let sink: Sink = sqlx::query_as(&format!(
            "DELETE FROM sinks WHERE tenant_id = $1 RETURNING {SINK_COLUMNS}"
        ))
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(SinkError::NotFound)?;
        // Its health goes with it: a sink set later starts afresh.
        sqlx::query("DELETE FROM sink_health WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "sink.deleted",
                target_kind: "sink",
                target_id: &sink.id.to_string(),
                before: Some(audited(&sink)),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(sink)
    }
}
