//! `locus-bench run`: the benchmark. The same load against a no-op handler (the HTTP
//! ceiling) and through Locus ([`pipeline`]), then the Redis and Kafka ceilings with the
//! same data; writes `run.json` and `run.md` and prints the Markdown.

mod pipeline;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::ceiling::{self, Ceiling};
use crate::client::{self, IngestClient};
use crate::driver::{self, Mode};
use crate::machine::Machine;
use crate::report::{self, BenchReport, PipelineFigures};
use crate::stack::StackArgs;
use crate::workload::Workload;

/// Timeout of one request of the timed runs: no shorter than a stall worth seeing.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of `locus-bench run` (and the load part of `sweep`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Where ingest, Kafka and the demo receiver are.
    #[command(flatten)]
    pub stack: StackArgs,
    /// HS256 secret ingest verifies device tokens with.
    #[arg(
        long,
        env = "LOCUS_JWT_SECRET",
        default_value = "locus-local-dev-secret-change-me",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub jwt_secret: String,
    /// Redis URL (for the XADD ceiling).
    #[arg(
        long,
        env = "LOCUS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Partitions of the scratch topic (ingest's default is 6).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Tenants of the simulated devices, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "acme,globex")]
    pub tenants: Vec<String>,
    /// Simulated devices (sessions) in all.
    #[arg(long, default_value_t = 64)]
    pub devices: u32,
    /// Fixes per batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: u32,
    /// Open loop: fixes per second per device (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub fixes_per_sec_per_device: f64,
    /// Closed loop: requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Gzip the bodies (`Content-Encoding: gzip`).
    #[arg(long)]
    pub gzip: bool,
    /// `Locus-Durability` of every batch of the Locus leg (`buffered`, `kafka`); none by
    /// default, so ingest's default level applies.
    #[arg(long)]
    pub durability: Option<String>,
    /// Seconds of load per leg.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds to wait for Kafka and the webhook to catch up after the load.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Longest no-op HTTP ceiling leg in seconds (a soak runs the Locus leg for long and
    /// needs the ceiling only briefly).
    #[arg(long, default_value_t = 10)]
    pub ceiling_secs: u64,
    /// Skip the Locus leg (ceilings only).
    #[arg(long)]
    pub no_ingest: bool,
    /// Skip the Kafka ceilings and the Kafka leg.
    #[arg(long)]
    pub no_kafka: bool,
    /// The pid of the ingest under load, whose CPU and memory the report gives; without
    /// it, the busiest process named `locus-ingest` (wrong when several run, e.g. one built
    /// from another commit beside the stack's).
    #[arg(long, env = "LOCUS_BENCH_INGEST_PID")]
    pub ingest_pid: Option<u32>,
    /// Short run for the test suite: 2 s legs, no Kafka, no ingest.
    #[arg(long)]
    pub smoke: bool,
    /// Where the reports go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

impl RunArgs {
    /// Defaults of the command line, pointing at the local stack.
    pub fn defaults() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: RunArgs,
        }
        P::parse_from(["x"]).a
    }

    /// The load shape the flags select.
    pub fn mode(&self) -> Mode {
        if self.fixes_per_sec_per_device > 0.0 {
            Mode::Open {
                requests_per_sec: self.fixes_per_sec_per_device * f64::from(self.devices)
                    / f64::from(self.batch_size.max(1)),
            }
        } else {
            Mode::Closed {
                concurrency: self.concurrency.max(1),
            }
        }
    }

    /// The webhook leg runs unless `--receiver-url none`.
    fn receiver_url(&self) -> Option<String> {
        let url = self.stack.receiver_url();
        (url != "none").then_some(url)
    }

    fn apply_smoke(&mut self) {
        if self.smoke {
            self.duration_secs = 2;
            self.no_ingest = true;
            self.no_kafka = true;
            self.devices = self.devices.min(16);
            self.concurrency = self.concurrency.min(8);
        }
    }
}

/// Runs the benchmark and prints its Markdown; the files go to `--out`.
pub async fn execute(args: &RunArgs) -> anyhow::Result<()> {
    let report = run(args, super::command_line()).await?;
    print!("{}", report::run::run_markdown(&report));
    eprintln!("Reports written to {}.", args.out.display());
    Ok(())
}

/// Ceilings and the Locus leg on the same data; writes the reports.
pub async fn run(args: &RunArgs, command: String) -> anyhow::Result<BenchReport> {
    let mut args = args.clone();
    args.apply_smoke();
    let machine = Machine::detect();
    let tenants = super::tenant_ids(&args.tenants)?;
    let work = Workload::new(&tenants, args.devices, args.batch_size, args.gzip)?;
    let mode = args.mode();
    let duration = Duration::from_secs(args.duration_secs);
    let http = client::http_client(REQUEST_TIMEOUT, args.concurrency.max(64))?;

    tracing::info!(
        ?mode,
        "Ceiling: the same HTTP load against a no-op handler."
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let noop_url = ceiling::noop_http::start(stop.clone()).await?;
    let noop_http = driver::drive(
        Arc::new(IngestClient::new(http.clone(), noop_url)),
        Arc::new(work.noop_targets()),
        mode,
        duration.min(Duration::from_secs(args.ceiling_secs.max(1))),
        &work.run_id,
    )
    .await;
    stop.cancel();

    let ingest_url = args.stack.ingest_url();
    let pipeline = if args.no_ingest {
        None
    } else if client::wait_ready(&http, &format!("{ingest_url}/readyz"), Duration::ZERO)
        .await
        .is_err()
    {
        anyhow::bail!(
            "ingest at {ingest_url} is not ready (start the stack with `./locus up`, or pass --no-ingest)"
        );
    } else {
        tracing::info!("The Locus leg: the same load through ingest, Kafka and the webhook.");
        let ingest = Arc::new(
            IngestClient::new(http.clone(), ingest_url).with_durability(args.durability.clone()),
        );
        Some(pipeline::run(&http, ingest, &args, &work).await?)
    };

    tracing::info!("Ceiling: Redis XADD of the same entries.");
    let in_flight = match mode {
        Mode::Closed { concurrency } => concurrency,
        Mode::Open { .. } => args.concurrency,
    };
    let redis_xadd = ceiling::redis::xadd(
        &args.redis_url,
        &format!("locus-bench:{{scratch}}:{}", work.run_id),
        Arc::new(work.buffer_entries()?),
        in_flight,
        duration.min(Duration::from_secs(5)),
    )
    .await
    .unwrap_or_else(|e| Ceiling::skipped(format!("{e:#}")));

    let (kafka_produce, kafka_consume) = if args.no_kafka {
        (
            Ceiling::skipped("--no-kafka"),
            Ceiling::skipped("--no-kafka"),
        )
    } else {
        kafka_ceilings(&args, &work, pipeline.as_ref()).await
    };

    let fractions = report::run::fractions(
        &noop_http,
        &redis_xadd,
        &kafka_produce,
        &kafka_consume,
        pipeline.as_ref(),
    );
    let report = BenchReport {
        date: Utc::now().to_rfc3339(),
        machine,
        command,
        mode,
        batch_size: args.batch_size,
        devices: args.devices,
        tenants: args.tenants.clone(),
        gzip: args.gzip,
        duration_secs: args.duration_secs,
        noop_http,
        redis_xadd,
        kafka_produce,
        kafka_consume,
        pipeline,
        fractions,
    };
    report::run::write_run(&args.out, &report)?;
    Ok(report)
}

/// The produce and consume ceilings on a scratch topic that lives only for them.
async fn kafka_ceilings(
    args: &RunArgs,
    work: &Workload,
    pipeline: Option<&PipelineFigures>,
) -> (Ceiling, Ceiling) {
    // As many records as the pipeline carried, within bounds that keep the leg short.
    let total = pipeline
        .map_or(100_000, |p| p.http.accepted_fixes)
        .clamp(20_000, 300_000);
    // The bench's own topic, not one of the deployment's (`locus_wire::topics`): under the
    // prefix so that a shared cluster keeps deployments apart, and deleted after the leg.
    let topic = format!("{}bench-scratch-{}", args.stack.topic_prefix, work.run_id);
    let brokers = &args.stack.kafka();
    tracing::info!(records = total, %topic, "Ceiling: rdkafka produce, then consume.");
    let result = async {
        let records = work.records(total)?;
        crate::kafka::create_topic(brokers, &topic, args.partitions).await?;
        let produce = ceiling::kafka::produce(brokers, &topic, &records).await?;
        let consume =
            ceiling::kafka::consume(brokers, &topic, produce.fixes, Duration::from_secs(60))
                .await?;
        anyhow::Ok((produce, consume))
    }
    .await;
    crate::kafka::delete_topic(brokers, &topic).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            let why = format!("{e:#}");
            (Ceiling::skipped(why.clone()), Ceiling::skipped(why))
        }
    }
}
