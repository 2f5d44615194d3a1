//! Reading the audit log: pages for `GET /v1/audit` (a tenant's rows, or the platform's
//! all), and the claims of the relay that publishes rows to the tenant-events topic.
//!
//! The relay's contract: claim unpublished rows, publish each, then
//! [`ClaimedAudit::finish`] with the ids Kafka acknowledged, which sets their
//! `published_at`. Claims hold their rows locked (`FOR UPDATE SKIP LOCKED`) until then, so
//! two replicas never publish the same row at once; a relay that crashes before `finish`
//! marks nothing and the rows are published again (consumers dedupe on `event_id`).

use locus_wire::TenantId;
use sqlx::{Postgres, Transaction};

use crate::audit::{AUDIT_COLUMNS, AuditRecord, audit_record};
use crate::scope::{Scope, begin};
use crate::{SessionError, SessionStore};

/// Whose audit rows a page shows.
#[derive(Debug, Clone, Copy)]
pub enum AuditScope<'a> {
    /// One tenant's rows (a tenant admin).
    Tenant(&'a TenantId),
    /// Every row, the platform's own (partners) included (a platform admin).
    Platform,
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    /// The rows.
    pub records: Vec<AuditRecord>,
    /// The id to pass as `before` for the next page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// Unpublished audit rows held by one relay until [`ClaimedAudit::finish`]; dropping it
/// unfinished releases them for the next claim.
pub struct ClaimedAudit {
    tx: Transaction<'static, Postgres>,
    records: Vec<AuditRecord>,
}

impl ClaimedAudit {
    /// The claimed rows, oldest first: publish them in this order.
    pub fn records(&self) -> &[AuditRecord] {
        &self.records
    }

    /// Marks the rows in `published` (those Kafka acknowledged) published, and releases
    /// the rest.
    pub async fn finish(mut self, published: &[i64]) -> Result<(), SessionError> {
        if !published.is_empty() {
            sqlx::query("UPDATE audit_log SET published_at = now() WHERE id = ANY($1)")
                .bind(published)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

impl SessionStore {
    /// Up to `limit` audit rows of `scope` with an id below `before` (all when `None`),
    /// newest first.
    pub async fn audit_page(
        &self,
        scope: AuditScope<'_>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<AuditPage, SessionError> {
        let (tenant, mut tx) = match scope {
            AuditScope::Tenant(t) => (Some(t), begin(self.pool(), Scope::Tenant(t)).await?),
            AuditScope::Platform => (None, begin(self.pool(), Scope::System).await?),
        };
        // Only the conditions asked for (see `SessionStore::list_filtered` on why: a
        // `$n IS NULL OR ...` placeholder keeps a generic plan off the index).
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true"
        ));
        if let Some(tenant) = tenant {
            query.push(" AND tenant_id = ").push_bind(tenant.as_str());
        }
        if let Some(before) = before {
            query.push(" AND id < ").push_bind(before);
        }
        // One more than asked: whether a next page exists without a second query.
        query.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
        let rows = query.build().fetch_all(&mut *tx).await?;
        let mut records = rows
            .iter()
            .map(audit_record)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if records.len() as i64 > limit {
            records.truncate(limit as usize);
            records.last().map(|r| r.id)
        } else {
            None
        };
        Ok(AuditPage {
            records,
            next_before,
        })
    }

    /// Claims up to `limit` unpublished audit rows that no other relay holds, oldest
    /// first. Never waits for other claims.
    pub async fn claim_audit(&self, limit: i64) -> Result<ClaimedAudit, SessionError> {
        // The relay publishes every tenant's rows and the platform's: system scope.
        let mut tx = begin(self.pool(), Scope::System).await?;
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE published_at IS NULL \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let records = rows.iter().map(audit_record).collect::<Result<_, _>>()?;
        Ok(ClaimedAudit { tx, records })
    }

    /// How many audit rows wait to be published.
    pub async fn audit_backlog(&self) -> Result<i64, SessionError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE published_at IS NULL")
                .fetch_one(&mut *begin(self.pool(), Scope::System).await?)
                .await?,
        )
    }
}
