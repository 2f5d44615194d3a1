//! What this replica owns right now, shared by the polling thread, the rebalance callback
//! and the lanes: the rebalance generation, the deliveries in flight, and the per-partition
//! watermarks of finished records.
//!
//! A revocation must not let two replicas deliver one session at once. So it goes in this
//! order, in [`Ownership::revoke`] and the callback around it:
//! 1. the generation moves on and its `revoked` token fires: lanes drop what they queued,
//!    stop backing off, and start no new work for the old generation
//!    ([`Ownership::begin`] refuses it, under the same lock that counts work in flight, so
//!    no lane slips in between);
//! 2. the callback waits, bounded, for the work in flight to end (an HTTP attempt or a
//!    dead-letter write); what it delivers is still stored, as the partitions are still
//!    ours; past the bound the `fenced` token fires and the attempts are dropped;
//! 3. the callback commits what is stored, then [`Ownership::forget`] clears the
//!    watermarks, and the new owner reads on from the committed offsets.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::offsets::Watermarks;

/// The state of one generation.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// Its number: bumped on every revocation.
    pub number: u64,
    /// Fires when its partitions are revoked: stop retrying, start nothing new.
    pub revoked: CancellationToken,
    /// Fires when the revocation stopped waiting: drop attempts still in flight.
    pub fenced: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    generation: Generation,
    in_flight: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Ownership {
    state: Mutex<State>,
    idle: Condvar,
    /// The watermarks, and the generation they belong to: the old one until the
    /// revocation's commit is done, so that deliveries finishing during its wait count.
    watermarks: Mutex<(u64, Watermarks)>,
}

/// Work of one generation in flight; the revocation waits until every one is dropped.
#[must_use = "the work counts as in flight while this lives"]
pub struct Work<'a> {
    ownership: &'a Ownership,
    /// The generation the work belongs to.
    pub generation: Generation,
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        let mut state = self.ownership.lock_state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            self.ownership.idle.notify_all();
        }
    }
}

impl Ownership {
    // A panic while holding one of these locks leaves counters that are still usable:
    // carrying on beats poisoning every later delivery.
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_watermarks(&self) -> MutexGuard<'_, (u64, Watermarks)> {
        self.watermarks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current generation.
    pub fn current(&self) -> Generation {
        self.lock_state().generation.clone()
    }

    /// Starts work for records of generation `number`, or `None` if they were revoked.
    pub fn begin(&self, number: u64) -> Option<Work<'_>> {
        let mut state = self.lock_state();
        if state.generation.number != number {
            return None;
        }
        state.in_flight += 1;
        Some(Work {
            ownership: self,
            generation: state.generation.clone(),
        })
    }

    /// Notes a record read under the current generation.
    pub fn read(&self, partition: i32, offset: i64) {
        self.lock_watermarks().1.read(partition, offset);
    }

    /// Notes a record of `generation` finished, and calls `store` with the offset its
    /// partition may store now, if it moved. `store` runs under the lock, so stores of one
    /// partition never go backwards. A record of a generation whose revocation is over is
    /// ignored: the same offset may have been read again since, and that copy is not done.
    pub fn finished(
        &self,
        generation: u64,
        partition: i32,
        offset: i64,
        store: impl FnOnce(i32, i64),
    ) {
        let mut guard = self.lock_watermarks();
        let (of, watermarks) = &mut *guard;
        if *of != generation {
            return;
        }
        if let Some(offset) = watermarks.finished(partition, offset) {
            store(partition, offset);
        }
    }

    /// Step 1 of a revocation: a new generation; the old one's `revoked` token fires.
    pub fn revoke(&self) -> Generation {
        let mut state = self.lock_state();
        let next = Generation {
            number: state.generation.number + 1,
            ..Generation::default()
        };
        let old = std::mem::replace(&mut state.generation, next);
        old.revoked.cancel();
        old
    }

    /// Step 2: waits up to `bound` for the work in flight to end. Returns whether it did.
    pub fn wait_idle(&self, bound: Duration) -> bool {
        let state = self.lock_state();
        let (state, _) = self
            .idle
            .wait_timeout_while(state, bound, |s| s.in_flight > 0)
            .unwrap_or_else(PoisonError::into_inner);
        state.in_flight == 0
    }

    /// Step 3, after the commit: the watermarks of the revoked partitions are forgotten,
    /// and from now on belong to the current generation.
    pub fn forget(&self) {
        let current = self.current().number;
        let mut guard = self.lock_watermarks();
        guard.0 = current;
        guard.1.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_of_a_revoked_generation_is_refused_and_the_revocation_waits_for_work_in_flight() {
        let ownership = Ownership::default();
        let work = ownership.begin(0).expect("generation 0 is current");
        let old = ownership.revoke();
        assert!(old.revoked.is_cancelled());
        assert!(
            ownership.begin(0).is_none(),
            "no new work for a revoked generation"
        );
        assert!(
            !ownership.wait_idle(Duration::from_millis(10)),
            "work still in flight"
        );
        drop(work);
        assert!(ownership.wait_idle(Duration::from_millis(10)));
        let next = ownership.begin(1).expect("generation 1 is current");
        assert!(!next.generation.revoked.is_cancelled());
    }

    #[test]
    fn a_delivery_finishing_during_the_revocation_is_stored_and_one_finishing_after_it_is_not() {
        let ownership = Ownership::default();
        ownership.read(0, 10);
        ownership.read(0, 11);
        ownership.revoke();
        let mut stored = Vec::new();
        ownership.finished(0, 0, 10, |p, o| stored.push((p, o)));
        assert_eq!(
            stored,
            vec![(0, 10)],
            "still ours while the revocation waits"
        );
        ownership.forget();
        // Read again under the new generation; the old attempt's late finish is not this copy.
        ownership.read(0, 11);
        ownership.finished(0, 0, 11, |p, o| stored.push((p, o)));
        assert_eq!(stored, vec![(0, 10)]);
        ownership.finished(1, 0, 11, |p, o| stored.push((p, o)));
        assert_eq!(stored, vec![(0, 10), (0, 11)]);
    }
}
