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

use chrono::{DateTime, Utc};
use locus_session::Scope;
use locus_wire::TenantId;
use locus_wire::webhook::SigningKey;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::error::{SinkError, SinkRefreshError};
use crate::events::{
    SinkHealthWriteFailed, SinkRefreshFailed, SinkRefreshRecovered, SinkRowSkipped,
    SinkTableRefreshed,
};
use crate::webhook::config::{PreviousKey, Sink, Sinks};
use crate::webhook::health::{HealthReporter, Pending, WRITE_INTERVAL};
use crate::webhook::table::{SinkTable, TableChanges};

/// Longest one refresh (a connection, the query) may take before it counts as failed: a
/// PostgreSQL that hangs must not keep a connection of the small pool forever.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// The enabled sinks. One sink per tenant (`UNIQUE (tenant_id)`). A sink disabled by a
/// 410 is enabled in this sense: it stays in the table, so its tenant's records wait for it
/// instead of taking the `no_sink` path. A previous secret past its expiry is left out.
const ENABLED_SINKS: &str = "SELECT tenant_id, url, secret, \
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret END, \
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END, \
       disabled_by_410_reason, disabled_by_410_at IS NOT NULL, updated_at \
     FROM sinks WHERE disabled_at IS NULL";

/// Endpoint health, one row per tenant, replaced whole.
const UPSERT_HEALTH: &str = "INSERT INTO sink_health (tenant_id, last_success_at, \
       last_failure_at, last_failure_status, last_failure_reason, failure_streak, paused, \
       circuit, reported_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) \
     ON CONFLICT (tenant_id) DO UPDATE SET last_success_at = EXCLUDED.last_success_at, \
       last_failure_at = EXCLUDED.last_failure_at, \
       last_failure_status = EXCLUDED.last_failure_status, \
       last_failure_reason = EXCLUDED.last_failure_reason, \
       failure_streak = EXCLUDED.failure_streak, paused = EXCLUDED.paused, \
       circuit = EXCLUDED.circuit, reported_at = now()";

/// A 410, recorded only against the version of the sink it was answered for: a sink set
/// again (PUT) since then is not disabled by an answer of the old one.
const DISABLE_BY_410: &str = "UPDATE sinks SET disabled_by_410_at = now(), \
       disabled_by_410_reason = $2 \
     WHERE tenant_id = $1 AND updated_at = $3 AND disabled_by_410_at IS NULL";

/// One enabled row of the `sinks` table, not yet checked.
#[derive(Debug)]
pub struct SinkRow {
    /// `tenant_id`.
    pub tenant: String,
    /// `url`.
    pub url: String,
    /// `secret`: the HMAC key (`whsec_<base64>`).
    pub secret: SecretString,
    /// `previous_secret`, while it still signs, and until when.
    pub previous: Option<(SecretString, DateTime<Utc>)>,
    /// `disabled_by_410_reason` (or a placeholder) when `disabled_by_410_at` is set.
    pub gone: Option<String>,
    /// `updated_at`: the version of the sink.
    pub version: Option<DateTime<Utc>>,
}

/// The columns of [`ENABLED_SINKS`].
type RowColumns = (
    String,
    String,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    bool,
    DateTime<Utc>,
);

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
        let rows: Vec<RowColumns> = sqlx::query_as(ENABLED_SINKS).fetch_all(&mut *tx).await?;
        // Read-only: committing or rolling back is the same; committing says "done".
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(
                |(tenant, url, secret, previous, until, reason, gone, version)| SinkRow {
                    tenant,
                    url,
                    secret: SecretString::from(secret),
                    previous: previous.zip(until).map(|(p, u)| (SecretString::from(p), u)),
                    gone: gone.then(|| reason.unwrap_or_else(|| "webhook answered 410".into())),
                    version: Some(version),
                },
            )
            .collect())
    }

    /// Writes what `pending` holds in one transaction of the system scope: each tenant's
    /// health row, and each 410 against its sink's version.
    pub async fn write_health(
        &self,
        pending: &HashMap<TenantId, Pending>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = locus_session::begin(&self.pool, Scope::System).await?;
        for (tenant, report) in pending {
            if let Some(h) = &report.health {
                let failure = h.last_failure.as_ref();
                sqlx::query(UPSERT_HEALTH)
                    .bind(tenant.as_str())
                    .bind(h.last_success_at)
                    .bind(failure.map(|f| f.at))
                    .bind(failure.and_then(|f| f.status).map(i32::from))
                    .bind(failure.map(|f| f.reason.as_str()))
                    .bind(i32::try_from(h.failure_streak).unwrap_or(i32::MAX))
                    .bind(h.paused)
                    .bind(h.circuit.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(gone) = &report.gone {
                sqlx::query(DISABLE_BY_410)
                    .bind(tenant.as_str())
                    .bind(&gone.reason)
                    .bind(gone.version)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The table a refresh installs: `static_sinks` with every valid row laid over it, and the
/// rows refused, each with why.
///
/// A row's address is not judged here: a stored URL on a private address stays the tenant's
/// sink, and the delivery refuses to connect to it (`webhook::service::refused_target`, the
/// `PublicOnly` resolver), which pauses the tenant instead of dropping its sink.
pub fn merge(static_sinks: &Sinks, rows: Vec<SinkRow>) -> (Sinks, Vec<(String, SinkError)>) {
    let mut sinks = static_sinks.clone();
    let mut skipped = Vec::new();
    for row in rows {
        let parsed =
            Sink::parse(&row.tenant, &row.url, row.secret, true).and_then(|(tenant, mut sink)| {
                if let Some((secret, until)) = row.previous {
                    let key = SigningKey::from_stored(secret.expose_secret()).map_err(|e| {
                        SinkError::InvalidSecret {
                            tenant: row.tenant.clone(),
                            message: format!("previous secret: {e}"),
                        }
                    })?;
                    sink.previous = Some(PreviousKey { key, until });
                }
                sink.gone = row.gone;
                sink.version = row.version;
                Ok((tenant, sink))
            });
        match parsed {
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
    table: SinkTable,
    interval: Duration,
    /// The rows skipped at the last refresh, with why: each is logged when it first appears
    /// or its reason changes, not every interval.
    skipped: HashMap<String, String>,
    /// Refreshes failed in a row.
    failures: u64,
    /// Endpoint health the lanes report, written by [`Self::run`].
    health: HealthReporter,
}

impl SinkRefresher {
    /// A refresher over `store`, every `interval`, whose table starts as `static_sinks`
    /// (call [`Self::refresh`] once before serving).
    pub fn new(store: SinkStore, static_sinks: Sinks, interval: Duration) -> Self {
        Self {
            store,
            table: SinkTable::new(static_sinks.clone()),
            static_sinks,
            interval,
            skipped: HashMap::new(),
            failures: 0,
            health: HealthReporter::new(),
        }
    }

    /// Where lanes report their endpoints' health: written to PostgreSQL at most once per
    /// [`WRITE_INTERVAL`] while [`Self::run`] runs.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
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
        let (sinks, skipped) = merge(&self.static_sinks, rows);
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
    /// refresh keeps the last table. Meanwhile writes the endpoint health the lanes
    /// reported, at most once per [`WRITE_INTERVAL`], and a last time after `stop` (the
    /// lanes are done by then).
    pub async fn run(mut self, stop: CancellationToken) {
        let writer = tokio::spawn(write_health(
            self.store.clone(),
            self.health.clone(),
            stop.clone(),
        ));
        self.refresh_until(stop).await;
        // The writer's last write needs the pool: it ends before the pool is closed.
        let _ = writer.await;
        self.store.close().await;
    }

    async fn refresh_until(&mut self, stop: CancellationToken) {
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
    }
}

/// Writes the reported health every [`WRITE_INTERVAL`] until `stop`, then once more. A
/// failed write puts its reports back for the next one (a newer report wins).
async fn write_health(store: SinkStore, health: HealthReporter, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(WRITE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let pending = health.take();
        if !pending.is_empty() {
            let written = tokio::time::timeout(REFRESH_TIMEOUT, store.write_health(&pending)).await;
            let error = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(SinkRefreshError::Database(e)),
                Err(_) => Some(SinkRefreshError::Timeout(REFRESH_TIMEOUT)),
            };
            if let Some(error) = error {
                SinkHealthWriteFailed { error: &error }.emit();
                health.put_back(pending);
            }
        }
        if stopped {
            return;
        }
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
    use super::*;
    use crate::webhook::config::SinkSpecs;

    fn row(tenant: &str, url: &str) -> SinkRow {
        SinkRow {
            tenant: tenant.to_owned(),
            url: url.to_owned(),
            secret: SecretString::from("s"),
            previous: None,
            gone: None,
            version: None,
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
        // A stored URL on a private address is kept: the delivery refuses it at connect time
        // (the tenant pauses, nothing dead-lettered) rather than the tenant losing its sink.
        assert_eq!(
            url_of(&sinks, "initech").as_deref(),
            Some("http://10.0.0.1/hook")
        );
        assert_eq!(
            url_of(&sinks, "hooli").as_deref(),
            Some("https://db.example/hooli")
        );
        let skipped: Vec<(&str, bool)> = skipped
            .iter()
            .map(|(t, e)| (t.as_str(), matches!(e, SinkError::PrivateAddress { .. })))
            .collect();
        assert_eq!(skipped, [("globex", false)]);
    }

    #[test]
    fn a_row_brings_its_previous_key_its_410_and_its_version_and_a_bad_previous_secret_skips_it() {
        let until = Utc::now() + chrono::Duration::hours(1);
        let version = Utc::now();
        let previous = SigningKey::from_bytes(&[1; 32]);
        let mut rolling = row("acme", "https://db.example/acme");
        rolling.previous = Some((SecretString::from(previous.to_secret()), until));
        rolling.gone = Some("webhook answered 410 Gone".to_owned());
        rolling.version = Some(version);
        let mut broken = row("globex", "https://db.example/globex");
        broken.previous = Some((SecretString::from("whsec_!!"), until));
        let (sinks, skipped) = merge(&Sinks::default(), vec![rolling, broken]);
        let acme = sinks.get(&TenantId::parse("acme").unwrap()).unwrap();
        assert_eq!(
            acme.previous,
            Some(PreviousKey {
                key: previous,
                until
            })
        );
        assert_eq!(acme.gone.as_deref(), Some("webhook answered 410 Gone"));
        assert_eq!(acme.version, Some(version));
        assert!(matches!(
            skipped.as_slice(),
            [(tenant, SinkError::InvalidSecret { .. })] if tenant == "globex"
        ));
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
