//! Whether the forwarder makes progress, for `/readyz`: per shard it owns, when it last
//! acknowledged entries or found nothing to forward. A shard owned and without progress
//! for longer than `LOCUS_FORWARDER_STALL_SECS` is stalled: entries wait and none moves
//! (Kafka refusing an entry, or away), and a readiness probe should say so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The progress of each shard of one forwarder; cheap to clone, shared with `/readyz`.
#[derive(Debug, Clone)]
pub struct Health {
    /// Per shard: `None` while not owned, else the time of its last progress.
    shards: Arc<Mutex<Vec<Option<Instant>>>>,
    stall: Duration,
}

impl Health {
    /// The health of a forwarder of `shards` shards, stalled after `stall` without
    /// progress.
    pub fn new(shards: u32, stall: Duration) -> Self {
        Self {
            shards: Arc::new(Mutex::new(vec![None; shards as usize])),
            stall,
        }
    }

    /// `shard` was taken, or moved on: its clock starts again.
    pub fn progressed(&self, shard: u32) {
        self.set(shard, Some(Instant::now()));
    }

    /// `shard` is no longer owned: its progress is someone else's concern.
    pub fn released(&self, shard: u32) {
        self.set(shard, None);
    }

    /// The owned shards without progress for longer than the stall threshold, and the
    /// error `/readyz` shows for them (`Ok` when there are none).
    pub fn check(&self) -> Result<(), String> {
        let stalled: Vec<usize> = self
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, last)| last.is_some_and(|t| t.elapsed() > self.stall))
            .map(|(shard, _)| shard)
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "shards {stalled:?} made no progress for over {} s",
                self.stall.as_secs_f64()
            ))
        }
    }

    fn set(&self, shard: u32, value: Option<Instant>) {
        if let Some(slot) = self.lock().get_mut(shard as usize) {
            *slot = value;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        // Only plain assignments happen under the lock, so it cannot be poisoned mid-way;
        // taking the data anyway is right.
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_owned_shard_without_progress_past_the_threshold_is_stalled() {
        let health = Health::new(3, Duration::from_millis(20));
        assert!(health.check().is_ok(), "nothing owned");
        health.progressed(0);
        health.progressed(2);
        assert!(health.check().is_ok(), "fresh progress");
        std::thread::sleep(Duration::from_millis(30));
        health.progressed(2);
        let error = health.check().unwrap_err();
        assert!(error.contains("[0]"), "{error}");
        health.released(0);
        assert!(
            health.check().is_ok(),
            "a released shard is not ours to report"
        );
    }
}
