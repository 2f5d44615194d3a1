//! Per-tenant limits (table `tenant_limits`): each value a tenant was given, or `None` for
//! the configured default. Platform admins write them (audited, in the tenant's scope);
//! every ingest replica reads the whole table in the system scope every few seconds.

use locus_wire::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::audit::{self, AuditEntry};
use crate::registry::Actor;
use crate::scope::{Scope, begin};

/// What can go wrong with a tenant's limits.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The tenant is not in the tenants table (or not visible in the caller's scope).
    #[error("tenant not found")]
    TenantNotFound,
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A tenant's own limits; `None` is "the configured default". Rates are per second,
/// bursts in the same unit (fixes or requests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TenantLimits {
    /// Sustained fixes per second of the whole tenant, across replicas.
    pub fixes_per_sec: Option<i64>,
    /// Fixes the tenant may post at once.
    pub fixes_burst: Option<i64>,
    /// Sustained fixes per second of one device.
    pub device_fixes_per_sec: Option<i64>,
    /// Fixes one device may post at once.
    pub device_fixes_burst: Option<i64>,
    /// Most fixes in one batch (never above the global maximum).
    pub max_fixes_per_batch: Option<i64>,
    /// Most sessions active at once in the tenant.
    pub max_active_sessions: Option<i64>,
    /// Requests per second of the whole tenant, every route.
    pub requests_per_sec: Option<i64>,
    /// Requests the tenant may make at once.
    pub requests_burst: Option<i64>,
    /// Requests per second of one device (or admin), every route.
    pub device_requests_per_sec: Option<i64>,
    /// Requests one device (or admin) may make at once.
    pub device_requests_burst: Option<i64>,
}

/// The columns of [`TenantLimits`], in order.
pub const LIMIT_COLUMNS: [&str; 10] = [
    "fixes_per_sec",
    "fixes_burst",
    "device_fixes_per_sec",
    "device_fixes_burst",
    "max_fixes_per_batch",
    "max_active_sessions",
    "requests_per_sec",
    "requests_burst",
    "device_requests_per_sec",
    "device_requests_burst",
];

fn columns() -> String {
    LIMIT_COLUMNS.join(", ")
}

/// Every tenant's own limits (rows of tenants that chose none are absent). System scope:
/// each replica admits every tenant's traffic.
pub async fn all(pool: &PgPool) -> Result<Vec<(TenantId, TenantLimits)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        tenant_id: String,
        #[sqlx(flatten)]
        limits: TenantLimits,
    }
    let mut tx = begin(pool, Scope::System).await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT tenant_id, {} FROM tenant_limits",
        columns()
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // Ids in the table were parsed on the way in; one that does not parse names no caller.
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((TenantId::parse(r.tenant_id).ok()?, r.limits)))
        .collect())
}

/// `tenant`'s own limits (all `None` when it chose none), in the tenant's scope.
pub async fn get(pool: &PgPool, tenant: &TenantId) -> Result<TenantLimits, LimitsError> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(LimitsError::TenantNotFound);
    }
    let limits: Option<TenantLimits> = sqlx::query_as(&format!(
        "SELECT {} FROM tenant_limits WHERE tenant_id = $1",
        columns()
    ))
    .bind(tenant.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(limits.unwrap_or_default())
}

/// Sets `tenant`'s own limits to `limits` (a `None` goes back to the default), with its
/// audit row in the same transaction. Returns the limits as they are now.
pub async fn put(
    pool: &PgPool,
    actor: Actor<'_>,
    tenant: &TenantId,
    limits: &TenantLimits,
) -> Result<TenantLimits, LimitsError> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    // Locked, so two concurrent puts audit the right `before`.
    let before: Option<TenantLimits> = sqlx::query_as(&format!(
        "SELECT {} FROM tenant_limits WHERE tenant_id = $1 FOR UPDATE",
        columns()
    ))
    .bind(tenant.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let placeholders: Vec<String> = (2..=LIMIT_COLUMNS.len() + 1)
        .map(|i| format!("${i}"))
        .collect();
    let updates: Vec<String> = LIMIT_COLUMNS
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let statement = format!(
        "INSERT INTO tenant_limits (tenant_id, {}) VALUES ($1, {}) \
         ON CONFLICT (tenant_id) DO UPDATE SET {}, updated_at = now() \
         RETURNING {}",
        columns(),
        placeholders.join(", "),
        updates.join(", "),
        columns()
    );
    let upserted: Result<TenantLimits, sqlx::Error> = sqlx::query_as(&statement)
        .bind(tenant.as_str())
        .bind(limits.fixes_per_sec)
        .bind(limits.fixes_burst)
        .bind(limits.device_fixes_per_sec)
        .bind(limits.device_fixes_burst)
        .bind(limits.max_fixes_per_batch)
        .bind(limits.max_active_sessions)
        .bind(limits.requests_per_sec)
        .bind(limits.requests_burst)
        .bind(limits.device_requests_per_sec)
        .bind(limits.device_requests_burst)
        .fetch_one(&mut *tx)
        .await;
    let after = match upserted {
        Ok(l) => l,
        // tenant_limits.tenant_id references tenants: no such tenant.
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(LimitsError::TenantNotFound);
        }
        Err(e) => return Err(e.into()),
    };
    let json = |l: &TenantLimits| serde_json::to_value(l).expect("limits serialize");
    audit::record(
        &mut tx,
        &AuditEntry {
            tenant: Some(tenant),
            actor: actor.subject,
            actor_role: actor.role,
            action: "limits.set",
            target_kind: "limits",
            target_id: tenant.as_str(),
            before: before.as_ref().map(json),
            after: Some(json(&after)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Sessions of `tenant` active now (the cap on active sessions is checked against it).
/// Served by the one-active-session-per-device index.
pub async fn active_sessions(pool: &PgPool, tenant: &TenantId) -> Result<i64, sqlx::Error> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE tenant_id = $1 AND status = 'active'",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}
