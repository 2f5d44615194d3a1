//! Formats that cross Locus process boundaries.
//!
//! Everything a device, a partner or another Locus process parses lives here, so that a
//! change to a contract is a change to one crate: the HTTP bodies of the ingest API
//! ([`api`]), the entries buffered in Redis streams ([`buffer`]), the records written to
//! Kafka ([`record`]), their topic names ([`topics`]) and headers ([`headers`]), and the signed webhook deliveries of the stream bridge ([`webhook`]).

pub mod api;
pub mod buffer;
pub mod clients;
pub mod decode;
pub mod fingerprint;
pub mod headers;
pub mod ids;
pub mod record;
pub mod topics;
pub mod webhook;

pub use ids::GeofenceId;
pub use ids::{BatchId, DeviceId, IdError, SessionId, TenantId};
