//! The local tier: GCRA buckets in this process's memory, a pair at a time (a caller and
//! its tenant) so that a refusal by either charges neither. Sharded mutexes keep the lock
//! short and rarely shared; idle buckets (back at full burst) are forgotten by the sweeper.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::Instant;

use super::gcra::{Gcra, Look};

const SHARDS: usize = 16;

/// Buckets by key: each holds its theoretical arrival time (microseconds since `epoch`).
pub struct Buckets<K> {
    shards: Vec<Mutex<HashMap<K, u64>>>,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone> Default for Buckets<K> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, u64>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The TAT of `key` (0: unused).
    pub fn tat(&self, key: &K) -> u64 {
        let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(key).copied().unwrap_or(0)
    }

    /// Sets the TAT of `key` to `tat` unless it is already later (another request charged
    /// meanwhile: the later one already includes a charge).
    pub fn charge(&self, key: &K, gcra: &Gcra, now: u64, cost: u64) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let tat = shard.entry(key.clone()).or_insert(0);
        *tat = (*tat).max(now) + cost * gcra.interval_us;
    }

    /// Drops the buckets whose TAT is past (full again: the same as unused).
    pub fn forget_idle(&self, now: u64) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, tat| *tat > now);
        }
    }

    /// Buckets held (for tests and the sweeper's log).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a pair of buckets said.
#[derive(Debug, Clone, Copy)]
pub struct PairLook {
    /// The caller's bucket.
    pub own: Look,
    /// The tenant's bucket.
    pub tenant: Look,
}

impl PairLook {
    /// Whether both allow.
    pub fn allowed(&self) -> bool {
        self.own.allowed && self.tenant.allowed
    }
}

/// The caller's buckets and the tenant's, checked together.
pub struct Pair<K, T> {
    /// Per caller (device, admin).
    pub own: Buckets<K>,
    /// Per tenant.
    pub tenant: Buckets<T>,
    epoch: Instant,
}

impl<K: Hash + Eq + Clone, T: Hash + Eq + Clone> Default for Pair<K, T> {
    fn default() -> Self {
        Self {
            own: Buckets::default(),
            tenant: Buckets::default(),
            epoch: Instant::now(),
        }
    }
}

impl<K: Hash + Eq + Clone, T: Hash + Eq + Clone> Pair<K, T> {
    /// Microseconds since this pair was made (never 0, so a TAT of 0 reads as unused).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Looks at both buckets without charging.
    pub fn look(&self, own: (&K, &Gcra), tenant: (&T, &Gcra), now: u64, cost: u64) -> PairLook {
        PairLook {
            own: own.1.look(self.own.tat(own.0), now, cost),
            tenant: tenant.1.look(self.tenant.tat(tenant.0), now, cost),
        }
    }

    /// Charges both buckets when both allow, neither otherwise. Two requests of one key
    /// racing between the look and the charge can both pass: the bucket is then over by
    /// one cost, which it pays back before admitting again.
    pub fn admit(&self, own: (&K, &Gcra), tenant: (&T, &Gcra), now: u64, cost: u64) -> PairLook {
        let look = self.look(own, tenant, now, cost);
        if look.allowed() {
            self.charge(own, tenant, now, cost);
        }
        look
    }

    /// Charges both buckets, whatever they hold (what the shared tier admitted).
    pub fn charge(&self, own: (&K, &Gcra), tenant: (&T, &Gcra), now: u64, cost: u64) {
        self.own.charge(own.0, own.1, now, cost);
        self.tenant.charge(tenant.0, tenant.1, now, cost);
    }

    /// Forgets the buckets that are full again.
    pub fn forget_idle(&self) {
        let now = self.now();
        self.own.forget_idle(now);
        self.tenant.forget_idle(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_by_either_bucket_charges_neither() {
        let pair: Pair<&str, &str> = Pair::default();
        let device = Gcra::new(1, 10);
        let tenant = Gcra::new(1, 15);
        let now = 1;
        assert!(
            pair.admit((&"a", &device), (&"t", &tenant), now, 10)
                .allowed()
        );
        // The tenant has 5 left: b's 10 is refused by the tenant, b's bucket untouched.
        let look = pair.admit((&"b", &device), (&"t", &tenant), now, 10);
        assert!(look.own.allowed && !look.tenant.allowed);
        assert_eq!(pair.own.tat(&"b"), 0);
        // a is empty: its refusal leaves the tenant's 5.
        let look = pair.admit((&"a", &device), (&"t", &tenant), now, 5);
        assert!(!look.own.allowed);
        assert!(
            pair.admit((&"c", &device), (&"t", &tenant), now, 5)
                .allowed()
        );
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let pair: Pair<u32, u32> = Pair::default();
        let g = Gcra::new(1_000_000, 1);
        pair.admit((&1, &g), (&2, &g), pair.now(), 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        pair.forget_idle();
        assert!(pair.own.is_empty() && pair.tenant.is_empty());
    }
}
