//! PostgreSQL metadata of Locus: tenants, devices, tracking sessions and the outbox of
//! their events.
//!
//! Every function takes the caller's tenant and filters on it, so a session id from
//! another tenant is indistinguishable from one that does not exist.

mod outbox;
mod store;

pub use outbox::{ClaimedEvents, OutboxBacklog, QueuedEvent};
pub use store::{Session, SessionError, SessionProgress, SessionStore, StartOutcome};

/// Runs the embedded migrations (`session/migrations`) against `pool`.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}
