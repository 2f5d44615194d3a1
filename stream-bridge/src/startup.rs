//! Builds the bridge from its configuration and runs it until shutdown.
//!
//! [`Application::build`] does everything that can fail at start (sink table, its first
//! read from PostgreSQL, Kafka clients, HTTP client, binding the listener), so a bad
//! configuration stops the process before it reads a record; tests bind port 0 and read
//! the port back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rdkafka::producer::FutureProducer;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::lag::LagMonitor;
use crate::consumer::{BridgeConsumer, BridgeContext, ConsumerLoop, LoopSettings, consumer_config};
use crate::dead_letter::DeadLetterWriter;
use crate::error::BridgeError;
use crate::events::{self, SinkTableRefreshed};
use crate::routes::{AppState, router};
use crate::sink_store::{SinkRefresher, SinkStore, redacted};
use crate::webhook::WebhookDeliverer;
use crate::webhook::service::WebhookService;
use crate::webhook::table::{SinkTable, TableChanges};

/// A built bridge, listening but not yet consuming.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    consumer: Arc<BridgeConsumer>,
    consumer_loop: ConsumerLoop,
    lag_monitor: LagMonitor,
    /// Keeps the sink table in step with PostgreSQL; `None` with static sinks only.
    refresher: Option<SinkRefresher>,
    router: Router,
}

impl Application {
    /// Checks the configuration, creates the Kafka and HTTP clients and binds the listener.
    pub async fn build(config: Config) -> Result<Self, BridgeError> {
        // Registered before the first event, so every unlabelled metric reads 0 from start.
        events::register();
        config.kafka.security.validate()?;
        let static_sinks = config.load_sinks()?;
        let (sinks, refresher) = if config.sinks_from_database {
            let url = config.database_url.expose_secret();
            let failed = |source| BridgeError::SinkDatabase {
                database: redacted(url),
                source,
            };
            let store = SinkStore::connect(url).await.map_err(failed)?;
            let mut refresher =
                SinkRefresher::new(store, static_sinks, config.sinks_refresh_interval());
            refresher.refresh().await.map_err(failed)?;
            (refresher.table(), Some(refresher))
        } else {
            let count = static_sinks.len();
            SinkTableRefreshed {
                sinks: count,
                rows: 0,
                skipped: 0,
                changes: &TableChanges::default(),
            }
            .emit();
            (SinkTable::new(static_sinks), None)
        };
        let sink_count = sinks.current().len();
        if sink_count == 0 {
            if !config.allow_no_sinks {
                return Err(BridgeError::NoSinks);
            }
            tracing::warn!(
                from_database = config.sinks_from_database,
                "No webhook sinks are configured: every record goes to the dead-letter topic until one is added."
            );
        }

        let topics = config.topics();
        let topic = topics.locations().to_owned();
        let consumer: BridgeConsumer = consumer_config(
            &config.kafka,
            &config.group,
            config.session_timeout_ms,
            config.heartbeat_interval_ms,
            config.fetch_wait_max_ms,
        )
        .create_with_context(BridgeContext::new(config.revoke_wait()))?;
        let consumer = Arc::new(consumer);
        let producer: FutureProducer = DeadLetterWriter::producer_config(&config.kafka).create()?;
        let policy = config.retry_policy();
        let dead_letter = DeadLetterWriter::new(producer, topics.dead_letter().to_owned(), policy);
        let service = WebhookService::new(
            Duration::from_millis(config.request_timeout_ms),
            config.sink_target_policy(),
        )?;
        let deliverer = WebhookDeliverer::new(service, policy, config.max_concurrent_deliveries)
            .with_circuit(config.circuit())
            .with_health(
                refresher
                    .as_ref()
                    .map(SinkRefresher::health)
                    .unwrap_or_default(),
            );

        let consumer_loop = ConsumerLoop::new(
            Arc::clone(&consumer),
            deliverer,
            dead_letter,
            sinks,
            LoopSettings {
                topic: topic.clone(),
                batch_max_records: config.batch_max_records.max(1),
                batch_max_bytes: config.batch_max_bytes.max(1),
                batch_linger: Duration::from_millis(config.batch_linger_ms),
                lane_capacity: config.lane_capacity.max(1),
                shutdown_grace: config.shutdown_grace(),
            },
        );
        let lag_monitor = LagMonitor::new(Arc::clone(&consumer), config.lag_interval());
        let router = router(AppState {
            consumer: Arc::clone(&consumer),
            topic: topic.clone(),
        });
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BridgeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BridgeError::Listen {
                addr: config.listen,
                source,
            })?;
        tracing::info!(
            %local_addr,
            topic = %topic,
            group = %config.group,
            sinks = sink_count,
            sinks_from_database = config.sinks_from_database,
            "Stream bridge built."
        );
        Ok(Self {
            listener,
            local_addr,
            consumer,
            consumer_loop,
            lag_monitor,
            refresher,
            router,
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

    /// Consumes, measures the consumer lag, refreshes the sink table and serves HTTP until
    /// `shutdown` is cancelled, then drains: the lanes finish what they hold (within the
    /// grace period), offsets are committed, the lag monitor, the refresher and the HTTP
    /// listener stop, and the consumer leaves its group. Returns early with the error if
    /// the consumer loop or the listener fails.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), BridgeError> {
        let Self {
            listener,
            local_addr,
            consumer,
            consumer_loop,
            lag_monitor,
            refresher,
            router,
        } = self;

        // `stop` ends the consumer loop: on shutdown, or when the listener fails (a bridge
        // that cannot be probed should not keep consuming unseen).
        let stop = shutdown.child_token();
        // The listener outlives the drain, so /metrics can be scraped until the end; it
        // stops once the consumer loop is done.
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
                served.map_err(|source| BridgeError::Listen {
                    addr: local_addr,
                    source,
                })
            }
        });
        // The lag monitor stops with the consumer loop, whatever ended it.
        let lag_stop = CancellationToken::new();
        let lag = tokio::spawn(lag_monitor.run(lag_stop.clone()));
        // The refresher runs until the lanes are done: a drain still reads the sinks, and
        // a sink changed during it is still picked up.
        let refreshed = refresher.map(|r| tokio::spawn(r.run(lag_stop.clone())));
        let consumed = tokio::spawn(consumer_loop.run(stop)).await;
        lag_stop.cancel();
        http_stop.cancel();
        let served = http.await;
        // It holds a handle of the consumer: wait for it to let go (a measurement in
        // progress finishes first, within its request timeouts).
        let lagged = lag.await;
        // A refresh in progress is dropped where it stands; the pool closes.
        let refreshed = match refreshed {
            Some(task) => task.await,
            None => Ok(()),
        };

        // Dropping the last handle closes the consumer: it leaves the group, which blocks
        // for a moment, so it happens on a blocking thread.
        tokio::task::spawn_blocking(move || drop(consumer)).await?;
        tracing::info!("Stream bridge stopped.");
        consumed??;
        served??;
        lagged?;
        refreshed?;
        Ok(())
    }
}
