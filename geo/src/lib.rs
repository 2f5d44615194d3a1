//! Geo math of Locus (the `geo` crate underneath): distances, implausible jumps, session
//! statistics, track simplification and geofence lookups. Pure functions, no I/O.

pub mod distance;
pub mod error;
pub mod fence;
pub mod segment;
pub mod simplify;
pub mod stats;

pub use distance::{EARTH_RADIUS_M, Point, TrackPoint, haversine_m};
pub use error::GeoError;
pub use fence::{Fence, FenceIndex, MAX_CIRCLE_RADIUS_M, MAX_FENCE_VERTICES, Shape};
pub use segment::Segment;
pub use simplify::{LocalFrame, Simplified, simplify, simplify_track};
pub use stats::{BBox, Stats};
