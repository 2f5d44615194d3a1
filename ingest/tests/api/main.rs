//! Black-box tests of ingest: the real application on a free port, against the real
//! PostgreSQL, Redis and Kafka compatible broker. One binary, one module per area.

mod auth;
mod backpressure;
mod bad_input;
mod bounds;
mod clients;
mod cluster;
mod dead_letter;
mod dedupe;
mod durability;
mod fence;
mod forwarding;
mod geofences;
mod handover;
mod helpers;
mod isolation;
mod openapi;
mod outage;
mod outbox;
mod partners;
mod quotas;
mod registry;
mod schemathesis;
mod sessions;
mod slowloris;
mod tenancy;
mod track;
mod usage;
