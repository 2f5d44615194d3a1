//! The read side of what the tracker keeps (its writes: the tracker crate): a session's
//! track points, its statistics and a device's last known position. Every read runs in the
//! transaction scope of the tenant that owns the row (row-level security, see
//! [`crate::scope`]); callers first find the session or device through the usual access
//! check, so another tenant's id reads exactly like an unknown one.

use chrono::{DateTime, Utc};
use locus_wire::{DeviceId, SessionId, TenantId};
use sqlx::FromRow;
use uuid::Uuid;

use crate::scope::{Scope, begin};
use crate::store::{SessionError, SessionStore};

/// One stored fix of a track, with the segment from the fix before it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct TrackPointRow {
    /// When the device recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The fix's record id (the one on the locations topic).
    pub record_id: Uuid,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres.
    pub accuracy: Option<f64>,
    /// Altitude in metres.
    pub altitude: Option<f64>,
    /// Speed the device reported, m/s.
    pub speed: Option<f64>,
    /// Heading the device reported, degrees.
    pub heading: Option<f64>,
    /// Battery percent.
    pub battery: Option<f64>,
    /// Metres from the previous fix that count toward the distance (0 for the first and jumps).
    pub segment_m: f64,
    /// Speed from the previous fix, m/s.
    pub segment_mps: Option<f64>,
    /// The step from the previous fix is an implausible jump.
    pub jump: bool,
}

/// A session's track as read: the points (thinned when there are too many) and how many
/// the session has.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Points by time (then record id), every `stride`-th one plus the last.
    pub points: Vec<TrackPointRow>,
    /// How many points the session has.
    pub total: i64,
    /// 1 when every point was read; n when only every n-th was (and the last).
    pub stride: i64,
}

/// A session's statistics row.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct SessionStatsRow {
    /// Fixes in the track.
    pub fix_count: i64,
    /// Metres travelled, jumps not counted.
    pub distance_m: f64,
    /// Steps flagged as jumps.
    pub jumps: i64,
    /// The first fix by time.
    pub first_fix_at: Option<DateTime<Utc>>,
    /// The last fix by time.
    pub last_fix_at: Option<DateTime<Utc>>,
    /// Latitude of the first fix.
    pub first_lat: Option<f64>,
    /// Longitude of the first fix.
    pub first_lon: Option<f64>,
    /// Latitude of the last fix.
    pub last_lat: Option<f64>,
    /// Longitude of the last fix.
    pub last_lon: Option<f64>,
    /// Southern edge of the bounding box.
    pub min_lat: Option<f64>,
    /// Western edge.
    pub min_lon: Option<f64>,
    /// Northern edge.
    pub max_lat: Option<f64>,
    /// Eastern edge.
    pub max_lon: Option<f64>,
    /// Fastest plausible segment, m/s.
    pub max_speed_mps: Option<f64>,
    /// When the tracker last changed the row.
    pub updated_at: DateTime<Utc>,
}

/// A device's last known position row.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct DevicePositionRow {
    /// The session of the fix.
    pub session_id: Uuid,
    /// The fix's record id.
    pub record_id: Uuid,
    /// When the device recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres.
    pub accuracy: Option<f64>,
    /// Altitude in metres.
    pub altitude: Option<f64>,
    /// Speed, m/s.
    pub speed: Option<f64>,
    /// Heading, degrees.
    pub heading: Option<f64>,
    /// Battery percent.
    pub battery: Option<f64>,
    /// When the tracker last moved it.
    pub updated_at: DateTime<Utc>,
}

impl SessionStore {
    /// The track of session `id` of `tenant`, by time: every point when it has at most
    /// `max_read` of them, otherwise every n-th (n the smallest stride that fits) and the last,
    /// so a session of millions of fixes costs bounded memory. Thinning happens in one
    /// statement over the primary key's order.
    pub async fn track(
        &self,
        tenant: &TenantId,
        id: SessionId,
        max_read: i64,
    ) -> Result<Track, SessionError> {
        let max_read = max_read.max(2);
        let mut tx = begin(self.pool(), Scope::Tenant(tenant)).await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM track_points WHERE tenant_id = $1 AND session_id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await?;
        // ceil((total - 1) / (max_read - 1)) keeps at most max_read - 1 strided points plus
        // the last.
        let stride = if total <= max_read {
            1
        } else {
            (total - 1 + max_read - 2) / (max_read - 1)
        };
        let points = if stride == 1 {
            sqlx::query_as(
                "SELECT recorded_at, record_id, lat, lon, accuracy, altitude, speed, heading, battery, \
                 segment_m, segment_mps, jump FROM track_points \
                 WHERE tenant_id = $1 AND session_id = $2 ORDER BY recorded_at, record_id",
            )
            .bind(tenant.as_str())
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await?
        } else {
            sqlx::query_as(
                "SELECT recorded_at, record_id, lat, lon, accuracy, altitude, speed, heading, battery, \
                 segment_m, segment_mps, jump FROM ( \
                   SELECT *, row_number() OVER (ORDER BY recorded_at, record_id) AS rn, \
                          count(*) OVER () AS n \
                   FROM track_points WHERE tenant_id = $1 AND session_id = $2) t \
                 WHERE (rn - 1) % $3 = 0 OR rn = n ORDER BY recorded_at, record_id",
            )
            .bind(tenant.as_str())
            .bind(id.0)
            .bind(stride)
            .fetch_all(&mut *tx)
            .await?
        };
        Ok(Track {
            points,
            total,
            stride,
        })
    }

    /// The statistics of session `id` of `tenant`; `None` before the tracker saw a fix of it.
    pub async fn session_stats(
        &self,
        tenant: &TenantId,
        id: SessionId,
    ) -> Result<Option<SessionStatsRow>, SessionError> {
        Ok(sqlx::query_as(
            "SELECT fix_count, distance_m, jumps, first_fix_at, last_fix_at, first_lat, first_lon, \
             last_lat, last_lon, min_lat, min_lon, max_lat, max_lon, max_speed_mps, updated_at \
             FROM session_stats WHERE tenant_id = $1 AND session_id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.0)
        .fetch_optional(&mut *begin(self.pool(), Scope::Tenant(tenant)).await?)
        .await?)
    }

    /// The last known position of `device` of `tenant`; `None` before its first fix.
    pub async fn device_position(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<DevicePositionRow>, SessionError> {
        Ok(sqlx::query_as(
            "SELECT session_id, record_id, recorded_at, lat, lon, accuracy, altitude, speed, heading, \
             battery, updated_at FROM device_positions WHERE tenant_id = $1 AND device_id = $2",
        )
        .bind(tenant.as_str())
        .bind(device.as_str())
        .fetch_optional(&mut *begin(self.pool(), Scope::Tenant(tenant)).await?)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    /// The stride rule of [`super::SessionStore::track`], alone.
    fn stride(total: i64, max_read: i64) -> i64 {
        if total <= max_read {
            1
        } else {
            (total - 1 + max_read - 2) / (max_read - 1)
        }
    }

    /// How many points a stride keeps of `total`: rows 1, 1 + s, ... and the last.
    fn kept(total: i64, s: i64) -> i64 {
        let strided = (total - 1) / s + 1;
        if (total - 1) % s == 0 {
            strided
        } else {
            strided + 1
        }
    }

    #[test]
    fn a_thinned_track_keeps_at_most_the_read_bound() {
        for max_read in [2, 3, 10, 1000] {
            for total in 0..5000 {
                let s = stride(total, max_read);
                let k = if total == 0 { 0 } else { kept(total, s) };
                assert!(k <= max_read, "{total} {max_read}: {k}");
                if s > 1 {
                    // And no smaller stride would have done.
                    assert!(kept(total, s - 1) > max_read, "{total} {max_read}");
                }
            }
        }
    }
}
