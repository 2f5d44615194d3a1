//! The one error type of locus-geo: what was wrong with a geometry handed in, said so that the
//! caller (an admin API answering a tenant) can pass the message on as the fix to make.

/// A geometry that locus-geo refuses, with where it is wrong and what is accepted instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    /// The value is not a JSON object with a `type` member.
    #[error(
        "the geometry must be a GeoJSON object with a \"type\" member (Polygon or MultiPolygon)"
    )]
    NotAGeometry,
    /// A `type` other than Polygon or MultiPolygon.
    #[error(
        "geometry type {found:?} is not supported: use \"Polygon\" or \"MultiPolygon\" (a circle is given by its center and radius)"
    )]
    UnsupportedType {
        /// The `type` that was given.
        found: String,
    },
    /// `coordinates` is missing or not nested the way the type requires.
    #[error("{path} must be {expected}")]
    BadStructure {
        /// Where in the geometry, e.g. `coordinates[0][2]`.
        path: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// A position that is not `[longitude, latitude]` with finite numbers in range.
    #[error(
        "{path} is [{lon}, {lat}]: a position is [longitude, latitude] with longitude in -180..=180 and latitude in -90..=90 (note the order)"
    )]
    OutOfRange {
        /// Where in the geometry.
        path: String,
        /// The longitude given (first number).
        lon: f64,
        /// The latitude given (second number).
        lat: f64,
    },
    /// A linear ring whose last position differs from its first.
    #[error("{path} is not closed: a ring's last position must repeat its first")]
    UnclosedRing {
        /// Where in the geometry.
        path: String,
    },
    /// A linear ring with fewer than 4 positions (a triangle plus the closing position).
    #[error(
        "{path} has {found} positions: a ring needs at least 4 (3 corners and the closing repeat of the first)"
    )]
    TooFewPositions {
        /// Where in the geometry.
        path: String,
        /// How many positions it has.
        found: usize,
    },
    /// A Polygon with no rings or a MultiPolygon with no polygons.
    #[error("{path} is empty: give at least one ring (Polygon) or one polygon (MultiPolygon)")]
    Empty {
        /// Where in the geometry.
        path: String,
    },
    /// More positions in total than one fence may have.
    #[error(
        "the geometry has {found} positions, more than the {max} allowed: simplify it or split it into several fences"
    )]
    TooManyVertices {
        /// How many positions were given.
        found: usize,
        /// The bound ([`crate::MAX_FENCE_VERTICES`]).
        max: usize,
    },
    /// A circle whose center or radius is unusable.
    #[error("circle {what}")]
    BadCircle {
        /// What is wrong, as the end of a sentence.
        what: String,
    },
}
