//! The Locus leg of `run`: the timed load through ingest, followed to Kafka (the bench's
//! own consumer) and to the demo webhook until every accepted fix arrived or the drain
//! time passed, with the CPU and memory each process of the stack used meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_wire::SessionId;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::RunArgs;
use crate::client::IngestClient;
use crate::driver;
use crate::kafka_count::{KafkaCountConfig, KafkaCounter};
use crate::procstat;
use crate::receiver::ReceiverClient;
use crate::report::PipelineFigures;
use crate::sessions::{self, start_sessions, stop_sessions};
use crate::workload::Workload;

/// How often the drain looks at Kafka and the receiver.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Runs the Locus leg. Kafka and the webhook are followed until every accepted fix
/// arrived or `drain_secs` passed.
pub(super) async fn run(
    http: &reqwest::Client,
    ingest: Arc<IngestClient>,
    args: &RunArgs,
    work: &Workload,
) -> anyhow::Result<PipelineFigures> {
    let secret = SecretString::from(args.jwt_secret.clone());
    let lifetime = sessions::lifetime_secs(args.duration_secs, args.drain_secs);
    let (sessions, registration) = start_sessions(&ingest, &secret, work, lifetime).await?;
    let session_ids: Vec<SessionId> = sessions.iter().map(|s| s.id).collect();
    // The webhook leg runs only if the receiver is there to be reset: its counts and
    // histogram must be this run's.
    let receiver = match args.receiver_url() {
        Some(url) => {
            let receiver = ReceiverClient::new(http.clone(), url);
            receiver.reset().await.is_ok().then_some(receiver)
        }
        None => None,
    };
    let counter = if args.no_kafka {
        None
    } else {
        let c = KafkaCounter::start(KafkaCountConfig {
            brokers: args.stack.kafka_brokers.clone(),
            security: args.stack.kafka_security.clone(),
            topic: args.stack.topics().locations().to_owned(),
            device_prefix: work.device_prefix(),
        })?;
        // Let the consumer join its group before the load, so its join is not the lag.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some(c)
    };
    let targets = Arc::new(
        sessions
            .iter()
            .map(|s| s.target.clone())
            .collect::<Vec<_>>(),
    );
    let before = procstat::snapshot_pinned(args.ingest_pid);
    let started = Instant::now();

    // Backlog sampler: accepted so far is not known mid-run in closed loop without a shared
    // counter, so the sampler records what is on Kafka; the report derives the backlog.
    let stop_sampler = CancellationToken::new();
    let counter = counter.map(Arc::new);
    let sampler = counter.as_ref().map(|c| {
        let c = Arc::clone(c);
        let stop = stop_sampler.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => samples.push((started.elapsed().as_secs_f64(), c.distinct())),
                }
            }
            samples
        })
    });

    let http_figures = driver::drive(
        Arc::clone(&ingest),
        targets,
        args.mode(),
        Duration::from_secs(args.duration_secs),
        &work.run_id,
    )
    .await;
    let load_end = started.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    let mut on_kafka = 0;
    let mut kafka_done_at = None;
    let mut delivered = None;
    let mut webhook_done_at = None;
    loop {
        if let Some(c) = &counter {
            on_kafka = c.distinct();
            if on_kafka >= http_figures.accepted_fixes && kafka_done_at.is_none() {
                kafka_done_at = Some(started.elapsed().as_secs_f64());
            }
        }
        if let Some(r) = &receiver {
            let n = r.delivered_for(&session_ids).await.unwrap_or(0);
            delivered = Some(n);
            if n >= http_figures.accepted_fixes && webhook_done_at.is_none() {
                webhook_done_at = Some(started.elapsed().as_secs_f64());
            }
        }
        let kafka_ok = counter.is_none() || kafka_done_at.is_some();
        let hook_ok = receiver.is_none() || webhook_done_at.is_some();
        if (kafka_ok && hook_ok) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let after = procstat::snapshot_pinned(args.ingest_pid);
    stop_sampler.cancel();
    // A sampler that panicked leaves no samples; the backlog is only a diagnostic.
    let samples = match sampler {
        Some(s) => s.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let e2e_kafka_ms = counter.as_ref().map(|c| c.e2e()).unwrap_or_default();
    // The sampler has ended, so this is the last reference and the consumer can leave its
    // group cleanly.
    if let Some(c) = counter
        && let Ok(c) = Arc::try_unwrap(c)
    {
        c.stop().await;
    }
    let e2e_webhook_ms = match &receiver {
        Some(r) => r.stats().await.ok().map(|s| s.e2e_ms),
        None => None,
    };
    stop_sessions(&ingest, &sessions).await;

    // Backlog: accepted fixes are assumed to arrive evenly over the load.
    let rate = http_figures.fixes_per_sec;
    let backlog = samples
        .iter()
        .map(|(t, on)| {
            let accepted = (rate * t.min(load_end)) as u64;
            (*t, accepted.saturating_sub(*on))
        })
        .collect();
    let mut problems = Vec::new();
    if http_figures.error_count() > 0 {
        problems.push(format!(
            "HTTP errors: {:?}, dropped {}",
            http_figures.errors, http_figures.dropped
        ));
    }
    if !args.no_kafka && on_kafka < http_figures.accepted_fixes {
        problems.push(format!(
            "only {on_kafka} of {} accepted fixes on Kafka after {} s of drain",
            http_figures.accepted_fixes, args.drain_secs
        ));
    }
    if let Some(d) = delivered
        && d < http_figures.accepted_fixes
    {
        problems.push(format!(
            "only {d} of {} accepted fixes delivered to the webhook",
            http_figures.accepted_fixes
        ));
    }
    let per =
        |done: Option<f64>| done.map(|t| http_figures.accepted_fixes as f64 / t.max(load_end));
    Ok(PipelineFigures {
        processes: procstat::usage(&before, &after, http_figures.accepted_fixes),
        kafka_fixes_per_sec: per(kafka_done_at).unwrap_or(0.0),
        webhook_fixes_per_sec: per(webhook_done_at),
        http: http_figures,
        on_kafka,
        e2e_kafka_ms,
        delivered,
        e2e_webhook_ms,
        backlog,
        problems,
        registration: Some(registration),
    })
}
