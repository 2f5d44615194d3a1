//! PostgreSQL metadata of Locus: tenants, devices, tracking sessions and the outbox of
//! their events.
//!
//! Every function takes the caller's tenant and runs in a transaction scoped to it (see
//! [`scope`]): a session id from another tenant is indistinguishable from one that does not
//! exist, and row-level security holds that wall even where a query's filter would not.

pub mod audit;
pub mod audit_feed;
mod bootstrap;
pub mod geofences;
pub mod implicit;
pub mod limits;
mod outbox;
pub mod partner_kafka;
pub mod partners;
pub mod registry;
pub mod revocation;
pub mod scope;
pub mod sinks;
mod store;
pub mod track;
pub mod usage;

pub use bootstrap::{BootstrapError, bootstrap, check_service_role, migrate};
pub use outbox::{ClaimedEvents, OutboxBacklog, QueuedEvent};
pub use registry::{Registry, RegistryError};
pub use scope::{Scope, begin};
pub use store::{
    InvalidCursor, Session, SessionCursor, SessionError, SessionFilter, SessionPage,
    SessionProgress, SessionStore, StartOutcome,
};
