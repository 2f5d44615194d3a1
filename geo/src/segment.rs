//! The step between two consecutive fixes of a track: how far, how fast, and whether it is an
//! implausible jump (a speed beyond the configured bound, e.g. a GPS glitch or a fix from a
//! cell tower far away). Jumps are flagged, never dropped; their metres do not count.

use crate::distance::{TrackPoint, haversine_m};

/// The step from one fix to the next (by time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Metres this step adds to the session's distance: the haversine distance, or 0 for a jump.
    pub metres: f64,
    /// The haversine distance between the two fixes, also for a jump.
    pub span_m: f64,
    /// Speed implied by the two fixes in m/s; `None` when both have the same timestamp.
    pub mps: Option<f64>,
    /// The implied speed is beyond the bound: the step is implausible.
    pub jump: bool,
}

impl Segment {
    /// The step from `prev` to `next` (the next fix by time) with `max_mps` as the plausible bound.
    ///
    /// Two fixes with the same timestamp have no speed (`mps` is `None`); they are a jump when
    /// they are more than `max_mps` metres apart, i.e. farther than one second at the bound
    /// (timestamps of most apps have a resolution of one second, so "same timestamp" means
    /// "less than a second apart"); closer than that they are noise around one position and
    /// their metres count. Fixes out of order are measured by the absolute time between them.
    pub fn between(prev: &TrackPoint, next: &TrackPoint, max_mps: f64) -> Segment {
        let span_m = haversine_m(prev.point(), next.point());
        let micros = (next.recorded_at - prev.recorded_at)
            .num_microseconds()
            .map_or(f64::INFINITY, |us| us.unsigned_abs() as f64);
        let (mps, jump) = if micros > 0.0 {
            let mps = span_m / (micros / 1e6);
            (Some(mps), mps > max_mps)
        } else {
            (None, span_m > max_mps)
        };
        Segment {
            metres: if jump { 0.0 } else { span_m },
            span_m,
            mps,
            jump,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_walk_is_measured_and_not_a_jump() {
        let a = TrackPoint::new(at(0), 52.0, 13.0);
        let b = TrackPoint::new(at(10), 52.0001, 13.0);
        let s = Segment::between(&a, &b, 100.0);
        assert!((s.metres - 11.12).abs() < 0.01, "{s:?}");
        assert_eq!(s.metres, s.span_m);
        assert!((s.mps.unwrap() - 1.112).abs() < 0.001);
        assert!(!s.jump);
    }

    #[test]
    fn a_speed_beyond_the_bound_is_a_jump_that_adds_no_metres() {
        let a = TrackPoint::new(at(0), 52.0, 13.0);
        let b = TrackPoint::new(at(10), 53.0, 13.0);
        let s = Segment::between(&a, &b, 100.0);
        assert!(s.jump);
        assert_eq!(s.metres, 0.0);
        assert!(s.span_m > 111_000.0);
        assert!(s.mps.unwrap() > 11_000.0);
    }

    #[test]
    fn the_same_timestamp_has_no_speed_and_is_a_jump_only_beyond_one_second_at_the_bound() {
        let a = TrackPoint::new(at(0), 52.0, 13.0);
        let near = TrackPoint::new(at(0), 52.0001, 13.0);
        let far = TrackPoint::new(at(0), 52.01, 13.0);
        let s = Segment::between(&a, &near, 100.0);
        assert_eq!((s.mps, s.jump), (None, false));
        assert!(s.metres > 11.0);
        let s = Segment::between(&a, &far, 100.0);
        assert_eq!((s.mps, s.jump, s.metres), (None, true, 0.0));
        let s = Segment::between(&a, &a, 100.0);
        assert_eq!((s.mps, s.jump, s.metres), (None, false, 0.0));
    }

    #[test]
    fn sub_second_fixes_get_a_speed() {
        let a = TrackPoint::new(at(0), 52.0, 13.0);
        let b = TrackPoint::new(at(0) + Duration::milliseconds(100), 52.00001, 13.0);
        let s = Segment::between(&a, &b, 100.0);
        assert!((s.mps.unwrap() - 11.12).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn fixes_out_of_order_are_measured_by_the_absolute_time() {
        let a = TrackPoint::new(at(10), 52.0, 13.0);
        let b = TrackPoint::new(at(0), 52.0001, 13.0);
        let s = Segment::between(&a, &b, 100.0);
        assert!((s.mps.unwrap() - 1.112).abs() < 0.001);
    }
}
