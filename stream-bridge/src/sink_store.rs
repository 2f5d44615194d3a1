//! Webhook sinks kept in PostgreSQL (the `sinks` table, which the admin API's `PUT
//! /v1/sink` writes), read again every `LOCUS_BRIDGE_SINKS_REFRESH_MS` into the live
//! [`SinkTable`], so a sink added, changed, disabled or deleted reaches the bridge without
//! a restart.
//!
//! A refresh, in order:
//! 1. reads every enabled row in one transaction of the system scope (`SET LOCAL ROLE
//!    locus_system`, [`locus_session::Scope::System`]): the table has row-level security,
//!    and the bridge serves every tenant;
//! 2. checks each row like a static sink (tenant id, URL, private hosts). A bad row is
//!    skipped and logged, never fatal: one tenant's typo must not stop the others;
//! 3. lays the valid rows over the static sinks (`LOCUS_BRIDGE_SINKS`,
//!    `LOCUS_BRIDGE_SINKS_FILE`): a row replaces its tenant's static sink, and a tenant
//!    whose row goes away (deleted, disabled or skipped) falls back to its static sink, if
//!    it has one;
//! 4. swaps the new table in whole ([`SinkTable::replace`]).
//!
//! When PostgreSQL cannot be read (down, unreachable, or no answer within
//! [`REFRESH_TIMEOUT`]), the last table stays: deliveries carry on with the sinks they
//! know, and the next interval tries again. Only the first read, at start, is fatal.

use std::collections::HashMap;
use std::time::Duration;

use locus_session::Scope;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::error::{SinkError, SinkRefreshError};
use crate::events::{SinkRefreshFailed, SinkRefreshRecovered, SinkRowSkipped, SinkTableRefreshed};
use crate::webhook::config::{Sink, Sinks};
use crate::webhook::table::{SinkTable, TableChanges};

/// Longest one refresh (a connection, the query) may take before it counts as failed: a
/// PostgreSQL that hangs must not keep a connection of the small pool forever.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// The enabled sinks. One sink per tenant (`UNIQUE (tenant_id)`).
const ENABLED_SINKS: &str = "SELECT tenant_id, url, secret FROM sinks WHERE disabled_at IS NULL";

/// One enabled row of the `sinks` table, not yet checked.
#[derive(Debug)]
pub struct SinkRow {
    /// `tenant_id`.
    pub tenant: String,
    /// `url`.
    pub url: String,
    /// `secret`: the HMAC key.
    pub secret: SecretString,
}

/// The bridge's connection to PostgreSQL: a pool of the service role, two connections at
/// most (one refresh runs at a time; the second lets a refresh start while a connection
/// that timed out is still being closed).
#[derive(Debug, Clone)]
pub struct SinkStore {
    pool: PgPool,
}

impl SinkStore {
    /// Connects to `url` (one connection now, so a wrong URL fails at start).
    pub async fn connect(url: &str) -> Result<Self, SinkRefreshError> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.application_name("locus-stream-bridge");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(REFRESH_TIMEOUT);
        let pool = tokio::time::timeout(REFRESH_TIMEOUT, pool.connect_with(options))
            .await
            .map_err(|_| SinkRefreshError::Timeout(REFRESH_TIMEOUT))??;
        // The sink table holds every tenant's secrets: the bridge reads it through the
        // system role, never as a role that would see it without asking.
        locus_session::check_service_role(&pool)
            .await
            .map_err(|e| SinkRefreshError::Role(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Every enabled row, read in the system scope.
    pub async fn rows(&self) -> Result<Vec<SinkRow>, sqlx::Error> {
        let mut tx = locus_session::begin(&self.pool, Scope::System).await?;
        let rows: Vec<(String, String, String)> =
            sqlx::query_as(ENABLED_SINKS).fetch_all(&mut *tx).await?;
        // Read-only: committing or rolling back is the same; committing says "done".
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(tenant, url, secret)| SinkRow {
                tenant,
                url,
                secret: SecretString::from(secret),
            })
            .collect())
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The table a refresh installs: `static_sinks` with every valid row laid over it, and the
/// rows refused, each with why.
pub fn merge(
    static_sinks: &Sinks,
    rows: Vec<SinkRow>,
    allow_private: bool,
) -> (Sinks, Vec<(String, SinkError)>) {
    let mut sinks = static_sinks.clone();
    let mut skipped = Vec::new();
    for row in rows {
        match Sink::parse(&row.tenant, &row.url, row.secret, allow_private) {
            Ok((tenant, sink)) => sinks.insert(tenant, sink),
            Err(error) => skipped.push((row.tenant, error)),
        }
    }
    (sinks, skipped)
}

/// Keeps the live table in step with PostgreSQL.
pub struct SinkRefresher {
    store: SinkStore,
    static_sinks: Sinks,
    allow_private: bool,
    table: SinkTable,
    interval: Duration,
    /// The rows skipped at the last refresh, with why: each is logged when it first appears
    /// or its reason changes, not every interval.
    skipped: HashMap<String, String>,
    /// Refreshes failed in a row.
    failures: u64,
}

impl SinkRefresher {
    /// A refresher over `store`, every `interval`, whose table starts as `static_sinks`
    /// (call [`Self::refresh`] once before serving).
    pub fn new(
        store: SinkStore,
        static_sinks: Sinks,
        allow_private: bool,
        interval: Duration,
    ) -> Self {
        Self {
            store,
            table: SinkTable::new(static_sinks.clone()),
            static_sinks,
            allow_private,
            interval,
            skipped: HashMap::new(),
            failures: 0,
        }
    }

    /// The live table this refresher keeps.
    pub fn table(&self) -> SinkTable {
        self.table.clone()
    }

    /// Reads PostgreSQL once and installs the result. On failure the table is unchanged.
    pub async fn refresh(&mut self) -> Result<(), SinkRefreshError> {
        let rows = tokio::time::timeout(REFRESH_TIMEOUT, self.store.rows())
            .await
            .map_err(|_| SinkRefreshError::Timeout(REFRESH_TIMEOUT))??;
        let from_database = rows.len();
        let (sinks, skipped) = merge(&self.static_sinks, rows, self.allow_private);
        let mut now_skipped = HashMap::with_capacity(skipped.len());
        for (tenant, error) in &skipped {
            let reason = error.to_string();
            if self.skipped.get(tenant) != Some(&reason) {
                SinkRowSkipped { tenant, error }.emit();
            }
            now_skipped.insert(tenant.clone(), reason);
        }
        self.skipped = now_skipped;
        let count = sinks.len();
        let old = self.table.replace(sinks);
        let changes = TableChanges::between(&old, &self.table.current());
        SinkTableRefreshed {
            sinks: count,
            rows: from_database,
            skipped: skipped.len(),
            changes: &changes,
        }
        .emit();
        Ok(())
    }

    /// Refreshes every interval until `stop`, then closes the connections. A failed
    /// refresh keeps the last table.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        // A refresh that took long is followed by a full interval, not a burst.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the table was just read at start.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let refreshed = tokio::select! {
                _ = stop.cancelled() => break,
                refreshed = self.refresh() => refreshed,
            };
            match refreshed {
                Ok(()) => {
                    if self.failures > 0 {
                        SinkRefreshRecovered {
                            failed: self.failures,
                        }
                        .emit();
                        self.failures = 0;
                    }
                }
                Err(error) => {
                    self.failures += 1;
                    SinkRefreshFailed {
                        error: &error,
                        consecutive: self.failures,
                    }
                    .emit();
                }
            }
        }
        self.store.close().await;
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail: a URL with a password has a host.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "LOCUS_DATABASE_URL (not a valid URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use locus_wire::TenantId;

    use super::*;
    use crate::webhook::config::SinkSpecs;

    fn row(tenant: &str, url: &str) -> SinkRow {
        SinkRow {
            tenant: tenant.to_owned(),
            url: url.to_owned(),
            secret: SecretString::from("s"),
        }
    }

    fn url_of(sinks: &Sinks, tenant: &str) -> Option<String> {
        sinks
            .get(&TenantId::parse(tenant).unwrap())
            .map(|s| s.url.to_string())
    }

    #[test]
    fn database_rows_win_over_static_sinks_and_bad_rows_are_skipped() {
        let mut specs = SinkSpecs::default();
        specs.insert("acme", "https://static.example/acme", "s");
        specs.insert("globex", "https://static.example/globex", "s");
        let static_sinks = specs.validate(false).unwrap();
        let (sinks, skipped) = merge(
            &static_sinks,
            vec![
                row("acme", "https://db.example/acme"),
                row("globex", "not a url"),
                row("initech", "http://10.0.0.1/hook"),
                row("hooli", "https://db.example/hooli"),
            ],
            false,
        );
        assert_eq!(
            url_of(&sinks, "acme").as_deref(),
            Some("https://db.example/acme")
        );
        // A skipped row leaves the tenant's static sink in place.
        assert_eq!(
            url_of(&sinks, "globex").as_deref(),
            Some("https://static.example/globex")
        );
        assert_eq!(url_of(&sinks, "initech"), None);
        assert_eq!(
            url_of(&sinks, "hooli").as_deref(),
            Some("https://db.example/hooli")
        );
        let skipped: Vec<(&str, bool)> = skipped
            .iter()
            .map(|(t, e)| (t.as_str(), matches!(e, SinkError::PrivateAddress { .. })))
            .collect();
        assert_eq!(skipped, [("globex", false), ("initech", true)]);
    }

    #[test]
    fn a_password_is_cut_from_the_database_url() {
        assert_eq!(
            redacted("postgres://locus_app:hunter2@db.example:5432/locus"),
            "postgres://locus_app:***@db.example:5432/locus"
        );
        assert_eq!(
            redacted("postgres://locus_app@127.0.0.1:5432/locus"),
            "postgres://locus_app@127.0.0.1:5432/locus"
        );
        assert!(!redacted("::hunter2").contains("hunter2"));
    }
}
