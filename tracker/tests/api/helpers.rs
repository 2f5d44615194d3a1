//! Test harness: a fresh database and fresh topics per test, the real tracker (its
//! `Application` on port 0, or its binary for the crash tests), records produced to the
//! local broker, and the statistics recomputed from scratch with locus-geo to compare.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use locus_geo::{Stats, TrackPoint};
use locus_tracker::{Application, Config, TrackerError};
use locus_wire::record::{LocationRecord, SCHEMA_VERSION, record_id};
use locus_wire::topics::Topics;
use locus_wire::{DeviceId, SessionId, TenantId};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{PgPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something the tracker should do. Generous: joining a group on
/// the local broker takes a few seconds, and the machine is shared with other builds.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The jump bound of the tests (the default).
pub const MAX_MPS: f64 = 100.0;

/// One test's world: its database and its topics.
pub struct World {
    /// The service role's URL (what the tracker connects with).
    pub url: String,
    /// A pool as the owner (a superuser: sees every row) for set-up and checks.
    pub owner: PgPool,
    /// The topic prefix.
    pub prefix: String,
    /// The topic names.
    pub topics: Topics,
}

/// Panics unless the local broker accepts connections: a test without it must fail.
pub async fn require_kafka() -> String {
    let brokers = locus_testkit::kafka_brokers();
    let first = brokers.split(',').next().unwrap().to_owned();
    tokio::net::TcpStream::connect(&first)
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka is not reachable at {first} ({e}); run `./locus services` first")
        });
    brokers
}

impl World {
    /// A fresh database with every migration, and fresh topics: the location topic with
    /// `partitions` partitions, the positions topic (compacted) and the geofence-events
    /// topic with 3 each.
    pub async fn new(partitions: i32) -> Self {
        let brokers = require_kafka().await;
        let db = locus_testkit::test_database().await;
        let owner = PgPool::connect(&db.owner_url)
            .await
            .expect("connect as the owner");
        let prefix = locus_testkit::unique("locus_tracker_test_") + ".";
        let topics = Topics::new(&prefix);
        let admin: AdminClient<DefaultClientContext> = locus_testkit::kafka_config_for(&brokers)
            .create()
            .expect("create the admin client");
        let results = admin
            .create_topics(
                &[
                    NewTopic::new(topics.locations(), partitions, TopicReplication::Fixed(1)),
                    NewTopic::new(topics.positions(), 3, TopicReplication::Fixed(1))
                        .set("cleanup.policy", "compact"),
                    NewTopic::new(topics.geofence_events(), 3, TopicReplication::Fixed(1)),
                ],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics");
        for r in results {
            r.unwrap_or_else(|(topic, e)| panic!("create topic {topic}: {e}"));
        }
        Self {
            url: db.url,
            owner,
            prefix,
            topics,
        }
    }

    /// The tracker's configuration for this world.
    pub fn config(&self) -> Config {
        let mut c = Config::for_tests(&self.url, &locus_testkit::kafka_brokers(), &self.prefix);
        c.kafka.security = locus_testkit::kafka_security();
        c.group = locus_testkit::unique("locus-tracker-test-");
        c
    }

    /// Produces `records` to the location topic, keyed by session as ingest does, and
    /// waits for every acknowledgement.
    pub async fn produce(&self, records: &[LocationRecord]) {
        let producer: FutureProducer = locus_testkit::kafka_config()
            .set("enable.idempotence", "true")
            .create()
            .expect("create the producer");
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let key = r.session_id.to_string();
            let payload = serde_json::to_vec(r).unwrap();
            let record = FutureRecord::to(self.topics.locations())
                .key(&key)
                .payload(&payload);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queue a record"),
            );
        }
        for d in deliveries {
            d.await
                .expect("the producer lives")
                .map_err(|(e, _)| e)
                .expect("Kafka takes the record");
        }
    }

    /// Fixes of every session, summed.
    pub async fn applied(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(sum(fix_count), 0)::bigint FROM session_stats")
            .fetch_one(&self.owner)
            .await
            .expect("read the statistics")
    }

    /// Waits until the sessions hold `n` fixes in all, and the tracker's offsets reached
    /// the end of the location topic (every record read, the skipped ones too).
    pub async fn wait_applied(&self, n: i64) {
        let ends = locus_testkit::high_watermarks(self.topics.locations()).await;
        let done = locus_testkit::eventually(PATIENCE, || async {
            let applied = self.applied().await;
            let offsets: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(
                "SELECT partition, next_offset FROM tracker_offsets WHERE topic = $1",
            )
            .bind(self.topics.locations())
            .fetch_all(&self.owner)
            .await
            .unwrap()
            .into_iter()
            .collect();
            let caught_up = ends
                .iter()
                .all(|(p, end)| *end == 0 || offsets.get(p) == Some(end));
            (applied >= n && caught_up).then_some(())
        })
        .await;
        assert!(
            done.is_some(),
            "the tracker applied {} of {n} fixes in {PATIENCE:?}",
            self.applied().await
        );
    }

    /// Adds a circular geofence `id` of `tenant` (and the tenant) straight to the database.
    pub async fn add_circle(&self, tenant: &str, id: &str, lat: f64, lon: f64, radius_m: f64) {
        sqlx::query("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(tenant)
            .execute(&self.owner)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO geofences (tenant_id, geofence_id, center_lat, center_lon, radius_m) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(id)
        .bind(lat)
        .bind(lon)
        .bind(radius_m)
        .execute(&self.owner)
        .await
        .unwrap();
    }

    /// Reads the geofence-events topic until `n` events arrived and on to its end (so an
    /// extra copy would be read too), as (device, fence, kind, record id).
    pub async fn geofence_events(&self, n: usize) -> Vec<(String, String, String, uuid::Uuid)> {
        let records =
            locus_testkit::read_topic_to_end(self.topics.geofence_events(), n, PATIENCE).await;
        records
            .iter()
            .map(|r| {
                let e: locus_wire::record::GeofenceEvent =
                    serde_json::from_value(r.value.clone()).expect("a geofence event");
                let kind = serde_json::to_value(e.kind).unwrap();
                (
                    e.device_id.as_str().to_owned(),
                    e.geofence_id.as_str().to_owned(),
                    kind.as_str().unwrap().to_owned(),
                    e.record_id,
                )
            })
            .collect()
    }

    /// The rows of the outbox.
    pub async fn outbox_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM geo_outbox")
            .fetch_one(&self.owner)
            .await
            .unwrap()
    }

    /// Checks `session`'s stored track and statistics against a recomputation from
    /// scratch (locus-geo's `Stats` over the stored points in track order), and that the
    /// track holds exactly the distinct fixes of `records` of that session.
    pub async fn assert_stats_from_scratch(&self, session: SessionId, records: &[LocationRecord]) {
        let mut expected: Vec<&LocationRecord> =
            records.iter().filter(|r| r.session_id == session).collect();
        expected.sort_by_key(|r| (r.recorded_at, r.record_id));
        expected.dedup_by_key(|r| r.record_id);

        let rows = sqlx::query(
            "SELECT recorded_at, record_id, lat, lon, segment_m, segment_mps, jump \
             FROM track_points WHERE session_id = $1 ORDER BY recorded_at, record_id",
        )
        .bind(session.0)
        .fetch_all(&self.owner)
        .await
        .unwrap();
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.get("record_id")).collect();
        let want: Vec<uuid::Uuid> = expected.iter().map(|r| r.record_id).collect();
        assert_eq!(ids, want, "the track holds each fix once, in time order");

        let mut stats = Stats::new(MAX_MPS);
        for row in &rows {
            let p = TrackPoint::new(row.get("recorded_at"), row.get("lat"), row.get("lon"));
            let segment = stats.push(&p);
            let (m, mps, jump) = segment.map_or((0.0, None, false), |s| (s.metres, s.mps, s.jump));
            assert!((row.get::<f64, _>("segment_m") - m).abs() < 1e-6);
            assert_eq!(
                row.get::<Option<f64>, _>("segment_mps").is_some(),
                mps.is_some()
            );
            if let (Some(a), Some(b)) = (row.get::<Option<f64>, _>("segment_mps"), mps) {
                assert!((a - b).abs() < 1e-9 * b.max(1.0));
            }
            assert_eq!(row.get::<bool, _>("jump"), jump);
        }

        let s = sqlx::query("SELECT * FROM session_stats WHERE session_id = $1")
            .bind(session.0)
            .fetch_one(&self.owner)
            .await
            .unwrap();
        assert_eq!(s.get::<i64, _>("fix_count") as u64, stats.fix_count);
        let distance: f64 = s.get("distance_m");
        assert!(
            (distance - stats.distance_m).abs() <= 1e-6 * stats.distance_m.max(1.0),
            "distance {distance} vs {} from scratch",
            stats.distance_m
        );
        assert_eq!(s.get::<i64, _>("jumps") as u64, stats.jumps);
        let first = stats.first.unwrap();
        let last = stats.last.unwrap();
        assert_eq!(s.get::<DateTime<Utc>, _>("first_fix_at"), first.recorded_at);
        assert_eq!(s.get::<DateTime<Utc>, _>("last_fix_at"), last.recorded_at);
        assert_eq!(s.get::<f64, _>("last_lat"), last.lat);
        let bbox = stats.bbox.unwrap();
        assert_eq!(s.get::<f64, _>("min_lat"), bbox.min_lat);
        assert_eq!(s.get::<f64, _>("max_lon"), bbox.max_lon);
        let max: Option<f64> = s.get("max_speed_mps");
        match (max, stats.max_speed_mps) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9 * b.max(1.0), "{a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
}

/// A walking track of `n` fixes for `session`, 10 s apart, about 11 m each, with a jump
/// (a fix 1° away) at every index in `jumps`.
pub fn walk(
    tenant: &str,
    device: &str,
    session: SessionId,
    n: usize,
    jumps: &[usize],
) -> Vec<LocationRecord> {
    let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    (0..n)
        .map(|i| {
            let lat = 52.0 + i as f64 * 0.0001 + if jumps.contains(&i) { 1.0 } else { 0.0 };
            fix(
                tenant,
                device,
                session,
                "b",
                i as u32,
                start + chrono::Duration::seconds(10 * i as i64),
                lat,
                13.0,
            )
        })
        .collect()
}

/// One location record.
#[expect(
    clippy::too_many_arguments,
    reason = "a record's fields, named at the call"
)]
pub fn fix(
    tenant: &str,
    device: &str,
    session: SessionId,
    batch: &str,
    index: u32,
    recorded_at: DateTime<Utc>,
    lat: f64,
    lon: f64,
) -> LocationRecord {
    LocationRecord {
        schema_version: SCHEMA_VERSION,
        record_id: record_id(session, batch, index),
        tenant_id: TenantId::parse(tenant).unwrap(),
        session_id: session,
        device_id: DeviceId::parse(device).unwrap(),
        batch_id: batch.to_owned(),
        batch_index: index,
        recorded_at,
        received_at: Utc::now(),
        lat,
        lon,
        accuracy: Some(5.0),
        altitude: None,
        speed: None,
        heading: None,
        battery: Some(80.0),
        fix_key: None,
        attributes: None,
    }
}

/// A running tracker (the real `Application`).
pub struct TestTracker {
    /// Its HTTP address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), TrackerError>>,
    /// Stops the tracker when a failed assertion drops it: its polling thread runs on the
    /// blocking pool, and the test's runtime waits for that pool forever when it ends.
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl TestTracker {
    /// Builds and starts the tracker.
    pub async fn spawn(config: Config) -> Self {
        locus_service::init_tracing();
        let app = Application::build(config).await.expect("build the tracker");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            task,
        }
    }

    /// A URL on the tracker's listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it gracefully and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the tracker task does not panic")
            .expect("the tracker stops cleanly");
    }
}

/// The tracker's binary, started with `env` on top of the test's environment.
pub struct TrackerProcess {
    child: std::process::Child,
}

impl TrackerProcess {
    /// Starts `locus-tracker` for `world` with consumer group `group` and `extra` settings.
    pub fn start(world: &World, group: &str, extra: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_locus-tracker"));
        command
            .env("LOCUS_DATABASE_URL", &world.url)
            .envs(locus_testkit::kafka_env())
            .env("LOCUS_KAFKA_TOPIC_PREFIX", &world.prefix)
            .env("LOCUS_TRACKER_GROUP", group)
            .env("LOCUS_TRACKER_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        Self {
            child: command.spawn().expect("start locus-tracker"),
        }
    }

    /// SIGKILL: no shutdown, no commit, no flush.
    pub fn kill(mut self) {
        self.child.kill().expect("kill locus-tracker");
        self.child.wait().expect("reap locus-tracker");
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        self.child.wait().expect("wait for locus-tracker").success()
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        // A failed assertion must not leave the process running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
