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
        // A re-enabled sink: setting it again is the way to turn a disabled one back on.
        let upserted: Result<Sink, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO sinks (id, tenant_id, url, secret) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE \
               SET url = EXCLUDED.url, secret = EXCLUDED.secret, updated_at = now(), \
                   disabled_at = NULL \
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
