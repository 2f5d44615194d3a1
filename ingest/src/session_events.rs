//! Session events: `started` and `stopped` go through the session's buffer shard, so they
//! reach Kafka in order with the session's fixes.

use std::time::Duration;

use locus_session::Session;
use locus_wire::buffer::BufferEntry;
use locus_wire::record::{SCHEMA_VERSION, SessionEvent, SessionEventKind};

use crate::buffer::Buffer;
use crate::events;

/// Attempts before an event is given up (50 ms, 200 ms, 800 ms apart: about a second).
const ATTEMPTS: u32 = 4;
/// Wait before the second attempt; it grows fourfold.
const FIRST_RETRY: Duration = Duration::from_millis(50);

/// Buffers session events.
#[derive(Clone)]
pub struct SessionEventPublisher {
    buffer: Buffer,
}

impl SessionEventPublisher {
    /// A publisher into `buffer`.
    pub fn new(buffer: Buffer) -> Self {
        Self { buffer }
    }

    /// Buffers a `kind` event of `session`. Retries a few times: the session row already
    /// changed, and a lost event would leave Kafka telling a different story than
    /// PostgreSQL. Never fails the request: the event is counted as lost instead.
    pub async fn publish(&self, kind: SessionEventKind, session: &Session) {
        let event = BufferEntry::SessionEvent(SessionEvent {
            schema_version: SCHEMA_VERSION,
            event_id: uuid::Uuid::now_v7(),
            kind,
            tenant_id: session.tenant_id.clone(),
            session_id: session.id,
            device_id: session.device_id.clone(),
            at: session.stopped_at.unwrap_or(session.started_at),
            reason: session.stop_reason,
        });
        let label = match kind {
            SessionEventKind::Started => "started",
            SessionEventKind::Stopped => "stopped",
        };
        let mut delay = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match self.buffer.append_event(&event).await {
                Ok(()) => return events::SessionEventBuffered { kind: label }.emit(),
                Err(e) if attempt == ATTEMPTS => {
                    return events::SessionEventLost { error: &e }.emit();
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
    }
}
