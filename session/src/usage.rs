//! Usage per tenant and minute in `usage_minutes`, for billing: ingest replicas add their
//! counts ([`SessionStore::add_usage`], additive upserts in the system scope, so replicas
//! add up), and a tenant's rows are read in its own scope ([`SessionStore::usage`]).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use locus_wire::TenantId;
use serde_json::Value;

use crate::SessionStore;
use crate::scope::{Scope, begin};

/// The longest range one read of usage may span, in days: a month's bill, at most
/// 44,640 rows per tenant.
pub const MAX_RANGE_DAYS: i64 = 31;

/// Rows per statement of a flush: a large backlog goes in several transactions, so one
/// failure keeps only the rows of its own chunk for the next try.
const CHUNK_ROWS: usize = 2000;

/// What can go wrong with usage rows.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// `to` is not after `from`, or the range is longer than [`MAX_RANGE_DAYS`].
    #[error("the range must have `from` before `to` and span at most {max_days} days")]
    InvalidRange {
        /// [`MAX_RANGE_DAYS`].
        max_days: i64,
    },
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// One tenant's usage in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageMinute {
    /// Whose.
    pub tenant_id: TenantId,
    /// The start of the minute (UTC, whole minutes).
    pub minute: DateTime<Utc>,
    /// Fixes stored.
    pub fixes_accepted: i64,
    /// Fixes refused, by reason.
    pub fixes_rejected: BTreeMap<String, i64>,
    /// Fixes refused for rate.
    pub fixes_rate_limited: i64,
    /// Request body bytes of the accepted batches.
    pub bytes: i64,
}

/// A `usage_minutes` row as read.
#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    minute: DateTime<Utc>,
    fixes_accepted: i64,
    fixes_rejected: Value,
    fixes_rate_limited: i64,
    bytes: i64,
}

impl Row {
    /// The row, or `None` for a tenant id that is not one (written by hand: skipped, not
    /// a failure of the whole read).
    fn into_minute(self) -> Option<UsageMinute> {
        let fixes_rejected = self
            .fixes_rejected
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        Some(UsageMinute {
            tenant_id: TenantId::parse(self.tenant_id).ok()?,
            minute: self.minute,
            fixes_accepted: self.fixes_accepted,
            fixes_rejected,
            fixes_rate_limited: self.fixes_rate_limited,
            bytes: self.bytes,
        })
    }
}

impl SessionStore {
    /// Adds `rows` to `usage_minutes`: each to the row of its tenant and minute, created
    /// if missing. Several replicas adding the same minute add up. Returns the rows not
    /// written (the chunks that failed, and every later one) with the first error, so
    /// the caller can keep them for the next try.
    pub async fn add_usage(
        &self,
        rows: Vec<UsageMinute>,
    ) -> Result<(), (Vec<UsageMinute>, UsageError)> {
        let mut chunks = rows.chunks(CHUNK_ROWS);
        while let Some(chunk) = chunks.next() {
            if let Err(e) = self.add_usage_chunk(chunk).await {
                let mut left = chunk.to_vec();
                for rest in chunks {
                    left.extend_from_slice(rest);
                }
                return Err((left, e));
            }
        }
        Ok(())
    }

    async fn add_usage_chunk(&self, rows: &[UsageMinute]) -> Result<(), UsageError> {
        let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
        let minutes: Vec<DateTime<Utc>> = rows.iter().map(|r| r.minute).collect();
        let accepted: Vec<i64> = rows.iter().map(|r| r.fixes_accepted).collect();
        let rejected: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::json!(r.fixes_rejected))
            .collect();
        let rate_limited: Vec<i64> = rows.iter().map(|r| r.fixes_rate_limited).collect();
        let bytes: Vec<i64> = rows.iter().map(|r| r.bytes).collect();
        // Every tenant's rows in one statement: background work across tenants, so the
        // system scope.
        let mut tx = begin(self.pool(), Scope::System).await?;
        sqlx::query(
            "INSERT INTO usage_minutes AS u \
               (tenant_id, minute, fixes_accepted, fixes_rejected, fixes_rate_limited, bytes) \
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::bigint[], $4::jsonb[], \
                                  $5::bigint[], $6::bigint[]) \
             ON CONFLICT (tenant_id, minute) DO UPDATE SET \
               fixes_accepted = u.fixes_accepted + EXCLUDED.fixes_accepted, \
               fixes_rejected = locus_add_counts(u.fixes_rejected, EXCLUDED.fixes_rejected), \
               fixes_rate_limited = u.fixes_rate_limited + EXCLUDED.fixes_rate_limited, \
               bytes = u.bytes + EXCLUDED.bytes, \
               updated_at = now()",
        )
        .bind(&tenants)
        .bind(&minutes)
        .bind(&accepted)
        .bind(&rejected)
        .bind(&rate_limited)
        .bind(&bytes)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `tenant`'s usage rows with `from <= minute < to`, oldest first, read in the
    /// tenant's own scope. Refuses a range longer than [`MAX_RANGE_DAYS`].
    pub async fn usage(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageMinute>, UsageError> {
        if to <= from || to - from > TimeDelta::days(MAX_RANGE_DAYS) {
            return Err(UsageError::InvalidRange {
                max_days: MAX_RANGE_DAYS,
            });
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT tenant_id, minute, fixes_accepted, fixes_rejected, fixes_rate_limited, bytes \
             FROM usage_minutes WHERE tenant_id = $1 AND minute >= $2 AND minute < $3 \
             ORDER BY minute",
        )
        .bind(tenant.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&mut *begin(self.pool(), Scope::Tenant(tenant)).await?)
        .await?;
        Ok(rows.into_iter().filter_map(Row::into_minute).collect())
    }
}
