//! The generic cell rate algorithm (GCRA), as plain arithmetic on a bucket's theoretical
//! arrival time (TAT), in microseconds. The local tier runs it in Rust ([`super::local`]);
//! the Redis script of [`super::shared`] runs the very same steps in Lua, so the two
//! agree on what a budget admits. Keeping it pure keeps it testable: no clock, no lock.

/// One budget: a sustained rate and the burst it may spend at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds one unit (a fix, a request) costs: 1 s / rate, at least 1.
    pub interval_us: u64,
    /// Units that may be spent at once.
    pub burst: u64,
}

/// What one look at a bucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Whether the cost fits now.
    pub allowed: bool,
    /// The bucket's TAT if the cost is charged (store it only when `allowed`).
    pub new_tat: u64,
    /// When refused: microseconds until the same cost would fit.
    pub wait_us: u64,
    /// Units spendable now, before this cost.
    pub remaining_before: u64,
    /// Units spendable after this cost is charged (0 when refused).
    pub remaining_after: u64,
    /// Microseconds until the bucket is full again, charged or not as `allowed` says.
    pub reset_us: u64,
}

impl Gcra {
    /// A budget of `per_sec` units per second with `burst` at once (both at least 1; a
    /// rate above a million per second counts as a million).
    pub fn new(per_sec: u64, burst: u64) -> Self {
        Self {
            interval_us: (1_000_000 / per_sec.max(1)).max(1),
            burst: burst.max(1),
        }
    }

    /// The sustained rate, in units per second.
    pub fn per_sec(&self) -> u64 {
        1_000_000 / self.interval_us
    }

    /// Whether `cost` fits in the bucket whose TAT is `tat` (0: never used) at `now`.
    /// A cost over the burst never fits (the caller refuses it apart: waiting won't help).
    pub fn look(&self, tat: u64, now: u64, cost: u64) -> Look {
        let tat = tat.max(now);
        let limit = self.burst.saturating_mul(self.interval_us);
        let new_tat = tat.saturating_add(cost.saturating_mul(self.interval_us));
        let used_before = tat - now;
        let remaining_before = limit.saturating_sub(used_before) / self.interval_us;
        if new_tat - now > limit {
            return Look {
                allowed: false,
                new_tat,
                wait_us: new_tat - now - limit,
                remaining_before,
                remaining_after: 0,
                reset_us: used_before,
            };
        }
        Look {
            allowed: true,
            new_tat,
            wait_us: 0,
            remaining_before,
            remaining_after: (limit - (new_tat - now)) / self.interval_us,
            reset_us: new_tat - now,
        }
    }

    /// Whether `cost` is over the burst: it never fits, whatever the wait.
    pub fn over_burst(&self, cost: u64) -> bool {
        cost > self.burst
    }
}

/// Whole seconds a client waits for `us` microseconds, rounded up (at least 1: a
/// Retry-After of 0 invites an immediate retry that fails again).
pub fn retry_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000).max(1)
}

/// Whole seconds until a bucket is full for `us` microseconds, rounded up (0 when full).
pub fn reset_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_fresh_bucket_takes_its_burst_at_once_and_no_more() {
        let g = Gcra::new(10, 30);
        let first = g.look(0, 1_000, 30);
        assert!(first.allowed);
        assert_eq!((first.remaining_before, first.remaining_after), (30, 0));
        assert_eq!(first.reset_us, 3_000_000);
        let next = g.look(first.new_tat, 1_000, 1);
        assert!(!next.allowed);
        assert_eq!(next.wait_us, 100_000, "one unit back every 100 ms");
        assert_eq!(next.remaining_before, 0);
    }

    #[test]
    fn the_rate_comes_back_at_one_interval_per_unit() {
        let g = Gcra::new(10, 30);
        let tat = g.look(0, 0, 30).new_tat;
        // 1.5 s later, 15 units are back.
        let later = g.look(tat, 1_500_000, 20);
        assert!(!later.allowed);
        assert_eq!(later.remaining_before, 15);
        assert_eq!(later.wait_us, 500_000);
        assert!(g.look(tat, 1_500_000, 15).allowed);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_secs(0), 1);
        assert_eq!(retry_secs(1), 1);
        assert_eq!(retry_secs(1_000_000), 1);
        assert_eq!(retry_secs(1_000_001), 2);
        assert_eq!(reset_secs(0), 0);
        assert_eq!(reset_secs(2_000_000), 2);
    }

    proptest! {
        /// Whatever is offered, what a bucket admits over a span is at most its burst
        /// plus the rate times the span; and what it refuses passes after `wait_us`.
        #[test]
        fn admitted_units_never_exceed_burst_plus_rate_times_time(
            per_sec in 1u64..100_000,
            burst in 1u64..100_000,
            offers in proptest::collection::vec((0u64..50_000, 1u64..2_000), 1..200),
        ) {
            let g = Gcra::new(per_sec, burst);
            let (mut tat, mut now, mut admitted) = (0u64, 1u64, 0u64);
            for (gap, cost) in offers {
                now += gap;
                let look = g.look(tat, now, cost);
                if look.allowed {
                    tat = look.new_tat;
                    admitted += cost;
                } else if !g.over_burst(cost) {
                    prop_assert!(g.look(tat, now + look.wait_us, cost).allowed);
                    prop_assert!(look.remaining_before < cost);
                }
            }
            let bound = burst + (now - 1) / g.interval_us;
            prop_assert!(admitted <= bound, "admitted {} > {}", admitted, bound);
        }

        /// Remaining plus what the cost takes is what was there before.
        #[test]
        fn remaining_after_is_remaining_before_less_the_cost(
            per_sec in 1u64..1_000_000,
            burst in 1u64..1_000_000,
            used in 0u64..1_000_000,
            cost in 1u64..1_000,
        ) {
            let g = Gcra::new(per_sec, burst);
            let now = 10_000_000_000u64;
            let tat = now + used.min(burst) * g.interval_us;
            let look = g.look(tat, now, cost);
            if look.allowed {
                prop_assert_eq!(look.remaining_after + cost, look.remaining_before);
            }
        }
    }
}
