//! The Locus stream bridge: consumes location records from Kafka in a consumer group and
//! delivers them, batched per tenant, to each tenant's signed webhook, at least once and in
//! order per session, one lane per tenant so that a failing webhook pauses its own tenant
//! only. Records that cannot be delivered as they are (malformed, or a tenant without a
//! sink) go to the dead-letter topic, from which [`replay`] puts them back. The sinks come
//! from the configuration and from PostgreSQL, read again while the bridge runs
//! ([`sink_store`]).
//!
//! Start with [`startup::Application`]; the at-least-once rules are in [`consumer`].

pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod error;
pub mod events;
pub mod record;
pub mod replay;
pub mod routes;
pub mod sink_store;
pub mod startup;
pub mod webhook;

pub use config::Config;
pub use error::{BridgeError, SinkError};
pub use startup::Application;
