//! Shard leases: one forwarder at a time owns a shard, so each session reaches Kafka in the
//! order ingest accepted it. A consumer group alone would hand one session's entries to two
//! replicas at once.
//!
//! A lease is a Redis key holding this process's token, set with `NX` and a TTL and renewed
//! every third of that TTL by a keeper task. Renewal and release run as Lua scripts that
//! act only while the key still holds our token: a lapsed lease may already be someone
//! else's, and we must neither extend nor delete theirs.
//!
//! The lease is also a fence, in two layers. Locally, [`LeaseGuard::holds`] compares the
//! clock with a deadline: the time the last successful acquire or renewal was *sent*, plus
//! the lease, minus a margin. Redis started the key's TTL after it received the command,
//! so the key cannot lapse before that deadline; a renewal that hangs simply lets the
//! deadline pass, without waiting for any answer. In Redis, every command that moves
//! entries to this consumer (a read of new entries, a claim) runs in a script that first
//! checks the key still holds our token ([`Fence`]): a command that was sent in time but
//! reaches Redis late, after another forwarder took the shard, does nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Renews the lease only while this forwarder still holds it.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";
/// Releases the lease only if this forwarder still holds it.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The leases of one forwarder process: its token, their length, and how many shards it
/// may and does own.
#[derive(Clone)]
pub struct Leases {
    /// The consumer name plus a per-process nonce, so a restarted process does not mistake
    /// a lease of its predecessor for its own.
    token: String,
    ttl: Duration,
    max_shards: u32,
    /// Shards owned now. Only [`Leases::acquire`] raises it and only dropping a
    /// [`LeaseGuard`] lowers it, so the count cannot drift.
    owned: Arc<AtomicU32>,
}

impl Leases {
    /// Leases held as `consumer`, `ttl` long (at least 300 ms), at most `max_shards` at once
    /// (0: no limit).
    pub fn new(consumer: &str, ttl: Duration, max_shards: u32) -> Self {
        Self {
            token: format!("{consumer}/{}", uuid::Uuid::new_v4()),
            ttl: ttl.max(Duration::from_millis(300)),
            max_shards,
            owned: Arc::default(),
        }
    }

    /// How long to wait between two attempts to take a shard.
    pub fn retry_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// Waits until this forwarder holds the lease `key` of `shard`, then starts renewing it
    /// on `keeper_conn`. `None` on shutdown.
    pub async fn acquire(
        &self,
        conn: &mut ConnectionManager,
        keeper_conn: &ConnectionManager,
        shard: u32,
        key: &str,
        shutdown: &CancellationToken,
    ) -> Option<LeaseGuard> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            if let Some(slot) = self.take_slot() {
                // Before sending: the key's TTL starts later than this, never earlier.
                let sent = Instant::now();
                let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(key)
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.ttl.as_millis() as u64)
                    .query_async(conn)
                    .await;
                match taken {
                    Ok(Some(_)) => {
                        return Some(self.guard(slot, keeper_conn.clone(), key, sent));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "Could not ask for the shard lease.")
                    }
                }
                // `slot` drops here: the shard was not ours after all.
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.retry_interval()) => {}
            }
        }
    }

    /// Counts a shard before asking Redis for it, so sibling shard tasks respect
    /// `max_shards` while the request is in flight. `None` when the process is at its limit.
    fn take_slot(&self) -> Option<Slot> {
        let taken = self
            .owned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (self.max_shards == 0 || n < self.max_shards).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(Arc::clone(&self.owned)))
    }

    fn guard(&self, slot: Slot, conn: ConnectionManager, key: &str, sent: Instant) -> LeaseGuard {
        let lost = CancellationToken::new();
        let deadline = Deadline::new(self.ttl, sent);
        // Renewals run beside the work: forwarding one read can wait on Kafka for longer
        // than the lease, and the shard must not change hands meanwhile.
        let keeper = tokio::spawn(keep(
            conn,
            key.to_owned(),
            self.token.clone(),
            self.ttl,
            lost.clone(),
            deadline.clone(),
        ));
        LeaseGuard {
            _slot: slot,
            fence: Fence {
                key: key.to_owned(),
                token: self.token.clone(),
            },
            lost,
            deadline,
            keeper,
        }
    }
}

/// Until when a lease is surely still ours, as far as this process can tell without asking
/// Redis: shared by the keeper, which moves it on each renewal, and the shard's work.
#[derive(Clone)]
struct Deadline {
    ttl: Duration,
    until: Arc<Mutex<Instant>>,
}

impl Deadline {
    /// The deadline of a lease whose acquire was sent at `sent`.
    fn new(ttl: Duration, sent: Instant) -> Self {
        Self {
            ttl,
            until: Arc::new(Mutex::new(sent + Self::valid_for(ttl))),
        }
    }

    /// How long a lease counts as ours after its acquire or renewal was sent: a tenth of
    /// it is kept as a margin for the two machines' clocks running at slightly different
    /// rates.
    fn valid_for(ttl: Duration) -> Duration {
        ttl - ttl / 10
    }

    /// A renewal sent at `sent` succeeded.
    fn renewed(&self, sent: Instant) {
        let mut until = self
            .until
            .lock()
            .expect("the deadline lock is never poisoned");
        *until = (*until).max(sent + Self::valid_for(self.ttl));
    }

    /// Whether the deadline is still ahead.
    fn ahead(&self) -> bool {
        Instant::now()
            < *self
                .until
                .lock()
                .expect("the deadline lock is never poisoned")
    }
}

/// What a Redis script needs to act only while this forwarder holds a shard's lease: the
/// lease key and the token it must hold.
#[derive(Debug, Clone)]
pub struct Fence {
    /// The lease key.
    pub key: String,
    /// This process's token.
    pub token: String,
}

/// One unit of `owned`, given back when dropped.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A held shard lease. Dropping it stops the renewals and gives the shard back to this
/// process's count; the key in Redis then lapses by itself. [`LeaseGuard::release`] also
/// deletes the key, so another forwarder can take the shard at once.
pub struct LeaseGuard {
    _slot: Slot,
    fence: Fence,
    lost: CancellationToken,
    deadline: Deadline,
    keeper: JoinHandle<()>,
}

impl LeaseGuard {
    /// Whether the lease is surely still ours: not known lost, and its deadline ahead.
    /// Checked right before each read and each acknowledgement; it asks nothing of Redis,
    /// so a stalled connection cannot make it wait.
    pub fn holds(&self) -> bool {
        !self.lost.is_cancelled() && self.deadline.ahead()
    }

    /// The key and token for Redis scripts that must act only while the lease is ours.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Gives the shard back now (a graceful stop), rather than after the lease lapses.
    pub async fn release(self, conn: &mut ConnectionManager, shard: u32) {
        // Stop renewing first, so the keeper cannot race the delete.
        self.keeper.abort();
        let released: redis::RedisResult<i64> = Script::new(RELEASE_LEASE)
            .key(&self.fence.key)
            .arg(&self.fence.token)
            .invoke_async(conn)
            .await;
        // Failing to release costs only time: the lease lapses after its TTL.
        if let Err(e) = released {
            tracing::warn!(shard, error = %e, "Could not release the shard lease; it lapses by itself.");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // The keeper must not renew a shard this task no longer works; aborting it at its
        // sleep or mid-script is harmless, as renewing is idempotent.
        self.keeper.abort();
    }
}

/// Renews the lease every third of `ttl` until it cannot, moving `deadline` on with each
/// renewal, then cancels `lost`.
async fn keep(
    mut conn: ConnectionManager,
    key: String,
    token: String,
    ttl: Duration,
    lost: CancellationToken,
    deadline: Deadline,
) {
    let script = Script::new(RENEW_LEASE);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let sent = Instant::now();
        // The connection has a response timeout below a third of the lease; this bound is
        // for a renewal stuck reconnecting. Either way the deadline does not wait for it.
        let result = tokio::time::timeout(
            ttl / 3,
            script
                .key(&key)
                .arg(&token)
                .arg(ttl.as_millis() as u64)
                .invoke_async::<i64>(&mut conn),
        )
        .await;
        match result {
            Ok(Ok(1)) => deadline.renewed(sent),
            // Another forwarder holds it now (ours lapsed).
            Ok(Ok(_)) => break,
            // Past the deadline it may be someone else's: stop to be safe.
            _ if !deadline.ahead() => break,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not renew a shard lease; retrying.");
            }
            Err(_) => tracing::warn!("A shard lease renewal timed out; retrying."),
        }
    }
    lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_respect_the_limit_and_come_back_when_dropped() {
        let leases = Leases::new("f", Duration::from_secs(1), 2);
        let a = leases.take_slot().expect("first slot");
        let b = leases.take_slot().expect("second slot");
        assert!(leases.take_slot().is_none(), "at the limit");
        drop(a);
        let c = leases.take_slot().expect("a dropped slot is given back");
        drop((b, c));
        assert_eq!(leases.owned.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn no_limit_means_as_many_slots_as_asked() {
        let leases = Leases::new("f", Duration::from_secs(1), 0);
        let slots: Vec<_> = (0..64).map(|_| leases.take_slot().unwrap()).collect();
        assert_eq!(leases.owned.load(Ordering::SeqCst), 64);
        drop(slots);
        assert_eq!(leases.owned.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_deadline_ends_before_the_lease_and_only_moves_forward() {
        let ttl = Duration::from_secs(10);
        let sent = Instant::now();
        let deadline = Deadline::new(ttl, sent);
        assert!(deadline.ahead());
        assert_eq!(
            *deadline.until.lock().unwrap(),
            sent + Duration::from_secs(9)
        );
        // A renewal sent before the last one (answered late) does not move it back.
        deadline.renewed(sent - Duration::from_secs(5));
        assert_eq!(
            *deadline.until.lock().unwrap(),
            sent + Duration::from_secs(9)
        );
        let expired = Deadline::new(ttl, sent - ttl);
        assert!(
            !expired.ahead(),
            "a lease sent a whole lease ago is not ours"
        );
    }

    #[test]
    fn a_lease_is_at_least_300_ms_and_tokens_differ_per_process() {
        let a = Leases::new("f", Duration::from_millis(1), 0);
        let b = Leases::new("f", Duration::from_millis(1), 0);
        assert_eq!(a.retry_interval(), Duration::from_millis(100));
        assert!(a.token.starts_with("f/"));
        assert_ne!(a.token, b.token);
    }
}
