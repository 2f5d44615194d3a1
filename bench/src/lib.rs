//! Locus bench: the load generator, the demo partner (a webhook receiver), the demo that
//! drives the whole pipeline and checks every accepted fix arrived, and the benchmark.
//!
//! The binary (`src/main.rs`) only parses arguments and calls [`cmd`], so tests run the
//! same code in-process. Where things are:
//! - [`cmd`]: one module per subcommand (`receiver`, `demo`, `run`, `sweep`);
//! - [`stack`]: where the local stack is, from the variables `./locus` sets;
//! - [`client`]: the one HTTP client of ingest's API (retries are an option);
//! - [`driver`]: one load driver per load mode; [`workload`] and [`sessions`] prepare them;
//! - [`register`]: the simulated tenants and devices, registered through the admin API
//!   before any session starts; [`auth`]: the development tokens of both;
//! - [`ceiling`]: what the dependencies allow, measured with the same data;
//! - [`kafka`], [`kafka_count`], [`receiver`]: following records to Kafka and the webhook;
//! - [`report`]: every figure, summary, report file and chart the bench writes.

pub mod auth;
pub mod ceiling;
pub mod client;
pub mod cmd;
pub mod driver;
pub mod faults;
pub mod kafka;
pub mod kafka_count;
pub mod machine;
pub mod procstat;
pub mod receiver;
pub mod register;
pub mod report;
pub mod sessions;
pub mod stack;
pub mod track;
pub mod workload;
