//! The write side of the geo tables: one poll batch applied in ONE PostgreSQL transaction
//! in the system scope. The order of the statements is the guarantee:
//!
//! 1. Lock the offsets of the batch's partitions (`tracker_offsets`, `FOR UPDATE`) and drop
//!    the records below them: those were applied by an earlier transaction (a redelivery,
//!    or a batch read again after a crash between the commit here and Kafka's). Two
//!    replicas that both hold a partition for a moment during a rebalance queue here, and
//!    the second one finds the records applied.
//! 2. Drop the fixes already in a track (by record id: a client's retry in another batch)
//!    and repeats within the batch.
//! 3. Lock the statistics rows of the sessions with new fixes, then read the stored points
//!    around the new ones (the window of [`crate::track`]); everything that writes a
//!    session's track holds that row's lock, so the window is the track as it is.
//! 4. Insert the new points with their segments (`UNNEST`, `ON CONFLICT DO NOTHING`; a
//!    conflict means another transaction inserted one in between, and the batch is tried
//!    again), update the stored segments a late fix split, write the statistics.
//! 5. Move each device's last position forward (never back in `recorded_at`) and write a
//!    `geo_outbox` row for each one that moved; the geofence transitions (H5's
//!    [`crate::fences`]) write theirs.
//! 6. Store the next offset of each partition, commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use locus_geo::{BBox, TrackPoint};
use locus_session::scope::{self, Scope};
use locus_wire::record::{LocationRecord, PositionRecord, SCHEMA_VERSION};
use locus_wire::{DeviceId, SessionId, TenantId};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::error::BatchError;
use crate::events::BatchApplied;
use crate::fences::{self, Fences, FixPoint};
use crate::track::{self, NewPoint, PointKey, SessionStats, StoredPoint, StoredSegment, Window};

/// The outbox's name of the positions topic.
pub const POSITIONS: &str = "positions";
/// The outbox's name of the geofence-events topic.
pub const GEOFENCE_EVENTS: &str = "geofence_events";

/// One record read from the location topic.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The record; `None` when it is not a location record (skipped, its offset counts).
    pub record: Option<LocationRecord>,
}

/// The geo tables of one database, written for one location topic.
#[derive(Debug, Clone)]
pub struct GeoStore {
    pool: PgPool,
    topic: String,
    max_mps: f64,
    fences: Arc<Fences>,
}

impl GeoStore {
    /// A store on `pool` for the records of `topic`, with `max_mps` as the jump bound and
    /// `fences` as the tenants' geofences.
    pub fn new(pool: PgPool, topic: impl Into<String>, max_mps: f64, fences: Arc<Fences>) -> Self {
        Self {
            pool,
            topic: topic.into(),
            max_mps,
            fences,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The next offset to apply of each of `partitions` that has one (system scope).
    pub async fn offsets(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, sqlx::Error> {
        let mut tx = scope::begin(&self.pool, Scope::System).await?;
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM tracker_offsets \
             WHERE topic = $1 AND partition = ANY($2)",
        )
        .bind(&self.topic)
        .bind(partitions)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().collect())
    }

    /// Applies `batch` in one transaction (see the module docs) and returns what it did.
    /// On error nothing of it is kept.
    pub async fn apply(&self, batch: &[Consumed]) -> Result<BatchApplied, BatchError> {
        let started = Instant::now();
        let mut tx = scope::begin(&self.pool, Scope::System).await?;
        let mut done = BatchApplied {
            records: batch.len(),
            ..BatchApplied::default()
        };

        // 1. Offsets: a row per partition first, so that FOR UPDATE has something to lock
        // (a missing row locks nothing, and two first transactions would both pass).
        let partitions: Vec<i32> = batch
            .iter()
            .map(|c| c.partition)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        sqlx::query(
            "INSERT INTO tracker_offsets (topic, partition, next_offset) \
             SELECT $1, p, 0 FROM UNNEST($2::int[]) AS p ON CONFLICT DO NOTHING",
        )
        .bind(&self.topic)
        .bind(&partitions)
        .execute(&mut *tx)
        .await?;
        let stored: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(
            "SELECT partition, next_offset FROM tracker_offsets \
             WHERE topic = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
        )
        .bind(&self.topic)
        .bind(&partitions)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut fresh: Vec<&LocationRecord> = Vec::with_capacity(batch.len());
        let mut seen: HashSet<Uuid> = HashSet::with_capacity(batch.len());
        for c in batch {
            let from = stored.get(&c.partition).copied().unwrap_or(0);
            let after = next.entry(c.partition).or_insert(from);
            *after = (*after).max(c.offset + 1);
            if c.offset < from {
                done.replayed += 1;
                continue;
            }
            match &c.record {
                None => done.malformed += 1,
                // 2. Repeats within the batch.
                Some(r) if !seen.insert(r.record_id) => done.duplicates += 1,
                Some(r) => fresh.push(r),
            }
        }

        // 2. Fixes already in a track.
        if !fresh.is_empty() {
            let ids: Vec<Uuid> = fresh.iter().map(|r| r.record_id).collect();
            let known: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>(
                "SELECT record_id FROM track_points WHERE record_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let before = fresh.len();
            fresh.retain(|r| !known.contains(&r.record_id));
            done.duplicates += before - fresh.len();
        }

        if !fresh.is_empty() {
            self.apply_fixes(&mut tx, &fresh, &mut done).await?;
        }

        // 6. The next offsets, then commit: from here on the batch is applied, whatever
        // happens to Kafka's copy of the offsets.
        let (parts, offsets): (Vec<i32>, Vec<i64>) = next.into_iter().unzip();
        sqlx::query(
            "UPDATE tracker_offsets o SET next_offset = GREATEST(o.next_offset, u.next_offset) \
             FROM UNNEST($2::int[], $3::bigint[]) AS u(partition, next_offset) \
             WHERE o.topic = $1 AND o.partition = u.partition",
        )
        .bind(&self.topic)
        .bind(&parts)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done.emit(started.elapsed());
        Ok(done)
    }

    /// Steps 3 to 5 for fixes new to their tracks.
    async fn apply_fixes(
        &self,
        tx: &mut PgConnection,
        fresh: &[&LocationRecord],
        done: &mut BatchApplied,
    ) -> Result<(), BatchError> {
        let mut by_session: BTreeMap<SessionId, Vec<&LocationRecord>> = BTreeMap::new();
        for r in fresh {
            by_session.entry(r.session_id).or_default().push(r);
        }
        let sessions: Vec<Uuid> = by_session.keys().map(|s| s.0).collect();
        let tenants: Vec<&str> = by_session
            .values()
            .map(|rs| rs[0].tenant_id.as_str())
            .collect();

        // 3. Lock the statistics rows (created empty for a session's first fixes), in
        // session order so two transactions never wait on each other in a cycle.
        sqlx::query(
            "INSERT INTO session_stats (tenant_id, session_id) \
             SELECT * FROM UNNEST($1::text[], $2::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(&tenants)
        .bind(&sessions)
        .execute(&mut *tx)
        .await?;
        let mut stats = lock_stats(tx, &sessions).await?;

        let new_points: BTreeMap<SessionId, Vec<NewPoint>> = by_session
            .iter()
            .map(|(s, rs)| {
                let points = rs
                    .iter()
                    .map(|r| NewPoint {
                        key: (r.recorded_at, r.record_id),
                        lat: r.lat,
                        lon: r.lon,
                    })
                    .collect();
                (*s, points)
            })
            .collect();
        let mut windows = read_windows(tx, &new_points).await?;

        let mut inserts = PointRows::default();
        let mut changes = SegmentRows::default();
        let mut reaggregate = Vec::new();
        for (session, records) in &by_session {
            let old = stats.get(&session.0).copied().unwrap_or_default();
            let window = windows.remove(&session.0).unwrap_or_default();
            let applied = track::apply(&old, &window, &new_points[session], self.max_mps);
            for (r, segment) in records.iter().zip(&applied.segments) {
                inserts.push(r, segment);
                done.jumps += usize::from(segment.jump);
            }
            for change in &applied.changes {
                changes.push(session.0, change.key, &change.new);
            }
            if applied.reaggregate_max_speed {
                reaggregate.push(session.0);
            }
            done.late += applied.late;
            stats.insert(session.0, applied.stats);
        }

        // 4. The points, the changed segments, the statistics.
        let expected = inserts.len();
        let inserted = inserts.insert(tx).await?;
        if inserted != expected as u64 {
            return Err(BatchError::Raced { expected, inserted });
        }
        done.applied += expected;
        changes.update(tx).await?;
        if !reaggregate.is_empty() {
            let rows: Vec<(Uuid, Option<f64>)> = sqlx::query_as(
                "SELECT session_id, max(segment_mps) FROM track_points \
                 WHERE session_id = ANY($1) AND NOT jump GROUP BY session_id",
            )
            .bind(&reaggregate)
            .fetch_all(&mut *tx)
            .await?;
            for (session, max) in rows {
                if let Some(s) = stats.get_mut(&session) {
                    s.max_speed_mps = max;
                }
            }
        }
        write_stats(tx, &sessions, &stats).await?;

        // 5. Positions, then the geofence transitions of each device's new fixes.
        done.positions = advance_positions(tx, fresh).await?;

        // The one call site of the geofence transitions (H5's `crate::fences`): each
        // device's new fixes in time order, devices in (tenant, device) order so that two
        // transactions lock device rows in the same order.
        for ((tenant, device), records) in fixes_by_device(fresh) {
            let index = self.fences.for_tenant(tenant).await?;
            let points: Vec<FixPoint> = records
                .iter()
                .map(|r| FixPoint {
                    record_id: r.record_id,
                    session_id: r.session_id,
                    recorded_at: r.recorded_at,
                    lat: r.lat,
                    lon: r.lon,
                })
                .collect();
            done.transitions += fences::apply(tx, &index, tenant, device, &points).await?;
        }
        Ok(())
    }
}

/// The fixes of `fresh` by device, each device's sorted by `(recorded_at, record_id)`:
/// what the geofence transitions walk.
pub fn fixes_by_device<'a>(
    fresh: &[&'a LocationRecord],
) -> BTreeMap<(&'a TenantId, &'a DeviceId), Vec<&'a LocationRecord>> {
    let mut by_device: BTreeMap<(&TenantId, &DeviceId), Vec<&LocationRecord>> = BTreeMap::new();
    for r in fresh {
        by_device
            .entry((&r.tenant_id, &r.device_id))
            .or_default()
            .push(r);
    }
    for records in by_device.values_mut() {
        records.sort_by_key(|r| (r.recorded_at, r.record_id));
    }
    by_device
}

/// The statistics rows of `sessions`, locked for this transaction.
async fn lock_stats(
    tx: &mut PgConnection,
    sessions: &[Uuid],
) -> Result<HashMap<Uuid, SessionStats>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT session_id, fix_count, distance_m, jumps, first_fix_at, first_lat, first_lon, \
                last_fix_at, last_lat, last_lon, min_lat, min_lon, max_lat, max_lon, max_speed_mps \
         FROM session_stats WHERE session_id = ANY($1) ORDER BY session_id FOR UPDATE",
    )
    .bind(sessions)
    .fetch_all(&mut *tx)
    .await?;
    let mut stats = HashMap::with_capacity(rows.len());
    for row in rows {
        let point = |at: &str, lat: &str, lon: &str| -> Result<Option<TrackPoint>, sqlx::Error> {
            let at: Option<DateTime<Utc>> = row.try_get(at)?;
            let lat: Option<f64> = row.try_get(lat)?;
            let lon: Option<f64> = row.try_get(lon)?;
            Ok(match (at, lat, lon) {
                (Some(at), Some(lat), Some(lon)) => Some(TrackPoint::new(at, lat, lon)),
                _ => None,
            })
        };
        let bbox = match (
            row.try_get::<Option<f64>, _>("min_lat")?,
            row.try_get::<Option<f64>, _>("min_lon")?,
            row.try_get::<Option<f64>, _>("max_lat")?,
            row.try_get::<Option<f64>, _>("max_lon")?,
        ) {
            (Some(min_lat), Some(min_lon), Some(max_lat), Some(max_lon)) => Some(BBox {
                min_lat,
                min_lon,
                max_lat,
                max_lon,
            }),
            _ => None,
        };
        let s = SessionStats {
            fix_count: row.try_get("fix_count")?,
            distance_m: row.try_get("distance_m")?,
            jumps: row.try_get("jumps")?,
            first: point("first_fix_at", "first_lat", "first_lon")?,
            last: point("last_fix_at", "last_lat", "last_lon")?,
            bbox,
            max_speed_mps: row.try_get("max_speed_mps")?,
        };
        stats.insert(row.try_get("session_id")?, s);
    }
    Ok(stats)
}

/// The stored points around each session's new fixes, in one statement: per session, the
/// point just before the first new fix (part 0), the points between the first and the
/// last (part 1), and the point just after the last (part 2). The primary key
/// `(session_id, recorded_at, record_id)` serves all three.
async fn read_windows(
    tx: &mut PgConnection,
    new_points: &BTreeMap<SessionId, Vec<NewPoint>>,
) -> Result<HashMap<Uuid, Window>, sqlx::Error> {
    let mut sessions = Vec::with_capacity(new_points.len());
    let (mut lo_at, mut lo_id, mut hi_at, mut hi_id) = (vec![], vec![], vec![], vec![]);
    for (session, points) in new_points {
        let lo = points
            .iter()
            .map(|p| p.key)
            .min()
            .expect("a session with new fixes");
        let hi = points
            .iter()
            .map(|p| p.key)
            .max()
            .expect("a session with new fixes");
        sessions.push(session.0);
        lo_at.push(lo.0);
        lo_id.push(lo.1);
        hi_at.push(hi.0);
        hi_id.push(hi.1);
    }
    let rows = sqlx::query(
        "SELECT w.session_id, t.part, t.recorded_at, t.record_id, t.lat, t.lon, \
                t.segment_m, t.segment_mps, t.jump \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::timestamptz[], $5::uuid[]) \
              AS w(session_id, lo_at, lo_id, hi_at, hi_id) \
         CROSS JOIN LATERAL ( \
             (SELECT 0 AS part, p.recorded_at, p.record_id, p.lat, p.lon, p.segment_m, p.segment_mps, p.jump \
              FROM track_points p \
              WHERE p.session_id = w.session_id AND (p.recorded_at, p.record_id) < (w.lo_at, w.lo_id) \
              ORDER BY p.recorded_at DESC, p.record_id DESC LIMIT 1) \
             UNION ALL \
             (SELECT 1, p.recorded_at, p.record_id, p.lat, p.lon, p.segment_m, p.segment_mps, p.jump \
              FROM track_points p \
              WHERE p.session_id = w.session_id \
                AND (p.recorded_at, p.record_id) > (w.lo_at, w.lo_id) \
                AND (p.recorded_at, p.record_id) < (w.hi_at, w.hi_id)) \
             UNION ALL \
             (SELECT 2, p.recorded_at, p.record_id, p.lat, p.lon, p.segment_m, p.segment_mps, p.jump \
              FROM track_points p \
              WHERE p.session_id = w.session_id AND (p.recorded_at, p.record_id) > (w.hi_at, w.hi_id) \
              ORDER BY p.recorded_at, p.record_id LIMIT 1) \
         ) t",
    )
    .bind(&sessions)
    .bind(&lo_at)
    .bind(&lo_id)
    .bind(&hi_at)
    .bind(&hi_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut windows: HashMap<Uuid, Window> = HashMap::new();
    for row in rows {
        let session: Uuid = row.try_get("session_id")?;
        let part: i32 = row.try_get("part")?;
        let window = windows.entry(session).or_default();
        window.has_before |= part == 0;
        window.has_after |= part == 2;
        window.points.push(StoredPoint {
            key: (row.try_get("recorded_at")?, row.try_get("record_id")?),
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
            segment: StoredSegment {
                metres: row.try_get("segment_m")?,
                mps: row.try_get("segment_mps")?,
                jump: row.try_get("jump")?,
            },
        });
    }
    for window in windows.values_mut() {
        window.points.sort_by_key(|p| p.key);
    }
    Ok(windows)
}

/// New track points, as the columns of one `UNNEST` insert.
#[derive(Default)]
struct PointRows {
    tenant: Vec<String>,
    session: Vec<Uuid>,
    recorded_at: Vec<DateTime<Utc>>,
    record_id: Vec<Uuid>,
    device: Vec<String>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    accuracy: Vec<Option<f64>>,
    altitude: Vec<Option<f64>>,
    speed: Vec<Option<f64>>,
    heading: Vec<Option<f64>>,
    battery: Vec<Option<f64>>,
    segment_m: Vec<f64>,
    segment_mps: Vec<Option<f64>>,
    jump: Vec<bool>,
}

impl PointRows {
    fn push(&mut self, r: &LocationRecord, segment: &StoredSegment) {
        self.tenant.push(r.tenant_id.as_str().to_owned());
        self.session.push(r.session_id.0);
        self.recorded_at.push(r.recorded_at);
        self.record_id.push(r.record_id);
        self.device.push(r.device_id.as_str().to_owned());
        self.lat.push(r.lat);
        self.lon.push(r.lon);
        self.accuracy.push(r.accuracy);
        self.altitude.push(r.altitude);
        self.speed.push(r.speed);
        self.heading.push(r.heading);
        self.battery.push(r.battery);
        self.segment_m.push(segment.metres);
        self.segment_mps.push(segment.mps);
        self.jump.push(segment.jump);
    }

    fn len(&self) -> usize {
        self.record_id.len()
    }

    /// Inserts the rows; returns how many were inserted (a conflict skips a row).
    async fn insert(&self, tx: &mut PgConnection) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO track_points (tenant_id, session_id, recorded_at, record_id, device_id, \
                 lat, lon, accuracy, altitude, speed, heading, battery, segment_m, segment_mps, jump) \
             SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::timestamptz[], $4::uuid[], $5::text[], \
                 $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], \
                 $12::float8[], $13::float8[], $14::float8[], $15::bool[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.tenant)
        .bind(&self.session)
        .bind(&self.recorded_at)
        .bind(&self.record_id)
        .bind(&self.device)
        .bind(&self.lat)
        .bind(&self.lon)
        .bind(&self.accuracy)
        .bind(&self.altitude)
        .bind(&self.speed)
        .bind(&self.heading)
        .bind(&self.battery)
        .bind(&self.segment_m)
        .bind(&self.segment_mps)
        .bind(&self.jump)
        .execute(&mut *tx)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Stored segments that change, as the columns of one `UNNEST` update.
#[derive(Default)]
struct SegmentRows {
    session: Vec<Uuid>,
    recorded_at: Vec<DateTime<Utc>>,
    record_id: Vec<Uuid>,
    metres: Vec<f64>,
    mps: Vec<Option<f64>>,
    jump: Vec<bool>,
}

impl SegmentRows {
    fn push(&mut self, session: Uuid, key: PointKey, segment: &StoredSegment) {
        self.session.push(session);
        self.recorded_at.push(key.0);
        self.record_id.push(key.1);
        self.metres.push(segment.metres);
        self.mps.push(segment.mps);
        self.jump.push(segment.jump);
    }

    async fn update(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.session.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE track_points t SET segment_m = u.m, segment_mps = u.mps, jump = u.jump \
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::float8[], $5::float8[], $6::bool[]) \
                  AS u(session_id, recorded_at, record_id, m, mps, jump) \
             WHERE t.session_id = u.session_id AND t.recorded_at = u.recorded_at \
               AND t.record_id = u.record_id",
        )
        .bind(&self.session)
        .bind(&self.recorded_at)
        .bind(&self.record_id)
        .bind(&self.metres)
        .bind(&self.mps)
        .bind(&self.jump)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Writes the statistics of `sessions` (their rows are locked by this transaction).
async fn write_stats(
    tx: &mut PgConnection,
    sessions: &[Uuid],
    stats: &HashMap<Uuid, SessionStats>,
) -> Result<(), sqlx::Error> {
    let n = sessions.len();
    let (mut count, mut distance, mut jumps) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut first_at, mut first_lat, mut first_lon) = (vec![], vec![], vec![]);
    let (mut last_at, mut last_lat, mut last_lon) = (vec![], vec![], vec![]);
    let (mut min_lat, mut min_lon, mut max_lat, mut max_lon) = (vec![], vec![], vec![], vec![]);
    let mut max_speed = Vec::with_capacity(n);
    for session in sessions {
        let s = stats.get(session).copied().unwrap_or_default();
        count.push(s.fix_count);
        distance.push(s.distance_m);
        jumps.push(s.jumps);
        first_at.push(s.first.map(|p| p.recorded_at));
        first_lat.push(s.first.map(|p| p.lat));
        first_lon.push(s.first.map(|p| p.lon));
        last_at.push(s.last.map(|p| p.recorded_at));
        last_lat.push(s.last.map(|p| p.lat));
        last_lon.push(s.last.map(|p| p.lon));
        min_lat.push(s.bbox.map(|b| b.min_lat));
        min_lon.push(s.bbox.map(|b| b.min_lon));
        max_lat.push(s.bbox.map(|b| b.max_lat));
        max_lon.push(s.bbox.map(|b| b.max_lon));
        max_speed.push(s.max_speed_mps);
    }
    sqlx::query(
        "UPDATE session_stats s SET fix_count = u.fix_count, distance_m = u.distance_m, \
             jumps = u.jumps, first_fix_at = u.first_fix_at, first_lat = u.first_lat, \
             first_lon = u.first_lon, last_fix_at = u.last_fix_at, last_lat = u.last_lat, \
             last_lon = u.last_lon, min_lat = u.min_lat, min_lon = u.min_lon, \
             max_lat = u.max_lat, max_lon = u.max_lon, max_speed_mps = u.max_speed_mps, \
             updated_at = now() \
         FROM UNNEST($1::uuid[], $2::bigint[], $3::float8[], $4::bigint[], $5::timestamptz[], \
                     $6::float8[], $7::float8[], $8::timestamptz[], $9::float8[], $10::float8[], \
                     $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::float8[]) \
              AS u(session_id, fix_count, distance_m, jumps, first_fix_at, first_lat, first_lon, \
                   last_fix_at, last_lat, last_lon, min_lat, min_lon, max_lat, max_lon, max_speed_mps) \
         WHERE s.session_id = u.session_id",
    )
    .bind(sessions)
    .bind(&count)
    .bind(&distance)
    .bind(&jumps)
    .bind(&first_at)
    .bind(&first_lat)
    .bind(&first_lon)
    .bind(&last_at)
    .bind(&last_lat)
    .bind(&last_lon)
    .bind(&min_lat)
    .bind(&min_lon)
    .bind(&max_lat)
    .bind(&max_lon)
    .bind(&max_speed)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The key of a device's records on the positions topic: `<tenant>/<device>`. Device ids
/// are unique per tenant only, and on a compacted topic two tenants' devices under one key
/// would erase each other's position; a tenant id has no `/`, so the key is unambiguous.
pub fn position_key(tenant: &TenantId, device: &DeviceId) -> String {
    format!("{tenant}/{device}")
}

/// Moves each device's last position to its newest new fix, unless the stored one is as
/// new or newer (by `(recorded_at, record_id)`, so replays in any order end in the same
/// place), and writes a positions outbox row for each device that moved. Returns how many
/// moved.
async fn advance_positions(
    tx: &mut PgConnection,
    fresh: &[&LocationRecord],
) -> Result<usize, sqlx::Error> {
    let mut newest: BTreeMap<(&TenantId, &DeviceId), &LocationRecord> = BTreeMap::new();
    for r in fresh {
        let slot = newest.entry((&r.tenant_id, &r.device_id)).or_insert(r);
        if (r.recorded_at, r.record_id) > (slot.recorded_at, slot.record_id) {
            *slot = r;
        }
    }
    let n = newest.len();
    let mut tenant = Vec::with_capacity(n);
    let mut device = Vec::with_capacity(n);
    let mut session = Vec::with_capacity(n);
    let mut record = Vec::with_capacity(n);
    let mut recorded_at = Vec::with_capacity(n);
    let (mut lat, mut lon) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut accuracy, mut altitude, mut speed, mut heading, mut battery) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut key = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    for r in newest.values() {
        tenant.push(r.tenant_id.as_str());
        device.push(r.device_id.as_str());
        session.push(r.session_id.0);
        record.push(r.record_id);
        recorded_at.push(r.recorded_at);
        lat.push(r.lat);
        lon.push(r.lon);
        accuracy.push(r.accuracy);
        altitude.push(r.altitude);
        speed.push(r.speed);
        heading.push(r.heading);
        battery.push(r.battery);
        key.push(position_key(&r.tenant_id, &r.device_id));
        payload.push(
            serde_json::to_value(PositionRecord {
                schema_version: SCHEMA_VERSION,
                tenant_id: r.tenant_id.clone(),
                device_id: r.device_id.clone(),
                session_id: r.session_id,
                record_id: r.record_id,
                recorded_at: r.recorded_at,
                lat: r.lat,
                lon: r.lon,
                accuracy: r.accuracy,
                altitude: r.altitude,
                speed: r.speed,
                heading: r.heading,
                battery: r.battery,
            })
            .expect("a position record serializes"),
        );
    }
    let moved = sqlx::query(
        "WITH input AS ( \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[], \
                 $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], \
                 $12::float8[], $13::text[], $14::jsonb[]) \
             AS i(tenant_id, device_id, session_id, record_id, recorded_at, lat, lon, accuracy, \
                  altitude, speed, heading, battery, key, payload) \
         ), moved AS ( \
             INSERT INTO device_positions AS d (tenant_id, device_id, session_id, record_id, \
                 recorded_at, lat, lon, accuracy, altitude, speed, heading, battery, updated_at) \
             SELECT tenant_id, device_id, session_id, record_id, recorded_at, lat, lon, accuracy, \
                 altitude, speed, heading, battery, now() FROM input \
             ON CONFLICT (tenant_id, device_id) DO UPDATE SET session_id = EXCLUDED.session_id, \
                 record_id = EXCLUDED.record_id, recorded_at = EXCLUDED.recorded_at, \
                 lat = EXCLUDED.lat, lon = EXCLUDED.lon, accuracy = EXCLUDED.accuracy, \
                 altitude = EXCLUDED.altitude, speed = EXCLUDED.speed, heading = EXCLUDED.heading, \
                 battery = EXCLUDED.battery, updated_at = now() \
             WHERE (d.recorded_at, d.record_id) < (EXCLUDED.recorded_at, EXCLUDED.record_id) \
             RETURNING d.tenant_id, d.device_id \
         ) \
         INSERT INTO geo_outbox (tenant_id, topic, key, payload) \
         SELECT i.tenant_id, $15, i.key, i.payload \
         FROM moved m JOIN input i USING (tenant_id, device_id) \
         ORDER BY i.tenant_id, i.device_id",
    )
    .bind(&tenant)
    .bind(&device)
    .bind(&session)
    .bind(&record)
    .bind(&recorded_at)
    .bind(&lat)
    .bind(&lon)
    .bind(&accuracy)
    .bind(&altitude)
    .bind(&speed)
    .bind(&heading)
    .bind(&battery)
    .bind(&key)
    .bind(&payload)
    .bind(POSITIONS)
    .execute(&mut *tx)
    .await?;
    Ok(moved.rows_affected() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_key_names_the_tenant_and_the_device() {
        let key = position_key(
            &TenantId::parse("acme").unwrap(),
            &DeviceId::parse("phone-1").unwrap(),
        );
        assert_eq!(key, "acme/phone-1");
    }
}
