//! Black-box tests of the stream bridge: the real `Application` on port 0, the local Kafka
//! broker, and a real HTTP receiver per test. A missing broker fails the tests.

mod dead_letter;
mod delivery;
mod health;
mod helpers;
mod isolation;
mod lag;
mod lanes;
mod no_sink;
mod rebalance;
mod replay;
mod restart;
mod retries;
mod sinks_live;
#[path = "../support/mod.rs"]
mod support;
mod webhooks_standard;
