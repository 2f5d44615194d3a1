//! `locus-bench demo`: a short load through the whole pipeline that proves every accepted
//! fix reached Kafka and the partner's webhook, and prints the figures.
//!
//! Order matters: the receiver is reset and the Kafka consumer joins its group before the
//! first batch, so nothing of this run is missed and the slow group join overlaps the load.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::SecretString;

use crate::client::wait_ready;
use crate::driver::plan::{LoadPlan, LoadReport, run_load};
use crate::kafka_count::{KafkaCountConfig, KafkaCounter};
use crate::receiver::ReceiverClient;
use crate::report::{DemoFigures, LatencyMs};
use crate::stack::StackArgs;

/// How often the catch-up wait looks at Kafka and the receiver.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Command-line and environment settings of `locus-bench demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where ingest, Kafka and the demo receiver are.
    #[command(flatten)]
    pub stack: StackArgs,
    /// HS256 secret ingest verifies device tokens with.
    #[arg(long, env = "LOCUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Tenants of the simulated devices, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "acme,globex")]
    pub tenants: Vec<String>,
    /// Simulated devices per tenant.
    #[arg(long, default_value_t = 4)]
    pub devices_per_tenant: u32,
    /// Batches each device posts.
    #[arg(long, default_value_t = 10)]
    pub batches_per_device: u32,
    /// Fixes per batch.
    #[arg(long, default_value_t = 50)]
    pub batch_size: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to wait for Kafka and the webhook to catch up after the last batch.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
    /// Seconds to wait for ingest and the receiver to answer /readyz before starting.
    #[arg(long, default_value_t = 30)]
    pub ready_secs: u64,
    /// Print the figures as JSON instead of the text block.
    #[arg(long)]
    pub json: bool,
}

impl DemoArgs {
    fn plan(&self) -> anyhow::Result<LoadPlan> {
        let mut plan = LoadPlan::new(
            self.stack.ingest_url(),
            SecretString::from(self.jwt_secret.clone()),
            super::tenant_ids(&self.tenants)?,
        );
        plan.devices_per_tenant = self.devices_per_tenant;
        plan.batches_per_device = self.batches_per_device;
        plan.batch_size = self.batch_size;
        plan.concurrency = self.concurrency;
        Ok(plan)
    }
}

/// Runs the demo, prints its figures (text, or JSON with `--json`), and fails unless
/// everything arrived.
pub async fn execute(args: &DemoArgs) -> anyhow::Result<()> {
    let figures = run_demo(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print!("{}", figures.render_text());
    }
    anyhow::ensure!(figures.ok(), "demo FAILED: {}", figures.problems.join("; "));
    Ok(())
}

/// Runs the demo and returns its figures; `problems` is empty when everything arrived.
/// An error means the demo could not run at all (a service missing, a bad flag).
pub async fn run_demo(args: &DemoArgs) -> anyhow::Result<DemoFigures> {
    let plan = args.plan()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let receiver = ReceiverClient::new(http.clone(), args.stack.receiver_url());
    let ready = Duration::from_secs(args.ready_secs);
    wait_ready(&http, &format!("{}/readyz", plan.ingest_url), ready)
        .await
        .context("ingest is not ready")?;
    wait_ready(&http, &receiver.url("/readyz"), ready)
        .await
        .context(
            "the demo webhook receiver is not running (start it with `locus-bench receiver`)",
        )?;
    receiver
        .reset()
        .await
        .context("cannot reset the demo webhook receiver")?;

    let topic = args.stack.topics().locations().to_owned();
    let counter = KafkaCounter::start(KafkaCountConfig {
        brokers: args.stack.kafka_brokers.clone(),
        security: args.stack.kafka_security.clone(),
        topic: topic.clone(),
        device_prefix: plan.device_prefix(),
    })?;
    tracing::info!(
        run_id = %plan.run_id,
        fixes = plan.total_fixes(),
        "Demo load starting."
    );
    let load = match run_load(&plan).await {
        Ok(load) => load,
        Err(e) => {
            counter.stop().await;
            return Err(e);
        }
    };
    let sessions = load.session_ids();
    tracing::info!(
        accepted = load.accepted,
        rejected = load.rejected,
        "Load done; waiting for Kafka and the webhook."
    );

    // Catch-up: poll counts, never watermarks (see kafka_count).
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(args.wait_secs);
    let (mut on_kafka, mut delivered);
    loop {
        on_kafka = counter.distinct_for(&sessions);
        delivered = receiver.delivered_for(&sessions).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read the receiver's count.");
            0
        });
        if (on_kafka >= load.accepted && delivered >= load.accepted) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let waited_secs = waited.elapsed().as_secs_f64();
    let kafka_progress = counter.progress();
    counter.stop().await;
    let e2e_ms = receiver
        .stats()
        .await
        .map(|s| s.e2e_ms)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read the receiver's stats.");
            LatencyMs::default()
        });

    let mut problems = load_problems(&load, &plan);
    if on_kafka != load.accepted {
        let mut p = format!(
            "{on_kafka} of {} accepted fixes found on Kafka topic {topic} after {waited_secs:.0} s \
             ({} messages read)",
            load.accepted, kafka_progress.messages
        );
        if let Some(e) = &kafka_progress.last_error {
            p.push_str(&format!("; last consumer error: {e}"));
        }
        problems.push(p);
    }
    if kafka_progress.unparsed > 0 {
        problems.push(format!(
            "{} messages on {topic} are not LocationRecords",
            kafka_progress.unparsed
        ));
    }
    if delivered != load.accepted {
        problems.push(format!(
            "{delivered} of {} accepted fixes delivered to the webhook at {} after {waited_secs:.0} s \
             (is a webhook sink of tenants {} pointing there, with the demo secret?)",
            load.accepted,
            receiver.url("/webhook"),
            args.tenants.join(", ")
        ));
    }

    Ok(DemoFigures {
        run_id: plan.run_id.clone(),
        tenants: plan.tenants.iter().map(ToString::to_string).collect(),
        devices: plan.total_devices(),
        batches: plan.total_batches(),
        fixes: plan.total_fixes(),
        registration: load.registration,
        accepted: load.accepted,
        rejected: load.rejected,
        failed_batches: load.failed_batches,
        retries: load.retries,
        on_kafka,
        delivered,
        http_latency_ms: LatencyMs::from_micros(&load.batch_latency_us),
        throughput_fixes_per_sec: load.throughput(),
        load_secs: load.load_elapsed.as_secs_f64(),
        e2e_ms,
        waited_secs,
        problems,
    })
}

/// What went wrong on the HTTP side. The demo's fixes are all valid, so a rejected fix is
/// a bug somewhere, not noise.
fn load_problems(load: &LoadReport, plan: &LoadPlan) -> Vec<String> {
    let mut problems = Vec::new();
    if load.accepted == 0 {
        problems.push("ingest accepted no fix".to_owned());
    }
    if load.rejected > 0 {
        problems.push(format!(
            "ingest rejected {} valid fixes: {:?}",
            load.rejected, load.reject_reasons
        ));
    }
    if load.failed_sessions > 0 {
        problems.push(format!(
            "{} of {} sessions could not be started",
            load.failed_sessions,
            plan.total_devices()
        ));
    }
    if load.failed_batches > 0 {
        problems.push(format!(
            "{} of {} batches failed",
            load.failed_batches,
            plan.total_batches()
        ));
    }
    if load.failed_stops > 0 {
        problems.push(format!(
            "{} sessions could not be stopped",
            load.failed_stops
        ));
    }
    if let Some(first) = load.errors.first()
        && !problems.is_empty()
    {
        problems.push(format!("first error: {first}"));
    }
    problems
}
