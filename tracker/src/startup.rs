//! Builds the tracker from its configuration and runs it until shutdown.
//!
//! [`Application::build`] does everything that can fail at start (PostgreSQL and its role
//! check, the Kafka clients, binding the listener), so a bad configuration stops the
//! process before it reads a record; tests bind port 0 and read the port back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::{
    ConsumerLoop, LoopSettings, TrackerConsumer, TrackerContext, consumer_config,
};
use crate::error::TrackerError;
use crate::events;
use crate::fences::Fences;
use crate::relay::{self, Relay, RelayTopics};
use crate::routes::{AppState, router};
use crate::store::GeoStore;

/// A built tracker, listening but not yet consuming.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    consumer: Arc<TrackerConsumer>,
    consumer_loop: ConsumerLoop,
    relay: Relay,
    router: Router,
    grace: Duration,
}

impl Application {
    /// Connects to PostgreSQL (refusing a role that would bypass row-level security),
    /// creates the Kafka clients and binds the listener.
    pub async fn build(config: Config) -> Result<Self, TrackerError> {
        // Registered before the first event, so every unlabelled metric reads 0 from start.
        events::register();
        config.kafka.security.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect(config.database_url.expose_secret())
            .await?;
        locus_session::check_service_role(&pool).await?;

        let topics = config.topics();
        let topic = topics.locations().to_owned();
        let fences = Arc::new(Fences::new(pool.clone(), config.fence_refresh()));
        let store = GeoStore::new(pool.clone(), topic.clone(), config.max_speed_mps, fences);
        let context = TrackerContext::new(
            store.clone(),
            topic.clone(),
            tokio::runtime::Handle::current(),
        );
        let consumer: TrackerConsumer = consumer_config(
            &config.kafka,
            &config.group,
            config.session_timeout_ms,
            config.heartbeat_interval_ms,
            config.fetch_wait_max_ms,
        )
        .create_with_context(context)?;
        let consumer = Arc::new(consumer);

        let relay = Relay::new(
            pool.clone(),
            relay::producer(&config.kafka)?,
            &config.kafka,
            RelayTopics {
                positions: topics.positions().to_owned(),
                geofence_events: topics.geofence_events().to_owned(),
            },
            config.relay_interval(),
            config.relay_batch,
        );
        let consumer_loop = ConsumerLoop::new(
            Arc::clone(&consumer),
            store,
            LoopSettings {
                topic: topic.clone(),
                batch_max_records: config.batch_max_records.max(1),
                batch_linger: config.batch_linger(),
                retry_max: config.retry_max(),
            },
            relay.waker(),
        );
        let router = router(AppState {
            consumer: Arc::clone(&consumer),
            topic: topic.clone(),
            pool,
        });
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| TrackerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TrackerError::Listen {
                addr: config.listen,
                source,
            })?;
        tracing::info!(%local_addr, topic = %topic, group = %config.group, "Tracker built.");
        Ok(Self {
            listener,
            local_addr,
            consumer,
            consumer_loop,
            relay,
            router,
            grace: config.shutdown.grace(),
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port the HTTP listener is bound to.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Consumes, relays and serves HTTP until `shutdown` is cancelled, then stops in
    /// order: polling stops and the transaction in flight finishes, the offsets are
    /// committed, the relay publishes what the last transactions wrote (within the grace
    /// period; what it leaves is published after the restart, once), the consumer leaves
    /// its group once the listener stopped (its readiness probe holds the consumer).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), TrackerError> {
        let Self {
            listener,
            local_addr,
            consumer,
            consumer_loop,
            relay,
            router,
            grace,
        } = self;

        // `stop` ends the consumer loop: on shutdown, or when the listener fails (a
        // tracker that cannot be probed should not keep consuming unseen).
        let stop = shutdown.child_token();
        let http_stop = CancellationToken::new();
        let http = tokio::spawn({
            let stop = stop.clone();
            let http_stop = http_stop.clone();
            async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(http_stop.cancelled_owned())
                    .await;
                if served.is_err() {
                    stop.cancel();
                }
                served.map_err(|source| TrackerError::Listen {
                    addr: local_addr,
                    source,
                })
            }
        });
        // The relay outlives the consumer loop: its stop means "publish what is there,
        // then return", so it is cancelled only once the last transaction committed.
        let relay_stop = CancellationToken::new();
        let mut relayed = tokio::spawn(relay.run(relay_stop.clone()));

        let consumed = consumer_loop.run(stop).await;
        relay_stop.cancel();
        match tokio::time::timeout(grace, &mut relayed).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::warn!(
                    "Shutdown grace period over before the relay published everything; the rest is published after the restart."
                );
                relayed.abort();
            }
        }
        // The router holds a handle of the consumer (for readiness): stop it first.
        http_stop.cancel();
        let served = http.await;
        // Dropping the last handle closes the consumer: it leaves the group, which blocks
        // for a moment, so it happens on a blocking thread.
        tokio::task::spawn_blocking(move || drop(consumer)).await?;
        tracing::info!("Tracker stopped.");
        consumed?;
        served??;
        Ok(())
    }
}
