//! Consumer lag per partition: how many records of each partition this replica owns are not
//! committed yet, measured on a timer and published as `locus_bridge_consumer_lag_records`.
//!
//! Each measurement asks the broker, not the consumer's own bookkeeping: the group
//! coordinator for the committed offsets of the assigned partitions (one OffsetFetch), then
//! the partition leader for each high watermark (one ListOffsets per partition). librdkafka's
//! statistics (`consumer_lag` in `statistics.interval.ms` reports) were not used, because
//! they read wrong exactly when lag matters:
//! - their high watermark is the one the last fetch response carried, and librdkafka stops
//!   fetching a partition whose local queue is full (`queued.min.messages`), which is what
//!   a stuck webhook with a large backlog causes: the lag would freeze instead of growing;
//! - they report -1 for a partition the group never committed, such as a new group stuck on
//!   its first batch.
//!
//! The lag is "high watermark minus committed offset", as `kafka-consumer-groups.sh`
//! reports it, so the two agree. Offsets are stored once records are handled and committed
//! within `auto.commit.interval.ms` (1 s), so the lag includes up to a second of records that
//! are already delivered. A partition the group never committed starts at the low watermark
//! (`auto.offset.reset=earliest`), and so does one whose committed offset was deleted by
//! retention.
//!
//! Only the owner of a partition measures it. A partition this replica stopped owning is set
//! to 0 at the next measurement (the metrics recorder cannot remove a series), so the lag of
//! a partition across replicas is the sum of their gauges.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use super::BridgeConsumer;
use crate::events::{ConsumerLag, ConsumerLagFailed};

/// How long one broker request of a measurement may take. A broker that does not answer
/// fails the measurement; the gauges keep their last values until the next one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The lag of one owned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Records past the committed offset.
    pub records: i64,
}

/// Records of a partition the group has not committed: from where the group resumes (the
/// committed offset, or the low watermark when there is none or retention deleted it) to the
/// high watermark. Never negative: a committed offset past the high watermark (a topic that
/// was recreated) counts as caught up.
pub fn lag_of(committed: Offset, low: i64, high: i64) -> i64 {
    let resume = match committed {
        Offset::Offset(offset) => offset.max(low),
        // Invalid (nothing committed), Beginning, End, Stored, OffsetTail: librdkafka hands
        // only a concrete offset or Invalid back from a committed-offsets request, and
        // Invalid means the group starts at the earliest record.
        _ => low,
    };
    (high - resume).max(0)
}

/// Measures the lag of every partition assigned to `consumer`. Blocking: it waits for the
/// broker.
pub fn measure(consumer: &BridgeConsumer) -> Result<Vec<PartitionLag>, KafkaError> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        // Not in the group yet, or between a revocation and the next assignment.
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment, REQUEST_TIMEOUT)?;
    let mut lags = Vec::with_capacity(committed.count());
    for element in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(element.topic(), element.partition(), REQUEST_TIMEOUT)?;
        lags.push(PartitionLag {
            topic: element.topic().to_owned(),
            partition: element.partition(),
            records: lag_of(element.offset(), low, high),
        });
    }
    Ok(lags)
}

/// Measures the lag every `interval` and publishes it, until `stop` is cancelled.
pub struct LagMonitor {
    consumer: Arc<BridgeConsumer>,
    interval: Duration,
}

impl LagMonitor {
    /// A monitor of `consumer`'s assigned partitions.
    pub fn new(consumer: Arc<BridgeConsumer>, interval: Duration) -> Self {
        Self { consumer, interval }
    }

    /// Runs until `stop` is cancelled. A measurement in progress then finishes first (at
    /// most a few request timeouts): it holds a handle of the consumer, and the caller
    /// closes the consumer only once every handle is gone.
    pub async fn run(self, stop: CancellationToken) {
        let mut reported: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut ticks = tokio::time::interval(self.interval);
        // After a slow measurement, carry on at the interval instead of catching up.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let consumer = Arc::clone(&self.consumer);
            let measured = match tokio::task::spawn_blocking(move || measure(&consumer)).await {
                Ok(measured) => measured,
                // The blocking task panicked or the runtime is shutting down; nothing to
                // publish this time.
                Err(_) => continue,
            };
            match measured {
                Ok(lags) => publish(&mut reported, lags),
                Err(error) => ConsumerLagFailed { error: &error }.emit(),
            }
        }
    }
}

/// Sets the gauge of every measured partition, and 0 for those reported before that this
/// replica no longer owns.
fn publish(reported: &mut BTreeSet<(String, i32)>, lags: Vec<PartitionLag>) {
    for lag in updates(reported, lags) {
        ConsumerLag {
            topic: &lag.topic,
            partition: lag.partition,
            records: lag.records,
        }
        .emit();
    }
}

/// The gauge values to set after a measurement: 0 for each partition in `reported` that is
/// not in `lags` (no longer owned), then `lags`. `reported` becomes the measured partitions.
fn updates(reported: &mut BTreeSet<(String, i32)>, lags: Vec<PartitionLag>) -> Vec<PartitionLag> {
    let owned: BTreeSet<(String, i32)> = lags
        .iter()
        .map(|lag| (lag.topic.clone(), lag.partition))
        .collect();
    let mut out: Vec<PartitionLag> = reported
        .difference(&owned)
        .map(|(topic, partition)| PartitionLag {
            topic: topic.clone(),
            partition: *partition,
            records: 0,
        })
        .collect();
    out.extend(lags);
    *reported = owned;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_runs_from_the_committed_offset_to_the_high_watermark() {
        assert_eq!(lag_of(Offset::Offset(7), 0, 12), 5);
        assert_eq!(lag_of(Offset::Offset(12), 0, 12), 0);
    }

    #[test]
    fn a_partition_never_committed_lags_by_everything_it_holds() {
        assert_eq!(lag_of(Offset::Invalid, 0, 9), 9);
        assert_eq!(lag_of(Offset::Invalid, 4, 9), 5, "from the low watermark");
    }

    #[test]
    fn records_deleted_by_retention_are_not_lag() {
        assert_eq!(lag_of(Offset::Offset(2), 10, 15), 5);
    }

    #[test]
    fn a_committed_offset_past_the_high_watermark_counts_as_caught_up() {
        assert_eq!(lag_of(Offset::Offset(20), 0, 15), 0);
    }

    fn lag(partition: i32, records: i64) -> PartitionLag {
        PartitionLag {
            topic: "t".to_owned(),
            partition,
            records,
        }
    }

    #[test]
    fn partitions_no_longer_owned_are_set_to_zero_once() {
        let mut reported = BTreeSet::new();
        assert_eq!(
            updates(&mut reported, vec![lag(0, 3), lag(1, 4)]),
            vec![lag(0, 3), lag(1, 4)]
        );
        // A rebalance took partition 0 away.
        assert_eq!(
            updates(&mut reported, vec![lag(1, 2)]),
            vec![lag(0, 0), lag(1, 2)]
        );
        assert_eq!(updates(&mut reported, vec![lag(1, 1)]), vec![lag(1, 1)]);
        // Everything revoked, then partition 0 back.
        assert_eq!(updates(&mut reported, vec![]), vec![lag(1, 0)]);
        assert_eq!(updates(&mut reported, vec![lag(0, 6)]), vec![lag(0, 6)]);
    }
}
