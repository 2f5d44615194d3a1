//! GET /v1/sessions/{id}/track: a session's path as GeoJSON, simplified to a tolerance in
//! metres (Ramer-Douglas-Peucker, locus-geo) and bounded in points.
//!
//! The points are the tracker's (`track_points`), by time; a session longer than
//! `LOCUS_TRACK_MAX_READ_POINTS` is read as every n-th point and the last, so one request
//! costs bounded memory. Simplification runs on a blocking thread: it is CPU work
//! proportional to the points read.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use locus_geo::{TrackPoint, simplify_track};
use locus_session::track::{SessionStatsRow, TrackPointRow};
use locus_wire::api::{BoundingBox, ErrorBody, SessionStats, TimedPosition};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::{Reader, readable_session};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Largest tolerance a caller may give, in metres (half the Earth's circumference: any
/// larger keeps only the endpoints all the same).
pub const MAX_TOLERANCE_M: f64 = 20_000_000.0;

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrackQuery {
    /// Simplification tolerance in metres: every dropped point is within it of the line
    /// between the kept points around it (0 to 20,000,000; default
    /// `LOCUS_TRACK_DEFAULT_TOLERANCE_M`, 0: no simplification beyond the point bound).
    #[serde(default)]
    #[param(minimum = 0.0, maximum = 20_000_000.0)]
    tolerance_m: Option<f64>,
    /// Most points to return (at least 2; default and upper bound `LOCUS_TRACK_MAX_POINTS`,
    /// larger values are lowered to it). When the tolerance leaves more, it is raised until
    /// the track fits; the answer's `tolerance_m` says by how much.
    #[serde(default)]
    #[param(minimum = 2)]
    max_points: Option<usize>,
    /// `linestring` (default): one Feature with a LineString; `points`: a FeatureCollection
    /// of Point features with the fix's properties.
    #[serde(default)]
    #[param(inline)]
    format: Option<TrackFormat>,
}

/// The shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrackFormat {
    /// A Feature whose geometry is a LineString.
    Linestring,
    /// A FeatureCollection of Point features.
    Points,
}

/// GeoJSON `type` values, one enum each so that the two shapes of the answer (and their
/// schemas) cannot be mistaken for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum FeatureType {
    /// A Feature.
    Feature,
}

/// `FeatureCollection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum FeatureCollectionType {
    /// A FeatureCollection.
    FeatureCollection,
}

/// `LineString`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum LineStringType {
    /// A LineString.
    LineString,
}

/// `Point`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum PointType {
    /// A Point.
    Point,
}

/// What the answer is a track of and how it was simplified.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrackProperties {
    /// The session.
    #[schema(format = "uuid")]
    pub session_id: String,
    /// The device that recorded it.
    pub device_id: String,
    /// Points the session's track has.
    pub fix_count: i64,
    /// Points in this answer.
    pub points: usize,
    /// Every dropped point is within this many metres of the returned line: the tolerance
    /// asked for, or the raised one that brought the track within `max_points`.
    pub tolerance_m: f64,
    /// The tolerance asked for (or the default).
    pub requested_tolerance_m: f64,
    /// The bound on the points that applied.
    pub max_points: usize,
    /// 1 when every stored point was considered; n when the session was longer than
    /// `LOCUS_TRACK_MAX_READ_POINTS` and every n-th point (and the last) was.
    pub stride: i64,
}

/// A GeoJSON LineString (`[longitude, latitude]` positions).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LineStringGeometry {
    /// `LineString`.
    #[serde(rename = "type")]
    pub kind: LineStringType,
    /// The positions, `[longitude, latitude]`, by time. A track of one fix repeats it.
    pub coordinates: Vec<[f64; 2]>,
}

/// The track as one GeoJSON Feature (`format=linestring`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrackLine {
    /// `Feature`.
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// The path; null while the track has no points.
    pub geometry: Option<LineStringGeometry>,
    /// What it is and how it was simplified.
    pub properties: TrackProperties,
}

/// A GeoJSON Point.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PointGeometry {
    /// `Point`.
    #[serde(rename = "type")]
    pub kind: PointType,
    /// `[longitude, latitude]`.
    pub coordinates: [f64; 2],
}

/// One fix of the track as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PointProperties {
    /// When the device recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The fix's record id (as on the locations topic).
    #[schema(format = "uuid")]
    pub record_id: String,
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
    /// Metres from the previous fix of the whole track that count toward the distance (0
    /// for the first fix and for a jump).
    pub segment_m: f64,
    /// Speed from the previous fix of the whole track, m/s.
    pub segment_mps: Option<f64>,
    /// The step from the previous fix is faster than `LOCUS_GEO_MAX_SPEED_MPS`: an
    /// implausible jump, kept and flagged, not counted in the distance.
    pub jump: bool,
}

/// One fix as a GeoJSON Feature.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PointFeature {
    /// `Feature`.
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// Where.
    pub geometry: PointGeometry,
    /// The fix.
    pub properties: PointProperties,
}

/// The track as a GeoJSON FeatureCollection of points (`format=points`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrackPoints {
    /// `FeatureCollection`.
    #[serde(rename = "type")]
    pub kind: FeatureCollectionType,
    /// The kept fixes, by time.
    pub features: Vec<PointFeature>,
    /// What it is and how it was simplified (a GeoJSON foreign member).
    pub properties: TrackProperties,
}

/// Either shape of the answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TrackAnswer {
    /// `format=linestring`.
    Line(TrackLine),
    /// `format=points`.
    Points(TrackPoints),
}

/// The parameters after defaults and bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Wanted {
    tolerance_m: f64,
    max_points: usize,
    format: TrackFormat,
}

fn wanted(query: TrackQuery, state: &AppState) -> Result<Wanted, ApiError> {
    let settings = &state.config.track;
    let tolerance_m = query.tolerance_m.unwrap_or(settings.default_tolerance_m);
    if !(0.0..=MAX_TOLERANCE_M).contains(&tolerance_m) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "`tolerance_m` is {tolerance_m}: give metres from 0 to {MAX_TOLERANCE_M} (e.g. tolerance_m=5)"
            ),
        ));
    }
    let bound = settings.max_points.max(2);
    let max_points = query.max_points.unwrap_or(bound);
    if max_points < 2 {
        return Err(ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "`max_points` is {max_points}: a track keeps its first and last point, so give at least 2 (at most {bound} are returned)"
            ),
        ));
    }
    Ok(Wanted {
        tolerance_m,
        max_points: max_points.min(bound),
        format: query.format.unwrap_or(TrackFormat::Linestring),
    })
}

/// Builds the answer from the points read (the CPU part, run on a blocking thread).
fn answer(
    rows: Vec<TrackPointRow>,
    mut properties: TrackProperties,
    wanted: Wanted,
) -> TrackAnswer {
    let points: Vec<TrackPoint> = rows
        .iter()
        .map(|r| TrackPoint::new(r.recorded_at, r.lat, r.lon))
        .collect();
    let simplified = simplify_track(&points, wanted.tolerance_m, wanted.max_points);
    properties.points = simplified.indices.len();
    properties.tolerance_m = simplified.tolerance_m;
    match wanted.format {
        TrackFormat::Linestring => {
            let mut coordinates: Vec<[f64; 2]> = simplified
                .indices
                .iter()
                .map(|&i| [rows[i].lon, rows[i].lat])
                .collect();
            // A LineString needs two positions: a track of one fix is a line that stays put.
            if coordinates.len() == 1 {
                coordinates.push(coordinates[0]);
            }
            TrackAnswer::Line(TrackLine {
                kind: FeatureType::Feature,
                geometry: (!coordinates.is_empty()).then_some(LineStringGeometry {
                    kind: LineStringType::LineString,
                    coordinates,
                }),
                properties,
            })
        }
        TrackFormat::Points => TrackAnswer::Points(TrackPoints {
            kind: FeatureCollectionType::FeatureCollection,
            features: simplified
                .indices
                .iter()
                .map(|&i| {
                    let r = &rows[i];
                    PointFeature {
                        kind: FeatureType::Feature,
                        geometry: PointGeometry {
                            kind: PointType::Point,
                            coordinates: [r.lon, r.lat],
                        },
                        properties: PointProperties {
                            recorded_at: r.recorded_at,
                            record_id: r.record_id.to_string(),
                            accuracy: r.accuracy,
                            altitude: r.altitude,
                            speed: r.speed,
                            heading: r.heading,
                            battery: r.battery,
                            segment_m: r.segment_m,
                            segment_mps: r.segment_mps,
                            jump: r.jump,
                        },
                    }
                })
                .collect(),
            properties,
        }),
    }
}

/// The API's statistics of a session from its stored row: duration and average speed are
/// derived here, from the first and last fix.
pub fn stats_view(row: &SessionStatsRow) -> SessionStats {
    let duration_secs = match (row.first_fix_at, row.last_fix_at) {
        (Some(first), Some(last)) => (last - first)
            .num_microseconds()
            .map_or(0.0, |us| us as f64 / 1e6),
        _ => 0.0,
    };
    let timed = |at: Option<DateTime<Utc>>, lat: Option<f64>, lon: Option<f64>| {
        Some(TimedPosition {
            recorded_at: at?,
            lat: lat?,
            lon: lon?,
        })
    };
    let bbox = (|| {
        Some(BoundingBox {
            min_lat: row.min_lat?,
            min_lon: row.min_lon?,
            max_lat: row.max_lat?,
            max_lon: row.max_lon?,
        })
    })();
    SessionStats {
        fix_count: row.fix_count,
        distance_m: row.distance_m,
        duration_secs,
        jumps: row.jumps,
        max_speed_mps: row.max_speed_mps,
        avg_speed_mps: locus_geo::stats::avg_speed_mps(row.distance_m, duration_secs),
        bbox,
        first_fix: timed(row.first_fix_at, row.first_lat, row.first_lon),
        last_fix: timed(row.last_fix_at, row.last_lat, row.last_lon),
        updated_at: row.updated_at,
    }
}

/// A session's path as GeoJSON, simplified to a tolerance in metres, at most `max_points`.
///
/// 200 with `application/geo+json`: a Feature with a LineString (`format=linestring`,
/// the default) or a FeatureCollection of Point features with each fix's properties
/// (`format=points`); `properties` says how many points the session has, how many are
/// returned and the tolerance they satisfy. 404 for an id the caller may not see, exactly
/// as for one that does not exist.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/track",
    operation_id = "get_session_track",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "The session id (a UUID); any other value reads as not found."),
        TrackQuery
    ),
    responses(
        (status = 200, description = "The track as GeoJSON.", body = TrackAnswer, content_type = "application/geo+json"),
        (status = 400, description = "`invalid_query`: `tolerance_m`, `max_points` or `format` is not what it takes (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not read sessions.", body = ErrorBody),
        (status = 404, description = "`session_not_found` (also for another tenant's session, or another device's).", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device", "tenant_admin", "partner"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %reader.tenant_label(), session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
    query: Result<Query<TrackQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // The session first: an id the caller may not see is a 404 whatever the query says,
    // as for GET /v1/sessions/{id}.
    let session = readable_session(&state.store, &reader, &id).await?;
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "{e}; `tolerance_m` is metres (a number), `max_points` a whole number of at least 2, `format` linestring or points"
            ),
        )
    })?;
    let wanted = wanted(query, &state)?;
    let max_read = i64::try_from(state.config.track.max_read_points).unwrap_or(i64::MAX);
    let track = state
        .store
        .track(&session.tenant_id, session.id, max_read)
        .await?;
    let properties = TrackProperties {
        session_id: session.id.to_string(),
        device_id: session.device_id.to_string(),
        fix_count: track.total,
        points: 0,
        tolerance_m: wanted.tolerance_m,
        requested_tolerance_m: wanted.tolerance_m,
        max_points: wanted.max_points,
        stride: track.stride,
    };
    let body = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&answer(track.points, properties, wanted))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the track task failed: {e}")))?
    .map_err(|e| ApiError::Internal(format!("the track did not serialize: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn row(i: i64, lat: f64, lon: f64) -> TrackPointRow {
        TrackPointRow {
            recorded_at: DateTime::from_timestamp(1_790_000_000 + i, 0).unwrap(),
            record_id: Uuid::nil(),
            lat,
            lon,
            accuracy: Some(5.0),
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
            segment_m: 0.0,
            segment_mps: None,
            jump: false,
        }
    }

    fn properties() -> TrackProperties {
        TrackProperties {
            session_id: Uuid::nil().to_string(),
            device_id: "d".into(),
            fix_count: 0,
            points: 0,
            tolerance_m: 0.0,
            requested_tolerance_m: 0.0,
            max_points: 10,
            stride: 1,
        }
    }

    fn want(format: TrackFormat) -> Wanted {
        Wanted {
            tolerance_m: 0.0,
            max_points: 10,
            format,
        }
    }

    #[test]
    fn an_empty_track_is_a_feature_without_geometry() {
        let v = serde_json::to_value(answer(vec![], properties(), want(TrackFormat::Linestring)))
            .unwrap();
        assert_eq!(v["type"], "Feature");
        assert!(v["geometry"].is_null());
        assert_eq!(v["properties"]["points"], 0);
    }

    #[test]
    fn a_track_of_one_fix_is_a_line_that_stays_put() {
        let v = serde_json::to_value(answer(
            vec![row(0, 52.0, 13.0)],
            properties(),
            want(TrackFormat::Linestring),
        ))
        .unwrap();
        assert_eq!(v["geometry"]["type"], "LineString");
        assert_eq!(
            v["geometry"]["coordinates"],
            serde_json::json!([[13.0, 52.0], [13.0, 52.0]])
        );
        assert_eq!(v["properties"]["points"], 1);
    }

    #[test]
    fn points_are_features_with_the_fix_properties_in_lon_lat_order() {
        let v = serde_json::to_value(answer(
            vec![row(0, 52.0, 13.0), row(1, 52.001, 13.0)],
            properties(),
            want(TrackFormat::Points),
        ))
        .unwrap();
        assert_eq!(v["type"], "FeatureCollection");
        assert_eq!(
            v["features"][1]["geometry"]["coordinates"],
            serde_json::json!([13.0, 52.001])
        );
        assert_eq!(v["features"][0]["properties"]["accuracy"], 5.0);
        assert_eq!(v["features"][0]["properties"]["jump"], false);
    }
}
