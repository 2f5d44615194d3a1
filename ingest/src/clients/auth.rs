//! Device authentication for client apps. OsmAnd, Traccar Client, OwnTracks, Overland and
//! the background-geolocation SDKs cannot exchange a credential for a token, so a client
//! route takes the device credential (`lcd_...`) itself, or a device token, from wherever
//! the app can put it:
//!
//! 1. `Authorization: Bearer <credential or device token>` (Overland, the SDKs' headers);
//! 2. `Authorization: Basic` with the credential (or token) as the password (OwnTracks,
//!    Overland with basic auth); the user, when given, must be the credential's device id;
//! 3. the `token` URL parameter (OsmAnd, Traccar Client: their URL is all they configure);
//! 4. for OsmAnd, a device identifier (`id`, `deviceid`) that is itself a credential.
//!
//! A credential is checked against PostgreSQL (through [`crate::cache::exchange`], which
//! refuses unknown and revoked credentials, revoked devices and disabled tenants), then
//! remembered by this replica for `LOCUS_CLIENT_CREDENTIAL_CACHE_SECS`, so a cached request
//! does no PostgreSQL round trip. While remembered, a revocation of the device still
//! refuses it at once on every replica: each request checks the in-memory revocation list
//! (reloaded every `LOCUS_REVOCATION_REFRESH_MS`) against the time of the exchange. Only a
//! revocation of the credential alone (its device kept) waits for the cache bound.
//!
//! The result is the [`Caller`] the native routes get, so rate limits and usage apply
//! unchanged: a request authenticated here (not by a bearer token, which the route layer
//! already charged) is charged to its device's request budget here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use locus_identity::{Principal, credential};
use locus_wire::{DeviceId, TenantId};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Where a request's credential or token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: Basic`, as the password.
    Basic,
    /// The `token` URL parameter.
    Url,
    /// An OsmAnd device identifier that is a credential.
    DeviceId,
}

/// A device of a client app, authenticated.
#[derive(Debug, Clone)]
pub struct ClientCaller {
    /// The caller, as the native routes see it.
    pub caller: Caller,
    /// Where its proof was.
    pub source: Source,
}

/// A credential this replica exchanged through PostgreSQL, and when.
#[derive(Debug, Clone)]
struct Exchanged {
    tenant: TenantId,
    device: DeviceId,
    at: Instant,
    /// Unix seconds of the exchange: a device revoked at or after it is refused.
    at_unix: i64,
}

/// Credentials this replica exchanged recently, by SHA-256.
#[derive(Debug)]
pub struct CredentialCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<[u8; 32], Exchanged>>,
}

impl CredentialCache {
    /// A cache whose entries answer for `ttl`, at most `max` of them (0 for either: off).
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Exchanged>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Exchanged> {
        let entries = self.lock();
        entries
            .get(hash)
            .filter(|e| e.at.elapsed() <= self.ttl)
            .cloned()
    }

    fn put(&self, hash: [u8; 32], tenant: TenantId, device: DeviceId) {
        if self.max == 0 || self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.max {
            // Past the bound, the expired go first, then an arbitrary half: they are
            // exchanged through PostgreSQL again on their next request.
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() <= ttl);
            if entries.len() >= self.max {
                let mut keep = false;
                entries.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
        }
        entries.insert(
            hash,
            Exchanged {
                tenant,
                device,
                at: Instant::now(),
                at_unix: chrono::Utc::now().timestamp(),
            },
        );
    }

    fn remove(&self, hash: &[u8; 32]) {
        self.lock().remove(hash);
    }
}

/// The answer to a credential that is not valid: the same for every reason, as
/// `POST /v1/auth/token` answers (the reason is logged).
pub fn invalid_credential() -> ApiError {
    ApiError::coded(
        ErrorCode::InvalidCredential,
        "the credential is not valid (unknown, malformed or revoked); ask your tenant admin for a new credential for this device",
    )
}

fn no_credential() -> ApiError {
    ApiError::coded(
        ErrorCode::Unauthorized,
        "the request carries no device credential: put it in the app's URL as `?token=lcd_...`, or send `Authorization: Bearer lcd_...`, or basic auth with the device id as user and the credential as password (docs/clients.md)",
    )
}

/// The tenant and device of `plain`, a device credential: from this replica's cache when
/// exchanged within the bound and its device not revoked since, else from PostgreSQL.
pub async fn credential_device(
    state: &AppState,
    plain: &str,
) -> Result<(TenantId, DeviceId), ApiError> {
    if !credential::looks_like(plain) {
        tracing::info!(reason = "malformed", "Client credential refused.");
        return Err(invalid_credential());
    }
    let hash = credential::hash(plain);
    let cache = &state.clients.credentials;
    let staleness = Duration::from_millis(state.config.jwt.revocation_max_staleness_ms);
    let list_fresh = state
        .auth
        .freshness()
        .age()
        .is_some_and(|age| age <= staleness);
    if let Some(hit) = cache.get(&hash) {
        // A revocation list too old to trust sends the check to PostgreSQL instead.
        if list_fresh {
            let principal = Principal {
                role: locus_identity::Role::Device,
                subject: hit.device.as_str().to_owned(),
                tenant: Some(hit.tenant.clone()),
                issued_at: Some(hit.at_unix),
                expires_at: i64::MAX,
            };
            if !state.auth.revocations().is_revoked(&principal) {
                crate::events::ClientCredentialLookup { outcome: "cached" }.emit();
                return Ok((hit.tenant, hit.device));
            }
            cache.remove(&hash);
            tracing::info!(
                reason = "the device is revoked",
                "Client credential refused."
            );
            return Err(invalid_credential());
        }
    }
    crate::events::ClientCredentialLookup {
        outcome: "exchanged",
    }
    .emit();
    match crate::cache::exchange(state, &hash).await {
        Ok((tenant, device)) => {
            cache.put(hash, tenant.clone(), device.clone());
            Ok((tenant, device))
        }
        Err(e) => {
            cache.remove(&hash);
            Err(e)
        }
    }
}

/// A device caller from a device token.
async fn token_caller(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let caller = Caller::try_from(state.auth.verify(token).await?)?;
    caller.require_device()?;
    Ok(caller)
}

/// The caller of `proof`: a credential or a device token.
async fn caller_of(state: &AppState, proof: &str) -> Result<(Caller, bool), ApiError> {
    if proof.starts_with(credential::PREFIX) {
        let (tenant, subject) = credential_device(state, proof).await?;
        return Ok((
            Caller {
                tenant,
                subject,
                role: Role::Device,
            },
            true,
        ));
    }
    Ok((token_caller(state, proof).await?, false))
}

/// `user:password` of a basic `Authorization` header.
fn basic(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The value of URL parameter `name` in `query`, decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Finds the proof of `parts` and checks it (see the module documentation for the order);
/// a refusal is the answer to send: 401, 403, 503, or the request budget's 429.
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<ClientCaller, Response> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or_default().trim());
    let query = parts.uri.query();
    let (proof, source, user) = if let Some(h) = header.filter(|h| !h.is_empty()) {
        if let Some(token) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
        {
            (token.trim().to_owned(), Source::Bearer, None)
        } else if let Some((user, password)) = basic(h) {
            (password, Source::Basic, Some(user))
        } else {
            return Err(ApiError::coded(
                ErrorCode::Unauthorized,
                "the Authorization header is neither `Bearer <credential or token>` nor `Basic` with the credential as password (docs/clients.md)",
            )
            .into_response());
        }
    } else if let Some(token) = query_param(query, "token") {
        (token, Source::Url, None)
    } else if let Some(id) = query_param(query, "id")
        .or_else(|| query_param(query, "deviceid"))
        .filter(|id| credential::looks_like(id))
    {
        (id, Source::DeviceId, None)
    } else {
        return Err(no_credential().into_response());
    };
    let (caller, by_credential) = caller_of(state, &proof)
        .await
        .map_err(IntoResponse::into_response)?;
    if let Some(user) = user.filter(|u| !u.is_empty())
        && user != caller.subject.as_str()
    {
        return Err(device_mismatch(&user, &caller.subject, "the basic-auth user").into_response());
    }
    // A bearer token was charged by the route layer; any other proof is charged here, so
    // that the request budgets are the native routes'.
    if by_credential || source != Source::Bearer {
        state
            .admission
            .admit_request(Some(&caller.tenant), caller.subject.as_str())
            .map_err(IntoResponse::into_response)?;
    }
    Ok(ClientCaller { caller, source })
}

/// 403 `device_mismatch`: the request names another device than its credential's.
pub fn device_mismatch(named: &str, device: &DeviceId, what: &str) -> ApiError {
    ApiError::coded(
        ErrorCode::DeviceMismatch,
        format!(
            "{what} is {}, but the credential is device {device}'s: set the app's device identifier to {device} (or use that device's credential)",
            locus_wire::decode::echo(named)
        ),
    )
}

impl FromRequestParts<AppState> for ClientCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        authenticate(state, parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_read_as_user_and_password() {
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("phone-1:lcd_secret:with:colons")
        );
        assert_eq!(
            basic(&value),
            Some(("phone-1".into(), "lcd_secret:with:colons".into()))
        );
        assert_eq!(basic("Basic !!!"), None);
        assert_eq!(basic("Bearer x"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_user_without_a_colon_and_any_password_read_back_as_sent(
            user in "[^:]{0,40}",
            password in ".{0,80}",
        ) {
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            proptest::prop_assert_eq!(basic(&value), Some((user, password)));
        }
    }

    #[test]
    fn url_parameters_are_decoded_and_empty_ones_are_absent() {
        assert_eq!(
            query_param(Some("id=1&token=lcd_a%2Db"), "token").as_deref(),
            Some("lcd_a-b")
        );
        assert_eq!(query_param(Some("token="), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }

    #[test]
    fn the_credential_cache_forgets_past_its_bound() {
        let cache = CredentialCache::new(Duration::from_secs(60), 4);
        let tenant = TenantId::parse("acme").unwrap();
        let device = DeviceId::parse("phone").unwrap();
        for i in 0..10u8 {
            cache.put([i; 32], tenant.clone(), device.clone());
            assert!(cache.lock().len() <= 4);
        }
        assert!(cache.get(&[9; 32]).is_some(), "the newest stays");
        let off = CredentialCache::new(Duration::ZERO, 4);
        off.put([1; 32], tenant, device);
        assert!(off.get(&[1; 32]).is_none());
    }
}
