//! The expiry sweeper of the API role: stops sessions past their maximum duration and
//! publishes their stop events (queued in the outbox with each expiry); also trims idle
//! rate-limit keys.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use locus_session::SessionStore;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::session_events::SessionEventPublisher;

/// Most sessions stopped in one sweep; the rest wait for the next tick.
const BATCH: i64 = 500;
/// How often idle rate-limit keys are forgotten.
const TRIM_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// What the sweeper works on.
pub struct Sweeper {
    /// Sessions to expire.
    pub store: SessionStore,
    /// Where their stop events go.
    pub session_events: SessionEventPublisher,
    /// Rate limiters to trim.
    pub admission: Arc<Admission>,
    /// Time between sweeps (at least 10 ms).
    pub every: Duration,
}

impl Sweeper {
    /// Sweeps every `every` until `shutdown`. A sweep in progress finishes first, so its
    /// events are usually buffered before the process stops; those that are not wait in the
    /// outbox for a relay.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_trim = Utc::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Each expiry and its stop event commit together (the outbox), so a crash from
            // here on loses no event: what the flush below does not publish, a relay does.
            match self.store.expire_due(BATCH).await {
                Ok(expired) => {
                    for session in &expired {
                        tracing::info!(session = %session.id, tenant = %session.tenant_id, "Session expired.");
                    }
                    let ids: Vec<_> = expired.iter().map(|s| s.id).collect();
                    self.session_events.flush(&ids).await;
                }
                Err(e) => tracing::warn!(error = %e, "Expiry sweep failed; will retry."),
            }
            if Utc::now() - last_trim > TRIM_EVERY {
                self.admission.forget_idle();
                last_trim = Utc::now();
            }
        }
    }
}
