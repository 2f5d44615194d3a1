//! The tracker role: reads the locations topic and keeps each session's track and
//! statistics, each device's last position and geofence state in PostgreSQL, and publishes
//! geofence events and positions through an outbox.
//!
//! Exactly once, and why: every poll batch is applied in ONE PostgreSQL transaction that
//! also stores the next offset of each partition it read ([`store`]); records below the
//! stored offset are skipped, so a batch read again after a crash changes nothing, and
//! Kafka's committed offsets are only a copy (on assignment the tracker commits the
//! PostgreSQL ones to the group before it fetches, see [`consumer`]). What the tracker
//! publishes goes through the `geo_outbox` table, written in that same transaction, and
//! the [`relay`] publishes it once. Start with [`startup::Application`].

pub mod config;
pub mod consumer;
pub mod error;
pub mod events;
pub mod fences;
pub mod relay;
pub mod routes;
pub mod startup;
pub mod store;
pub mod track;

pub use config::Config;
pub use error::TrackerError;
pub use startup::Application;
