//! Geofences: their shapes (GeoJSON polygons, circles), parsed and bounded once, and a
//! per-tenant index answering "which fences contain this point" with an R-tree over the
//! fences' bounding boxes and the exact test after it.
//!
//! Points on a polygon's boundary are inside (`geo::Intersects`, not `Contains`, whose
//! boundary is outside): a fix exactly on the edge of a fence counts as within it, the same as
//! a fix exactly `radius_m` from a circle's centre. Polygons are planar in longitude/latitude
//! (GeoJSON's convention) and must not cross the antimeridian; circles are spherical and may.

use geo::coordinate_position::{CoordPos, CoordinatePosition};
use geo::{BoundingRect, Coord, LineString, MultiPolygon, Polygon};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RStarInsertionStrategy, RTree, RTreeParams};
use serde_json::Value;
use std::ops::ControlFlow;

use crate::distance::EARTH_RADIUS_M;
use crate::error::GeoError;

/// Most positions one fence's geometry may have (all rings together).
pub const MAX_FENCE_VERTICES: usize = 10_000;

/// Largest circle radius in metres (1,000 km).
pub const MAX_CIRCLE_RADIUS_M: f64 = 1_000_000.0;

/// The area of a geofence.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One or more polygons (a GeoJSON Polygon becomes a MultiPolygon of one), holes allowed.
    Polygon(MultiPolygon<f64>),
    /// Every point within `radius_m` metres (great-circle) of the centre.
    Circle {
        /// Latitude of the centre in degrees.
        lat: f64,
        /// Longitude of the centre in degrees.
        lon: f64,
        /// Radius in metres.
        radius_m: f64,
    },
}

/// A tenant's geofence: its id and its area.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// The fence's id, unique within the tenant.
    pub id: String,
    /// Its area.
    pub shape: Shape,
}

impl Shape {
    /// Parses a GeoJSON geometry of type Polygon or MultiPolygon, checking that every position
    /// is `[lon, lat]` in range, every ring closed with at least 4 positions, and the whole
    /// at most [`MAX_FENCE_VERTICES`] positions.
    pub fn from_geojson(value: &Value) -> Result<Shape, GeoError> {
        let obj = value.as_object().ok_or(GeoError::NotAGeometry)?;
        let ty = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or(GeoError::NotAGeometry)?;
        let mut budget = 0usize;
        let polygons = match ty {
            "Polygon" => {
                let coords = obj.get("coordinates").ok_or(GeoError::BadStructure {
                    path: "coordinates".into(),
                    expected: "present: an array of linear rings",
                })?;
                vec![polygon(coords, "coordinates", &mut budget)?]
            }
            "MultiPolygon" => {
                let coords = obj.get("coordinates").ok_or(GeoError::BadStructure {
                    path: "coordinates".into(),
                    expected: "present: an array of polygons",
                })?;
                let polys = array(coords, "coordinates", "an array of polygons")?;
                if polys.is_empty() {
                    return Err(GeoError::Empty {
                        path: "coordinates".into(),
                    });
                }
                polys
                    .iter()
                    .enumerate()
                    .map(|(i, p)| polygon(p, &format!("coordinates[{i}]"), &mut budget))
                    .collect::<Result<Vec<_>, _>>()?
            }
            other => {
                return Err(GeoError::UnsupportedType {
                    found: other.to_owned(),
                });
            }
        };
        Ok(Shape::Polygon(MultiPolygon(polygons)))
    }

    /// A circle, checking the centre is in range and the radius positive and at most
    /// [`MAX_CIRCLE_RADIUS_M`].
    pub fn circle(lat: f64, lon: f64, radius_m: f64) -> Result<Shape, GeoError> {
        // Range checks refuse NaN and infinities too.
        if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return Err(GeoError::BadCircle {
                what: format!(
                    "centre ({lat}, {lon}) is out of range: latitude in -90..=90, longitude in -180..=180"
                ),
            });
        }
        if !(radius_m.is_finite() && radius_m > 0.0 && radius_m <= MAX_CIRCLE_RADIUS_M) {
            return Err(GeoError::BadCircle {
                what: format!(
                    "radius {radius_m} m is out of range: give a radius above 0 and at most {MAX_CIRCLE_RADIUS_M} m"
                ),
            });
        }
        Ok(Shape::Circle { lat, lon, radius_m })
    }

    /// Whether the point (degrees) is inside the shape or on its boundary. For a circle:
    /// whether the haversine distance from the centre is at most `radius_m` (compared as
    /// the haversine of the angles, which saves the square root and arcsine per test).
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        Prepared::of(self).contains(self, &Query::new(lat, lon))
    }

    /// The bounding box as `([min_lon, min_lat], [max_lon, max_lat])`, slightly padded so that
    /// rounding never leaves out a point the exact test would accept.
    pub fn bounds(&self) -> ([f64; 2], [f64; 2]) {
        const PAD: f64 = 1e-9;
        match self {
            Shape::Polygon(mp) => match mp.bounding_rect() {
                Some(r) => (
                    [r.min().x - PAD, r.min().y - PAD],
                    [r.max().x + PAD, r.max().y + PAD],
                ),
                // An empty multipolygon contains nothing; an inverted box matches no point.
                None => ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]),
            },
            Shape::Circle { lat, lon, radius_m } => {
                // Bounding coordinates of a spherical cap (J. Matuschek, "Finding Points Within
                // a Distance of a Latitude/Longitude Using Bounding Coordinates").
                let d = (radius_m / EARTH_RADIUS_M).to_degrees() * (1.0 + 1e-9) + PAD;
                let (min_lat, max_lat) = (lat - d, lat + d);
                if min_lat <= -90.0 || max_lat >= 90.0 {
                    // Reaches a pole: every longitude.
                    return ([-180.0, min_lat.max(-90.0)], [180.0, max_lat.min(90.0)]);
                }
                let ratio = d.to_radians().sin() / lat.to_radians().cos();
                if ratio >= 1.0 {
                    return ([-180.0, min_lat], [180.0, max_lat]);
                }
                let dlon = ratio.asin().to_degrees() * (1.0 + 1e-9) + PAD;
                let (min_lon, max_lon) = (lon - dlon, lon + dlon);
                if min_lon < -180.0 || max_lon > 180.0 {
                    // Crosses the antimeridian: a box over every longitude is correct, if loose.
                    ([-180.0, min_lat], [180.0, max_lat])
                } else {
                    ([min_lon, min_lat], [max_lon, max_lat])
                }
            }
        }
    }
}

fn array<'a>(v: &'a Value, path: &str, expected: &'static str) -> Result<&'a Vec<Value>, GeoError> {
    v.as_array().ok_or_else(|| GeoError::BadStructure {
        path: path.to_owned(),
        expected,
    })
}

fn polygon(v: &Value, path: &str, budget: &mut usize) -> Result<Polygon<f64>, GeoError> {
    let rings = array(v, path, "an array of linear rings")?;
    if rings.is_empty() {
        return Err(GeoError::Empty {
            path: path.to_owned(),
        });
    }
    let mut parsed = rings
        .iter()
        .enumerate()
        .map(|(i, r)| ring(r, &format!("{path}[{i}]"), budget))
        .collect::<Result<Vec<_>, _>>()?;
    let exterior = parsed.remove(0);
    Ok(Polygon::new(exterior, parsed))
}

fn ring(v: &Value, path: &str, budget: &mut usize) -> Result<LineString<f64>, GeoError> {
    let positions = array(v, path, "an array of positions [longitude, latitude]")?;
    // Bounded before the positions are looked at, so a huge ring costs nothing more.
    *budget += positions.len();
    if *budget > MAX_FENCE_VERTICES {
        return Err(GeoError::TooManyVertices {
            found: *budget,
            max: MAX_FENCE_VERTICES,
        });
    }
    if positions.len() < 4 {
        return Err(GeoError::TooFewPositions {
            path: path.to_owned(),
            found: positions.len(),
        });
    }
    let coords = positions
        .iter()
        .enumerate()
        .map(|(i, p)| position(p, &format!("{path}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if coords.first() != coords.last() {
        return Err(GeoError::UnclosedRing {
            path: path.to_owned(),
        });
    }
    Ok(LineString(coords))
}

fn position(v: &Value, path: &str) -> Result<Coord<f64>, GeoError> {
    const EXPECTED: &str =
        "a position [longitude, latitude] (an optional third number, altitude, is ignored)";
    let bad = || GeoError::BadStructure {
        path: path.to_owned(),
        expected: EXPECTED,
    };
    let nums = v.as_array().ok_or_else(bad)?;
    if !(2..=3).contains(&nums.len()) {
        return Err(bad());
    }
    let lon = nums[0].as_f64().ok_or_else(bad)?;
    let lat = nums[1].as_f64().ok_or_else(bad)?;
    if nums.get(2).is_some_and(|a| !a.is_number()) {
        return Err(bad());
    }
    if !(lon.is_finite()
        && (-180.0..=180.0).contains(&lon)
        && lat.is_finite()
        && (-90.0..=90.0).contains(&lat))
    {
        return Err(GeoError::OutOfRange {
            path: path.to_owned(),
            lon,
            lat,
        });
    }
    Ok(Coord { x: lon, y: lat })
}

/// A point to test against many fences, with what every test of it needs computed once.
struct Query {
    coord: Coord<f64>,
    lat_rad: f64,
    lon_rad: f64,
    cos_lat: f64,
}

impl Query {
    fn new(lat: f64, lon: f64) -> Self {
        let lat_rad = lat.to_radians();
        Self {
            coord: Coord { x: lon, y: lat },
            lat_rad,
            lon_rad: lon.to_radians(),
            cos_lat: lat_rad.cos(),
        }
    }
}

/// What a shape's exact test needs beyond the shape, computed when it is indexed.
#[derive(Debug, Clone)]
enum Prepared {
    /// Each polygon's box `[min_lon, min_lat, max_lon, max_lat]`, in the order of the
    /// multipolygon: most polygons of a multipolygon are skipped on their box.
    Polygons(Vec<[f64; 4]>),
    /// The centre in radians, the cosine of its latitude and the haversine of the radius's
    /// angle: a point is inside when the haversine of its angle from the centre is at most it.
    Circle {
        lat_rad: f64,
        lon_rad: f64,
        cos_lat: f64,
        max_hav: f64,
    },
}

impl Prepared {
    fn of(shape: &Shape) -> Self {
        match shape {
            Shape::Polygon(mp) => Prepared::Polygons(
                mp.0.iter()
                    .map(|p| match p.bounding_rect() {
                        Some(r) => [r.min().x, r.min().y, r.max().x, r.max().y],
                        None => [
                            f64::INFINITY,
                            f64::INFINITY,
                            f64::NEG_INFINITY,
                            f64::NEG_INFINITY,
                        ],
                    })
                    .collect(),
            ),
            Shape::Circle { lat, lon, radius_m } => {
                let half = (radius_m / EARTH_RADIUS_M).min(std::f64::consts::PI) / 2.0;
                Prepared::Circle {
                    lat_rad: lat.to_radians(),
                    lon_rad: lon.to_radians(),
                    cos_lat: lat.to_radians().cos(),
                    max_hav: half.sin().powi(2),
                }
            }
        }
    }

    fn contains(&self, shape: &Shape, q: &Query) -> bool {
        match (self, shape) {
            (Prepared::Polygons(boxes), Shape::Polygon(mp)) => {
                boxes.iter().zip(&mp.0).any(|(b, polygon)| {
                    let c = q.coord;
                    b[0] <= c.x
                        && c.x <= b[2]
                        && b[1] <= c.y
                        && c.y <= b[3]
                        // Boundary inclusive, as `geo::Intersects` (robust orientation tests).
                        && polygon.coordinate_position(&c) != CoordPos::Outside
                })
            }
            (
                Prepared::Circle {
                    lat_rad,
                    lon_rad,
                    cos_lat,
                    max_hav,
                },
                Shape::Circle { .. },
            ) => {
                // The haversine formula as `geo::Haversine` computes it, up to the arcsine.
                let dlat = ((q.lat_rad - lat_rad) / 2.0).sin();
                let dlon = ((q.lon_rad - lon_rad) / 2.0).sin();
                dlat * dlat + cos_lat * q.cos_lat * dlon * dlon <= *max_hav
            }
            _ => unreachable!("a prepared shape is only used with the shape it was made of"),
        }
    }
}

type Entry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// Wider nodes than rstar's default (6): a shallower tree, fewer nodes visited per lookup
/// (measured in bench/benches/geo.rs).
#[derive(Debug)]
struct Params;

impl RTreeParams for Params {
    const MIN_SIZE: usize = 4;
    const MAX_SIZE: usize = 16;
    const REINSERTION_COUNT: usize = 4;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// A tenant's fences, indexed for point lookups.
#[derive(Debug)]
pub struct FenceIndex {
    fences: Vec<Fence>,
    prepared: Vec<Prepared>,
    tree: RTree<Entry, Params>,
}

impl FenceIndex {
    /// Indexes `fences` (bulk-loaded R-tree over their bounding boxes).
    pub fn new(fences: Vec<Fence>) -> Self {
        let entries = fences
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (lo, hi) = f.shape.bounds();
                // An inverted box (empty polygon) would break the tree's invariants: a box at
                // an impossible place stands in, and the exact test refuses every point.
                let (lo, hi) = if lo[0] <= hi[0] && lo[1] <= hi[1] {
                    (lo, hi)
                } else {
                    ([1000.0, 1000.0], [1000.0, 1000.0])
                };
                GeomWithData::new(Rectangle::from_corners(lo, hi), i)
            })
            .collect();
        let prepared = fences.iter().map(|f| Prepared::of(&f.shape)).collect();
        Self {
            fences,
            prepared,
            tree: RTree::bulk_load_with_params(entries),
        }
    }

    /// Ids of the fences containing the point (boundary included), in no particular order.
    pub fn containing(&self, lat: f64, lon: f64) -> impl Iterator<Item = &str> {
        let q = Query::new(lat, lon);
        // rstar's internal iteration: cheaper than its iterator's explicit node stack.
        let mut hits = Vec::new();
        let _ = self.tree.locate_all_at_point_int(&[lon, lat], |e| {
            if self.prepared[e.data].contains(&self.fences[e.data].shape, &q) {
                hits.push(e.data);
            }
            ControlFlow::<()>::Continue(())
        });
        hits.into_iter().map(|i| self.fences[i].id.as_str())
    }

    /// The indexed fences, in the order given to [`Self::new`].
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// How many fences are indexed.
    pub fn len(&self) -> usize {
        self.fences.len()
    }

    /// Whether there are no fences.
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The fences whose bounding boxes intersect the box `([min_lon, min_lat], [max_lon, max_lat])`
    /// (candidates, not exact).
    pub fn candidates_in(&self, lo: [f64; 2], hi: [f64; 2]) -> impl Iterator<Item = &Fence> {
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_corners(lo, hi))
            .map(|e| &self.fences[e.data])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn square(lon: f64, lat: f64, size: f64) -> Value {
        json!({"type": "Polygon", "coordinates": [[
            [lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]
        ]]})
    }

    #[test]
    fn a_polygon_contains_its_inside_and_its_boundary_but_not_its_outside() {
        let s = Shape::from_geojson(&square(13.0, 52.0, 0.1)).unwrap();
        assert!(s.contains(52.05, 13.05));
        assert!(s.contains(52.0, 13.05), "a point on an edge is inside");
        assert!(s.contains(52.0, 13.0), "a corner is inside");
        assert!(!s.contains(52.2, 13.05));
    }

    #[test]
    fn a_hole_is_outside() {
        let s = Shape::from_geojson(&json!({"type": "Polygon", "coordinates": [
            [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]],
            [[4.0, 4.0], [6.0, 4.0], [6.0, 6.0], [4.0, 6.0], [4.0, 4.0]]
        ]}))
        .unwrap();
        assert!(s.contains(1.0, 1.0));
        assert!(!s.contains(5.0, 5.0));
    }

    #[test]
    fn a_multipolygon_contains_the_points_of_each_part() {
        let a = square(0.0, 0.0, 1.0)["coordinates"].clone();
        let b = square(5.0, 5.0, 1.0)["coordinates"].clone();
        let s =
            Shape::from_geojson(&json!({"type": "MultiPolygon", "coordinates": [a, b]})).unwrap();
        assert!(s.contains(0.5, 0.5));
        assert!(s.contains(5.5, 5.5));
        assert!(!s.contains(3.0, 3.0));
    }

    #[test]
    fn a_circle_contains_the_points_within_its_radius() {
        let s = Shape::circle(52.0, 13.0, 100.0).unwrap();
        assert!(s.contains(52.0, 13.0));
        assert!(s.contains(52.0008, 13.0)); // ~89 m north
        assert!(!s.contains(52.001, 13.0)); // ~111 m north
    }

    #[test]
    fn a_circle_across_the_antimeridian_is_found_on_both_sides() {
        let index = FenceIndex::new(vec![Fence {
            id: "dateline".into(),
            shape: Shape::circle(0.0, 179.9995, 500.0).unwrap(),
        }]);
        assert_eq!(
            index.containing(0.0, -179.9995).collect::<Vec<_>>(),
            ["dateline"]
        );
        assert_eq!(
            index.containing(0.0, 179.999).collect::<Vec<_>>(),
            ["dateline"]
        );
        assert_eq!(index.containing(0.0, 179.98).count(), 0);
    }

    #[test]
    fn a_circle_around_a_pole_covers_every_longitude() {
        let s = Shape::circle(89.999, 0.0, 1000.0).unwrap();
        let index = FenceIndex::new(vec![Fence {
            id: "pole".into(),
            shape: s,
        }]);
        assert_eq!(index.containing(89.9999, 179.0).count(), 1);
    }

    #[test]
    fn bad_geometries_say_what_is_wrong() {
        let err = |v: Value| Shape::from_geojson(&v).unwrap_err();
        assert_eq!(err(json!([1, 2])), GeoError::NotAGeometry);
        assert_eq!(
            err(json!({"type": "Point", "coordinates": [1, 2]})),
            GeoError::UnsupportedType {
                found: "Point".into()
            }
        );
        assert_eq!(
            err(json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]})),
            GeoError::UnclosedRing {
                path: "coordinates[0]".into()
            }
        );
        assert_eq!(
            err(json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]})),
            GeoError::TooFewPositions {
                path: "coordinates[0]".into(),
                found: 3
            }
        );
        assert_eq!(
            err(json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 91], [0, 0]]]})),
            GeoError::OutOfRange {
                path: "coordinates[0][2]".into(),
                lon: 1.0,
                lat: 91.0
            }
        );
        assert!(matches!(
            err(json!({"type": "Polygon", "coordinates": [[[0, 0], [1, "x"], [1, 1], [0, 0]]]})),
            GeoError::BadStructure { path, .. } if path == "coordinates[0][1]"
        ));
        assert_eq!(
            err(json!({"type": "Polygon", "coordinates": []})),
            GeoError::Empty {
                path: "coordinates".into()
            }
        );
        assert_eq!(
            err(json!({"type": "MultiPolygon", "coordinates": []})),
            GeoError::Empty {
                path: "coordinates".into()
            }
        );
        assert!(matches!(
            err(json!({"type": "Polygon"})),
            GeoError::BadStructure { .. }
        ));
        let mut ring: Vec<Value> = (0..MAX_FENCE_VERTICES)
            .map(|i| json!([i as f64 * 1e-5, 0.0]))
            .collect();
        ring.push(json!([0.0, 1.0]));
        ring.push(json!([0.0, 0.0]));
        assert!(matches!(
            err(json!({"type": "Polygon", "coordinates": [ring]})),
            GeoError::TooManyVertices {
                max: MAX_FENCE_VERTICES,
                ..
            }
        ));
        assert!(Shape::circle(91.0, 0.0, 10.0).is_err());
        assert!(Shape::circle(0.0, 0.0, 0.0).is_err());
        assert!(Shape::circle(0.0, 0.0, f64::NAN).is_err());
        assert!(Shape::circle(0.0, 0.0, MAX_CIRCLE_RADIUS_M * 2.0).is_err());
    }

    #[test]
    fn error_messages_name_the_place_and_the_fix() {
        let e = Shape::from_geojson(
            &json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "coordinates[0] is not closed: a ring's last position must repeat its first"
        );
    }

    fn fence() -> impl Strategy<Value = Shape> {
        prop_oneof![
            (-0.2..0.2f64, -0.2..0.2f64, 1.0..5000.0f64)
                .prop_map(|(lat, lon, r)| Shape::circle(lat, lon, r).unwrap()),
            (
                -0.2..0.2f64,
                -0.2..0.2f64,
                prop::collection::vec((0.001..0.05f64, 0.0..1.0f64), 3..20)
            )
                .prop_map(|(clat, clon, spokes)| {
                    // A star-shaped polygon around the centre: spokes sorted by angle.
                    let n = spokes.len() as f64;
                    let mut ring: Vec<Value> = spokes
                        .iter()
                        .enumerate()
                        .map(|(i, (r, jitter))| {
                            let a = (i as f64 + jitter * 0.9) / n * std::f64::consts::TAU;
                            json!([clon + r * a.cos(), clat + r * a.sin()])
                        })
                        .collect();
                    ring.push(ring[0].clone());
                    Shape::from_geojson(&json!({"type": "Polygon", "coordinates": [ring]})).unwrap()
                }),
        ]
    }

    proptest! {
        #[test]
        fn containment_matches_a_check_of_every_fence(
            shapes in prop::collection::vec(fence(), 0..40),
            points in prop::collection::vec((-0.3..0.3f64, -0.3..0.3f64), 1..50)
        ) {
            let fences: Vec<Fence> = shapes
                .into_iter()
                .enumerate()
                .map(|(i, shape)| Fence { id: format!("f{i}"), shape })
                .collect();
            let index = FenceIndex::new(fences.clone());
            for (lat, lon) in points {
                let mut found: Vec<&str> = index.containing(lat, lon).collect();
                found.sort_unstable();
                let mut brute: Vec<&str> = fences
                    .iter()
                    .filter(|f| f.shape.contains(lat, lon))
                    .map(|f| f.id.as_str())
                    .collect();
                brute.sort_unstable();
                prop_assert_eq!(found, brute);
            }
        }

        #[test]
        fn circle_containment_is_the_haversine_distance_against_the_radius(
            lat in -89.0..89.0f64, lon in -180.0..180.0f64, r in 1.0..MAX_CIRCLE_RADIUS_M,
            plat in -90.0..90.0f64, plon in -180.0..180.0f64, near in proptest::bool::ANY,
            dlat in -0.05..0.05f64, dlon in -0.05..0.05f64
        ) {
            let s = Shape::circle(lat, lon, r).unwrap();
            // Half the cases near the centre, so both answers come up.
            let (plat, plon) = if near { ((lat + dlat).clamp(-90.0, 90.0), lon + dlon) } else { (plat, plon) };
            let d = crate::haversine_m(crate::Point::new(lat, lon), crate::Point::new(plat, plon));
            if d < r * (1.0 - 1e-9) {
                prop_assert!(s.contains(plat, plon), "{d} < {r}");
            } else if d > r * (1.0 + 1e-9) {
                prop_assert!(!s.contains(plat, plon), "{d} > {r}");
            }
        }

        #[test]
        fn a_circle_box_holds_every_point_of_the_circle(
            lat in -89.0..89.0f64, lon in -180.0..180.0f64, r in 1.0..MAX_CIRCLE_RADIUS_M,
            bearing in 0.0..360.0f64, frac in 0.0..1.0f64
        ) {
            use geo::{Destination, Haversine};
            let s = Shape::circle(lat, lon, r).unwrap();
            let p = Haversine.destination(geo::Point::new(lon, lat), bearing, r * frac * 0.999_999);
            let (lo, hi) = s.bounds();
            prop_assert!(s.contains(p.y(), p.x()));
            prop_assert!(lo[0] <= p.x() && p.x() <= hi[0] && lo[1] <= p.y() && p.y() <= hi[1],
                "{:?} not in {:?}..{:?}", p, lo, hi);
        }
    }
}
