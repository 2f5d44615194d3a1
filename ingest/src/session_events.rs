//! Session events: `started` and `stopped` go from PostgreSQL's outbox to the session's
//! buffer shard, so they reach Kafka in order with the session's fixes, and none is lost.
//!
//! A session change writes its event into the outbox in the same statement
//! (`locus_session::SessionStore`). Two paths append outbox rows to the buffer:
//!
//! - The request or sweep that made the change publishes its sessions' rows itself, right
//!   after the commit ([`SessionEventPublisher::flush`]), and answers once Redis confirmed
//!   them: one Redis round trip, as before the outbox, and a device that got its `201`
//!   finds its `started` buffered before its first batch.
//! - A batch whose session's start the buffer has no mark of (its flush failed and the
//!   relay has not retried yet) publishes that session's rows itself before it is
//!   appended ([`SessionEventPublisher::try_flush`]), so it never lands ahead of `started`.
//! - The relay ([`Relay`], a task of every API process) publishes what is left: at once when
//!   a flush failed (it is woken), and every scan interval for rows that a crash, a client
//!   gone mid-request or another replica left behind. A failed attempt is retried with a
//!   growing pause, for as long as it takes: rows are never given up.
//!
//! A row is deleted only after Redis confirmed its append, and the append is idempotent by
//! event id ([`Buffer::append_event`]), so a crash between the two buffers the event once.
//! Rows are appended in id order and a publisher stops at its first failure, so a
//! session's `stopped` never overtakes its `started` (the outbox's claims see to that across
//! replicas).

use std::sync::Arc;
use std::time::Duration;

use locus_session::{ClaimedEvents, SessionError, SessionStore};
use locus_wire::SessionId;
use locus_wire::record::SessionEventKind;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, BufferError};
use crate::events;

/// Longest wait for one append: Redis calls have no timeout of their own, and a publisher
/// holds its rows locked while it waits (a request's flush waits behind it).
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Rows one relay claim takes.
const CLAIM: i64 = 100;
/// First pause of the relay after a failed attempt; it doubles up to the scan interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Why outbox rows could not be published now (they stay in the outbox).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Redis refused or failed the append.
    #[error("buffer: {0}")]
    Buffer(#[from] BufferError),
    /// Redis did not answer within [`APPEND_TIMEOUT`].
    #[error("buffer: no answer within {}s", APPEND_TIMEOUT.as_secs())]
    Timeout,
    /// PostgreSQL failed to hand out or delete the rows.
    #[error("outbox: {0}")]
    Outbox(#[from] SessionError),
}

/// Publishes outbox rows to the buffer; cheap to clone (one per request).
#[derive(Clone)]
pub struct SessionEventPublisher {
    store: SessionStore,
    buffer: Buffer,
    wake: Arc<Notify>,
}

impl SessionEventPublisher {
    /// A publisher from `store`'s outbox into `buffer`.
    pub fn new(store: SessionStore, buffer: Buffer) -> Self {
        Self {
            store,
            buffer,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Publishes the outbox rows of `sessions` (just changed by the caller) and returns once
    /// Redis confirmed them, or once that failed: then the relay is woken and takes over, so
    /// the caller's answer does not depend on Redis (PostgreSQL holds the change and its
    /// event). Waits for a relay that holds some of these rows to finish with them.
    pub async fn flush(&self, sessions: &[SessionId]) {
        let _ = self.try_flush(sessions).await;
    }

    /// [`Self::flush`], saying whether every row of `sessions` is now in the buffer: for a
    /// batch that must not be buffered before its session's start.
    pub async fn try_flush(&self, sessions: &[SessionId]) -> Result<(), PublishError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let attempt = async {
            let claim = self.store.claim_events_of(sessions).await?;
            publish(&self.buffer, claim).await
        };
        // Bounded so a hung PostgreSQL or Redis cannot hold the request; dropping the claim
        // releases its rows for the relay.
        let result = match tokio::time::timeout(2 * APPEND_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::Timeout),
        };
        if let Err(e) = &result {
            events::SessionEventPublishFailed { error: e }.emit();
            self.wake.notify_one();
        }
        result.map(|_| ())
    }

    /// Claims and publishes one relay batch of waiting rows; returns how many were
    /// published (0: the outbox has nothing another publisher does not hold).
    pub async fn publish_waiting(&self) -> Result<usize, PublishError> {
        let claim = self.store.claim_events(CLAIM).await?;
        publish(&self.buffer, claim).await
    }

    /// The relay of this publisher, scanning the outbox every `every`.
    pub fn relay(&self, every: Duration) -> Relay {
        Relay {
            publisher: self.clone(),
            every: every.max(Duration::from_millis(10)),
        }
    }
}

/// Appends `claim`'s events in order, stopping at the first failure so nothing of a
/// session goes in after an event of it that did not; then deletes the confirmed rows.
async fn publish(buffer: &Buffer, claim: ClaimedEvents) -> Result<usize, PublishError> {
    let mut published = Vec::with_capacity(claim.events().len());
    let mut failure = None;
    for queued in claim.events() {
        match tokio::time::timeout(APPEND_TIMEOUT, buffer.append_event(&queued.event)).await {
            Ok(Ok(appended)) => {
                if appended {
                    events::SessionEventBuffered {
                        kind: match queued.event.kind {
                            SessionEventKind::Started => "started",
                            SessionEventKind::Stopped => "stopped",
                        },
                    }
                    .emit();
                }
                published.push(queued.id);
            }
            Ok(Err(e)) => {
                failure = Some(e.into());
                break;
            }
            Err(_) => {
                failure = Some(PublishError::Timeout);
                break;
            }
        }
    }
    // If this fails, the confirmed rows stay and are published again: once in Redis still.
    claim.finish(&published).await?;
    failure.map_or(Ok(published.len()), Err)
}

/// The task that publishes what requests and sweeps left in the outbox.
pub struct Relay {
    publisher: SessionEventPublisher,
    every: Duration,
}

impl Relay {
    /// Publishes until `shutdown`, then for at most `grace` more to empty the outbox of what
    /// it can: rows still there after that wait for the next process, nothing is lost.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let wake = self.publisher.wake.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failed = self.drain().await.is_err();
            self.report_backlog().await;
            if failed {
                // Woken or not, the next try waits: a flush that failed on the same outage
                // would only wake it into another failure.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(self.every);
            } else {
                backoff = FIRST_BACKOFF;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.every) => {}
                }
            }
        }
        // Requests have stopped: what they left is published while the grace period lasts.
        let deadline = Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.drain()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => {
                    tokio::time::sleep_until(deadline.min(Instant::now() + backoff)).await
                }
                Err(_) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.report_backlog().await;
    }

    /// Publishes claim after claim until the outbox has nothing left for this relay.
    async fn drain(&self) -> Result<(), PublishError> {
        loop {
            match self.publisher.publish_waiting().await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    events::SessionEventPublishFailed { error: &e }.emit();
                    return Err(e);
                }
            }
        }
    }

    async fn report_backlog(&self) {
        match self.publisher.store.outbox_backlog().await {
            Ok(backlog) => events::SessionEventOutbox {
                rows: backlog.rows,
                oldest_age_secs: backlog.oldest_age_secs,
            }
            .emit(),
            Err(e) => tracing::debug!(error = %e, "Could not measure the session event outbox."),
        }
    }
}
