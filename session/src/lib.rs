//! PostgreSQL metadata of Locus: tenants, devices and tracking sessions.
//!
//! Every function takes the caller's tenant and filters on it, so a session id from
//! another tenant is indistinguishable from one that does not exist.

mod store;

pub use store::{Session, SessionError, SessionProgress, SessionStore, StartOutcome};

/// Runs the embedded migrations (`session/migrations`) against `pool`.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}
