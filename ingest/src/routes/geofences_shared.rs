//! What the geofence routes share: the answer bodies, id parsing, the check of an area
//! (with `locus_geo`, the same code the tracker tests fixes with, so a fence the API takes
//! is one the tracker can use) and what each store error means to a client.

use chrono::{DateTime, Utc};
use locus_session::SessionError;
use locus_session::geofences::{FenceArea, Geofence, GeofenceError, GeofenceSummary};
use locus_wire::GeofenceId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};

/// Largest body `PUT /v1/geofences/{geofence_id}` reads (after decompression): a fence may
/// have up to `locus_geo::MAX_FENCE_VERTICES` positions, about 40 bytes each in JSON.
pub const GEOFENCE_BODY_LIMIT: usize = 1024 * 1024;

/// A geofence id from the path, or 400 `invalid_id` naming the rule it broke.
pub fn geofence_id(s: impl Into<String>) -> Result<GeofenceId, ApiError> {
    GeofenceId::parse(s).map_err(|e| ApiError::coded(ErrorCode::InvalidId, format!("{e}")))
}

/// A circular fence: every point within `radius_m` metres (great-circle) of the centre.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircleView {
    /// Latitude of the centre in degrees.
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude of the centre in degrees.
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Radius in metres: above 0, at most 1,000,000.
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    pub radius_m: f64,
}

/// A geofence as the API shows it: its area is `geometry` or `circle`, whichever it was put
/// with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GeofenceView {
    /// Its id within the tenant.
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub geofence_id: GeofenceId,
    /// Its display name.
    pub name: Option<String>,
    /// A GeoJSON Polygon or MultiPolygon (positions are `[longitude, latitude]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub geometry: Option<Value>,
    /// The circle, for a circular fence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circle: Option<CircleView>,
    /// When it was first put.
    pub created_at: DateTime<Utc>,
    /// When it was last put.
    pub updated_at: DateTime<Utc>,
}

impl From<Geofence> for GeofenceView {
    fn from(f: Geofence) -> Self {
        let (geometry, circle) = match f.area {
            FenceArea::Geometry(g) => (Some(g), None),
            FenceArea::Circle { lat, lon, radius_m } => {
                (None, Some(CircleView { lat, lon, radius_m }))
            }
        };
        Self {
            geofence_id: f.geofence_id,
            name: f.name,
            geometry,
            circle,
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

/// The shape a fence has, in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FenceKind {
    /// A GeoJSON Polygon or MultiPolygon.
    Polygon,
    /// A centre and a radius.
    Circle,
}

/// A geofence in a listing: without its area (`GET /v1/geofences/{geofence_id}` has it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GeofenceSummaryView {
    /// Its id within the tenant.
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub geofence_id: GeofenceId,
    /// Its display name.
    pub name: Option<String>,
    /// Polygon or circle.
    pub kind: FenceKind,
    /// When it was first put.
    pub created_at: DateTime<Utc>,
    /// When it was last put.
    pub updated_at: DateTime<Utc>,
}

impl From<GeofenceSummary> for GeofenceSummaryView {
    fn from(f: GeofenceSummary) -> Self {
        Self {
            geofence_id: f.geofence_id,
            name: f.name,
            kind: if f.kind == "circle" {
                FenceKind::Circle
            } else {
                FenceKind::Polygon
            },
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

/// The area to store for a request's `geometry` or `circle` (exactly one of them), checked
/// as the tracker will read it: 400 `invalid_body` for neither or both, 422
/// `invalid_geofence` for an area `locus_geo` refuses, saying where and why.
pub fn area(geometry: Option<Value>, circle: Option<CircleView>) -> Result<FenceArea, ApiError> {
    match (geometry, circle) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            ErrorCode::InvalidBody,
            "the body has both `geometry` and `circle`: a fence is one of them; send a GeoJSON Polygon or MultiPolygon as `geometry`, or `circle` with `lat`, `lon` and `radius_m`",
        )),
        (None, None) => Err(ApiError::invalid(
            ErrorCode::InvalidBody,
            "the body has neither `geometry` nor `circle`: send a GeoJSON Polygon or MultiPolygon as `geometry` ({\"type\": \"Polygon\", \"coordinates\": [[[lon, lat], ...]]}), or `circle` with `lat`, `lon` and `radius_m`",
        )),
        (Some(g), None) => {
            locus_geo::Shape::from_geojson(&g).map_err(|e| {
                ApiError::invalid(
                    ErrorCode::InvalidGeofence,
                    format!("`geometry` is not a usable fence: {e}"),
                )
            })?;
            // Only what defines the area is kept (`bbox`, `crs` or other members are not):
            // what is stored is what the tracker reads back.
            Ok(FenceArea::Geometry(
                json!({ "type": g["type"], "coordinates": g["coordinates"] }),
            ))
        }
        (None, Some(c)) => {
            locus_geo::Shape::circle(c.lat, c.lon, c.radius_m).map_err(|e| {
                ApiError::invalid(
                    ErrorCode::InvalidGeofence,
                    format!("`circle` is not a usable fence: {e}"),
                )
            })?;
            Ok(FenceArea::Circle {
                lat: c.lat,
                lon: c.lon,
                radius_m: c.radius_m,
            })
        }
    }
}

impl From<GeofenceError> for ApiError {
    fn from(e: GeofenceError) -> Self {
        match e {
            GeofenceError::NotFound => Self::coded(
                ErrorCode::GeofenceNotFound,
                "no geofence with this id in this tenant; list them with GET /v1/geofences, create one with PUT /v1/geofences/{geofence_id}",
            ),
            GeofenceError::TenantNotFound => Self::coded(
                ErrorCode::TenantNotFound,
                "the token's tenant is not registered; a platform admin creates it with POST /v1/tenants",
            ),
            GeofenceError::Database(e) => Self::from(SessionError::Database(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Value {
        json!({"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]]]})
    }

    #[test]
    fn an_area_is_a_geometry_or_a_circle_never_both_nor_neither() {
        let circle = CircleView {
            lat: 52.0,
            lon: 13.0,
            radius_m: 100.0,
        };
        let both = area(Some(square()), Some(circle)).unwrap_err();
        assert_eq!(both.code(), ErrorCode::InvalidBody);
        assert!(both.to_string().contains("both"), "{both}");
        assert_eq!(area(None, None).unwrap_err().code(), ErrorCode::InvalidBody);
        assert!(matches!(
            area(None, Some(circle)).unwrap(),
            FenceArea::Circle { radius_m, .. } if radius_m == 100.0
        ));
    }

    #[test]
    fn a_geometry_is_kept_without_its_extra_members() {
        let mut g = square();
        g["bbox"] = json!([13.0, 52.0, 13.1, 52.1]);
        g["properties"] = json!({"x": 1});
        let FenceArea::Geometry(stored) = area(Some(g), None).unwrap() else {
            panic!("a geometry")
        };
        assert_eq!(stored, square());
    }

    #[test]
    fn an_unusable_area_is_a_422_that_says_where_and_why() {
        let open = json!({"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1]]]});
        let e = area(Some(open), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidGeofence);
        assert_eq!(e.code().status(), 422);
        assert!(e.to_string().contains("coordinates[0]"), "{e}");
        let point = json!({"type": "Point", "coordinates": [13.0, 52.0]});
        assert!(
            area(Some(point), None)
                .unwrap_err()
                .to_string()
                .contains("Point")
        );
        let zero = CircleView {
            lat: 52.0,
            lon: 13.0,
            radius_m: 0.0,
        };
        let e = area(None, Some(zero)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidGeofence);
        assert!(e.to_string().contains("radius"), "{e}");
    }
}
