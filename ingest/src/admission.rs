//! Admission: per-device and per-tenant rate limits in fixes per second (governor, GCRA).
//! The cost of a batch is its number of fixes, so a device cannot dodge the limit by
//! posting bigger batches.
//!
//! Limits are per process: with N ingest replicas behind a balancer, each replica admits
//! its share, so configure `rate / N` (docs/configuration.md says so).

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use locus_wire::{DeviceId, TenantId};

use crate::config::Config;

/// Why admission refused a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Over the rate: the same batch passes after `retry_after_secs`.
    #[error("the {scope} is over its rate; retry after {retry_after_secs} s")]
    RateLimited {
        /// Whose limit: `device` or `tenant`.
        scope: &'static str,
        /// Seconds until the batch would pass.
        retry_after_secs: u64,
    },
    /// The batch costs more than the burst: it never passes, whatever the wait.
    #[error("the batch has more fixes than the {scope} burst")]
    OverBurst {
        /// Whose burst: `device` or `tenant`.
        scope: &'static str,
    },
}

/// The rate limiters.
pub struct Admission {
    device: DefaultKeyedRateLimiter<(TenantId, DeviceId)>,
    tenant: DefaultKeyedRateLimiter<TenantId>,
    clock: DefaultClock,
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    let per_sec = NonZeroU32::new(per_sec.max(1)).expect("at least 1");
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Quota::per_second(per_sec).allow_burst(burst)
}

impl Admission {
    /// Limiters configured by `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            device: DefaultKeyedRateLimiter::keyed(quota(
                config.rates.device_fixes_per_sec,
                config.rates.device_burst,
            )),
            tenant: DefaultKeyedRateLimiter::keyed(quota(
                config.rates.tenant_fixes_per_sec,
                config.rates.tenant_burst,
            )),
            clock: DefaultClock::default(),
        }
    }

    /// Admits `fixes` fixes from `device` of `tenant`, or says when to come back.
    pub fn admit(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        fixes: usize,
    ) -> Result<(), AdmissionError> {
        let Some(n) = NonZeroU32::new(u32::try_from(fixes).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        self.check(
            "device",
            self.device
                .check_key_n(&(tenant.clone(), device.clone()), n),
        )?;
        self.check("tenant", self.tenant.check_key_n(tenant, n))
    }

    fn check<P>(
        &self,
        scope: &'static str,
        outcome: Result<Result<(), governor::NotUntil<P>>, governor::InsufficientCapacity>,
    ) -> Result<(), AdmissionError>
    where
        P: governor::clock::Reference,
        DefaultClock: Clock<Instant = P>,
    {
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                crate::events::AdmissionRefused { reason: scope }.emit();
                let wait = not_until.wait_time_from(self.clock.now());
                Err(AdmissionError::RateLimited {
                    scope,
                    retry_after_secs: wait.as_secs() + 1,
                })
            }
            Err(_) => Err(AdmissionError::OverBurst { scope }),
        }
    }

    /// Forgets keys idle long enough to be back at full burst, bounding memory.
    pub fn forget_idle(&self) {
        self.device.retain_recent();
        self.tenant.retain_recent();
    }
}
