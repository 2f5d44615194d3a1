//! What more than one of the bridge's test binaries starts: a real ingest, in-process.

use locus_testkit as kit;
use tokio_util::sync::CancellationToken;

/// A running ingest (api and forwarder roles): its base URL, its stop token and its task.
pub struct Ingest {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// URL of its database's owner, for set-up (registering devices).
    pub owner_url: String,
    /// Cancel to stop it gracefully (drain, flush).
    pub stop: CancellationToken,
    /// Await after `stop` for the drain to finish.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts ingest against `brokers` with its own database and Redis prefix, writing to the
/// topics of `topic_prefix` (3 partitions), and with the test token secret.
pub async fn spawn_ingest(brokers: &str, topic_prefix: &str) -> Ingest {
    let database = kit::test_database().await;
    let config = locus_ingest::Config::for_tests(kit::JWT_SECRET).with(|c| {
        c.database.url = database.url;
        c.redis.url = kit::redis_url();
        c.redis.prefix = kit::unique("locus-bridge-test-ingest-");
        c.kafka = kit::kafka_settings_for(brokers, topic_prefix);
        c.topics.partitions = 3;
    });
    let app = locus_ingest::Application::build(config)
        .await
        .expect("ingest starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    Ingest {
        url,
        owner_url: database.owner_url,
        stop,
        task,
    }
}

impl Ingest {
    /// Registers `device` of `tenant` (sessions start only for registered devices) and
    /// returns a device token for it.
    pub async fn device_token(&self, tenant: &str, device: &str) -> String {
        kit::register_device(&self.owner_url, tenant, device).await;
        kit::device_token(tenant, device)
    }
}

/// Starts a session on `ingest` with `body` as the device of `token`, and returns its id.
pub async fn start_session(
    client: &reqwest::Client,
    ingest: &str,
    token: &str,
    body: serde_json::Value,
) -> String {
    let session: serde_json::Value = client
        .post(format!("{ingest}/v1/sessions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("ingest answers")
        .json()
        .await
        .expect("a JSON session");
    session["session_id"]
        .as_str()
        .expect("the session has an id")
        .to_owned()
}
