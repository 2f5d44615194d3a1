//! The Kafka counter against the local broker (Apache Kafka at `LOCUS_KAFKA_BROKERS`).

use std::time::Duration;

use chrono::Utc;
use locus_bench::kafka_count::{KafkaCountConfig, KafkaCounter};
use locus_wire::record::{LocationRecord, SCHEMA_VERSION, record_id};
use locus_wire::{DeviceId, SessionId, TenantId};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn record(device: &str, session: SessionId, index: u32) -> LocationRecord {
    let now = Utc::now();
    LocationRecord {
        schema_version: SCHEMA_VERSION,
        record_id: record_id(session, "b0", index),
        tenant_id: TenantId::parse("acme").unwrap(),
        session_id: session,
        device_id: DeviceId::parse(device).unwrap(),
        batch_id: "b0".into(),
        batch_index: index,
        recorded_at: now,
        received_at: now,
        lat: 1.0,
        lon: 2.0,
        accuracy: None,
        altitude: None,
        speed: None,
        heading: None,
        battery: None,
        fix_key: None,
        attributes: None,
    }
}

async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = locus_testkit::kafka_config().create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Kafka is not reachable at {} ({e}); run `./locus services` first",
                locus_testkit::kafka_brokers()
            )
        });
    for r in results {
        r.expect("topic created");
    }
}

#[tokio::test]
async fn the_counter_counts_distinct_records_of_the_run_sessions_only() {
    let topic = locus_testkit::unique("locus-bench-test-locations-");
    let run = locus_testkit::unique("r");
    let prefix = format!("bench-{run}-");
    // Subscribe before the topic exists, as a demo on a fresh broker would.
    let counter = KafkaCounter::start(KafkaCountConfig {
        brokers: locus_testkit::kafka_brokers(),
        security: locus_testkit::kafka_security(),
        topic: topic.clone(),
        device_prefix: prefix.clone(),
    })
    .unwrap();
    create_topic(&topic).await;

    let (ours_a, ours_b, theirs) = (SessionId::new(), SessionId::new(), SessionId::new());
    let mut values: Vec<(SessionId, Vec<u8>)> = Vec::new();
    for i in 0..3 {
        values.push((
            ours_a,
            serde_json::to_vec(&record(&format!("{prefix}0"), ours_a, i)).unwrap(),
        ));
    }
    for i in 0..2 {
        values.push((
            ours_b,
            serde_json::to_vec(&record(&format!("{prefix}1"), ours_b, i)).unwrap(),
        ));
    }
    // An at-least-once copy, another run's records and a value that is not a record.
    values.push((
        ours_a,
        serde_json::to_vec(&record(&format!("{prefix}0"), ours_a, 0)).unwrap(),
    ));
    for i in 0..4 {
        values.push((
            theirs,
            serde_json::to_vec(&record("bench-other-0", theirs, i)).unwrap(),
        ));
    }
    values.push((theirs, b"not json".to_vec()));

    let producer: FutureProducer = locus_testkit::kafka_config().create().unwrap();
    for (session, value) in &values {
        let key = session.to_string();
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("record produced");
    }

    let sessions = [ours_a, ours_b];
    let counted = locus_testkit::eventually(Duration::from_secs(45), || {
        let progress = counter.progress();
        let n = counter.distinct_for(&sessions);
        async move { (progress.messages >= 11).then_some((n, progress)) }
    })
    .await;
    let (n, progress) = counted.unwrap_or_else(|| {
        panic!(
            "the counter read {} of 11 messages from {topic}: {:?}",
            counter.progress().messages,
            counter.progress()
        )
    });
    assert_eq!(
        n, 5,
        "3 + 2 distinct records of the run; the copy and other runs not counted"
    );
    assert_eq!(
        counter.distinct_for(&[theirs]),
        0,
        "other devices are not kept"
    );
    assert_eq!(progress.unparsed, 1);
    counter.stop().await;
}

#[tokio::test]
async fn on_a_topic_that_exists_the_counter_skips_what_was_there_before_it_started() {
    let topic = locus_testkit::unique("locus-bench-test-locations-");
    let run = locus_testkit::unique("r");
    let device = format!("bench-{run}-0");
    create_topic(&topic).await;
    let producer: FutureProducer = locus_testkit::kafka_config().create().unwrap();
    let session = SessionId::new();
    let send = |index: u32, timestamp_ms: i64| {
        let producer = producer.clone();
        let topic = topic.clone();
        let value = serde_json::to_vec(&record(&device, session, index)).unwrap();
        async move {
            let key = session.to_string();
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .timestamp(timestamp_ms),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("record produced");
        }
    };
    // Three records of an earlier run, well before the counter's margin.
    let old = Utc::now().timestamp_millis() - 600_000;
    for i in 0..3 {
        send(i, old).await;
    }
    let counter = KafkaCounter::start(KafkaCountConfig {
        brokers: locus_testkit::kafka_brokers(),
        security: locus_testkit::kafka_security(),
        topic: topic.clone(),
        device_prefix: format!("bench-{run}-"),
    })
    .unwrap();
    for i in 3..5 {
        send(i, Utc::now().timestamp_millis()).await;
    }

    let read = locus_testkit::eventually(Duration::from_secs(30), || {
        let n = counter.distinct_for(&[session]);
        async move { (n >= 2).then_some(n) }
    })
    .await;
    // A moment more: an old record, had it been read, would arrive with the new ones.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        read,
        Some(2),
        "the two new records: {:?}",
        counter.progress()
    );
    assert_eq!(counter.distinct_for(&[session]), 2);
    assert_eq!(
        counter.progress().messages,
        2,
        "the old ones were never read"
    );
    counter.stop().await;
}
