//! Partners and the grants tenants give them. A partner is a platform object (no tenant):
//! only the system scope reads or writes `partners`. A grant is a tenant's row: the tenant's
//! admin gives and withdraws it in the tenant's own scope, so one tenant can never grant or
//! withdraw another's. Which tenants a partner may read is looked up on every request
//! ([`SessionStore::granted_tenants`]), so a withdrawn grant stops access at once.
//!
//! Every change writes its audit row in the same transaction (see [`crate::audit`]).

use chrono::{DateTime, Utc};
use locus_wire::TenantId;
use serde::Serialize;
use serde_json::json;

use crate::SessionStore;
use crate::audit::{self, AuditEntry};
use crate::scope::{Scope, begin};

/// Longest partner id: the same bound as a device id (a partner id is a token's subject).
pub const PARTNER_ID_MAX: usize = 128;

/// What can go wrong with partners and grants.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// No partner with that id (or it is disabled).
    #[error("partner not found")]
    PartnerNotFound,
    /// A partner with that id exists.
    #[error("partner exists")]
    PartnerExists,
    /// The tenant has not granted this partner.
    #[error("grant not found")]
    GrantNotFound,
    /// The tenant is not in the tenants table (a platform admin creates it).
    #[error("tenant not found")]
    TenantNotFound,
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Who makes a change, as its audit row records it (the registry's type: one actor for
/// every admin change).
pub use crate::registry::Actor;

/// Whether `id` may name a partner: 1 to [`PARTNER_ID_MAX`] ASCII letters, digits and
/// `-_.:`, like every other id of the API (it appears in paths and in tokens' `sub`).
pub fn valid_partner_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= PARTNER_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A partner row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Partner {
    /// The partner's id: the `sub` of its tokens.
    pub id: String,
    /// A name for people.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was disabled (a disabled partner reads nothing).
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A tenant's grant to a partner.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Grant {
    /// The partner granted.
    pub partner_id: String,
    /// The tenant that granted it.
    pub tenant_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Result of [`SessionStore::grant`].
#[derive(Debug, Clone, PartialEq)]
pub struct GrantOutcome {
    /// The grant.
    pub grant: Grant,
    /// Whether this call created it (false: it existed, nothing changed, no audit row).
    pub created: bool,
}

const PARTNER_COLUMNS: &str = "id, name, created_at, disabled_at";

impl SessionStore {
    /// Creates partner `id` (checked with [`valid_partner_id`] by the caller).
    pub async fn create_partner(
        &self,
        actor: Actor<'_>,
        id: &str,
        name: Option<&str>,
    ) -> Result<Partner, PartnerError> {
        // Partners belong to no tenant: the platform admin works in the system scope.
        let mut tx = begin(self.pool(), Scope::System).await?;
        let inserted: Result<Partner, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO partners (id, name) VALUES ($1, $2) RETURNING {PARTNER_COLUMNS}"
        ))
        .bind(id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await;
        let partner = match inserted {
            Ok(p) => p,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(PartnerError::PartnerExists);
            }
            Err(e) => return Err(e.into()),
        };
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: None,
                actor: actor.subject,
                actor_role: actor.role,
                action: "partner.created",
                target_kind: "partner",
                target_id: id,
                before: None,
                after: Some(json!(partner)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(partner)
    }

    /// Every partner, by id.
    pub async fn list_partners(&self) -> Result<Vec<Partner>, PartnerError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PARTNER_COLUMNS} FROM partners ORDER BY id"
        ))
        .fetch_all(&mut *begin(self.pool(), Scope::System).await?)
        .await?)
    }

    /// Partner `id`, disabled or not.
    pub async fn get_partner(&self, id: &str) -> Result<Partner, PartnerError> {
        sqlx::query_as(&format!(
            "SELECT {PARTNER_COLUMNS} FROM partners WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *begin(self.pool(), Scope::System).await?)
        .await?
        .ok_or(PartnerError::PartnerNotFound)
    }

    /// `tenant` lets `partner` read its sessions. Granting twice changes nothing.
    pub async fn grant(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        partner: &str,
    ) -> Result<GrantOutcome, PartnerError> {
        // The tenant's scope cannot see partners: their existence is a system lookup. A
        // partner deleted between the two is caught by the foreign key below.
        let found = self.get_partner(partner).await?;
        if found.disabled_at.is_some() {
            return Err(PartnerError::PartnerNotFound);
        }
        let mut tx = begin(self.pool(), Scope::Tenant(tenant)).await?;
        let inserted: Result<Option<Grant>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO partner_grants (partner_id, tenant_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING RETURNING partner_id, tenant_id, created_at",
        )
        .bind(partner)
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await;
        let inserted = match inserted {
            Ok(g) => g,
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(if e.constraint().is_some_and(|c| c.contains("partner")) {
                    PartnerError::PartnerNotFound
                } else {
                    PartnerError::TenantNotFound
                });
            }
            Err(e) => return Err(e.into()),
        };
        let Some(grant) = inserted else {
            let grant = sqlx::query_as(
                "SELECT partner_id, tenant_id, created_at FROM partner_grants \
                 WHERE partner_id = $1 AND tenant_id = $2",
            )
            .bind(partner)
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?;
            return Ok(GrantOutcome {
                grant,
                created: false,
            });
        };
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "grant.created",
                target_kind: "grant",
                target_id: partner,
                before: None,
                after: Some(json!(grant)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(GrantOutcome {
            grant,
            created: true,
        })
    }

    /// `tenant` withdraws its grant to `partner`: from the next request on, the partner
    /// reads nothing of the tenant.
    pub async fn withdraw_grant(
        &self,
        actor: Actor<'_>,
        tenant: &TenantId,
        partner: &str,
    ) -> Result<Grant, PartnerError> {
        let mut tx = begin(self.pool(), Scope::Tenant(tenant)).await?;
        let grant: Grant = sqlx::query_as(
            "DELETE FROM partner_grants WHERE partner_id = $1 AND tenant_id = $2 \
             RETURNING partner_id, tenant_id, created_at",
        )
        .bind(partner)
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(PartnerError::GrantNotFound)?;
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor: actor.subject,
                actor_role: actor.role,
                action: "grant.withdrawn",
                target_kind: "grant",
                target_id: partner,
                before: Some(json!(grant)),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(grant)
    }

    /// The grants `tenant` gave, by partner id.
    pub async fn list_grants(&self, tenant: &TenantId) -> Result<Vec<Grant>, PartnerError> {
        Ok(sqlx::query_as(
            "SELECT partner_id, tenant_id, created_at FROM partner_grants \
             WHERE tenant_id = $1 ORDER BY partner_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *begin(self.pool(), Scope::Tenant(tenant)).await?)
        .await?)
    }

    /// The tenants that granted `partner`, by id; none for an unknown or disabled partner.
    /// Read on every partner request, so that a withdrawn grant takes effect at once.
    pub async fn granted_tenants(&self, partner: &str) -> Result<Vec<TenantId>, PartnerError> {
        // Grants of every tenant are searched: a system lookup (the partner's own scope is
        // what this computes).
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT g.tenant_id FROM partner_grants g JOIN partners p ON p.id = g.partner_id \
             WHERE g.partner_id = $1 AND p.disabled_at IS NULL ORDER BY g.tenant_id",
        )
        .bind(partner)
        .fetch_all(&mut *begin(self.pool(), Scope::System).await?)
        .await?;
        // Tenant ids were parsed when they were written; one that no longer parses is
        // skipped rather than failing every request of the partner.
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::parse(id).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partner_ids_are_slugs_of_at_most_128_characters() {
        assert!(valid_partner_id("fleet-co"));
        assert!(valid_partner_id("a.b:c_d-1"));
        assert!(valid_partner_id(&"p".repeat(128)));
        assert!(!valid_partner_id(&"p".repeat(129)));
        assert!(!valid_partner_id(""));
        assert!(!valid_partner_id("has space"));
        assert!(!valid_partner_id("slash/no"));
    }
}
