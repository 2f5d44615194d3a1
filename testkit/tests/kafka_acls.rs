//! The local broker's security, checked on a node of the test's own with exactly the local
//! stack's settings (`scripts/kafka/server.properties.in`) and principals
//! (`scripts/kafka/acls.txt`, applied by `scripts/kafka/principals.sh` as `./locus services`
//! does): clients without the right credentials are refused at login, and each service's
//! principal is refused what it has no business doing, with the broker's own error code.
//!
//! Needs the Kafka jars (`./locus deps`); a missing install fails the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locus_service::kafka::{KafkaSecurity, SaslMechanism, SecurityProtocol};
use locus_testkit::broker::KafkaNode;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PREFIX: &str = "locus.";
const LOCATIONS: &str = "locus.locations";
const BRIDGE_GROUP: &str = "locus-stream-bridge";

/// How long a refusal may take to show: a login or a fetch round trip on loopback, with
/// headroom for a machine busy with builds.
const PATIENCE: Duration = Duration::from_secs(30);

/// A client context that keeps the errors librdkafka reports out of band (a failed login
/// is reported here, not as the result of a call).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<(RDKafkaErrorCode, String)>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            self.0.lock().unwrap().push((code, reason.to_owned()));
        }
    }
}

impl ConsumerContext for Errors {}

impl Errors {
    /// Waits until an error with `code` was reported; returns its reason.
    fn wait_for(&self, code: RDKafkaErrorCode, poll: impl Fn()) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            poll();
            if let Some((_, reason)) = self.0.lock().unwrap().iter().find(|(c, _)| *c == code) {
                return reason.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {code:?} within {PATIENCE:?}; reported: {:?}",
                self.0.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sasl(node: &KafkaNode, username: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", node.bootstrap());
    KafkaSecurity::sasl(
        SecurityProtocol::SaslPlaintext,
        SaslMechanism::ScramSha512,
        username,
        password.into(),
    )
    .apply(&mut c);
    c
}

async fn secured_node() -> KafkaNode {
    tokio::task::spawn_blocking(KafkaNode::start_secured)
        .await
        .expect("the node starts")
}

async fn create_locations(node: &KafkaNode) {
    let admin: AdminClient<DefaultClientContext> = node
        .client_config_as("locus-admin")
        .create()
        .expect("create the admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(LOCATIONS, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("the super user creates a topic");
    for r in results {
        r.unwrap_or_else(|(topic, e)| panic!("create {topic}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_credentials_or_with_a_wrong_password_is_refused_at_login() {
    let node = secured_node().await;

    // The super user logs in: the refusals below are about credentials, not a dead node.
    let admin: BaseConsumer = node.client_config_as("locus-admin").create().unwrap();
    admin
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("locus-admin logs in");

    // A wrong password: the broker answers the SCRAM exchange with
    // SASL_AUTHENTICATION_FAILED, which librdkafka reports as an authentication error.
    let errors = Errors::default();
    let wrong: BaseConsumer<Errors> = sasl(&node, "locus-admin", "not-the-password")
        .create_with_context(errors.clone())
        .unwrap();
    let reason = errors.wait_for(RDKafkaErrorCode::Authentication, || {
        let _ = wrong.fetch_metadata(None, Duration::from_secs(1));
        // Out-of-band errors reach the context when the consumer queue is served.
        let _ = wrong.poll(Duration::from_millis(100));
    });
    assert!(
        reason.contains("invalid credentials"),
        "the broker names the cause: {reason}"
    );
    assert!(wrong.fetch_metadata(None, Duration::from_secs(2)).is_err());

    // A principal that does not exist is refused the same way.
    let errors = Errors::default();
    let nobody: BaseConsumer<Errors> = sasl(&node, "mallory", "whatever")
        .create_with_context(errors.clone())
        .unwrap();
    errors.wait_for(RDKafkaErrorCode::Authentication, || {
        let _ = nobody.fetch_metadata(None, Duration::from_secs(1));
        // Out-of-band errors reach the context when the consumer queue is served.
        let _ = nobody.poll(Duration::from_millis(100));
    });

    // An anonymous plaintext client: the SASL listener takes nothing but the SASL handshake
    // (ApiVersions aside) and closes the connection on the first other request, so the client
    // never gets metadata; librdkafka reports the closed connections as all brokers down.
    let errors = Errors::default();
    let anonymous: BaseConsumer<Errors> = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .create_with_context(errors.clone())
        .unwrap();
    let got = anonymous.fetch_metadata(None, Duration::from_secs(5));
    assert!(got.is_err(), "an anonymous client got metadata: {got:?}");
    errors.wait_for(RDKafkaErrorCode::AllBrokersDown, || {
        let _ = anonymous.fetch_metadata(None, Duration::from_secs(1));
        // Out-of-band errors reach the context when the consumer queue is served.
        let _ = anonymous.poll(Duration::from_millis(100));
    });
}

/// Produces one record to `topic` as the client `config` logs in as, idempotent like the
/// services' producers.
async fn produce(config: &ClientConfig, topic: &str) -> Result<(), RDKafkaErrorCode> {
    let producer: FutureProducer = config
        .clone()
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("create a producer");
    producer
        .send(
            FutureRecord::<str, str>::to(topic).key("k").payload("v"),
            Timeout::After(PATIENCE),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail))
}

/// A consumer in `group` that never commits on its own, as `config` logs in.
fn consumer_in(config: &ClientConfig, group: &str) -> BaseConsumer {
    config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a consumer")
}

/// Reads the first record of partition 0 of `topic` in `group`, as `config` logs in, or the
/// broker's refusal.
fn read_first(config: &ClientConfig, topic: &str, group: &str) -> Result<(), RDKafkaErrorCode> {
    let consumer = consumer_in(config, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => return Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
            None => {}
        }
    }
    panic!("neither a record nor a refusal from {topic} within {PATIENCE:?}");
}

/// Commits offset 0 of `topic` for `group` as `config` logs in.
fn commit(config: &ClientConfig, topic: &str, group: &str) -> Result<(), RDKafkaErrorCode> {
    let consumer = consumer_in(config, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    // The group's coordinator is looked up first; a refused lookup shows as a consumer
    // error, an accepted one lets the commit through (or refuses it).
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => return Ok(()),
            Err(e) => match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::WaitingForCoordinator) => {}
                code => return Err(code.unwrap_or(RDKafkaErrorCode::Fail)),
            },
        }
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            return Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail));
        }
    }
    panic!("neither a commit nor a refusal for {group} within {PATIENCE:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_principal_may_do_its_job_and_nothing_else() {
    let node = secured_node().await;
    let node = tokio::task::spawn_blocking(move || {
        node.provision(PREFIX);
        node
    })
    .await
    .unwrap();
    create_locations(&node).await;
    let ingest = node.client_config_as("locus-ingest");
    let bridge = node.client_config_as("locus-bridge");
    let tracker = node.client_config_as("locus-tracker");

    // Ingest writes locations, and reads nothing.
    assert_eq!(produce(&ingest, LOCATIONS).await, Ok(()), "ingest produces");
    let ingest_reads = tokio::task::spawn_blocking({
        let ingest = ingest.clone();
        move || read_first(&ingest, LOCATIONS, BRIDGE_GROUP)
    });
    assert!(
        matches!(
            ingest_reads.await.unwrap(),
            Err(RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed)
        ),
        "ingest must not read the locations"
    );

    // The bridge reads them in its group, and cannot write them: it cannot forge a record
    // that another tenant's webhook would receive.
    let bridge_reads = tokio::task::spawn_blocking({
        let bridge = bridge.clone();
        move || read_first(&bridge, LOCATIONS, BRIDGE_GROUP)
    });
    assert_eq!(bridge_reads.await.unwrap(), Ok(()), "the bridge reads");
    assert_eq!(
        produce(&bridge, LOCATIONS).await,
        Err(RDKafkaErrorCode::TopicAuthorizationFailed),
        "the bridge must not write the locations"
    );

    // Another service cannot commit offsets in the bridge's group (which would make the
    // bridge skip deliveries), nor read in it.
    let tracker_commits = tokio::task::spawn_blocking({
        let tracker = tracker.clone();
        move || commit(&tracker, LOCATIONS, BRIDGE_GROUP)
    });
    assert_eq!(
        tracker_commits.await.unwrap(),
        Err(RDKafkaErrorCode::GroupAuthorizationFailed),
        "the tracker must not commit in the bridge's group"
    );
    // Its own group is its own.
    let tracker_own = tokio::task::spawn_blocking({
        let tracker = tracker.clone();
        move || commit(&tracker, LOCATIONS, "locus-tracker")
    });
    assert_eq!(
        tracker_own.await.unwrap(),
        Ok(()),
        "the tracker commits in its group"
    );

    // Nobody but the super user creates topics outside the deployment's prefix.
    let admin: AdminClient<DefaultClientContext> = ingest.create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(
                "elsewhere.locations",
                1,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("the create request is answered");
    assert!(
        matches!(
            results[0],
            Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))
        ),
        "{results:?}"
    );
}
