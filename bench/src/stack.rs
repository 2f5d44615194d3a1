//! Where the local stack is: the URLs and Kafka settings every subcommand that drives load
//! shares (`demo`, `run`, `sweep`), derived from the same variables `./locus` exports
//! (`scripts/env.sh`). A stack started with `LOCUS_INGEST_LISTEN=127.0.0.1:18080 ./locus up`
//! is found by any of them without a flag.

use locus_service::kafka::KafkaSecurity;
use locus_service::settings::KafkaSettings;
use locus_wire::topics::Topics;

/// Ingest's listen address when `LOCUS_INGEST_LISTEN` is not set (ingest's own default).
const DEFAULT_INGEST_LISTEN: &str = "127.0.0.1:8080";

/// The demo receiver's listen address when `LOCUS_RECEIVER_LISTEN` is not set.
pub const DEFAULT_RECEIVER_LISTEN: &str = "127.0.0.1:9300";

/// Command-line and environment settings that say where the stack is.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Base URL of ingest [default: http://$LOCUS_INGEST_LISTEN, else http://127.0.0.1:8080].
    #[arg(long, env = "LOCUS_INGEST_URL")]
    pub ingest_url: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "LOCUS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of the topic names; the location topic is `<prefix>locations`.
    #[arg(long, env = "LOCUS_KAFKA_TOPIC_PREFIX", default_value = "locus.")]
    pub topic_prefix: String,
    /// How the bench's Kafka clients authenticate (`LOCUS_KAFKA_SECURITY_PROTOCOL`,
    /// `LOCUS_KAFKA_SASL_*`, `LOCUS_KAFKA_SSL_*`; `./locus` gives the bench `locus-bench`).
    #[command(flatten)]
    pub kafka_security: KafkaSecurity,
    /// Base URL of the demo webhook receiver (`locus-bench receiver`); for `run` and
    /// `sweep`, `none` skips the webhook leg
    /// [default: http://$LOCUS_RECEIVER_LISTEN, else http://127.0.0.1:9300].
    #[arg(long, env = "LOCUS_RECEIVER_URL")]
    pub receiver_url: Option<String>,
}

impl StackArgs {
    /// Base URL of ingest, without a trailing slash.
    pub fn ingest_url(&self) -> String {
        url_from_env(
            self.ingest_url.as_deref(),
            "LOCUS_INGEST_LISTEN",
            DEFAULT_INGEST_LISTEN,
        )
    }

    /// Base URL of the demo receiver, without a trailing slash.
    pub fn receiver_url(&self) -> String {
        url_from_env(
            self.receiver_url.as_deref(),
            "LOCUS_RECEIVER_LISTEN",
            DEFAULT_RECEIVER_LISTEN,
        )
    }

    /// The topic names under the prefix.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }

    /// The stack's Kafka: brokers, prefix and security.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::new(&self.kafka_brokers, &self.topic_prefix)
            .with_security(self.kafka_security.clone())
    }
}

/// [`base_url`] with the listen address read from the variable `listen_var`.
fn url_from_env(given: Option<&str>, listen_var: &str, default_addr: &str) -> String {
    base_url(
        given,
        std::env::var(listen_var).ok().as_deref(),
        default_addr,
    )
}

/// The URL given, else one built from the service's listen address (what `./locus` sets),
/// else the default address. A wildcard listen address is reached on loopback.
fn base_url(given: Option<&str>, listen: Option<&str>, default_addr: &str) -> String {
    let url = match given {
        Some(url) => url.to_owned(),
        None => {
            let addr = listen
                .unwrap_or(default_addr)
                .replace("0.0.0.0", "127.0.0.1")
                .replace("[::]", "127.0.0.1");
            format!("http://{addr}")
        }
    };
    url.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_url_wins_over_the_listen_address() {
        assert_eq!(
            base_url(
                Some("http://h:1/"),
                Some("127.0.0.1:18080"),
                "127.0.0.1:8080"
            ),
            "http://h:1"
        );
    }

    #[test]
    fn without_a_url_the_listen_address_is_used_and_a_wildcard_is_reached_on_loopback() {
        assert_eq!(
            base_url(None, Some("127.0.0.1:18080"), "127.0.0.1:8080"),
            "http://127.0.0.1:18080"
        );
        assert_eq!(
            base_url(None, Some("0.0.0.0:18080"), "127.0.0.1:8080"),
            "http://127.0.0.1:18080"
        );
        assert_eq!(
            base_url(None, Some("[::]:9300"), "127.0.0.1:9300"),
            "http://127.0.0.1:9300"
        );
        assert_eq!(
            base_url(None, None, "127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }
}
