//! Session and credential lookups of the request path, served from this replica's memory
//! for a bounded time, with PostgreSQL behind them.
//!
//! Sessions: a row read from PostgreSQL answers the batches of its session for
//! `LOCUS_SESSION_CACHE_SECS` without another read (a one-point client posts every few
//! seconds, and a PostgreSQL transaction per request cost more than the rest of the request
//! together). What can change in a row is its status, and the row is not the truth for
//! that: a stop (through any replica, or the sweeper's expiry) puts the session's stop
//! event and its closed mark into the Redis buffer, and the append script refuses every
//! batch after the mark ([`crate::buffer::Append::Closed`]), so a stop reaches every
//! replica as soon as its event is buffered, whatever the cache holds. Expiry is checked
//! here on the cached `expires_at`; a row past it is read again, so that PostgreSQL writes
//! the expiry. Past the bound, the row is read again; while PostgreSQL is away an entry
//! within the bound still answers, then 503 `database_unavailable`.
//!
//! Credentials: [`exchange`] (the token route) goes to PostgreSQL first and answers from the
//! cache only while PostgreSQL is away; [`credential`] (for routes that authenticate every
//! request with a credential) answers from the cache first. Either way a device revoked on
//! any replica is refused from the revocation list, reloaded every
//! `LOCUS_REVOCATION_REFRESH_MS`; a credential revoked alone (or a tenant disabled) can go on
//! working from an entry for `LOCUS_CREDENTIAL_CACHE_SECS`. Authorization never fails
//! open: an entry answers only the tenant (and, for a device, the device) of its key and
//! row, a revoked device is never answered from it, and no entry (or an entry past its
//! bound) with PostgreSQL away is a 503, not a pass.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use locus_identity::Principal;
use locus_session::{Registry, RegistryError, Session, SessionError};
use locus_wire::api::{SessionStatus, StopReason};
use locus_wire::{DeviceId, SessionId, TenantId};

use crate::auth::{Caller, Role};
use crate::config::CacheSettings;
use crate::error::{ApiError, ErrorCode};
use crate::events;
use crate::routes::AppState;

/// At most `max` values by key, each with the time it was stored; the oldest go first.
#[derive(Debug)]
struct Bounded<K, V> {
    max: usize,
    inner: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, (Instant, V)>,
    /// Keys in the order they were stored; a key stored again has an older, dead
    /// position here too (its instant no longer matches the map's), skipped when popped.
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone, V: Clone> Bounded<K, V> {
    fn new(max: usize) -> Self {
        Self {
            max,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value` under `key` as read now, dropping what is past `ttl` and the oldest
    /// entries beyond the most.
    fn put(&self, key: K, value: V, ttl: Duration) {
        if self.max == 0 || ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut e = self.lock();
        e.map.insert(key.clone(), (now, value));
        e.order.push_back((key, now));
        // The order queue holds at most twice the entries (dead positions included), so
        // memory stays bounded when the same keys are stored over and over.
        while e.map.len() > self.max
            || e.order.len() > 2 * self.max
            || e.order
                .front()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) > ttl)
        {
            let Some((key, at)) = e.order.pop_front() else {
                break;
            };
            if e.map.get(&key).is_some_and(|(stored, _)| *stored == at) {
                e.map.remove(&key);
            }
        }
    }

    fn remove(&self, key: &K) {
        self.lock().map.remove(key);
    }

    /// The value under `key` with its age, if any.
    fn get(&self, key: &K) -> Option<(Duration, V)> {
        let e = self.lock();
        e.map
            .get(key)
            .map(|(at, value)| (at.elapsed(), value.clone()))
    }
}

/// A cached answer, or why there is none.
enum Cached<V> {
    Fresh(V),
    Expired,
    Missing,
}

/// The session and credential caches of this replica.
#[derive(Debug)]
pub struct LookupCache {
    deadline: Duration,
    session_ttl: Duration,
    credential_ttl: Duration,
    sessions: Bounded<(TenantId, SessionId), Session>,
    credentials: Bounded<[u8; 32], (TenantId, DeviceId)>,
}

impl LookupCache {
    /// Empty caches bounded as `settings` says.
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            deadline: Duration::from_millis(settings.database_deadline_ms.max(1)),
            session_ttl: Duration::from_secs(settings.session_secs),
            credential_ttl: Duration::from_secs(settings.credential_secs),
            sessions: Bounded::new(settings.session_entries),
            credentials: Bounded::new(settings.credential_entries),
        }
    }

    /// Remembers `session` as just read from (or written to) PostgreSQL: a stop through
    /// this replica is stored here too, so that it answers 409 during an outage.
    pub fn session_read(&self, session: &Session) {
        self.sessions.put(
            (session.tenant_id.clone(), session.id),
            session.clone(),
            self.session_ttl,
        );
    }

    /// Forgets the row of a session the buffer says is stopped, so that the next batch
    /// reads it again (and answers from the stopped row).
    pub fn forget_session(&self, tenant: &TenantId, id: SessionId) {
        self.sessions.remove(&(tenant.clone(), id));
    }

    fn cached<V>(found: Option<(Duration, V)>, ttl: Duration) -> Cached<V> {
        match found {
            Some((age, value)) if age <= ttl => Cached::Fresh(value),
            Some(_) => Cached::Expired,
            None => Cached::Missing,
        }
    }
}

/// Counts a lookup PostgreSQL could not answer, by what the cache did.
fn count<V>(kind: &'static str, cached: &Cached<V>) {
    let outcome = match cached {
        Cached::Fresh(_) => "served",
        Cached::Expired => "expired",
        Cached::Missing => "missing",
    };
    events::LookupCacheUsed { kind, outcome }.emit();
}

/// Where a session came from: PostgreSQL now, or the cache of an earlier read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from PostgreSQL by this request.
    Database,
    /// The row this replica read within the bound (PostgreSQL not asked, or failed).
    Cache,
}

/// [`crate::access::visible_session`] for the batch path: the session `id` the device
/// `caller` may post to, from this replica's read within `LOCUS_SESSION_CACHE_SECS` (a
/// stop made meanwhile is the buffer's to refuse, see the module's comment), else from
/// PostgreSQL, else while PostgreSQL is away from an entry within the bound, then 503.
pub async fn batch_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Session, Source), ApiError> {
    let cache = &state.cache;
    let id = SessionId::parse(id).map_err(|_| ApiError::SessionNotFound)?;
    let key = (caller.tenant.clone(), id);
    let (session, source) = match cache.sessions.get(&key) {
        // A row past its expiry is read again, so that PostgreSQL expires it (and its stop
        // event goes out) as it did before the cache; a stopped row stays stopped.
        Some((age, session))
            if age <= cache.session_ttl
                && (session.status == SessionStatus::Stopped
                    || session.expires_at > chrono::Utc::now()) =>
        {
            (session, Source::Cache)
        }
        _ => read_session(state, &key).await?,
    };
    // As visible_session: another device's session reads as not found. The key holds the
    // tenant, so another tenant's caller never reaches an entry.
    if caller.role == Role::Device && session.device_id != caller.subject {
        return Err(ApiError::SessionNotFound);
    }
    Ok((session, source))
}

/// The session of `key` from PostgreSQL (remembered), or while PostgreSQL is away from
/// the cache within the bound.
async fn read_session(
    state: &AppState,
    (tenant, id): &(TenantId, SessionId),
) -> Result<(Session, Source), ApiError> {
    let cache = &state.cache;
    let read = tokio::time::timeout(cache.deadline, state.store.get(tenant, *id)).await;
    Ok(match read {
        Ok(Ok(session)) => {
            cache.session_read(&session);
            (session, Source::Database)
        }
        Ok(Err(SessionError::Database(e))) => {
            tracing::warn!(error = %e, "PostgreSQL failed reading a session; trying the cache.");
            (cached_session(state, tenant, *id)?, Source::Cache)
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            tracing::warn!(
                deadline_ms = cache.deadline.as_millis() as u64,
                "PostgreSQL did not answer a session read within the deadline; trying the cache."
            );
            (cached_session(state, tenant, *id)?, Source::Cache)
        }
    })
}

fn cached_session(state: &AppState, tenant: &TenantId, id: SessionId) -> Result<Session, ApiError> {
    let cache = &state.cache;
    let cached = LookupCache::cached(cache.sessions.get(&(tenant.clone(), id)), cache.session_ttl);
    count("session", &cached);
    match cached {
        Cached::Fresh(session) if &session.tenant_id == tenant => Ok(session),
        _ => Err(ApiError::Unavailable {
            code: ErrorCode::DatabaseUnavailable,
            message: format!(
                "the database is unavailable and this session was not read from it within the last {} s (LOCUS_SESSION_CACHE_SECS), so it cannot be checked: retry the same batch after Retry-After seconds",
                cache.session_ttl.as_secs()
            ),
            retry_after_secs: 1,
        }),
    }
}

/// `session` if it takes fixes now, as `SessionStore::ensure_open` says; a session from
/// the cache is checked on its row alone (an expiry found then is written by the sweeper
/// once PostgreSQL is back). Updates the cache with an expiry written now.
pub async fn ensure_open(
    state: &AppState,
    session: Session,
    source: Source,
) -> Result<Session, (SessionError, Option<Session>)> {
    if source == Source::Cache {
        if session.status == SessionStatus::Stopped {
            let reason = session.stop_reason.unwrap_or(StopReason::Requested);
            return Err((SessionError::Stopped(reason), None));
        }
        if session.expires_at <= chrono::Utc::now() {
            return Err((SessionError::Stopped(StopReason::Expired), None));
        }
        return Ok(session);
    }
    let open = state.store.ensure_open(session).await;
    if let Err((_, Some(expired))) = &open {
        state.cache.session_read(expired);
    }
    open
}

/// The device and tenant of the credential whose SHA-256 is `hash`, for a route that
/// authenticates every request with it: this replica's exchange within
/// `LOCUS_CREDENTIAL_CACHE_SECS` unless the device is revoked (the revocation list, reloaded
/// every `LOCUS_REVOCATION_REFRESH_MS`), else [`exchange`]. A credential revoked alone, or
/// its tenant disabled, is refused here once its entry is past the bound.
pub async fn credential(
    state: &AppState,
    hash: &[u8; 32],
) -> Result<(TenantId, DeviceId), ApiError> {
    let cache = &state.cache;
    if let Cached::Fresh((tenant, device)) =
        LookupCache::cached(cache.credentials.get(hash), cache.credential_ttl)
    {
        if !device_revoked(state, &tenant, &device) {
            return Ok((tenant, device));
        }
        cache.credentials.remove(hash);
    }
    exchange(state, hash).await
}

/// Whether the revocation list refuses every token of `device`.
fn device_revoked(state: &AppState, tenant: &TenantId, device: &DeviceId) -> bool {
    // A token without `iat` counts as revoked whenever its device is: whatever the time of
    // the revocation, this device gets nothing from the cache.
    let principal = Principal {
        role: locus_identity::Role::Device,
        subject: device.as_str().to_owned(),
        tenant: Some(tenant.clone()),
        issued_at: None,
        expires_at: i64::MAX,
    };
    state.auth.revocations().is_revoked(&principal)
}

/// The device and tenant of the credential whose SHA-256 is `hash`: from PostgreSQL, or
/// while PostgreSQL is away from this replica's earlier exchange within
/// `LOCUS_CREDENTIAL_CACHE_SECS` unless the device is revoked, then 503 (never 401: an
/// unknown credential cannot be told from a new one without PostgreSQL).
pub async fn exchange(state: &AppState, hash: &[u8; 32]) -> Result<(TenantId, DeviceId), ApiError> {
    let cache = &state.cache;
    let registry = Registry::new(state.store.pool().clone());
    let read = tokio::time::timeout(cache.deadline, registry.exchange(hash)).await;
    match read {
        Ok(Ok(found)) => {
            cache
                .credentials
                .put(*hash, found.clone(), cache.credential_ttl);
            return Ok(found);
        }
        Ok(Err(RegistryError::CredentialRefused(reason))) => {
            cache.credentials.remove(hash);
            tracing::info!(reason, "Credential exchange refused.");
            return Err(RegistryError::CredentialRefused(reason).into());
        }
        Ok(Err(RegistryError::Database(e))) => {
            tracing::warn!(error = %e, "PostgreSQL failed exchanging a credential; trying the cache.");
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => tracing::warn!(
            deadline_ms = cache.deadline.as_millis() as u64,
            "PostgreSQL did not answer a credential exchange within the deadline; trying the cache."
        ),
    }
    let cached = LookupCache::cached(cache.credentials.get(hash), cache.credential_ttl);
    count("credential", &cached);
    match cached {
        Cached::Fresh((tenant, device)) => {
            if device_revoked(state, &tenant, &device) {
                cache.credentials.remove(hash);
                tracing::info!(
                    reason = "the device is revoked",
                    "Credential exchange refused."
                );
                return Err(RegistryError::CredentialRefused("the device is revoked").into());
            }
            Ok((tenant, device))
        }
        Cached::Expired | Cached::Missing => Err(ApiError::Unavailable {
            code: ErrorCode::DatabaseUnavailable,
            message: format!(
                "the database is unavailable and this credential was not exchanged through this server within the last {} s (LOCUS_CREDENTIAL_CACHE_SECS), so it cannot be checked: retry after Retry-After seconds",
                cache.credential_ttl.as_secs()
            ),
            retry_after_secs: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_go_first_and_a_stored_again_key_stays() {
        let b: Bounded<u32, u32> = Bounded::new(2);
        let ttl = Duration::from_secs(60);
        b.put(1, 10, ttl);
        b.put(2, 20, ttl);
        b.put(1, 11, ttl);
        b.put(3, 30, ttl);
        assert!(b.get(&2).is_none(), "2 is the oldest read");
        assert_eq!(b.get(&1).unwrap().1, 11);
        assert_eq!(b.get(&3).unwrap().1, 30);
        for i in 0..100 {
            b.put(1, i, ttl);
        }
        assert!(b.lock().order.len() <= 4, "dead positions are bounded");
        assert!(b.lock().map.len() <= 2);
    }

    #[test]
    fn nothing_is_kept_with_a_zero_bound() {
        let b: Bounded<u32, u32> = Bounded::new(0);
        b.put(1, 10, Duration::from_secs(60));
        assert!(b.get(&1).is_none());
        let b: Bounded<u32, u32> = Bounded::new(5);
        b.put(1, 10, Duration::ZERO);
        assert!(b.get(&1).is_none());
    }
}
