//! Sinks kept in PostgreSQL reach a running bridge without a restart: a sink added, changed
//! or disabled takes effect within one refresh interval, a bad row is skipped without
//! stopping the others, and while PostgreSQL cannot be read the bridge keeps delivering with
//! the table it has. Each test has a database of its own (the shared PostgreSQL is never
//! stopped: the outage is a proxy that goes away).

use std::time::Duration;

use locus_stream_bridge::Application;
use locus_stream_bridge::replay::{ReplayFilter, replay_dead_letters};
use locus_testkit::proxy::FreezableProxy;
use locus_testkit::{TestDatabase, read_topic, read_topic_until, test_database};
use locus_wire::topics::Topics;
use locus_wire::webhook::{SigningKey, verify};
use sqlx::PgPool;

use crate::helpers::{
    Behaviour, PATIENCE, Receiver, TestBridge, config, fresh_topics, produce, session_records,
};

/// The refresh interval of these tests.
const REFRESH_MS: u64 = 200;

/// How long a test waits after changing a row before it produces the records that must
/// see the change: a few refresh intervals, as the machine is shared with other builds.
const PICKED_UP: Duration = Duration::from_millis(5 * REFRESH_MS);

/// The `sinks` table of a test database, written as its owner (row-level security does
/// not apply to the owner, who is the `postgres` superuser locally).
struct SinkRows {
    pool: PgPool,
}

impl SinkRows {
    async fn connect(db: &TestDatabase) -> Self {
        let pool = PgPool::connect(&db.owner_url)
            .await
            .expect("connect to the test database as its owner");
        Self { pool }
    }

    /// Sets the sink of `tenant` (creating the tenant), enabled.
    async fn put(&self, tenant: &str, url: &str, secret: &str) {
        sqlx::query("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(tenant)
            .execute(&self.pool)
            .await
            .expect("insert the tenant");
        sqlx::query(
            "INSERT INTO sinks (id, tenant_id, url, secret) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE \
             SET url = excluded.url, secret = excluded.secret, updated_at = now(), disabled_at = NULL",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(tenant)
        .bind(url)
        .bind(secret)
        .execute(&self.pool)
        .await
        .expect("upsert the sink");
    }

    /// Disables the sink of `tenant`, as `DELETE /v1/sink` or an operator would.
    async fn disable(&self, tenant: &str) {
        let done = sqlx::query("UPDATE sinks SET disabled_at = now() WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&self.pool)
            .await
            .expect("disable the sink");
        assert_eq!(done.rows_affected(), 1, "{tenant} has a sink to disable");
    }
}

/// A value of `/metrics` of `bridge` (the registry is the test binary's, shared).
async fn metric(bridge: &TestBridge, name: &str) -> f64 {
    let text = reqwest::get(bridge.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The `no_sink` dead letters of `prefix` whose detail names `tenant`, once `expected` of
/// them are there (or the patience is over).
async fn no_sink_dead_letters(
    prefix: &str,
    tenant: &str,
    expected: usize,
) -> Vec<locus_testkit::KafkaRecord> {
    let of_tenant = |r: &locus_testkit::KafkaRecord| {
        r.headers["locus-dlq-reason"] == "no_sink" && r.value["tenant_id"] == tenant
    };
    read_topic_until(
        Topics::new(prefix).dead_letter(),
        Duration::from_secs(60),
        |read| read.iter().filter(|r| of_tenant(r)).count() >= expected,
    )
    .await
    .into_iter()
    .filter(of_tenant)
    .collect()
}

#[tokio::test]
async fn with_postgresql_an_empty_sink_table_refuses_to_start_unless_allowed_and_an_unreachable_one_names_the_database()
 {
    let prefix = fresh_topics(1).await;
    let db = test_database().await;
    let refused = Application::build(config(&prefix).with_database(&db.url, REFRESH_MS)).await;
    let message = refused.err().expect("no sinks: no start").to_string();
    assert!(message.contains("LOCUS_BRIDGE_ALLOW_NO_SINKS"), "{message}");

    let unreachable = Application::build(
        config(&prefix).with_database("postgres://locus_app:hunter2@127.0.0.1:1/locus", 100),
    )
    .await;
    let message = unreachable
        .err()
        .expect("no PostgreSQL: no start")
        .to_string();
    assert!(
        message.contains("cannot read the webhook sinks from PostgreSQL at postgres://locus_app:***@127.0.0.1:1/locus"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_sink_inserted_into_postgresql_while_the_bridge_runs_receives_the_tenants_next_records() {
    let prefix = fresh_topics(2).await;
    let db = test_database().await;
    let rows = SinkRows::connect(&db).await;
    let receiver = Receiver::spawn().await;
    let mut bridge_config = config(&prefix).with_database(&db.url, REFRESH_MS);
    bridge_config.allow_no_sinks = true;
    let bridge = TestBridge::spawn(bridge_config.clone()).await;

    // No sink yet: the records wait in the dead-letter topic.
    let early = session_records("late", 4);
    produce(&prefix, &early).await;
    assert_eq!(no_sink_dead_letters(&prefix, "late", 4).await.len(), 4);

    rows.put("late", &receiver.url("late"), "s").await;
    tokio::time::sleep(PICKED_UP).await;
    let next = session_records("late", 5);
    produce(&prefix, &next).await;
    let delivered = receiver.wait_for("late", 5).await;
    let ids: Vec<_> = delivered.iter().map(|r| r.record_id).collect();
    let sent: Vec<_> = next.iter().map(|r| r.record_id).collect();
    assert_eq!(ids, sent, "the records after the insert, in order");

    // The ones that came before the sink are replayed, without a restart either.
    let filter = ReplayFilter {
        reason: Some("no_sink".to_owned()),
        tenant: Some("late".to_owned()),
    };
    let report = replay_dead_letters(&bridge_config, &filter)
        .await
        .expect("the replay runs");
    assert_eq!(report.replayed, early.len());
    let delivered = receiver.wait_for("late", 9).await;
    let replayed: Vec<_> = delivered[5..].iter().map(|r| r.record_id).collect();
    let sent: Vec<_> = early.iter().map(|r| r.record_id).collect();
    assert_eq!(replayed, sent, "the replayed records, after the newer ones");
    assert_eq!(
        no_sink_dead_letters(&prefix, "late", 4).await.len(),
        4,
        "nothing more was dead-lettered"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_sink_url_changed_in_postgresql_moves_deliveries_to_the_new_receiver() {
    let prefix = fresh_topics(2).await;
    let db = test_database().await;
    let rows = SinkRows::connect(&db).await;
    let (fallback, first, second) = (
        Receiver::spawn().await,
        Receiver::spawn().await,
        Receiver::spawn().await,
    );
    rows.put("acme", &first.url("acme"), "s").await;
    // A static sink of the same tenant: the row wins while it exists.
    let bridge = TestBridge::spawn(
        config(&prefix)
            .with_sink("acme", &fallback.url("acme"), "s")
            .with_database(&db.url, REFRESH_MS),
    )
    .await;

    produce(&prefix, &session_records("acme", 3)).await;
    first.wait_for("acme", 3).await;

    rows.put("acme", &second.url("acme"), "s2").await;
    tokio::time::sleep(PICKED_UP).await;
    let moved = session_records("acme", 4);
    produce(&prefix, &moved).await;
    let delivered = second.wait_for("acme", 4).await;
    assert_eq!(
        delivered.iter().map(|r| r.record_id).collect::<Vec<_>>(),
        moved.iter().map(|r| r.record_id).collect::<Vec<_>>()
    );
    let request = &second.requests_for("acme")[0];
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        verify(
            &SigningKey::from_stored("s2").unwrap(),
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            request.header("webhook-signature"),
            &request.body,
            now,
            300
        ),
        Ok(()),
        "signed with the new secret"
    );

    // Disabled in PostgreSQL: the tenant falls back to its static sink.
    rows.disable("acme").await;
    tokio::time::sleep(PICKED_UP).await;
    produce(&prefix, &session_records("acme", 2)).await;
    fallback.wait_for("acme", 2).await;

    assert_eq!(
        first.delivered("acme").len(),
        3,
        "nothing more to the old URL"
    );
    assert_eq!(second.delivered("acme").len(), 4);
    assert!(
        fallback
            .requests_for("acme")
            .iter()
            .all(|r| r.status == 200)
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_delivery_failing_at_the_old_url_is_retried_at_the_new_one_once_the_row_changes() {
    let prefix = fresh_topics(1).await;
    let db = test_database().await;
    let rows = SinkRows::connect(&db).await;
    let (broken, fixed) = (Receiver::spawn().await, Receiver::spawn().await);
    broken.set("acme", Behaviour::Always(503));
    rows.put("acme", &broken.url("acme"), "s").await;
    let bridge = TestBridge::spawn(config(&prefix).with_database(&db.url, REFRESH_MS)).await;

    let records = session_records("acme", 3);
    produce(&prefix, &records).await;
    let failing = locus_testkit::eventually(PATIENCE, || {
        let seen = broken.requests_for("acme");
        async move { (seen.len() >= 2).then_some(seen) }
    })
    .await
    .expect("the broken webhook is tried and retried");
    let delivery_id = failing[0].header("webhook-id").to_owned();

    rows.put("acme", &fixed.url("acme"), "s").await;
    let delivered = fixed.wait_for("acme", 3).await;
    assert_eq!(
        delivered.iter().map(|r| r.record_id).collect::<Vec<_>>(),
        records.iter().map(|r| r.record_id).collect::<Vec<_>>()
    );
    assert_eq!(
        fixed.requests_for("acme")[0].header("webhook-id"),
        delivery_id,
        "the same delivery, retried at the new URL"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_disabled_sink_stops_deliveries_and_the_tenants_records_are_dead_lettered_no_sink() {
    let prefix = fresh_topics(2).await;
    let db = test_database().await;
    let rows = SinkRows::connect(&db).await;
    let receiver = Receiver::spawn().await;
    rows.put("acme", &receiver.url("acme"), "s").await;
    let bridge = TestBridge::spawn(config(&prefix).with_database(&db.url, REFRESH_MS)).await;

    produce(&prefix, &session_records("acme", 3)).await;
    receiver.wait_for("acme", 3).await;

    rows.disable("acme").await;
    tokio::time::sleep(PICKED_UP).await;
    let after = session_records("acme", 5);
    produce(&prefix, &after).await;
    let dead = no_sink_dead_letters(&prefix, "acme", 5).await;
    assert_eq!(
        dead.iter()
            .map(|r| r.value["record_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|r| r.record_id.to_string())
            .collect::<Vec<_>>(),
        "every record after the disable, in order"
    );
    assert_eq!(
        receiver.delivered("acme").len(),
        3,
        "nothing more delivered"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn an_invalid_sink_row_is_skipped_and_the_other_tenants_still_deliver() {
    let prefix = fresh_topics(2).await;
    let db = test_database().await;
    let rows = SinkRows::connect(&db).await;
    let receiver = Receiver::spawn().await;
    rows.put("acme", &receiver.url("acme"), "s").await;
    rows.put("globex", "not a url", "s").await;
    rows.put("initech", "ftp://files.example/hook", "s").await;
    let bridge = TestBridge::spawn(config(&prefix).with_database(&db.url, REFRESH_MS)).await;

    produce(&prefix, &session_records("globex", 2)).await;
    produce(&prefix, &session_records("acme", 4)).await;
    receiver.wait_for("acme", 4).await;
    assert_eq!(no_sink_dead_letters(&prefix, "globex", 2).await.len(), 2);

    // Fixed in PostgreSQL: picked up like any change.
    rows.put("globex", &receiver.url("globex"), "s").await;
    tokio::time::sleep(PICKED_UP).await;
    produce(&prefix, &session_records("globex", 3)).await;
    receiver.wait_for("globex", 3).await;
    bridge.stop().await;
}

#[tokio::test]
async fn the_bridge_keeps_delivering_with_the_last_table_while_postgresql_is_unreachable() {
    let prefix = fresh_topics(2).await;
    let db = test_database().await;
    let rows = SinkRows::connect(&db).await;
    let receiver = Receiver::spawn().await;
    rows.put("acme", &receiver.url("acme"), "s").await;
    // The bridge reaches PostgreSQL through a proxy of its own; the test takes the proxy
    // away, never the shared server.
    let proxy = FreezableProxy::start("127.0.0.1:5432").await;
    let through_proxy = db.url.replacen(
        "@127.0.0.1:5432/",
        &format!("@127.0.0.1:{}/", proxy.port()),
        1,
    );
    assert_ne!(
        through_proxy, db.url,
        "the test database is on 127.0.0.1:5432"
    );
    let bridge = TestBridge::spawn(config(&prefix).with_database(&through_proxy, REFRESH_MS)).await;
    produce(&prefix, &session_records("acme", 3)).await;
    receiver.wait_for("acme", 3).await;

    let failures_before = metric(&bridge, "locus_bridge_sink_refresh_failures_total").await;
    // Frozen, then dropped: a connection the bridge holds dies at its next use (its
    // switch is gone while frozen), and new ones are refused.
    proxy.freeze_all();
    drop(proxy);
    // A change the bridge cannot see: it keeps the table it has.
    rows.disable("acme").await;
    let failed = locus_testkit::eventually(Duration::from_secs(30), || async {
        (metric(&bridge, "locus_bridge_sink_refresh_failures_total").await >= failures_before + 2.0)
            .then_some(())
    })
    .await;
    assert!(failed.is_some(), "refreshes fail and are counted");

    produce(&prefix, &session_records("acme", 4)).await;
    receiver.wait_for("acme", 7).await;
    let dead = read_topic(
        Topics::new(&prefix).dead_letter(),
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    bridge.stop().await;
}
