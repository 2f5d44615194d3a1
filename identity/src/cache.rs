//! A bounded cache of verified tokens, so that a device sending many requests with one
//! token pays for its signature check once, not per request.
//!
//! Why each rule holds, given that only tokens that passed every check are inserted:
//!
//! - Keyed by the SHA-256 of the whole token string: a hit means the very same bytes were
//!   verified (a 64-bit hash could collide and hand out another principal; a tampered
//!   token, one byte changed, is another key and goes through the full checks).
//! - An entry is served while `verified_at <= now <= exp + leeway`, the verifier's own
//!   expiry rule (inclusive at the edge). The other time rules only get easier as time
//!   passes (`nbf` and `iat` not in the future, `exp - now` at most the longest lifetime),
//!   so a token valid when verified stays valid until it expires; `now` before
//!   `verified_at` (a clock stepped back) is a miss, so the full checks decide again.
//! - Failures are never inserted, so junk tokens (bad signatures, unknown kids) can neither
//!   fill the cache nor evict good entries; only a holder of a signing key can add entries.
//! - An entry of a provider token carries the generation of the provider's key set it was
//!   verified with; the verifier serves it only while that set is current, so a key the
//!   provider withdrew stops its cached tokens at the same moment as uncached ones.
//! - Bounded: `capacity` entries in total, split over up to 16 shards (a `Mutex<HashMap>`
//!   each, chosen by the digest, so concurrent requests rarely meet on a lock). A full
//!   shard first drops its expired entries; if that frees less than half of it, the shard
//!   is cleared. Every full scan thus frees at least half a shard (amortised O(1) per
//!   insert, no per-entry bookkeeping); the price of clearing is re-verifying those tokens
//!   once, so size `capacity` above the number of tokens in use at once (devices times one
//!   or two per token lifetime). An entry costs about 200 bytes: 65,536 are about 13 MB.
//! - Revocation is not cached here: the services check it after every verification.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::Principal;

/// Most shards of a cache; fewer when the capacity is smaller than this.
const SHARDS: usize = 16;

/// One shard: entries by the SHA-256 of their token.
type Shard = Mutex<HashMap<[u8; 32], Entry>>;

/// Tokens that passed verification, by SHA-256 of the token, with the principal each
/// stands for. See the module documentation for what makes serving them safe.
pub struct VerifiedCache {
    shards: Box<[Shard]>,
    per_shard: usize,
    leeway: i64,
}

#[derive(Clone)]
struct Entry {
    principal: Principal,
    verified_at: i64,
    /// `exp + leeway`: the last second the entry is served.
    valid_until: i64,
    generation: Option<u64>,
}

/// A cache hit: the principal, and the provider key-set generation it was verified with
/// (`None` for keys that never change: Locus keys and the development secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPrincipal {
    /// Who the token stands for.
    pub principal: Principal,
    /// The provider key-set generation the token was verified with, if a provider's.
    pub generation: Option<u64>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl VerifiedCache {
    /// A cache of at most `capacity` tokens (at least 1), serving each until its `exp`
    /// plus `leeway_secs`.
    pub fn new(capacity: usize, leeway_secs: u64) -> Self {
        let capacity = capacity.max(1);
        let shards = capacity.min(SHARDS);
        Self {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity / shards,
            leeway: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
        }
    }

    /// Most entries held at once.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Entries held now, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).clear();
        }
    }

    /// The principal `token` was verified as, if it was and is still valid at `now`.
    pub fn get(&self, token: &str, now: i64) -> Option<CachedPrincipal> {
        let key = digest(token);
        let shard = lock(self.shard(&key));
        let entry = shard.get(&key)?;
        (entry.verified_at <= now && now <= entry.valid_until).then(|| CachedPrincipal {
            principal: entry.principal.clone(),
            generation: entry.generation,
        })
    }

    /// Remembers that `token` verified at `now` as `principal` (with the provider key-set
    /// `generation`, if a provider's). Only for tokens that passed every check.
    pub fn insert(&self, token: &str, principal: Principal, now: i64, generation: Option<u64>) {
        let key = digest(token);
        let valid_until = principal.expires_at.saturating_add(self.leeway);
        if now > valid_until {
            return;
        }
        let mut shard = lock(self.shard(&key));
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| now <= e.valid_until);
            if shard.len() > self.per_shard / 2 {
                shard.clear();
            }
        }
        shard.insert(
            key,
            Entry {
                principal,
                verified_at: now,
                valid_until,
                generation,
            },
        );
    }

    fn shard(&self, key: &[u8; 32]) -> &Shard {
        let n = u64::from_le_bytes(key[..8].try_into().expect("8 bytes of a 32-byte digest"));
        // Lossless: the shard count is at most 16.
        let index = (n % self.shards.len() as u64) as usize;
        &self.shards[index]
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A shard's map; a panic elsewhere while it was held leaves a consistent map (every
/// mutation is one `HashMap` call), so poisoning is ignored.
fn lock(shard: &Shard) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use locus_wire::TenantId;

    const NOW: i64 = 1_800_000_000;

    fn principal(subject: &str, expires_at: i64) -> Principal {
        Principal {
            role: Role::Device,
            subject: subject.to_owned(),
            tenant: Some(TenantId::parse("acme").unwrap()),
            issued_at: Some(NOW),
            expires_at,
        }
    }

    #[test]
    fn an_entry_is_served_from_its_verification_to_exp_plus_leeway_inclusive() {
        let cache = VerifiedCache::new(100, 30);
        cache.insert("t", principal("p", NOW + 600), NOW, None);
        assert_eq!(
            cache.get("t", NOW).unwrap().principal,
            principal("p", NOW + 600)
        );
        assert!(cache.get("t", NOW + 630).is_some(), "the edge is inclusive");
        assert!(cache.get("t", NOW + 631).is_none(), "past exp + leeway");
        assert!(cache.get("t", NOW - 1).is_none(), "a clock stepped back");
    }

    #[test]
    fn an_already_expired_principal_is_not_inserted() {
        let cache = VerifiedCache::new(100, 30);
        cache.insert("t", principal("p", NOW - 31), NOW, None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_token_differing_in_one_byte_is_not_a_hit() {
        let cache = VerifiedCache::new(100, 30);
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwIn0.c2lnbmF0dXJl";
        cache.insert(token, principal("p", NOW + 600), NOW, None);
        for i in 0..token.len() {
            let mut bytes = token.as_bytes().to_vec();
            bytes[i] ^= 1;
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(cache.get(&tampered, NOW).is_none(), "byte {i}");
        }
        assert!(cache.get(&format!("{token}x"), NOW).is_none());
        assert!(cache.get(&token[..token.len() - 1], NOW).is_none());
        assert!(cache.get(token, NOW).is_some());
    }

    #[test]
    fn the_cache_stays_within_capacity_under_ten_times_as_many_tokens() {
        for capacity in [1, 5, 16, 1000, 4099] {
            let cache = VerifiedCache::new(capacity, 30);
            assert!(cache.capacity() <= capacity && cache.capacity() > capacity * 3 / 4);
            for i in 0..capacity * 10 {
                cache.insert(&format!("token-{i}"), principal("p", NOW + 600), NOW, None);
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            }
            // The last token inserted is always there: eviction happens before an insert.
            let last = format!("token-{}", capacity * 10 - 1);
            assert!(cache.get(&last, NOW).is_some());
        }
    }

    #[test]
    fn a_full_shard_drops_its_expired_entries_before_live_ones() {
        // 16 shards of 4 entries.
        let cache = VerifiedCache::new(16 * 4, 0);
        let shard = |t: &str| {
            cache
                .shards
                .iter()
                .position(|s| std::ptr::eq(s, cache.shard(&digest(t))))
                .unwrap()
        };
        // Fill shard 0 with 3 tokens expiring soon and 1 living long, then one more later.
        let tokens: Vec<String> = (0..)
            .map(|i| format!("t{i}"))
            .filter(|t| shard(t) == 0)
            .take(5)
            .collect();
        for t in &tokens[..3] {
            cache.insert(t, principal("short", NOW + 10), NOW, None);
        }
        cache.insert(&tokens[3], principal("long", NOW + 600), NOW, None);
        cache.insert(&tokens[4], principal("new", NOW + 600), NOW + 20, None);
        assert!(
            cache.get(&tokens[3], NOW + 20).is_some(),
            "the live entry survived"
        );
        assert!(cache.get(&tokens[4], NOW + 20).is_some());
        assert_eq!(lock(&cache.shards[0]).len(), 2);
    }

    #[test]
    fn concurrent_inserts_and_lookups_from_threads_agree() {
        // Room for every token: what is checked is that no thread sees another's principal.
        let cache = std::sync::Arc::new(VerifiedCache::new(16 * 1024, 30));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let cache = std::sync::Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let token = format!("token-{t}-{}", i % 200);
                        let subject = format!("d{t}-{}", i % 200);
                        match cache.get(&token, NOW) {
                            Some(hit) => assert_eq!(hit.principal.subject, subject),
                            None => cache.insert(&token, principal(&subject, NOW + 600), NOW, None),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(cache.len(), 8 * 200);
    }
}
