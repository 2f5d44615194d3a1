//! The outbox of session events: rows that a session change wrote in its own statement
//! (see `store.rs`), read back by the publisher that appends them to the Redis buffer.
//!
//! The contract for publishers: claim rows, append each to the buffer in the order given,
//! then [`ClaimedEvents::finish`] with the ids that Redis confirmed, which deletes them. A
//! publisher that crashes (or drops the claim) before `finish` deletes nothing; the rows are
//! claimed again and published again, so the append must be idempotent by event id.
//!
//! Order: a row is handed out only when no earlier row of its session is left, and claims
//! hold their rows locked until `finish`. So a session's `stopped` is never appended while
//! its `started` is still waiting, even with several publishers (one per ingest replica).

use chrono::{DateTime, Utc};
use locus_wire::api::StopReason;
use locus_wire::record::{SCHEMA_VERSION, SessionEvent, SessionEventKind};
use locus_wire::{DeviceId, SessionId, TenantId};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::scope::{Scope, begin};
use crate::{SessionError, SessionStore};

/// A session event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// The row's id: the order of publication.
    pub id: i64,
    /// The event, with the id it keeps on every publication.
    pub event: SessionEvent,
}

/// Outbox rows held by one publisher: locked (in an open transaction) until
/// [`ClaimedEvents::finish`]. Dropping it unfinished releases them for the next claim.
pub struct ClaimedEvents {
    tx: Transaction<'static, Postgres>,
    events: Vec<QueuedEvent>,
}

impl ClaimedEvents {
    /// The claimed events, oldest first: publish them in this order.
    pub fn events(&self) -> &[QueuedEvent] {
        &self.events
    }

    /// Deletes the rows in `published` (those Redis confirmed) and releases the rest.
    pub async fn finish(mut self, published: &[i64]) -> Result<(), SessionError> {
        if !published.is_empty() {
            sqlx::query("DELETE FROM session_event_outbox WHERE id = ANY($1)")
                .bind(published)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// How far the outbox is behind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    /// Rows waiting to be published.
    pub rows: i64,
    /// Age of the oldest of them, in seconds (0 when there are none).
    pub oldest_age_secs: f64,
}

const OUTBOX_COLUMNS: &str = "o.id, o.event_id, o.session_id, o.tenant_id, o.device_id, o.kind, \
                              o.stop_reason, o.occurred_at";

fn queued_event(row: &PgRow) -> Result<QueuedEvent, sqlx::Error> {
    let decode = |col: &str, e: locus_wire::IdError| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: Box::new(e),
    };
    let kind: String = row.try_get("kind")?;
    let reason: Option<String> = row.try_get("stop_reason")?;
    Ok(QueuedEvent {
        id: row.try_get("id")?,
        event: SessionEvent {
            schema_version: SCHEMA_VERSION,
            event_id: row.try_get::<Uuid, _>("event_id")?,
            kind: if kind == "started" {
                SessionEventKind::Started
            } else {
                SessionEventKind::Stopped
            },
            tenant_id: TenantId::parse(row.try_get::<String, _>("tenant_id")?)
                .map_err(|e| decode("tenant_id", e))?,
            session_id: SessionId(row.try_get::<Uuid, _>("session_id")?),
            device_id: DeviceId::parse(row.try_get::<String, _>("device_id")?)
                .map_err(|e| decode("device_id", e))?,
            at: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
            reason: reason.as_deref().and_then(StopReason::parse),
        },
    })
}

impl SessionStore {
    /// Claims up to `limit` outbox rows that no other publisher holds, oldest first, each
    /// only if no earlier row of its session is left (held elsewhere or not): so a later
    /// event of a session never overtakes an earlier one. Never waits for other claims.
    pub async fn claim_events(&self, limit: i64) -> Result<ClaimedEvents, SessionError> {
        // Publishing spans tenants (ingest wrote every row itself): system scope.
        let mut tx = begin(self.pool(), Scope::System).await?;
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM session_event_outbox o \
             WHERE NOT EXISTS (SELECT 1 FROM session_event_outbox e \
                               WHERE e.session_id = o.session_id AND e.id < o.id) \
             ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let events = rows.iter().map(queued_event).collect::<Result<_, _>>()?;
        Ok(ClaimedEvents { tx, events })
    }

    /// Claims every outbox row of `sessions`, oldest first, waiting for a publisher that
    /// holds some of them to finish (then those are gone, or back and claimed here). For the
    /// request that just changed these sessions, so that it answers after their events are
    /// buffered.
    pub async fn claim_events_of(
        &self,
        sessions: &[SessionId],
    ) -> Result<ClaimedEvents, SessionError> {
        let ids: Vec<Uuid> = sessions.iter().map(|s| s.0).collect();
        // Publishing spans tenants (ingest wrote every row itself): system scope.
        let mut tx = begin(self.pool(), Scope::System).await?;
        // Rows are locked in id order, as every claim takes them, so two claims on the same
        // sessions cannot deadlock.
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM session_event_outbox o \
             WHERE o.session_id = ANY($1) ORDER BY o.id FOR UPDATE OF o"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let events = rows.iter().map(queued_event).collect::<Result<_, _>>()?;
        Ok(ClaimedEvents { tx, events })
    }

    /// How many rows wait in the outbox, and for how long the oldest has.
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, SessionError> {
        let row = sqlx::query(
            "SELECT count(*) AS n, \
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age \
             FROM session_event_outbox",
        )
        .fetch_one(&mut *begin(self.pool(), Scope::System).await?)
        .await?;
        Ok(OutboxBacklog {
            rows: row.try_get("n")?,
            oldest_age_secs: row.try_get("age")?,
        })
    }
}
