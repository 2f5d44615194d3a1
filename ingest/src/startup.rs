//! Building and running the ingest application: connections, the HTTP listener, the
//! expiry sweeper and the forwarder, and the order in which they stop.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use locus_session::{Session, SessionStore};
use locus_wire::api::FixLimits;
use locus_wire::buffer::BufferEntry;
use locus_wire::record::{SCHEMA_VERSION, SessionEvent, SessionEventKind};
use rdkafka::producer::FutureProducer;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::buffer::{Buffer, Keys};
use crate::config::{Config, Role};
use crate::forwarder::Forwarder;
use crate::{events, kafka, routes};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// PostgreSQL is unreachable or refused the migrations.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Redis is unreachable.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Kafka client creation or topic creation failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The listener could not bind.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The service configuration.
    pub config: Arc<Config>,
    /// Token verification.
    pub auth: Authenticator,
    /// Session metadata.
    pub store: SessionStore,
    /// The Redis buffer.
    pub buffer: Buffer,
    /// Rate limits.
    pub admission: Arc<Admission>,
    /// Timestamp bounds of fixes.
    pub limits: FixLimits,
    /// Used by /readyz to check Kafka.
    pub producer: FutureProducer,
}

impl AppState {
    /// Buffers a session event, so it reaches Kafka in order with the session's fixes.
    /// Retries a few times: the session row already changed, and a lost event would
    /// leave Kafka telling a different story than PostgreSQL.
    pub async fn publish_session_event(&self, kind: SessionEventKind, session: &Session) {
        let event = BufferEntry::SessionEvent(SessionEvent {
            schema_version: SCHEMA_VERSION,
            event_id: uuid::Uuid::now_v7(),
            kind,
            tenant_id: session.tenant_id.clone(),
            session_id: session.id,
            device_id: session.device_id.clone(),
            at: session.stopped_at.unwrap_or(session.started_at),
            reason: session.stop_reason,
        });
        let label = match kind {
            SessionEventKind::Started => "started",
            SessionEventKind::Stopped => "stopped",
        };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=4 {
            match self.buffer.append_event(&event).await {
                Ok(()) => return events::session_event(label),
                Err(e) if attempt == 4 => return events::session_event_lost(&e),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
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
    /// the listener (when the API role runs). Fails fast with what is missing.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let config = Arc::new(config);
        // Install the recorder before anything counts, or early metrics go nowhere.
        let _ = locus_service::metrics_handle();
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&config.database_url)
            .await?;
        if config.database_migrate {
            locus_session::migrate(&pool).await?;
        }
        let store = SessionStore::new(pool);
        let redis = redis::Client::open(config.redis_url.as_str())?;
        let conn = redis::aio::ConnectionManager::new(redis.clone()).await?;
        let keys = Keys::new(&config.redis_prefix, config.redis_shards);
        let buffer = Buffer::new(
            conn,
            keys,
            config.buffer_max_entries,
            config.dedupe_window_secs,
        );
        let producer = kafka::producer(&config)?;
        if config.kafka_create_topics {
            kafka::ensure_topics(&config).await?;
        }
        let forwarder = config
            .runs(Role::Forwarder)
            .then(|| Forwarder::new(&config, redis.clone(), producer.clone(), store.clone()));
        // Every role serves /healthz, /readyz and /metrics; only the API role serves /v1.
        let listener = TcpListener::bind(config.listen).await?;
        let port = listener.local_addr()?.port();
        let state = AppState {
            auth: Authenticator::new(&config.jwt_secret, &config.jwt_issuer, &config.jwt_audience),
            admission: Arc::new(Admission::new(&config)),
            limits: FixLimits {
                max_future: chrono::Duration::seconds(config.max_future_skew_secs as i64),
                max_age: chrono::Duration::seconds(config.max_fix_age_secs as i64),
            },
            config: config.clone(),
            store,
            buffer,
            producer,
        };
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

    /// Runs until `shutdown` is cancelled, then stops in order: the HTTP server stops
    /// accepting and finishes in-flight requests (their batches reach Redis), then the
    /// forwarder drains the buffer into Kafka within the grace period and flushes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let forwarder_stop = CancellationToken::new();
        let grace = self.config.shutdown_grace();

        tracing::info!(port = self.port, roles = ?self.config.roles, "Ingest listening.");
        let app = routes::router(self.state.clone());
        let stop = shutdown.clone();
        let server = tracker.spawn(async move {
            let served = axum::serve(self.listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed.");
            }
        });
        if self.config.runs(Role::Api) {
            tracker.spawn(sweep_expired(self.state.clone(), shutdown.clone()));
        }

        if let Some(forwarder) = self.forwarder {
            tracing::info!(consumer = %self.config.forwarder_consumer, "Forwarder started.");
            tracker.spawn(forwarder.run(forwarder_stop.clone(), grace));
        }
        tracker.close();

        shutdown.cancelled().await;
        tracing::info!("Shutting down: no new requests; finishing in-flight ones.");
        let _ = server.await;
        forwarder_stop.cancel();
        if tokio::time::timeout(grace + Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Some tasks did not finish within the grace period.");
        }
        tracing::info!("Shutdown complete.");
    }
}

/// Stops sessions past their maximum duration and publishes their stop events; also
/// trims idle rate-limit keys.
async fn sweep_expired(state: AppState, shutdown: CancellationToken) {
    let every = Duration::from_millis(state.config.session_sweep_interval_ms.max(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_trim = Utc::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.store.expire_due(500).await {
            Ok(expired) => {
                for session in &expired {
                    tracing::info!(session = %session.id, tenant = %session.tenant_id, "Session expired.");
                    state
                        .publish_session_event(SessionEventKind::Stopped, session)
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Expiry sweep failed; will retry."),
        }
        if Utc::now() - last_trim > chrono::Duration::seconds(60) {
            state.admission.forget_idle();
            last_trim = Utc::now();
        }
    }
}
