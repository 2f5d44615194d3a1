//! Each tenant's effective limits: its own values from PostgreSQL (`tenant_limits`), the
//! configured defaults for the rest. Every replica holds the whole table in memory and
//! reloads it every `LOCUS_LIMITS_REFRESH_MS` ([`LimitsRefresher`]), so a change made
//! through the admin API on any replica is in force on all within that, with no restart
//! and no PostgreSQL round trip per request. A failed reload keeps the last table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use locus_session::limits::{LIMIT_COLUMNS, TenantLimits};
use locus_wire::TenantId;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::config::Config;

/// A tenant's limits with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Effective {
    /// Sustained fixes per second of the whole tenant, across replicas.
    pub fixes_per_sec: u64,
    /// Fixes the tenant may post at once.
    pub fixes_burst: u64,
    /// Sustained fixes per second of one device, across replicas.
    pub device_fixes_per_sec: u64,
    /// Fixes one device may post at once.
    pub device_fixes_burst: u64,
    /// Most fixes in one batch (at most `LOCUS_MAX_FIXES_PER_BATCH`).
    pub max_fixes_per_batch: u64,
    /// Most sessions active at once in the tenant.
    pub max_active_sessions: u64,
    /// Requests per second of the whole tenant, every route (per replica).
    pub requests_per_sec: u64,
    /// Requests the tenant may make at once (per replica).
    pub requests_burst: u64,
    /// Requests per second of one device or admin, every route (per replica).
    pub device_requests_per_sec: u64,
    /// Requests one device or admin may make at once (per replica).
    pub device_requests_burst: u64,
}

impl Effective {
    /// The configured defaults.
    pub fn defaults(config: &Config) -> Self {
        let r = &config.rates;
        Self {
            fixes_per_sec: r.tenant_fixes_per_sec.into(),
            fixes_burst: r.tenant_burst.into(),
            device_fixes_per_sec: r.device_fixes_per_sec.into(),
            device_fixes_burst: r.device_burst.into(),
            max_fixes_per_batch: config.limits.max_fixes_per_batch as u64,
            max_active_sessions: r.tenant_max_active_sessions.into(),
            requests_per_sec: r.tenant_requests_per_sec.into(),
            requests_burst: r.tenant_requests_burst.into(),
            device_requests_per_sec: r.device_requests_per_sec.into(),
            device_requests_burst: r.device_requests_burst.into(),
        }
    }

    /// `own` over these defaults. The batch maximum never goes above the global one
    /// (`global_max_batch`), whatever the row says: the decoder stops there.
    pub fn with(self, own: &TenantLimits, global_max_batch: u64) -> Self {
        let pick = |v: Option<i64>, default: u64| v.map_or(default, |v| v.max(1) as u64);
        Self {
            fixes_per_sec: pick(own.fixes_per_sec, self.fixes_per_sec),
            fixes_burst: pick(own.fixes_burst, self.fixes_burst),
            device_fixes_per_sec: pick(own.device_fixes_per_sec, self.device_fixes_per_sec),
            device_fixes_burst: pick(own.device_fixes_burst, self.device_fixes_burst),
            max_fixes_per_batch: pick(own.max_fixes_per_batch, self.max_fixes_per_batch)
                .min(global_max_batch),
            max_active_sessions: pick(own.max_active_sessions, self.max_active_sessions),
            requests_per_sec: pick(own.requests_per_sec, self.requests_per_sec),
            requests_burst: pick(own.requests_burst, self.requests_burst),
            device_requests_per_sec: pick(
                own.device_requests_per_sec,
                self.device_requests_per_sec,
            ),
            device_requests_burst: pick(own.device_requests_burst, self.device_requests_burst),
        }
    }
}

/// The names of the values `own` leaves to the defaults.
pub fn defaulted(own: &TenantLimits) -> Vec<&'static str> {
    let values = [
        own.fixes_per_sec,
        own.fixes_burst,
        own.device_fixes_per_sec,
        own.device_fixes_burst,
        own.max_fixes_per_batch,
        own.max_active_sessions,
        own.requests_per_sec,
        own.requests_burst,
        own.device_requests_per_sec,
        own.device_requests_burst,
    ];
    LIMIT_COLUMNS
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_none())
        .map(|(c, _)| *c)
        .collect()
}

/// Every tenant's effective limits, as last loaded.
pub struct LimitsTable {
    defaults: Effective,
    global_max_batch: u64,
    rows: ArcSwap<HashMap<TenantId, Effective>>,
}

impl LimitsTable {
    /// An empty table (every tenant at the defaults) for `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            defaults: Effective::defaults(config),
            global_max_batch: config.limits.max_fixes_per_batch as u64,
            rows: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// The configured defaults.
    pub fn defaults(&self) -> Effective {
        self.defaults
    }

    /// `tenant`'s limits (the defaults for a tenant without a row, or no tenant).
    pub fn of(&self, tenant: Option<&TenantId>) -> Effective {
        tenant
            .and_then(|t| self.rows.load().get(t).copied())
            .unwrap_or(self.defaults)
    }

    /// `own` over the defaults (what the admin API answers).
    pub fn effective(&self, own: &TenantLimits) -> Effective {
        self.defaults.with(own, self.global_max_batch)
    }

    /// Replaces the whole table with `rows`.
    pub fn replace(&self, rows: Vec<(TenantId, TenantLimits)>) {
        let table = rows
            .into_iter()
            .map(|(t, own)| (t, self.effective(&own)))
            .collect();
        self.rows.store(Arc::new(table));
    }

    /// Tenants with limits of their own.
    pub fn len(&self) -> usize {
        self.rows.load().len()
    }

    /// Whether no tenant has limits of its own.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reloads [`LimitsTable`] from PostgreSQL every `every`.
pub struct LimitsRefresher {
    /// Where the rows are read.
    pub store: locus_session::SessionStore,
    /// The table requests read.
    pub table: Arc<LimitsTable>,
    /// Time between reloads.
    pub every: Duration,
}

impl LimitsRefresher {
    /// Reloads until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.reload().await;
        }
    }

    /// One reload; a failure keeps the last table (limits in force stay in force while
    /// PostgreSQL is away) and is retried on the next tick.
    pub async fn reload(&self) {
        match locus_session::limits::all(self.store.pool()).await {
            Ok(rows) => {
                self.table.replace(rows);
                crate::events::LimitsReloaded {
                    tenants: self.table.len(),
                }
                .emit();
            }
            Err(e) => crate::events::LimitsReloadFailed { error: &e }.emit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_own_values_win_and_the_rest_are_the_defaults() {
        let config = Config::for_tests("s");
        let table = LimitsTable::new(&config);
        let acme = TenantId::parse("acme").unwrap();
        let own = TenantLimits {
            fixes_per_sec: Some(7),
            max_fixes_per_batch: Some(1_000_000),
            ..Default::default()
        };
        table.replace(vec![(acme.clone(), own.clone())]);
        let limits = table.of(Some(&acme));
        assert_eq!(limits.fixes_per_sec, 7);
        assert_eq!(limits.fixes_burst, table.defaults().fixes_burst);
        assert_eq!(
            limits.max_fixes_per_batch, config.limits.max_fixes_per_batch as u64,
            "never above the global maximum"
        );
        assert_eq!(table.of(None), table.defaults());
        let names = defaulted(&own);
        assert!(!names.contains(&"fixes_per_sec") && names.contains(&"fixes_burst"));
        assert_eq!(names.len(), 8);
    }
}
