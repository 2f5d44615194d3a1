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

/// How long a sink set through the API takes to reach the bridge: its default table
/// refresh (`LOCUS_BRIDGE_SINKS_REFRESH_MS`, 2 s) and a margin.
const SINK_SETTLE: Duration = Duration::from_secs(3);

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
    /// Tenants (among `--tenants`) whose sink is pointed at the receiver's `/hang`, a
    /// webhook that never answers, for this run (set through `PUT /v1/sink`, removed at
    /// the end so their records then go to the static sinks). The figures count the other
    /// tenants only: how a hung partner affects the healthy ones.
    #[arg(long, value_delimiter = ',')]
    pub hang_tenants: Vec<String>,
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
    let secret = SecretString::from(args.jwt_secret.clone());
    for tenant in &args.hang_tenants {
        anyhow::ensure!(
            args.tenants.contains(tenant),
            "--hang-tenants names {tenant}, which is not among --tenants"
        );
        hang_sink(
            &http,
            &plan.ingest_url,
            &secret,
            tenant,
            &receiver.url("/hang"),
        )
        .await?;
    }
    if !args.hang_tenants.is_empty() {
        tracing::info!(tenants = ?args.hang_tenants, "Sinks pointed at the hanging webhook; waiting for the bridge to read them.");
        tokio::time::sleep(SINK_SETTLE).await;
    }

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
    // The sessions whose records the webhook should get: all but the hung tenants'.
    let sessions: Vec<_> = load
        .sessions
        .iter()
        .filter(|s| {
            !args
                .hang_tenants
                .iter()
                .any(|t| t == s.device.tenant.as_str())
        })
        .map(|s| s.session_id)
        .collect();
    let all_sessions = load.session_ids();
    // Every fix of the demo is valid and every batch the same size, so each session's
    // share of the accepted fixes is equal (a shortfall is a problem reported anyway).
    let expected_delivered = if all_sessions.is_empty() {
        0
    } else {
        load.accepted * sessions.len() as u64 / all_sessions.len() as u64
    };
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
        on_kafka = counter.distinct_for(&all_sessions);
        delivered = receiver.delivered_for(&sessions).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read the receiver's count.");
            0
        });
        if (on_kafka >= load.accepted && delivered >= expected_delivered)
            || Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let waited_secs = waited.elapsed().as_secs_f64();
    let kafka_progress = counter.progress();
    counter.stop().await;
    let (e2e_ms, hung_requests) = receiver
        .stats()
        .await
        .map(|s| (s.e2e_ms, s.hung_requests))
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read the receiver's stats.");
            (LatencyMs::default(), 0)
        });

    for tenant in &args.hang_tenants {
        if let Err(e) = unhang_sink(&http, &plan.ingest_url, &secret, tenant).await {
            tracing::warn!(tenant, error = %format!("{e:#}"), "Cannot remove the hanging sink; DELETE /v1/sink as the tenant's admin.");
        }
    }
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
    if delivered != expected_delivered {
        problems.push(format!(
            "{delivered} of {expected_delivered} accepted fixes delivered to the webhook at {} after {waited_secs:.0} s \
             (is a webhook sink of tenants {} pointing there, with the demo secret?)",
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
        hung_tenants: args.hang_tenants.clone(),
        hung_requests,
        problems,
    })
}

/// Points `tenant`'s sink at the hanging webhook `url` (creating the tenant if needed).
async fn hang_sink(
    http: &reqwest::Client,
    ingest: &str,
    secret: &SecretString,
    tenant: &str,
    url: &str,
) -> anyhow::Result<()> {
    let platform = crate::auth::platform_admin_token(secret)?;
    let created = http
        .post(format!("{ingest}/v1/tenants"))
        .bearer_auth(&platform)
        .json(&serde_json::json!({ "tenant_id": tenant }))
        .send()
        .await
        .context("ingest does not answer POST /v1/tenants")?;
    anyhow::ensure!(
        created.status().is_success() || created.status() == reqwest::StatusCode::CONFLICT,
        "cannot create tenant {tenant}: {} {}",
        created.status(),
        created.text().await.unwrap_or_default()
    );
    let admin = crate::auth::tenant_admin_token(secret, tenant)?;
    let put = http
        .put(format!("{ingest}/v1/sink"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .context("ingest does not answer PUT /v1/sink")?;
    anyhow::ensure!(
        put.status().is_success(),
        "cannot point {tenant}'s sink at {url}: {} {} (the local stack allows http to loopback with LOCUS_SINK_ALLOW_HTTP and LOCUS_SINK_ALLOW_PRIVATE)",
        put.status(),
        put.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Removes `tenant`'s sink row again: its records then go to the bridge's static sink.
async fn unhang_sink(
    http: &reqwest::Client,
    ingest: &str,
    secret: &SecretString,
    tenant: &str,
) -> anyhow::Result<()> {
    let admin = crate::auth::tenant_admin_token(secret, tenant)?;
    let deleted = http
        .delete(format!("{ingest}/v1/sink"))
        .bearer_auth(&admin)
        .send()
        .await?;
    anyhow::ensure!(
        deleted.status().is_success() || deleted.status() == reqwest::StatusCode::NOT_FOUND,
        "DELETE /v1/sink answered {}",
        deleted.status()
    );
    Ok(())
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
