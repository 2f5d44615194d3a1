//! The revoked devices every ingest replica keeps in memory, read here in one query.

use chrono::{DateTime, Utc};
use locus_wire::{DeviceId, TenantId};
use sqlx::PgPool;

use crate::scope::{Scope, begin};

/// Devices of every tenant revoked at or after `since`, with when. Runs in the system
/// scope: each replica checks every tenant's device tokens.
pub async fn revoked_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(TenantId, DeviceId, DateTime<Utc>)>, sqlx::Error> {
    let mut tx = begin(pool, Scope::System).await?;
    let rows: Vec<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT tenant_id, id, revoked_at FROM devices WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        // Ids in the table were parsed on the way in; a row that does not parse is not a
        // device any token can name.
        .filter_map(|(t, d, at)| Some((TenantId::parse(t).ok()?, DeviceId::parse(d).ok()?, at)))
        .collect())
}
