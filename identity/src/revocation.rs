//! Revoked devices, in memory: each replica polls the database and [`Revocations::replace`]s
//! the map, so a revocation reaches every replica within one poll.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use locus_wire::{DeviceId, TenantId};

use crate::{Principal, Role};

/// tenant -> device -> revoked at (unix seconds). Strings inside, so a lookup from a
/// [`Principal`] allocates nothing.
type Map = HashMap<String, HashMap<String, i64>>;

/// Devices revoked recently, shared by every request of a replica. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    map: Arc<RwLock<Arc<Map>>>,
}

impl Revocations {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole set: (tenant, device) -> revoked at (unix seconds).
    pub fn replace(&self, revoked: HashMap<(TenantId, DeviceId), i64>) {
        let mut map = Map::new();
        for ((tenant, device), at) in revoked {
            map.entry(String::from(tenant))
                .or_default()
                .insert(String::from(device), at);
        }
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    /// Adds one revocation at once (on the replica that made it, before the next poll).
    pub fn revoke(&self, tenant: &TenantId, device: &DeviceId, at: i64) {
        let mut guard = self.map.write().unwrap_or_else(|e| e.into_inner());
        let map = Arc::make_mut(&mut guard);
        let at_slot = map
            .entry(tenant.as_str().to_owned())
            .or_default()
            .entry(device.as_str().to_owned())
            .or_insert(at);
        *at_slot = (*at_slot).max(at);
    }

    /// Whether `principal` is a device revoked at or after its token was issued. A device
    /// token without `iat` from a revoked device is refused: it cannot show it is newer.
    pub fn is_revoked(&self, principal: &Principal) -> bool {
        if principal.role != Role::Device {
            return false;
        }
        let Some(tenant) = &principal.tenant else {
            return false;
        };
        let map = Arc::clone(&self.map.read().unwrap_or_else(|e| e.into_inner()));
        match map
            .get(tenant.as_str())
            .and_then(|devices| devices.get(&principal.subject))
        {
            None => false,
            Some(&revoked_at) => principal.issued_at.is_none_or(|iat| iat <= revoked_at),
        }
    }

    /// How many devices are revoked.
    pub fn len(&self) -> usize {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(HashMap::len).sum()
    }

    /// Whether no device is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(tenant: &str, id: &str, iat: Option<i64>) -> Principal {
        Principal {
            role: Role::Device,
            subject: id.to_owned(),
            tenant: Some(TenantId::parse(tenant).unwrap()),
            issued_at: iat,
            expires_at: 2_000_000_000,
        }
    }

    #[test]
    fn tokens_issued_at_or_before_the_revocation_are_revoked_and_later_ones_not() {
        let r = Revocations::new();
        let (t, d) = (
            TenantId::parse("acme").unwrap(),
            DeviceId::parse("p1").unwrap(),
        );
        r.replace(HashMap::from([((t, d), 1000)]));
        assert!(r.is_revoked(&device("acme", "p1", Some(999))));
        assert!(r.is_revoked(&device("acme", "p1", Some(1000))));
        assert!(r.is_revoked(&device("acme", "p1", None)));
        assert!(!r.is_revoked(&device("acme", "p1", Some(1001))));
        assert!(!r.is_revoked(&device("acme", "p2", Some(1))));
        assert!(!r.is_revoked(&device("beta", "p1", Some(1))));
        r.replace(HashMap::new());
        assert!(!r.is_revoked(&device("acme", "p1", Some(999))));
    }

    #[test]
    fn a_local_revocation_counts_before_the_next_poll_and_other_roles_are_never_revoked() {
        let r = Revocations::new();
        r.revoke(
            &TenantId::parse("acme").unwrap(),
            &DeviceId::parse("p1").unwrap(),
            50,
        );
        assert_eq!(r.len(), 1);
        assert!(r.is_revoked(&device("acme", "p1", Some(50))));
        let mut admin = device("acme", "p1", Some(1));
        admin.role = Role::TenantAdmin;
        assert!(!r.is_revoked(&admin));
    }
}
