//! `locus-bench receiver`: the demo partner's process. Binds, serves
//! [`crate::receiver`] until shutdown, and logs the final counts.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::receiver::{self, Receiver, ReceiverConfig};
use crate::stack::DEFAULT_RECEIVER_LISTEN;

/// Command-line and environment settings of `locus-bench receiver`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long, env = "LOCUS_RECEIVER_LISTEN", default_value = DEFAULT_RECEIVER_LISTEN)]
    pub listen: SocketAddr,
    /// Secret the webhook sink signs deliveries with.
    #[arg(
        long,
        env = "LOCUS_DEMO_WEBHOOK_SECRET",
        default_value = "demo-webhook-secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub secret: String,
    /// Largest accepted distance between the signature's timestamp and now, in seconds.
    #[arg(long, env = "LOCUS_RECEIVER_TOLERANCE_SECS", default_value_t = 300)]
    pub tolerance_secs: i64,
}

impl From<&ReceiverArgs> for ReceiverConfig {
    fn from(args: &ReceiverArgs) -> Self {
        Self {
            secret: SecretString::from(args.secret.clone()),
            tolerance_secs: args.tolerance_secs,
        }
    }
}

/// Binds, serves until `shutdown`, logs the final counts.
pub async fn run(
    args: &ReceiverArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let receiver = Receiver::new(ReceiverConfig::from(args));
    tracing::info!(
        addr = %listener.local_addr()?,
        "Demo webhook receiver listening; POST /webhook, GET /stats."
    );
    receiver::serve(listener, receiver.clone(), shutdown).await?;
    let stats = receiver.stats();
    tracing::info!(
        deliveries = stats.deliveries,
        distinct_records = stats.distinct_records,
        duplicates = stats.duplicates,
        signature_failures = stats.signature_failures,
        "Shutdown complete."
    );
    Ok(())
}
