//! Points on the Earth and the distance between them: the haversine great-circle distance
//! of the `geo` crate on a sphere of the GRS80 mean radius, in metres.

use chrono::{DateTime, Utc};
use geo::{Distance, Haversine};

/// Mean Earth radius used for every spherical computation here (the one of `geo::Haversine`).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A position in degrees, latitude first (unlike GeoJSON's `[lon, lat]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
}

impl Point {
    /// A point from latitude and longitude in degrees.
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// The same position as a `geo` point (x = longitude, y = latitude).
    pub fn to_geo(self) -> geo::Point<f64> {
        geo::Point::new(self.lon, self.lat)
    }
}

/// One fix of a track: where the device was and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackPoint {
    /// When the device recorded the fix.
    pub recorded_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

impl TrackPoint {
    /// A track point from its time and position.
    pub const fn new(recorded_at: DateTime<Utc>, lat: f64, lon: f64) -> Self {
        Self {
            recorded_at,
            lat,
            lon,
        }
    }

    /// The position of the fix.
    pub const fn point(&self) -> Point {
        Point {
            lat: self.lat,
            lon: self.lon,
        }
    }
}

/// Great-circle (haversine) distance between two points in metres; 0 for the same point.
pub fn haversine_m(a: Point, b: Point) -> f64 {
    Haversine.distance(a.to_geo(), b.to_geo())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn point() -> impl Strategy<Value = Point> {
        (-90.0..=90.0f64, -180.0..=180.0f64).prop_map(|(lat, lon)| Point::new(lat, lon))
    }

    #[test]
    fn the_distance_between_sofia_and_plovdiv_is_the_one_geo_documents() {
        let sofia = Point::new(42.698334, 23.319941);
        let plovdiv = Point::new(42.136097, 24.742168);
        assert!((haversine_m(sofia, plovdiv) - 132_433.099_294_601_94).abs() < 1e-6);
    }

    #[test]
    fn one_degree_of_latitude_is_about_111_km() {
        let d = haversine_m(Point::new(0.0, 0.0), Point::new(1.0, 0.0));
        assert!((d - EARTH_RADIUS_M.to_radians()).abs() < 1e-6, "{d}");
    }

    #[test]
    fn points_across_the_antimeridian_are_close() {
        let d = haversine_m(Point::new(0.0, 179.9995), Point::new(0.0, -179.9995));
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }

    proptest! {
        #[test]
        fn distance_is_zero_for_the_same_point(a in point()) {
            prop_assert!(haversine_m(a, a).abs() < 1e-6);
        }

        #[test]
        fn distance_is_symmetric_and_non_negative(a in point(), b in point()) {
            let ab = haversine_m(a, b);
            let ba = haversine_m(b, a);
            prop_assert!(ab >= 0.0);
            prop_assert!(ab.is_finite());
            prop_assert!((ab - ba).abs() <= 1e-6 * ab.max(1.0));
            // Never more than half the circumference.
            prop_assert!(ab <= std::f64::consts::PI * EARTH_RADIUS_M * (1.0 + 1e-9));
        }

        #[test]
        fn distance_obeys_the_triangle_inequality(a in point(), b in point(), c in point()) {
            let ac = haversine_m(a, c);
            let via_b = haversine_m(a, b) + haversine_m(b, c);
            // Rounding in the haversine formula is well under a millimetre at Earth scale.
            prop_assert!(ac <= via_b + 1e-3, "ac {ac} > ab + bc {via_b}");
        }
    }
}
