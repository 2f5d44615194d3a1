//! Geofence transitions: which fixes enter or leave which fences, once per transition per
//! device.
//!
//! # What is guaranteed, and why
//!
//! A device's fixes are walked in `(recorded_at, record_id)` order against its tenant's
//! fences. A fix inside a fence the device was not inside is an `enter`, a fix outside a
//! fence it was inside an `exit`; no state is "outside", so the first fix inside a fence is
//! an enter. Each transition writes one `geo_outbox` row (topic `geofence_events`, key = the
//! device id, the [`GeofenceEvent`] as payload) in the caller's transaction, together with
//! the new states (`geofence_states`) and the device's watermark (`geofence_devices`): the
//! latest fix checked. So a state change and its event commit together or not at all.
//!
//! - Replays: a fix not newer than the watermark moves nothing. The tracker also skips
//!   records below its stored offsets, but a fix that comes again in another batch (a client
//!   retry with another batch id) is caught here too.
//! - Late fixes: one older than the watermark says where the device was, not where it is;
//!   it moves nothing (one watermark per device, not per fence, so a late fix cannot enter a
//!   fence that a newer fix was already outside of).
//! - Two transactions on one device (two replicas, the device's sessions on two partitions):
//!   [`apply`] first upserts the device's watermark row, which locks it until the caller
//!   commits; the other transaction waits there, then reads (READ COMMITTED, PostgreSQL's
//!   default: each statement sees what committed before it) the states and watermark the
//!   first one wrote. Callers in one transaction take devices in a fixed order (the tracker
//!   sorts by tenant and device), so two transactions do not lock two devices crosswise.
//! - Restarts: the states live in PostgreSQL; a new [`Fences`] reads the fences again.
//!
//! The event id is a UUID v5 of tenant, device, fence, fix and kind: a transaction that
//! fails and is applied again decides the same transitions with the same ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use locus_geo::{Fence, FenceIndex, Shape};
use locus_session::geofences::{self, FenceArea};
use locus_wire::record::{GeofenceEvent, GeofenceEventKind, SCHEMA_VERSION, geofence_event_id};
use locus_wire::{DeviceId, GeofenceId, SessionId, TenantId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Default of `LOCUS_TRACKER_FENCE_REFRESH_MS`: how old a tenant's cached fences may get.
pub const DEFAULT_FENCE_REFRESH_MS: u64 = 2_000;

/// One fix of a device, as the transitions need it.
#[derive(Debug, Clone, PartialEq)]
pub struct FixPoint {
    /// The fix's record id (named in the event).
    pub record_id: Uuid,
    /// Its session.
    pub session_id: SessionId,
    /// When the device took it.
    pub recorded_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// A cached index and when it was read.
struct Cached {
    index: Arc<FenceIndex>,
    loaded: Instant,
}

/// Per-tenant fence indexes, loaded from `geofences` and reloaded when older than the
/// refresh interval (LOCUS_TRACKER_FENCE_REFRESH_MS, default 2000): a fence put or deleted
/// through the API is checked (or no longer) within that interval.
pub struct Fences {
    pool: PgPool,
    refresh: Duration,
    // A std mutex: held for a map lookup or insert only, never across an await.
    cache: Mutex<HashMap<TenantId, Cached>>,
}

impl std::fmt::Debug for Fences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fences")
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl Fences {
    /// Fences read from `pool` (the service role's), each tenant's at most `refresh` old.
    pub fn new(pool: PgPool, refresh: Duration) -> Self {
        Self {
            pool,
            refresh,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `tenant`'s fences (an empty index when it has none), read again when the cached
    /// ones are older than the refresh interval.
    pub async fn for_tenant(&self, tenant: &TenantId) -> Result<Arc<FenceIndex>, sqlx::Error> {
        if let Some(c) = self.cache().get(tenant)
            && c.loaded.elapsed() < self.refresh
        {
            return Ok(c.index.clone());
        }
        // Two callers may both read a tenant whose entry just expired: the same rows,
        // twice, and the later insert wins. Cheaper than making one wait on the other.
        let loaded = Instant::now();
        let rows = geofences::all_of_tenant(&self.pool, tenant).await?;
        let index = Arc::new(FenceIndex::new(
            rows.into_iter().filter_map(fence_of).collect(),
        ));
        self.cache().insert(
            tenant.clone(),
            Cached {
                index: index.clone(),
                loaded,
            },
        );
        Ok(index)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Cached>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The fence of a stored row. A row the API took always converts; one that does not (a
/// bound of locus-geo lowered since) is left out with a warning rather than failing every
/// batch of its tenant.
fn fence_of(row: geofences::Geofence) -> Option<Fence> {
    let shape = match &row.area {
        FenceArea::Geometry(g) => Shape::from_geojson(g),
        FenceArea::Circle { lat, lon, radius_m } => Shape::circle(*lat, *lon, *radius_m),
    };
    match shape {
        Ok(shape) => Some(Fence {
            id: row.geofence_id.to_string(),
            shape,
        }),
        Err(e) => {
            tracing::warn!(
                tenant = %row.tenant_id, geofence = %row.geofence_id, error = %e,
                "A stored geofence is not a usable area; it is not checked."
            );
            None
        }
    }
}

/// One transition: `fence` entered or left at `point`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition<'a> {
    /// The fence's id.
    pub fence: &'a str,
    /// Enter or exit.
    pub kind: GeofenceEventKind,
    /// The fix that crossed.
    pub point: &'a FixPoint,
}

/// What [`decide`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided<'a> {
    /// Every transition, in the order of the fixes (a fix's exits before its enters).
    pub transitions: Vec<Transition<'a>>,
    /// The fences the device is inside after the last fix that moved it.
    pub inside: BTreeSet<&'a str>,
    /// The latest fix checked (the new watermark), when any fix was newer than the old one.
    pub latest: Option<&'a FixPoint>,
}

/// The transitions of `points` (in any order; walked by `(recorded_at, record_id)`) for a
/// device inside the fences `inside` as of `watermark` (the latest fix checked before,
/// `None` for none), with `containing` answering which fences hold a fix. A fix not newer
/// than the watermark, or than the fix walked before it, moves nothing. Pure: no I/O.
pub fn decide<'a>(
    watermark: Option<DateTime<Utc>>,
    inside: BTreeSet<&'a str>,
    points: &'a [FixPoint],
    mut containing: impl FnMut(&FixPoint) -> BTreeSet<&'a str>,
) -> Decided<'a> {
    let mut order: Vec<&FixPoint> = points.iter().collect();
    order.sort_by_key(|p| (p.recorded_at, p.record_id));
    let mut decided = Decided {
        transitions: Vec::new(),
        inside,
        latest: None,
    };
    let mut watermark = watermark;
    for point in order {
        if watermark.is_some_and(|w| point.recorded_at <= w) {
            continue;
        }
        watermark = Some(point.recorded_at);
        decided.latest = Some(point);
        let now = containing(point);
        // Exits first: a device moving from one fence into another leaves before it enters.
        for &fence in decided.inside.difference(&now) {
            decided.transitions.push(Transition {
                fence,
                kind: GeofenceEventKind::Exit,
                point,
            });
        }
        for &fence in now.difference(&decided.inside) {
            decided.transitions.push(Transition {
                fence,
                kind: GeofenceEventKind::Enter,
                point,
            });
        }
        decided.inside = now;
    }
    decided
}

/// Moves the device's fence states with `points` (sorted by recorded_at, or not: they are
/// walked in order; only points newer than the device's last checked fix move anything)
/// and writes one geo_outbox row (topic 'geofence_events', key = device id) per
/// transition, in the caller's transaction (system scope, READ COMMITTED). Returns the
/// number of transitions.
pub async fn apply(
    tx: &mut PgConnection,
    index: &FenceIndex,
    tenant: &TenantId,
    device: &DeviceId,
    points: &[FixPoint],
) -> Result<u64, sqlx::Error> {
    // No fences, no states (a fence's delete takes its states along): nothing to decide,
    // and no round trip for the tenants that use no fences.
    if index.is_empty() || points.is_empty() {
        return Ok(0);
    }
    // The upsert locks the device's row until the caller commits: the other transaction
    // of this device (if any) waits here, and reads what this one wrote.
    let watermark: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO geofence_devices (tenant_id, device_id) VALUES ($1, $2) \
         ON CONFLICT (tenant_id, device_id) DO UPDATE SET at = geofence_devices.at \
         RETURNING at",
    )
    .bind(tenant.as_str())
    .bind(device.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if let Some(w) = watermark
        && points.iter().all(|p| p.recorded_at <= w)
    {
        return Ok(0);
    }
    // Locked too: a fence's delete (which deletes its states) waits for this commit.
    let states: Vec<(String, bool)> = sqlx::query_as(
        "SELECT geofence_id, inside FROM geofence_states \
         WHERE tenant_id = $1 AND device_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(device.as_str())
    .fetch_all(&mut *tx)
    .await?;
    // States of fences the index does not have (deleted, or put after the index was read)
    // are left as they are: the fence is not checked until the index has it.
    let inside_ids: BTreeSet<&str> = states
        .iter()
        .filter(|(_, inside)| *inside)
        .map(|(id, _)| id.as_str())
        .collect();
    let inside: BTreeSet<&str> = if inside_ids.is_empty() {
        BTreeSet::new()
    } else {
        index
            .fences()
            .iter()
            .map(|f| f.id.as_str())
            .filter(|id| inside_ids.contains(id))
            .collect()
    };
    let decided = decide(watermark, inside, points, |p| {
        index.containing(p.lat, p.lon).collect()
    });
    let Some(latest) = decided.latest else {
        return Ok(0);
    };
    write_transitions(tx, tenant, device, &decided.transitions).await?;
    sqlx::query(
        "UPDATE geofence_devices SET at = $3, record_id = $4 \
         WHERE tenant_id = $1 AND device_id = $2",
    )
    .bind(tenant.as_str())
    .bind(device.as_str())
    .bind(latest.recorded_at)
    .bind(latest.record_id)
    .execute(&mut *tx)
    .await?;
    Ok(decided.transitions.len() as u64)
}

/// The states and outbox rows of `transitions`: each fence's row says what its last
/// transition decided; one outbox row per transition, in order.
async fn write_transitions(
    tx: &mut PgConnection,
    tenant: &TenantId,
    device: &DeviceId,
    transitions: &[Transition<'_>],
) -> Result<(), sqlx::Error> {
    if transitions.is_empty() {
        return Ok(());
    }
    let mut last: HashMap<&str, &Transition<'_>> = HashMap::new();
    let mut payloads = Vec::with_capacity(transitions.len());
    for t in transitions {
        last.insert(t.fence, t);
        let fence = GeofenceId::parse(t.fence).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let event = GeofenceEvent {
            schema_version: SCHEMA_VERSION,
            event_id: geofence_event_id(tenant, device, &fence, t.point.record_id, t.kind),
            tenant_id: tenant.clone(),
            device_id: device.clone(),
            session_id: t.point.session_id,
            geofence_id: fence,
            kind: t.kind,
            record_id: t.point.record_id,
            recorded_at: t.point.recorded_at,
            lat: t.point.lat,
            lon: t.point.lon,
        };
        payloads.push(serde_json::to_value(&event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
    }
    let mut fences = Vec::with_capacity(last.len());
    let mut inside = Vec::with_capacity(last.len());
    let mut at = Vec::with_capacity(last.len());
    let mut record_ids = Vec::with_capacity(last.len());
    for (fence, t) in last {
        fences.push(fence);
        inside.push(t.kind == GeofenceEventKind::Enter);
        at.push(t.point.recorded_at);
        record_ids.push(t.point.record_id);
    }
    sqlx::query(
        "INSERT INTO geofence_states (tenant_id, device_id, geofence_id, inside, at, record_id) \
         SELECT $1, $2, f, i, a, r \
         FROM UNNEST($3::text[], $4::bool[], $5::timestamptz[], $6::uuid[]) AS s(f, i, a, r) \
         ON CONFLICT (tenant_id, device_id, geofence_id) DO UPDATE \
           SET inside = EXCLUDED.inside, at = EXCLUDED.at, record_id = EXCLUDED.record_id",
    )
    .bind(tenant.as_str())
    .bind(device.as_str())
    .bind(&fences)
    .bind(&inside)
    .bind(&at)
    .bind(&record_ids)
    .execute(&mut *tx)
    .await?;
    // In the order of the transitions: the relay publishes by seq, so a device's events
    // reach the topic in the order they happened.
    sqlx::query(
        "INSERT INTO geo_outbox (tenant_id, topic, key, payload) \
         SELECT $1, 'geofence_events', $2, p \
         FROM UNNEST($3::jsonb[]) WITH ORDINALITY AS e(p, n) ORDER BY n",
    )
    .bind(tenant.as_str())
    .bind(device.as_str())
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// Three circles on a line of longitudes near (0, 0): A and B overlap, C stands alone.
    fn index() -> FenceIndex {
        let circle = |id: &str, lon: f64, radius_m: f64| Fence {
            id: id.to_owned(),
            shape: Shape::circle(0.0, lon, radius_m).unwrap(),
        };
        FenceIndex::new(vec![
            circle("a", 0.0, 200.0),
            circle("b", 0.003, 200.0),
            circle("c", 0.01, 100.0),
        ])
    }

    fn point(second: i64, lon: f64, n: u128) -> FixPoint {
        FixPoint {
            record_id: Uuid::from_u128(n),
            session_id: SessionId(Uuid::from_u128(7)),
            recorded_at: Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap(),
            lat: 0.0,
            lon,
        }
    }

    /// Fixes at random times (duplicates included) at random places along the fences.
    fn points() -> impl Strategy<Value = Vec<FixPoint>> {
        prop::collection::vec((0i64..60, -0.004f64..0.014), 0..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(n, (s, lon))| point(s, lon, n as u128))
                .collect()
        })
    }

    fn run<'a>(
        index: &'a FenceIndex,
        watermark: Option<DateTime<Utc>>,
        inside: BTreeSet<&'a str>,
        points: &'a [FixPoint],
    ) -> Decided<'a> {
        decide(watermark, inside, points, |p| {
            index.containing(p.lat, p.lon).collect()
        })
    }

    #[test]
    fn a_device_crossing_two_fences_enters_and_leaves_each_once() {
        let index = index();
        let walk = [
            point(0, -0.004, 1),
            point(1, 0.0, 2),
            point(2, 0.0015, 3),
            point(3, 0.003, 4),
            point(4, 0.006, 5),
        ];
        let d = run(&index, None, BTreeSet::new(), &walk);
        let seen: Vec<(&str, GeofenceEventKind, i64)> = d
            .transitions
            .iter()
            .map(|t| {
                (
                    t.fence,
                    t.kind,
                    t.point.recorded_at.timestamp() - 1_800_000_000,
                )
            })
            .collect();
        use GeofenceEventKind::{Enter, Exit};
        assert_eq!(
            seen,
            [
                ("a", Enter, 1),
                ("b", Enter, 2),
                ("a", Exit, 3),
                ("b", Exit, 4)
            ]
        );
        assert!(d.inside.is_empty());
        assert_eq!(d.latest, Some(&walk[4]));
    }

    #[test]
    fn a_fix_no_newer_than_the_watermark_moves_nothing() {
        let index = index();
        let late = [point(5, 0.0, 1)];
        let d = run(&index, Some(late[0].recorded_at), BTreeSet::new(), &late);
        assert!(d.transitions.is_empty() && d.latest.is_none() && d.inside.is_empty());
    }

    proptest! {
        #[test]
        fn a_replay_of_the_same_points_gives_no_new_transitions(points in points()) {
            let index = index();
            let first = run(&index, None, BTreeSet::new(), &points);
            let watermark = first.latest.map(|p| p.recorded_at);
            let again = run(&index, watermark, first.inside.clone(), &points);
            prop_assert!(again.transitions.is_empty(), "{:?}", again.transitions);
            prop_assert_eq!(again.inside, first.inside);
            prop_assert!(again.latest.is_none());
        }

        #[test]
        fn transitions_alternate_enter_and_exit_per_fence(
            points in points(),
            start in prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c"]), 0..3),
        ) {
            let index = index();
            let d = run(&index, None, start.clone(), &points);
            for fence in ["a", "b", "c"] {
                let kinds: Vec<GeofenceEventKind> = d
                    .transitions
                    .iter()
                    .filter(|t| t.fence == fence)
                    .map(|t| t.kind)
                    .collect();
                let mut inside = start.contains(fence);
                for kind in &kinds {
                    let want = if inside { GeofenceEventKind::Exit } else { GeofenceEventKind::Enter };
                    prop_assert_eq!(*kind, want, "{} {:?}", fence, kinds);
                    inside = !inside;
                }
                prop_assert_eq!(inside, d.inside.contains(fence), "{}", fence);
            }
        }

        #[test]
        fn points_split_into_batches_by_time_give_the_transitions_of_one_batch(
            points in points(),
            cut in 0i64..60,
        ) {
            let index = index();
            let whole = run(&index, None, BTreeSet::new(), &points);
            let cut_at = Utc.timestamp_opt(1_800_000_000 + cut, 0).unwrap();
            let (early, late): (Vec<FixPoint>, Vec<FixPoint>) =
                points.iter().cloned().partition(|p| p.recorded_at <= cut_at);
            let one = run(&index, None, BTreeSet::new(), &early);
            let watermark = one.latest.map(|p| p.recorded_at);
            let two = run(&index, watermark, one.inside.clone(), &late);
            let key = |t: &Transition<'_>| (t.fence.to_owned(), t.kind, t.point.record_id);
            let split: Vec<_> = one.transitions.iter().chain(&two.transitions).map(key).collect();
            let all: Vec<_> = whole.transitions.iter().map(key).collect();
            prop_assert_eq!(split, all);
            prop_assert_eq!(two.inside, whole.inside);
        }

        #[test]
        fn fixes_older_than_the_watermark_never_move_anything(
            points in points(),
            inside in prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c"]), 0..3),
        ) {
            let index = index();
            let watermark = Utc.timestamp_opt(1_800_000_000 + 60, 0).unwrap();
            let d = run(&index, Some(watermark), inside.clone(), &points);
            prop_assert!(d.transitions.is_empty());
            prop_assert_eq!(d.inside, inside);
        }
    }
}
