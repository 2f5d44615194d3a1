//! The OIDC provider's signing keys: fetched from its JWKS URL, cached, refreshed.
//!
//! Rules, in the order a lookup meets them:
//!
//! 1. A kid in the cache is used at once: no lock beyond a read lock, no I/O.
//! 2. When the set is older than `refresh_every`, one background task replaces it with a
//!    fresh fetch (the request that noticed does not wait; it uses the current set). Keys
//!    the provider no longer publishes stop verifying then. A failed fetch keeps the old set:
//!    a provider outage must not lock out users whose keys are known.
//! 3. An unknown kid triggers a refetch, at most one per `min_refresh` (failed fetches
//!    count), so junk kids cannot turn the verifier into a load generator. Concurrent
//!    lookups of unknown kids queue on one mutex: the first fetches, the others find the
//!    key (or the rate limit) when they get the lock, so N concurrent lookups cost one fetch.
//!    Such a refetch *adds* keys and keeps the ones the cache had: a rotating provider
//!    publishes the new key before tokens signed with the old one expire, and tokens of the
//!    old kid keep verifying until rule 2 replaces the set.
//! 4. Every fetch has a timeout (connect included) and a 1 MiB body cap; keys that are not
//!    signature keys (`use: enc`, symmetric `oct`, unknown kty/alg, no kid) are skipped
//!    one by one, so one exotic key does not hide the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::{AuthError, ConfigError};

/// Most bytes read from a JWKS response.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One usable key of the provider.
pub(crate) struct ProviderKey {
    /// The algorithm pinned to this key: the JWK's `alg`, or inferred from its type.
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// An immutable snapshot of the provider's keys; replaced, never mutated.
#[derive(Default)]
pub(crate) struct KeySet {
    pub keys: HashMap<String, ProviderKey>,
    /// When the set was last replaced wholesale (rule 2); `None` before the first fetch.
    replaced_at: Option<Instant>,
    /// Which install this is (0: none yet): a token verified with one set is served from
    /// the verified-token cache only while that set is current. Every install counts, a
    /// merging refetch too, since it may bring new material under a known kid.
    pub generation: u64,
}

#[derive(Default)]
struct FetchState {
    /// The last fetch, successful or not (rule 3's rate limit).
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
}

/// The provider's key cache.
pub(crate) struct ProviderKeys {
    url: Url,
    client: reqwest::Client,
    min_refresh: Duration,
    refresh_every: Duration,
    current: RwLock<Arc<KeySet>>,
    /// The generation of the last install.
    installs: AtomicU64,
    /// Held for the whole of a fetch: one fetch at a time.
    fetch: Arc<Mutex<FetchState>>,
}

impl ProviderKeys {
    pub(crate) fn new(
        url: Url,
        min_refresh: Duration,
        refresh_every: Duration,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A JWKS URL redirecting elsewhere is a misconfiguration or an attack.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        Ok(Self {
            url,
            client,
            min_refresh,
            refresh_every,
            current: RwLock::new(Arc::new(KeySet::default())),
            installs: AtomicU64::new(0),
            fetch: Arc::new(Mutex::new(FetchState::default())),
        })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn install(&self, mut set: KeySet) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Under the write lock: generations grow in install order.
        set.generation = self.installs.fetch_add(1, Ordering::Relaxed) + 1;
        *current = Arc::new(set);
    }

    /// The generation of the current set, for a cached token of this provider; like a
    /// lookup (rule 2), starts a background refresh when the set is stale, so cache hits
    /// do not keep a withdrawn key's tokens alive past `refresh_every`.
    pub(crate) fn current_generation(self: &Arc<Self>) -> u64 {
        let set = self.snapshot();
        if self.is_stale(&set) {
            self.spawn_refresh();
        }
        set.generation
    }

    fn is_stale(&self, set: &KeySet) -> bool {
        set.replaced_at
            .is_some_and(|at| at.elapsed() >= self.refresh_every)
    }

    /// A key set holding `kid`, fetching per the rules above.
    pub(crate) async fn find(self: &Arc<Self>, kid: &str) -> Result<Arc<KeySet>, AuthError> {
        let set = self.snapshot();
        if self.is_stale(&set) {
            self.spawn_refresh();
        }
        if set.keys.contains_key(kid) {
            return Ok(set);
        }
        let mut state = self.fetch.lock().await;
        // Whoever held the lock before may have fetched this very kid.
        let set = self.snapshot();
        if set.keys.contains_key(kid) {
            return Ok(set);
        }
        if let Some(at) = state.last_attempt
            && at.elapsed() < self.min_refresh
        {
            return Err(match &state.last_error {
                Some(e) if set.keys.is_empty() => AuthError::KeysUnavailable(e.clone()),
                _ => AuthError::UnknownKid(kid.to_owned()),
            });
        }
        // Merge into a fresh set only (rule 3); a stale or empty one is replaced (rule 2).
        let merge = !self.is_stale(&set) && set.replaced_at.is_some();
        self.fetch_into(&mut state, merge).await?;
        let set = self.snapshot();
        if set.keys.contains_key(kid) {
            Ok(set)
        } else {
            Err(AuthError::UnknownKid(kid.to_owned()))
        }
    }

    /// Rule 2, in the background, unless a fetch is under way or one failed recently.
    fn spawn_refresh(self: &Arc<Self>) {
        let Ok(mut state) = Arc::clone(&self.fetch).try_lock_owned() else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Someone may have replaced the set between our snapshot and the lock.
            if !this.is_stale(&this.snapshot()) {
                return;
            }
            if state.last_error.is_some()
                && state
                    .last_attempt
                    .is_some_and(|at| at.elapsed() < this.min_refresh)
            {
                return;
            }
            if let Err(e) = this.fetch_into(&mut state, false).await {
                tracing::warn!(error = %e, url = %this.url, "The identity provider's keys could not be refreshed; the cached keys stay in use.");
            }
        });
    }

    /// Fetches the JWKS; installs it (merged into the current set, or replacing it).
    async fn fetch_into(&self, state: &mut FetchState, merge: bool) -> Result<(), AuthError> {
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(mut keys) => {
                state.last_error = None;
                let current = self.snapshot();
                let replaced_at = if merge {
                    for (kid, key) in &current.keys {
                        keys.entry(kid.clone()).or_insert_with(|| ProviderKey {
                            alg: key.alg,
                            key: key.key.clone(),
                        });
                    }
                    current.replaced_at
                } else {
                    Some(Instant::now())
                };
                tracing::debug!(
                    keys = keys.len(),
                    merge,
                    "Fetched the identity provider's keys."
                );
                self.install(KeySet {
                    keys,
                    replaced_at,
                    generation: 0,
                });
                Ok(())
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                Err(AuthError::KeysUnavailable(e))
            }
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, ProviderKey>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {} failed: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("GET {} answered {}", self.url, response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading {} failed: {e}", self.url))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("{} is over {MAX_JWKS_BYTES} bytes", self.url));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).map_err(|e| format!("{}: {e}", self.url))
    }
}

/// The usable signature keys of a JWKS document, by kid.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, ProviderKey>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        match usable_key(value) {
            Ok((kid, key)) => {
                keys.insert(kid, key);
            }
            Err(reason) => {
                tracing::debug!(reason, "Skipped a key of the identity provider's JWKS.")
            }
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no usable signature key".to_owned());
    }
    Ok(keys)
}

fn usable_key(value: serde_json::Value) -> Result<(String, ProviderKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("unsupported JWK: {e}"))?;
    let kid = jwk.common.key_id.clone().ok_or("a JWK without kid")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(format!("{kid}: an encryption key"));
    }
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err(format!("{kid}: unsupported curve")),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err(format!("{kid}: unsupported curve")),
        // A provider publishing a symmetric key publishes its secret: never use it.
        AlgorithmParameters::OctetKey(_) => return Err(format!("{kid}: a symmetric key")),
    };
    let alg = match jwk.common.key_algorithm {
        None => inferred,
        Some(a) => a
            .to_string()
            .parse::<Algorithm>()
            .map_err(|_| format!("{kid}: alg {a} is not a signature algorithm"))?,
    };
    if !is_asymmetric(alg) {
        return Err(format!("{kid}: alg {alg:?} is symmetric"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{kid}: {e}"))?;
    Ok((kid, ProviderKey { alg, key }))
}

/// The algorithms a provider may sign with: public-key ones only.
pub(crate) fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

#[cfg(test)]
impl ProviderKeys {
    /// Installs keys as if fetched just now (unit tests without a server).
    pub(crate) fn preload(&self, body: &[u8]) {
        let keys = parse_jwks(body).expect("a usable test JWKS");
        self.install(KeySet {
            keys,
            replaced_at: Some(Instant::now()),
            generation: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_encryption_kidless_and_unknown_keys_are_skipped_one_by_one() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521", "alg": "ES512"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["ed"]);
        assert_eq!(keys["ed"].alg, Algorithm::EdDSA);
        assert!(
            parse_jwks(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}]}"#).is_err()
        );
        assert!(parse_jwks(b"<html>").is_err());
    }
}
