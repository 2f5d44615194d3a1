//! Building and running the ingest application: connections, the HTTP listener, the
//! expiry sweeper, the session event relay and the forwarder, and the order in which they
//! stop. Only wiring: what each part does is in its own module.

use std::sync::Arc;
use std::time::Duration;

use locus_session::SessionStore;
use locus_wire::api::FixLimits;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::buffer::{Buffer, Keys};
use crate::config::{Config, Role};
use crate::forwarder::Forwarder;
use crate::kafka;
use crate::routes::{self, AppState};
use crate::session_events::SessionEventPublisher;
use crate::sweeper::Sweeper;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// PostgreSQL is unreachable or refused the migrations.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The service's database role is refused (see `locus_session::check_service_role`).
    #[error("{0}")]
    DatabaseRole(#[from] locus_session::BootstrapError),
    /// Redis is unreachable.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Kafka client creation or topic creation failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka security settings are incomplete or inconsistent.
    #[error("{0}")]
    KafkaSecurity(#[from] locus_service::kafka::KafkaSecurityError),
    /// The listener could not bind.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// Token verification or signing is not configured safely.
    #[error("identity: {0}")]
    Identity(String),
}

/// The token verifier and the device-token signer `config` asks for, refusing what would
/// be unsafe in production: a weak or published HS256 secret, or no signing key (both
/// allowed in development mode).
fn identity(
    config: &Config,
) -> Result<
    (
        locus_identity::Verifier,
        locus_identity::TokenSigner,
        serde_json::Value,
    ),
    StartupError,
> {
    use locus_identity::{ClaimMapping, ProviderConfig, TokenSigner, VerifierConfig};
    use secrecy::ExposeSecret;
    let jwt = &config.jwt;
    let refuse = |m: String| StartupError::Identity(m);
    if let Some(secret) = &jwt.secret {
        locus_identity::check_hs256_secret(secret.expose_secret(), jwt.dev_mode)
            .map_err(|e| refuse(format!("LOCUS_JWT_SECRET: {e}")))?;
    }
    let read_key = |path: &std::path::Path| {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            refuse(format!(
                "cannot read the signing key {}: {e}",
                path.display()
            ))
        })?;
        TokenSigner::from_pkcs8_pem(&pem).map_err(|e| {
            refuse(format!(
                "the signing key {} is not usable: {e}",
                path.display()
            ))
        })
    };
    let signer = match &jwt.signing_key_file {
        Some(path) => read_key(path)?,
        None if jwt.dev_mode => {
            tracing::warn!(
                "No LOCUS_TOKEN_SIGNING_KEY_FILE: signing device tokens with a key generated now (development mode; other replicas will not accept its tokens)."
            );
            TokenSigner::generate()
        }
        None => {
            return Err(refuse(
                "LOCUS_TOKEN_SIGNING_KEY_FILE is not set: write a key with `locus-ingest keygen > key.pem` and give every replica the same file".into(),
            ));
        }
    };
    let mut keys = signer.public_keys();
    for path in &jwt.previous_key_files {
        keys.add(read_key(path)?.public_keys());
    }
    let provider = match (&jwt.oidc.issuer, &jwt.oidc.jwks_url) {
        (None, None) => None,
        (Some(issuer), Some(url)) => {
            let url = url
                .parse()
                .map_err(|e| refuse(format!("LOCUS_OIDC_JWKS_URL is not a URL: {e}")))?;
            let mut roles = std::collections::BTreeMap::new();
            for pair in &jwt.oidc.role_map {
                let (value, role) = pair.split_once('=').ok_or_else(|| {
                    refuse(format!(
                        "LOCUS_OIDC_ROLE_MAP entry {pair:?} is not value=role"
                    ))
                })?;
                let role = role
                    .parse()
                    .map_err(|e| refuse(format!("LOCUS_OIDC_ROLE_MAP: {e}")))?;
                roles.insert(value.to_owned(), role);
            }
            let mut p = ProviderConfig::new(issuer.clone(), url);
            p.audience = jwt.oidc.audience.clone();
            p.claims = ClaimMapping {
                tenant: jwt.oidc.tenant_claim.clone(),
                role: jwt.oidc.role_claim.clone(),
                roles,
                partner: jwt.oidc.partner_claim.clone(),
            };
            p.min_refresh = Duration::from_secs(jwt.oidc.jwks_min_refresh_secs);
            p.refresh_every = Duration::from_secs(jwt.oidc.jwks_refresh_secs);
            Some(p)
        }
        _ => {
            return Err(refuse(
                "set both LOCUS_OIDC_ISSUER and LOCUS_OIDC_JWKS_URL, or neither".into(),
            ));
        }
    };
    // Published with the previous keys too: verifiers elsewhere must accept the tokens
    // signed before a rotation for as long as Locus does.
    let jwks = keys.jwks();
    let verifier = locus_identity::Verifier::new(
        VerifierConfig {
            audience: jwt.audience.clone(),
            leeway_secs: jwt.leeway_secs,
            max_lifetime_secs: jwt.max_lifetime_secs,
            max_token_bytes: jwt.max_bytes,
            locus_issuer: jwt.issuer.clone(),
            dev_secret: jwt.secret.clone(),
            cache_capacity: jwt.cache_entries,
            provider,
        },
        keys,
    )
    .map_err(|e| refuse(e.to_string()))?;
    Ok((verifier, signer, jwks))
}

/// The task that keeps this replica's list of revoked devices fresh.
fn revocation_refresher(state: &AppState) -> crate::auth::RevocationRefresher {
    let jwt = &state.config.jwt;
    crate::auth::RevocationRefresher {
        store: state.store.clone(),
        revocations: state.auth.revocations().clone(),
        every: Duration::from_millis(jwt.revocation_refresh_ms),
        horizon: chrono::Duration::seconds((jwt.max_lifetime_secs + jwt.leeway_secs) as i64),
        freshness: state.auth.freshness().clone(),
    }
}

/// The task that keeps this replica's table of tenant limits fresh.
fn limits_refresher(state: &AppState) -> crate::limits::LimitsRefresher {
    crate::limits::LimitsRefresher {
        store: state.store.clone(),
        table: state.admission.limits().clone(),
        every: Duration::from_millis(state.config.rates.limits_refresh_ms),
    }
}

/// The built application, ready to run.
pub struct Application {
    config: Arc<Config>,
    listener: TcpListener,
    port: u16,
    state: AppState,
    forwarder: Option<Forwarder>,
}

impl Application {
    /// Connects to PostgreSQL, Redis and Kafka, runs migrations, creates topics and binds
    /// the listener. Fails fast with what is missing.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let config = Arc::new(config);
        // Registered before anything counts, so the unlabelled metrics of this process's
        // roles read 0 from start.
        crate::events::register(&config.roles);
        let pool = PgPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&config.database.url)
            .await?;
        // Row-level security is the wall between tenants only if this role cannot step
        // over it; the migrations are a separate step (`locus-ingest migrate`).
        locus_session::check_service_role(&pool).await?;
        let store = SessionStore::new(pool);
        let redis = redis::Client::open(config.redis.url.as_str())?;
        // redis-rs retries a lost connection with delays that grow a hundredfold (1 s, then
        // 60 s, six times), and every command waits on that attempt: after an outage of more
        // than a second the buffer stayed unusable for minutes once Redis was back. One retry
        // a second later, then the command fails (503, or an event left in the outbox) and
        // the next command tries again.
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_factor(1)
            .set_number_of_retries(1)
            .set_connection_timeout(Duration::from_secs(1));
        let conn = redis::aio::ConnectionManager::new_with_config(redis.clone(), settings).await?;
        let keys = Keys::new(&config.redis.prefix, config.redis.shards);
        let buffer = Buffer::new(
            conn.clone(),
            keys,
            config.redis.max_entries,
            config.redis.dedupe_window_secs,
        )
        .with_deadline(Duration::from_millis(config.redis.deadline_ms.max(1)));
        config.kafka.security.validate()?;
        let producer = kafka::producer(&config)?;
        if config.topics.create {
            kafka::ensure_topics(&config).await?;
        }
        let forwarder = config
            .runs(Role::Forwarder)
            .then(|| Forwarder::new(&config, redis.clone(), producer.clone(), store.clone()));
        // Every role serves /healthz, /readyz and /metrics; only the API role serves /v1.
        let listener = TcpListener::bind(config.listen).await?;
        let port = listener.local_addr()?.port();
        let limits = &config.limits;
        let (verifier, signer, jwks) = identity(&config)?;
        let revocations = Arc::new(locus_identity::Revocations::new());
        let state = AppState::new(crate::routes::Shared {
            auth: Authenticator::new(verifier, revocations).with_max_staleness(
                Duration::from_millis(config.jwt.revocation_max_staleness_ms),
            ),
            signer: Arc::new(signer),
            jwks: Arc::new(jwks),
            admission: Arc::new(Admission::new(
                &config,
                Arc::new(crate::limits::LimitsTable::new(&config)),
                config.rates.shared.then_some(conn),
            )),
            usage: Arc::new(crate::usage::Usage::new(
                config.usage.metric_tenants,
                config.usage.max_pending_rows,
            )),
            cache: Arc::new(crate::cache::LookupCache::new(&config.cache)),
            clients: Arc::new(crate::clients::Clients::new(&config.clients)),
            limits: FixLimits {
                max_future: chrono::Duration::seconds(limits.max_future_skew_secs as i64),
                max_age: chrono::Duration::seconds(limits.max_fix_age_secs as i64),
            },
            config: config.clone(),
            session_events: SessionEventPublisher::new(store.clone(), buffer.clone()),
            store,
            buffer,
            producer,
            forwarder: forwarder.as_ref().map(Forwarder::health),
        });
        // The revoked devices, loaded once before the first request is served.
        revocation_refresher(&state).reload().await;
        // And the tenants' limits (a tenant's own values are in force from the first request).
        limits_refresher(&state).reload().await;
        Ok(Self {
            config,
            listener,
            port,
            state,
            forwarder,
        })
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until `shutdown` is cancelled or the HTTP server fails, then stops in order:
    /// the HTTP server stops accepting and finishes in-flight requests (their batches reach
    /// Redis), the sweeper stops, then the forwarder drains the buffer into Kafka and the
    /// session event relay empties the outbox into the buffer, both within the grace
    /// period. Returns the server's error if it failed: a process
    /// that cannot be reached or probed must not keep running unseen.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let tracker = TaskTracker::new();
        // `stop` ends the HTTP server and the sweeper: on shutdown, or when the server fails.
        let stop = shutdown.child_token();
        // The forwarder has a token of its own: it must keep draining after the HTTP server
        // stopped, so that batches accepted by the last requests still reach Kafka.
        let forwarder_stop = CancellationToken::new();
        // So has the session event relay: the last requests may leave events in the outbox.
        let relay_stop = CancellationToken::new();
        // So has the usage flusher: its last flush, on the way out, must hold the counts of
        // the last requests.
        let usage_stop = CancellationToken::new();
        let grace = self.config.shutdown_grace();

        tracing::info!(port = self.port, roles = ?self.config.roles, "Ingest listening.");
        let app = routes::router(self.state.clone());
        let server = tracker.spawn({
            let stop = stop.clone();
            let config = self.config.clone();
            async move {
                let served =
                    crate::server::serve(self.listener, app, &config.server, stop.clone(), grace)
                        .await;
                if let Err(e) = &served {
                    tracing::error!(error = %e, "HTTP server failed; shutting down.");
                    stop.cancel();
                }
                served
            }
        });
        if self.config.runs(Role::Api) {
            let sweeper = Sweeper {
                store: self.state.store.clone(),
                session_events: self.state.session_events.clone(),
                admission: self.state.admission.clone(),
                every: Duration::from_millis(self.config.sessions.sweep_interval_ms),
            };
            tracker.spawn(sweeper.run(stop.clone()));
            tracker.spawn(revocation_refresher(&self.state).run(stop.clone()));
            tracker.spawn(limits_refresher(&self.state).run(stop.clone()));
            // Admin changes' audit rows, onto the tenant-events topic (what is left waits in
            // PostgreSQL for the next process: no drain on the way out).
            let audit = crate::audit_relay::AuditRelay::new(
                self.state.store.clone(),
                self.state.producer.clone(),
                self.config.topic_names().tenant_events(),
                Duration::from_millis(self.config.sessions.events_scan_ms),
            );
            tracker.spawn(audit.run(stop.clone()));
            let relay = self
                .state
                .session_events
                .relay(Duration::from_millis(self.config.sessions.events_scan_ms));
            tracker.spawn(relay.run(relay_stop.clone(), grace));
            let usage = crate::usage::UsageFlusher {
                usage: self.state.usage.clone(),
                store: self.state.store.clone(),
                every: Duration::from_secs(self.config.usage.flush_secs.max(1)),
            };
            tracker.spawn(usage.run(usage_stop.clone()));
        }
        // Set when the forwarder's producer failed for good: the process then stops and
        // exits non-zero, so that its supervisor starts it again with a new producer.
        let fatal: Arc<std::sync::OnceLock<crate::forwarder::Fatal>> = Arc::default();
        if let Some(forwarder) = self.forwarder {
            tracing::info!(consumer = %self.config.forwarder.consumer, "Forwarder started.");
            let (forwarder_stop, stop, fatal) =
                (forwarder_stop.clone(), stop.clone(), fatal.clone());
            tracker.spawn(async move {
                if let Err(e) = forwarder.run(forwarder_stop, grace).await {
                    let _ = fatal.set(e);
                    stop.cancel();
                }
            });
        }
        // No more tasks: wait() below returns once the ones above are done.
        tracker.close();

        stop.cancelled().await;
        tracing::info!("Shutting down: no new requests; finishing in-flight ones.");
        // The server task returns once in-flight requests are answered. A JoinError means
        // it panicked: the requests it was serving are gone either way, and draining the
        // buffer below is still the right next step, so it is reported, not propagated.
        let served = match server.await {
            Ok(served) => served,
            Err(e) => {
                tracing::error!(error = %e, "The HTTP server task panicked.");
                Ok(())
            }
        };
        forwarder_stop.cancel();
        // The relay publishes what the last requests left in the outbox within the grace
        // period; what it cannot waits in PostgreSQL for the next process.
        relay_stop.cancel();
        // This replica's usage since its last flush goes to PostgreSQL now (one statement;
        // if PostgreSQL is away, those counts are lost with the process, and logged).
        usage_stop.cancel();
        // The forwarder bounds its own drain by `grace`; the extra 5 s cover its final
        // flush. Past that, tasks are abandoned: their entries stay pending in Redis.
        if tokio::time::timeout(grace + Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Some tasks did not finish within the grace period.");
        }
        tracing::info!("Shutdown complete.");
        if let Some(e) = fatal.get() {
            return Err(std::io::Error::other(e.to_string()));
        }
        served
    }
}
