//! Per-session statistics accumulated over the fixes of a track in time order: count,
//! distance without jumps, duration, bounding box, max and average speed, first and last fix.
//! The tracker recomputes them from the stored points in order, so a late or repeated batch
//! gives the same numbers as one that came in order once.

use crate::distance::TrackPoint;
use crate::segment::Segment;

/// The smallest latitude/longitude box holding every fix (plain min/max: a track crossing the
/// antimeridian gets a box spanning the whole longitude range between its extremes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    /// Southern edge in degrees.
    pub min_lat: f64,
    /// Western edge in degrees.
    pub min_lon: f64,
    /// Northern edge in degrees.
    pub max_lat: f64,
    /// Eastern edge in degrees.
    pub max_lon: f64,
}

impl BBox {
    fn of(p: &TrackPoint) -> Self {
        Self {
            min_lat: p.lat,
            min_lon: p.lon,
            max_lat: p.lat,
            max_lon: p.lon,
        }
    }

    fn extend(&mut self, p: &TrackPoint) {
        self.min_lat = self.min_lat.min(p.lat);
        self.min_lon = self.min_lon.min(p.lon);
        self.max_lat = self.max_lat.max(p.lat);
        self.max_lon = self.max_lon.max(p.lon);
    }
}

/// Statistics of a track so far; feed it the fixes in time order with [`Stats::push`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Speed bound in m/s beyond which a step is a jump.
    pub max_mps: f64,
    /// Fixes seen.
    pub fix_count: u64,
    /// Metres travelled, jumps not counted.
    pub distance_m: f64,
    /// Steps flagged as jumps.
    pub jumps: u64,
    /// Fastest plausible step in m/s (jumps and same-timestamp steps have no part in it).
    pub max_speed_mps: Option<f64>,
    /// The first fix by time.
    pub first: Option<TrackPoint>,
    /// The last fix by time.
    pub last: Option<TrackPoint>,
    /// The box around every fix.
    pub bbox: Option<BBox>,
}

impl Stats {
    /// Empty statistics with `max_mps` as the jump bound.
    pub const fn new(max_mps: f64) -> Self {
        Self {
            max_mps,
            fix_count: 0,
            distance_m: 0.0,
            jumps: 0,
            max_speed_mps: None,
            first: None,
            last: None,
            bbox: None,
        }
    }

    /// Statistics of `points`, which are sorted by `recorded_at`.
    pub fn from_points(points: &[TrackPoint], max_mps: f64) -> Self {
        let mut stats = Self::new(max_mps);
        for p in points {
            stats.push(p);
        }
        stats
    }

    /// Adds the next fix by time and returns the step to it from the previous one (`None` for
    /// the first fix). The caller keeps the order: a fix older than the last one is measured
    /// as a step all the same (see [`Segment::between`]) but becomes the new `last`.
    pub fn push(&mut self, p: &TrackPoint) -> Option<Segment> {
        self.fix_count += 1;
        match &mut self.bbox {
            Some(b) => b.extend(p),
            None => self.bbox = Some(BBox::of(p)),
        }
        if self.first.is_none() {
            self.first = Some(*p);
        }
        let segment = self
            .last
            .map(|last| Segment::between(&last, p, self.max_mps));
        self.last = Some(*p);
        if let Some(s) = &segment {
            self.distance_m += s.metres;
            if s.jump {
                self.jumps += 1;
            } else if let Some(mps) = s.mps {
                self.max_speed_mps = Some(self.max_speed_mps.map_or(mps, |m| m.max(mps)));
            }
        }
        segment
    }

    /// Seconds from the first fix to the last (0 with fewer than two fixes).
    pub fn duration_secs(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) => duration_secs(&f, &l),
            _ => 0.0,
        }
    }

    /// Distance over duration in m/s; `None` while the duration is zero.
    pub fn avg_speed_mps(&self) -> Option<f64> {
        avg_speed_mps(self.distance_m, self.duration_secs())
    }
}

/// Seconds from `first` to `last` with microsecond resolution.
pub fn duration_secs(first: &TrackPoint, last: &TrackPoint) -> f64 {
    (last.recorded_at - first.recorded_at)
        .num_microseconds()
        .map_or(f64::INFINITY, |us| us as f64 / 1e6)
}

/// Average speed from a distance and a duration (how stored statistics are read back);
/// `None` when the duration is not positive.
pub fn avg_speed_mps(distance_m: f64, duration_secs: f64) -> Option<f64> {
    (duration_secs > 0.0 && duration_secs.is_finite()).then(|| distance_m / duration_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use proptest::prelude::*;

    fn p(secs: i64, lat: f64, lon: f64) -> TrackPoint {
        TrackPoint::new(
            DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap(),
            lat,
            lon,
        )
    }

    #[test]
    fn empty_statistics_have_no_fixes_and_no_speed() {
        let s = Stats::new(100.0);
        assert_eq!(s.fix_count, 0);
        assert_eq!(s.duration_secs(), 0.0);
        assert_eq!(s.avg_speed_mps(), None);
        assert_eq!(s.bbox, None);
    }

    #[test]
    fn a_track_with_a_jump_counts_it_and_leaves_its_metres_out() {
        let points = [
            p(0, 52.0, 13.0),
            p(10, 52.0001, 13.0),   // ~11 m in 10 s
            p(20, 53.0, 13.0),      // ~111 km in 10 s: a jump
            p(30, 53.0001, 13.0),   // ~11 m
            p(40, 53.0001, 13.001), // ~67 m
        ];
        let s = Stats::from_points(&points, 100.0);
        assert_eq!(s.fix_count, 5);
        assert_eq!(s.jumps, 1);
        assert!((s.distance_m - (11.12 + 11.12 + 67.0)).abs() < 1.0, "{s:?}");
        assert_eq!(s.duration_secs(), 40.0);
        assert!((s.avg_speed_mps().unwrap() - s.distance_m / 40.0).abs() < 1e-9);
        assert!(s.max_speed_mps.unwrap() < 10.0, "{s:?}");
        assert_eq!(s.first, Some(points[0]));
        assert_eq!(s.last, Some(points[4]));
        assert_eq!(
            s.bbox,
            Some(BBox {
                min_lat: 52.0,
                min_lon: 13.0,
                max_lat: 53.0001,
                max_lon: 13.001
            })
        );
    }

    proptest! {
        #[test]
        fn distance_is_the_sum_of_the_counted_segments(
            steps in prop::collection::vec((0i64..120, -0.001..0.001f64, -0.001..0.001f64), 1..50)
        ) {
            let mut t = 0;
            let (mut lat, mut lon) = (48.0, 2.0);
            let mut points = Vec::new();
            for (dt, dlat, dlon) in steps {
                t += dt;
                lat += dlat;
                lon += dlon;
                points.push(p(t, lat, lon));
            }
            let s = Stats::from_points(&points, 5.0);
            let sum: f64 = points.windows(2).map(|w| Segment::between(&w[0], &w[1], 5.0).metres).sum();
            let jumps = points.windows(2).filter(|w| Segment::between(&w[0], &w[1], 5.0).jump).count();
            prop_assert!((s.distance_m - sum).abs() < 1e-6);
            prop_assert_eq!(s.jumps as usize, jumps);
            prop_assert_eq!(s.fix_count as usize, points.len());
            prop_assert!(s.distance_m >= 0.0);
            let b = s.bbox.unwrap();
            prop_assert!(points.iter().all(|q| b.min_lat <= q.lat && q.lat <= b.max_lat && b.min_lon <= q.lon && q.lon <= b.max_lon));
            if let Some(max) = s.max_speed_mps {
                prop_assert!(max <= 5.0);
            }
        }
    }
}
