//! Setting a database up: the two roles of [`crate::scope`], then the migrations. Run by
//! `locus-ingest migrate` with the owner's connection, never by the services themselves,
//! which connect as `locus_app` and could not (it owns nothing).

use sqlx::PgPool;

use crate::scope::{APP_ROLE, SYSTEM_ROLE};

/// Why a database could not be set up, or a service role is refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// PostgreSQL refused a statement.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The service's connection has rights that would step over row-level security.
    #[error(
        "the service connects to PostgreSQL as `{role}`, which {why}; connect as `{APP_ROLE}` \
         (created by `locus-ingest migrate`) so that row-level security holds"
    )]
    PrivilegedRole {
        /// The connection's role.
        role: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Creates the service roles if they are missing, then runs the migrations. `owner` is a
/// connection allowed to create roles and tables (the database owner; locally the
/// `postgres` superuser). Safe to run again, and from several processes at once: roles are
/// cluster-wide, so concurrent first runs on different databases race on them.
pub async fn bootstrap(owner: &PgPool) -> Result<(), BootstrapError> {
    // Each step tolerates losing the race to a concurrent run, then checks the result.
    for statement in [
        format!(
            "CREATE ROLE {APP_ROLE} LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
        ),
        format!("CREATE ROLE {SYSTEM_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("GRANT {SYSTEM_ROLE} TO {APP_ROLE}"),
    ] {
        let block = format!(
            "DO $$ BEGIN {statement}; \
             EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN NULL; END $$"
        );
        sqlx::raw_sql(&block).execute(owner).await?;
    }
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(APP_ROLE)
        .bind(SYSTEM_ROLE)
        .fetch_one(owner)
        .await?;
    if !member {
        sqlx::raw_sql(&format!("GRANT {SYSTEM_ROLE} TO {APP_ROLE}"))
            .execute(owner)
            .await?;
    }
    // The service role must reach the database and its schema (PostgreSQL 15 gives PUBLIC
    // no CREATE on public, and CONNECT stays as the database grants it).
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(owner)
        .await?;
    sqlx::raw_sql(&format!(
        r#"GRANT CONNECT ON DATABASE "{db}" TO {APP_ROLE}; GRANT USAGE ON SCHEMA public TO {APP_ROLE}, {SYSTEM_ROLE}"#
    ))
    .execute(owner)
    .await?;
    migrate(owner).await?;
    Ok(())
}

/// Runs the embedded migrations (`session/migrations`) against `pool` (as the owner).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// Refuses a service connection whose role is a superuser, has BYPASSRLS or owns the
/// tables: any of them would make row-level security a suggestion.
pub async fn check_service_role(pool: &PgPool) -> Result<(), BootstrapError> {
    let (role, superuser, bypass, owner): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper, r.rolbypassrls, \
                COALESCE((SELECT pg_has_role(current_user, c.relowner, 'USAGE') \
                          FROM pg_class c WHERE c.relname = 'sessions' AND c.relkind = 'r' \
                          AND c.relnamespace = 'public'::regnamespace), false) \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let why = if superuser {
        "is a superuser"
    } else if bypass {
        "has BYPASSRLS"
    } else if owner {
        "owns the tables"
    } else {
        return Ok(());
    };
    Err(BootstrapError::PrivilegedRole { role, why })
}
