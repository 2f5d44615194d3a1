//! The live sink table: what deliveries read now. A refresh replaces the whole table at
//! once (an atomic pointer swap, [`arc_swap`]), so a reader sees either the old table or
//! the new one, never half of each, and nobody waits for a lock: the polling thread looks a
//! tenant up for every record it routes.
//!
//! A reader that took the table keeps that snapshot for as long as it holds it: an HTTP
//! attempt in flight finishes with the sink it started with, and the next attempt reads the
//! table again (see [`crate::webhook::WebhookDeliverer::deliver`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use locus_wire::TenantId;
use tokio::sync::watch;

use super::config::Sinks;

/// The sink table every lane and the polling thread share; cloning shares it.
#[derive(Debug, Clone)]
pub struct SinkTable(Arc<ArcSwap<Sinks>>, Arc<watch::Sender<u64>>);

impl SinkTable {
    /// A table holding `sinks`.
    pub fn new(sinks: Sinks) -> Self {
        Self(
            Arc::new(ArcSwap::from_pointee(sinks)),
            Arc::new(watch::Sender::new(0)),
        )
    }

    /// A receiver that sees every [`Self::replace`] from now on: a lane waiting out a
    /// backoff, or a sink disabled by a 410, wakes up to look at its sink again (a sink
    /// set again is usually the fix).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// The table as it is now: a snapshot later refreshes do not change.
    pub fn current(&self) -> Arc<Sinks> {
        self.0.load_full()
    }

    /// Whether `tenant` has a sink now (cheaper than [`Self::current`]: no reference
    /// count is taken).
    pub fn contains(&self, tenant: &TenantId) -> bool {
        self.0.load().get(tenant).is_some()
    }

    /// Replaces the whole table; returns the one it replaced.
    pub fn replace(&self, sinks: Sinks) -> Arc<Sinks> {
        let old = self.0.swap(Arc::new(sinks));
        // After the swap: a lane woken by this sees the new table.
        self.1.send_modify(|n| *n = n.wrapping_add(1));
        old
    }
}

/// What a refresh changed, by tenant (each list sorted).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableChanges {
    /// Tenants that have a sink now and had none.
    pub added: Vec<TenantId>,
    /// Tenants whose sink URL or secret changed.
    pub changed: Vec<TenantId>,
    /// Tenants that had a sink and have none now.
    pub removed: Vec<TenantId>,
}

impl TableChanges {
    /// Compares two tables.
    pub fn between(old: &Sinks, new: &Sinks) -> Self {
        let mut changes = Self::default();
        for (tenant, sink) in new.iter() {
            match old.get(tenant) {
                None => changes.added.push(tenant.clone()),
                Some(before) if !before.same_as(sink) => changes.changed.push(tenant.clone()),
                Some(_) => {}
            }
        }
        for (tenant, _) in old.iter() {
            if new.get(tenant).is_none() {
                changes.removed.push(tenant.clone());
            }
        }
        changes.added.sort();
        changes.changed.sort();
        changes.removed.sort();
        changes
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::webhook::config::Sink;

    fn table(entries: &[(&str, &str, &str)]) -> Sinks {
        let mut sinks = Sinks::default();
        for (tenant, url, secret) in entries {
            let (tenant, sink) =
                Sink::parse(tenant, url, SecretString::from(*secret), false).expect("a valid sink");
            sinks.insert(tenant, sink);
        }
        sinks
    }

    fn ids(names: &[&str]) -> Vec<TenantId> {
        names.iter().map(|n| TenantId::parse(*n).unwrap()).collect()
    }

    #[test]
    fn changes_name_the_tenants_added_changed_and_removed() {
        let old = table(&[
            ("acme", "https://a.example/1", "s"),
            ("globex", "https://g.example/1", "s"),
            ("initech", "https://i.example/1", "s"),
            ("umbrella", "https://u.example/1", "s"),
        ]);
        let new = table(&[
            ("acme", "https://a.example/1", "s"),
            ("globex", "https://g.example/2", "s"),
            ("initech", "https://i.example/1", "rotated"),
            ("hooli", "https://h.example/1", "s"),
        ]);
        let changes = TableChanges::between(&old, &new);
        assert_eq!(changes.added, ids(&["hooli"]));
        assert_eq!(changes.changed, ids(&["globex", "initech"]));
        assert_eq!(changes.removed, ids(&["umbrella"]));
        assert!(TableChanges::between(&new, &new).is_empty());
    }

    #[test]
    fn a_snapshot_taken_before_a_replace_keeps_the_old_sink() {
        let live = SinkTable::new(table(&[("acme", "https://a.example/old", "s")]));
        let acme = TenantId::parse("acme").unwrap();
        let before = live.current();
        live.replace(table(&[("acme", "https://a.example/new", "s")]));
        assert_eq!(
            before.get(&acme).unwrap().url.as_str(),
            "https://a.example/old"
        );
        assert_eq!(
            live.current().get(&acme).unwrap().url.as_str(),
            "https://a.example/new"
        );
        live.replace(Sinks::default());
        assert!(!live.contains(&acme));
    }
}
