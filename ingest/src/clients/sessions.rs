//! The implicit session of a client app's device: the session its fixes go to, started on
//! its first fix and rolled over after `LOCUS_CLIENT_SESSION_IDLE_SECS` without one.
//!
//! The hot path is in memory: this replica remembers device -> session, and a device whose
//! last request here is younger than the idle time posts to the remembered session with no
//! PostgreSQL round trip. The memory is kept honest by three things:
//!
//! - a stop of the session anywhere (an admin, an expiry, another replica's rollover) sets
//!   the buffer's closed mark, so the next batch for it is refused (`Append::Closed`, or
//!   the pipeline's session read); the route then forgets the entry and resolves once;
//! - every tenth of the idle time per device, a request reports its device's activity to
//!   PostgreSQL (`implicit_sessions.last_seen_at`, in the background, off the request's
//!   path), and learns there whether another replica closed the row meanwhile;
//! - a device quiet here for the idle time is resolved through PostgreSQL, which knows
//!   about its requests on the other replicas.
//!
//! Resolving (PostgreSQL, [`locus_session::implicit`]) agrees with the other replicas on
//! the row: an open session that took a request within the idle time is kept; an idle one
//! is closed by a conditional UPDATE (one replica wins) and stopped through the session
//! store, so its stop event is written like any stop; a session stopped otherwise has its
//! row closed; then a new session is started through the store (its start event too)
//! and made the device's with INSERT ... ON CONFLICT DO NOTHING: of racing replicas, the
//! first row wins and the others read it. Every change writes its outbox event and is
//! flushed to the buffer before the fix is appended, so the fix lands after `started`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use locus_session::SessionError;
use locus_session::implicit::{CloseReason, ImplicitSessions};
use locus_wire::api::StopReason;
use locus_wire::{DeviceId, SessionId, TenantId};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::events;
use crate::routes::AppState;

/// Most attempts of one resolve: each one ends a stale row or loses a race, so two or
/// three are the most a real sequence of events needs.
const MAX_ROUNDS: usize = 5;

/// What this replica remembers of a device's implicit session.
#[derive(Debug, Clone, Copy)]
struct Entry {
    session: SessionId,
    /// The device's last request through this replica.
    last_request: Instant,
    /// When this replica last reported the device's activity to PostgreSQL.
    reported: Instant,
}

/// Device -> implicit session, for the devices this replica served recently.
#[derive(Debug)]
pub struct SessionCache {
    idle: Duration,
    max: usize,
    entries: Mutex<HashMap<(TenantId, DeviceId), Entry>>,
}

impl SessionCache {
    /// A cache for sessions rolling over after `idle`, holding at most `max` devices.
    pub fn new(idle: Duration, max: usize) -> Self {
        Self {
            idle,
            max: max.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The idle time of a rollover.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, DeviceId), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered session of the device if it made a request here within the idle
    /// time; notes this request, and says whether its activity is due to be reported.
    fn hit(&self, key: &(TenantId, DeviceId), now: Instant) -> Option<(SessionId, bool)> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        if now.saturating_duration_since(entry.last_request) > self.idle {
            return None;
        }
        entry.last_request = now;
        let due = now.saturating_duration_since(entry.reported) >= self.idle / 10;
        if due {
            entry.reported = now;
        }
        Some((entry.session, due))
    }

    /// Remembers `session` as the device's, reported to PostgreSQL just now.
    fn remember(&self, key: (TenantId, DeviceId), session: SessionId, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= self.max && !entries.contains_key(&key) {
            // Past the bound, the quiet go first, then an arbitrary half: they are
            // resolved through PostgreSQL again on their next request.
            let idle = self.idle;
            entries.retain(|_, e| now.saturating_duration_since(e.last_request) <= idle);
            if entries.len() >= self.max {
                let mut keep = false;
                entries.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
        }
        entries.insert(
            key,
            Entry {
                session,
                last_request: now,
                reported: now,
            },
        );
    }

    /// Forgets the device's entry if it still names `session`.
    fn forget(&self, key: &(TenantId, DeviceId), session: SessionId) {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|e| e.session == session) {
            entries.remove(key);
        }
    }
}

fn key(caller: &Caller) -> (TenantId, DeviceId) {
    (caller.tenant.clone(), caller.subject.clone())
}

/// The session `caller`'s device posts to now: remembered, else resolved.
pub async fn session_for(state: &AppState, caller: &Caller) -> Result<SessionId, ApiError> {
    let cache = &state.clients.sessions;
    let key = key(caller);
    if let Some((session, report)) = cache.hit(&key, Instant::now()) {
        if report {
            report_activity(state, key, session);
        }
        return Ok(session);
    }
    resolve(state, caller).await
}

/// After the pipeline found `stopped` closed: forgets it and resolves once. `None` when
/// the resolve names the same session again (its stop is not visible in PostgreSQL yet):
/// the caller answers with the pipeline's refusal.
pub async fn after_stop(
    state: &AppState,
    caller: &Caller,
    stopped: SessionId,
) -> Result<Option<SessionId>, ApiError> {
    state.clients.sessions.forget(&key(caller), stopped);
    events::ImplicitSessionChanged {
        change: "reresolved",
    }
    .emit();
    let session = resolve(state, caller).await?;
    Ok((session != stopped).then_some(session))
}

/// Reports the device's activity in the background; a closed row (the session rolled
/// over or ended elsewhere) makes this replica forget the entry.
fn report_activity(state: &AppState, key: (TenantId, DeviceId), session: SessionId) {
    let state = state.clone();
    tokio::spawn(async move {
        let rows = ImplicitSessions::new(state.store.pool().clone());
        match rows.touch(&key.0, session).await {
            Ok(true) => {}
            Ok(false) => state.clients.sessions.forget(&key, session),
            Err(e) => {
                tracing::warn!(error = %e, "Could not report a client device's activity; the next report retries.")
            }
        }
    });
}

/// The device's implicit session through PostgreSQL (see the module documentation).
async fn resolve(state: &AppState, caller: &Caller) -> Result<SessionId, ApiError> {
    let rows = ImplicitSessions::new(state.store.pool().clone());
    let cache = &state.clients.sessions;
    let idle = cache.idle();
    let (tenant, device) = (&caller.tenant, &caller.subject);
    for _ in 0..MAX_ROUNDS {
        match rows.current(tenant, device, idle).await? {
            Some(row) if row.open && !row.idle => {
                // This request is the device's activity: reported now, as remembered.
                rows.touch(tenant, row.session_id).await?;
                cache.remember(key(caller), row.session_id, Instant::now());
                return Ok(row.session_id);
            }
            Some(row) if row.open => {
                if rows
                    .close(tenant, row.session_id, CloseReason::Idle, idle)
                    .await?
                {
                    stop(state, tenant, row.session_id).await?;
                    events::ImplicitSessionChanged {
                        change: "rolled_over",
                    }
                    .emit();
                }
            }
            // Stopped (an expiry, an admin, the device itself): its row goes too.
            Some(row) => {
                rows.close(tenant, row.session_id, CloseReason::Ended, idle)
                    .await?;
            }
            None => match start(state, caller).await {
                Ok(session) => {
                    rows.adopt(tenant, device, session).await?;
                    events::ImplicitSessionChanged { change: "started" }.emit();
                }
                // Another replica started one first, or the device started one itself:
                // it becomes the implicit one, unless it is an implicit session whose
                // row was closed for a rollover that did not get to stop it (a crash
                // between the two steps): then it is stopped now.
                Err(ApiError::SessionAlreadyActive(active)) => {
                    if rows.is_closed(tenant, active).await? == Some(true) {
                        stop(state, tenant, active).await?;
                    } else {
                        rows.adopt(tenant, device, active).await?;
                    }
                }
                Err(e) => return Err(e),
            },
        }
    }
    Err(ApiError::Internal(format!(
        "the implicit session of a device did not settle in {MAX_ROUNDS} rounds"
    )))
}

/// Starts a session for the device as `POST /v1/sessions` does (the tenant's cap, the
/// buffer's room, the store's start and its events), for the longest duration allowed.
async fn start(state: &AppState, caller: &Caller) -> Result<SessionId, ApiError> {
    crate::routes::check_active_cap(state, caller).await?;
    crate::routes::check_buffer_room(state, None).await?;
    let secs = state.config.sessions.max_duration_secs;
    let outcome = state
        .store
        .start(
            &caller.tenant,
            &caller.subject,
            chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)),
        )
        .await?;
    let changed: Vec<_> = outcome
        .expired
        .iter()
        .map(|s| s.id)
        .chain([outcome.session.id])
        .collect();
    state.session_events.flush(&changed).await;
    tracing::info!(session = %outcome.session.id, "Implicit session started.");
    Ok(outcome.session.id)
}

/// Stops `session` as `POST /v1/sessions/{id}/stop` does (its event flushed); already
/// stopped is no error. The stored reason is `expired`: the session ran past its idle
/// bound.
async fn stop(state: &AppState, tenant: &TenantId, session: SessionId) -> Result<(), ApiError> {
    crate::routes::check_buffer_room(state, Some(session)).await?;
    match state.store.stop(tenant, session, StopReason::Expired).await {
        Ok(stopped) => {
            state.cache.session_read(&stopped);
            state.session_events.flush(&[stopped.id]).await;
            tracing::info!(%session, "Implicit session rolled over after its idle time.");
            Ok(())
        }
        Err(SessionError::Stopped(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (TenantId, DeviceId) {
        (
            TenantId::parse("acme").unwrap(),
            DeviceId::parse("phone").unwrap(),
        )
    }

    #[test]
    fn a_remembered_session_answers_until_the_device_is_quiet_for_the_idle_time() {
        let cache = SessionCache::new(Duration::from_secs(100), 10);
        let t0 = Instant::now();
        let s = SessionId::new();
        assert!(cache.hit(&key(), t0).is_none());
        cache.remember(key(), s, t0);
        assert_eq!(
            cache.hit(&key(), t0 + Duration::from_secs(5)),
            Some((s, false))
        );
        // A tenth of the idle time after the last report, the next request reports.
        assert_eq!(
            cache.hit(&key(), t0 + Duration::from_secs(10)),
            Some((s, true))
        );
        assert_eq!(
            cache.hit(&key(), t0 + Duration::from_secs(15)),
            Some((s, false))
        );
        // Quiet for more than the idle time: resolved through PostgreSQL.
        assert!(cache.hit(&key(), t0 + Duration::from_secs(116)).is_none());
    }

    #[test]
    fn forgetting_only_drops_the_session_named() {
        let cache = SessionCache::new(Duration::from_secs(100), 10);
        let now = Instant::now();
        let (old, new) = (SessionId::new(), SessionId::new());
        cache.remember(key(), new, now);
        cache.forget(&key(), old);
        assert_eq!(cache.hit(&key(), now).map(|h| h.0), Some(new));
        cache.forget(&key(), new);
        assert!(cache.hit(&key(), now).is_none());
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let cache = SessionCache::new(Duration::from_secs(100), 4);
        let now = Instant::now();
        for i in 0..20 {
            let k = (
                TenantId::parse("acme").unwrap(),
                DeviceId::parse(format!("d{i}")).unwrap(),
            );
            cache.remember(k, SessionId::new(), now);
            assert!(cache.lock().len() <= 4);
        }
    }
}
