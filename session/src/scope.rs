//! Whose rows a transaction may touch. Every table that carries a tenant has row-level
//! security (see the tenancy migration): a transaction of the service role sees the rows of
//! the tenants it names and nothing else, whatever the query's own filter says. So a query
//! that forgets its `tenant_id` condition still cannot read or change another tenant's rows.
//!
//! Work that spans tenants by design (the expiry sweeper, progress counts, the outbox and
//! audit relays, the bridge's sink table, credential exchange, partner grant lookups) asks
//! for it explicitly with [`Scope::System`], which switches the transaction to the
//! `locus_system` role.

use locus_wire::TenantId;
use sqlx::{PgPool, Postgres, Transaction};

/// Name of the role every service connects as.
pub const APP_ROLE: &str = "locus_app";
/// Name of the role cross-tenant work switches to for one transaction.
pub const SYSTEM_ROLE: &str = "locus_system";

/// The rows a transaction may see.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One tenant's rows: a request of that tenant's device or admin.
    Tenant(&'a TenantId),
    /// The rows of several tenants: a partner's granted tenants (none: no rows).
    Tenants(&'a [TenantId]),
    /// Every tenant's rows: background work and platform administration.
    System,
}

impl Scope<'_> {
    /// The statement that opens a transaction in this scope. Tenant ids are slugs (ASCII
    /// letters, digits and `-_.:`, checked by [`TenantId::parse`]), so quoting them is
    /// safe; one round trip opens the transaction and sets its scope.
    fn begin_statement(&self) -> String {
        match self {
            Scope::Tenant(t) => {
                format!("BEGIN; SELECT set_config('locus.tenants', '{t}', true)")
            }
            Scope::Tenants(ts) => {
                let list: Vec<&str> = ts.iter().map(TenantId::as_str).collect();
                format!(
                    "BEGIN; SELECT set_config('locus.tenants', '{}', true)",
                    list.join(",")
                )
            }
            Scope::System => format!("BEGIN; SET LOCAL ROLE {SYSTEM_ROLE}"),
        }
    }
}

/// Opens a transaction on `pool` that sees only the rows `scope` allows.
pub async fn begin(
    pool: &PgPool,
    scope: Scope<'_>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(scope.begin_statement()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_opens_with_one_statement_that_names_its_rows() {
        let acme = TenantId::parse("acme").unwrap();
        let two = [acme.clone(), TenantId::parse("globex").unwrap()];
        assert_eq!(
            Scope::Tenant(&acme).begin_statement(),
            "BEGIN; SELECT set_config('locus.tenants', 'acme', true)"
        );
        assert_eq!(
            Scope::Tenants(&two).begin_statement(),
            "BEGIN; SELECT set_config('locus.tenants', 'acme,globex', true)"
        );
        assert_eq!(
            Scope::Tenants(&[]).begin_statement(),
            "BEGIN; SELECT set_config('locus.tenants', '', true)"
        );
        assert_eq!(
            Scope::System.begin_statement(),
            "BEGIN; SET LOCAL ROLE locus_system"
        );
    }
}
