//! Implicit sessions (table `implicit_sessions`): which session a client app's device posts
//! to, when the app cannot start one itself. One open row per device (a partial unique
//! index); the caller (ingest's client routes) starts and stops the sessions themselves
//! through [`crate::SessionStore`], so their events go through the outbox like any other,
//! and uses these queries to agree with the other replicas on which session is the
//! device's.
//!
//! Every query runs in the device's tenant scope and is one statement: the row is the
//! point of agreement, and each change to it is a conditional UPDATE or an INSERT ON
//! CONFLICT, so two replicas acting on one device at once cannot both win.

use std::time::Duration;

use locus_wire::{DeviceId, SessionId, TenantId};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::SessionError;
use crate::scope::{Scope, begin};

/// The open implicit session of a device, as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenImplicit {
    /// The session.
    pub session_id: SessionId,
    /// No client request was reported for the idle time: the session is due to roll over.
    pub idle: bool,
    /// The session takes fixes (active and not past its expiry).
    pub open: bool,
}

/// Why an implicit session's row was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No fix for the idle time: rolled over.
    Idle,
    /// Its session stopped for another reason (expired, stopped by an admin or the device).
    Ended,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Ended => "ended",
        }
    }
}

/// The queries on `implicit_sessions`.
#[derive(Debug, Clone)]
pub struct ImplicitSessions {
    pool: PgPool,
}

/// Milliseconds of `d` for an interval parameter.
fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

impl ImplicitSessions {
    /// The queries over `pool` (migrated with [`crate::migrate`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The device's open implicit session, if it has one; `idle` says whether its last
    /// reported request is older than `idle`.
    pub async fn current(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        idle: Duration,
    ) -> Result<Option<OpenImplicit>, SessionError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let row = sqlx::query(
            "SELECT i.session_id, \
                    i.last_seen_at < now() - $3 * interval '1 millisecond' AS idle, \
                    (s.status = 'active' AND s.expires_at > now()) AS open \
             FROM implicit_sessions i JOIN sessions s ON s.id = i.session_id \
             WHERE i.tenant_id = $1 AND i.device_id = $2 AND i.closed_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(device.as_str())
        .bind(millis(idle))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|row| {
            Ok(OpenImplicit {
                session_id: SessionId(row.try_get::<Uuid, _>("session_id")?),
                idle: row.try_get("idle")?,
                open: row.try_get("open")?,
            })
        })
        .transpose()
        .map_err(SessionError::Database)
    }

    /// Makes `session` the device's open implicit session unless it has one already
    /// (another replica's, say); true when this call made it so.
    pub async fn adopt(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        session: SessionId,
    ) -> Result<bool, SessionError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let inserted = sqlx::query(
            "INSERT INTO implicit_sessions (session_id, tenant_id, device_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(session.0)
        .bind(tenant.as_str())
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Closes `session`'s row if it is still open and, for [`CloseReason::Idle`], still
    /// idle past `idle` (a request reported in between makes the close lose); true when
    /// this call closed it: the caller then stops the session.
    pub async fn close(
        &self,
        tenant: &TenantId,
        session: SessionId,
        reason: CloseReason,
        idle: Duration,
    ) -> Result<bool, SessionError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let closed = sqlx::query(
            "UPDATE implicit_sessions SET closed_at = now(), close_reason = $3 \
             WHERE session_id = $1 AND tenant_id = $2 AND closed_at IS NULL \
               AND ($3 <> 'idle' OR last_seen_at < now() - $4 * interval '1 millisecond')",
        )
        .bind(session.0)
        .bind(tenant.as_str())
        .bind(reason.as_str())
        .bind(millis(idle))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(closed == 1)
    }

    /// Whether `session` is an implicit session whose row is closed: `None` when it is no
    /// implicit session at all (a session the device started itself).
    pub async fn is_closed(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<bool>, SessionError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let closed: Option<bool> = sqlx::query_scalar(
            "SELECT closed_at IS NOT NULL FROM implicit_sessions WHERE session_id = $1 AND tenant_id = $2",
        )
        .bind(session.0)
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// Reports a client request of `session`'s device now; false when the row is closed
    /// (the session rolled over or ended on another replica).
    pub async fn touch(&self, tenant: &TenantId, session: SessionId) -> Result<bool, SessionError> {
        let mut tx = begin(&self.pool, Scope::Tenant(tenant)).await?;
        let touched = sqlx::query(
            "UPDATE implicit_sessions SET last_seen_at = now() \
             WHERE session_id = $1 AND tenant_id = $2 AND closed_at IS NULL",
        )
        .bind(session.0)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(touched == 1)
    }
}
