//! Locus bench: the load generator, the demo partner (a webhook receiver) and the demo
//! that drives the whole pipeline and checks every accepted fix arrived.
//!
//! The binary (`src/main.rs`) only parses arguments and calls into these modules, so tests
//! run the same code in-process.

pub mod auth;
pub mod ceiling;
pub mod demo;
pub mod kafka_count;
pub mod load;
pub mod perf;
pub mod perf_report;
pub mod procstat;
pub mod receiver;
pub mod report;
pub mod track;
