//! Track simplification to a tolerance in metres with a bound on the points kept.
//!
//! The algorithm is Ramer-Douglas-Peucker exactly as `geo::SimplifyIdx` runs it (same split
//! point, ties to the last farthest point, same point-to-segment distance from `geo`), on the
//! track projected to a local metric frame, so the tolerance is in metres. It is run here as
//! a loop over an explicit stack instead of calling `geo::SimplifyIdx`, for two reasons:
//! geo's version recurses once per split, and a crafted track (a spiral of many turns) makes
//! that as deep as the track is long, which would overflow a server thread's stack; and the
//! bound on the points needs RDP at a raised tolerance, which this gets from one pass: RDP's
//! split tree does not depend on the tolerance, only where it stops does. Each interior point
//! gets a significance, the smallest split distance on its path from the root; RDP at
//! tolerance `t` keeps exactly the endpoints and the points of significance above `t`. The
//! tests check the result against `geo::SimplifyIdx`.

use geo::{Coord, Distance, Euclidean, Line};

use crate::distance::{EARTH_RADIUS_M, TrackPoint};

/// An equirectangular projection around a track's mean latitude: x east and y north in
/// metres from the first point. Longitudes are unwrapped point to point, so a track crossing
/// the antimeridian stays continuous. Distances in it are within a fraction of a percent of the
/// great-circle ones for tracks spanning up to a few hundred kilometres.
#[derive(Debug, Clone, Copy)]
pub struct LocalFrame {
    lat0: f64,
    lon0: f64,
    m_per_deg_lat: f64,
    m_per_deg_lon: f64,
}

impl LocalFrame {
    /// The frame centred on the first point at the mean latitude of `points`.
    pub fn around(points: &[TrackPoint]) -> Self {
        let lat0 = points.first().map_or(0.0, |p| p.lat);
        let lon0 = points.first().map_or(0.0, |p| p.lon);
        let mean_lat = if points.is_empty() {
            0.0
        } else {
            points.iter().map(|p| p.lat).sum::<f64>() / points.len() as f64
        };
        let m_per_deg_lat = EARTH_RADIUS_M.to_radians();
        Self {
            lat0,
            lon0,
            m_per_deg_lat,
            m_per_deg_lon: m_per_deg_lat * mean_lat.to_radians().cos(),
        }
    }

    /// Every point of `points` in this frame (x east, y north, metres).
    pub fn project(&self, points: &[TrackPoint]) -> Vec<Coord<f64>> {
        let mut out = Vec::with_capacity(points.len());
        let mut prev_lon = self.lon0;
        let mut unwrapped = self.lon0;
        for p in points {
            // The shortest way round from the previous longitude.
            let mut d = p.lon - prev_lon;
            if d > 180.0 {
                d -= 360.0;
            } else if d < -180.0 {
                d += 360.0;
            }
            unwrapped += d;
            prev_lon = p.lon;
            out.push(Coord {
                x: (unwrapped - self.lon0) * self.m_per_deg_lon,
                y: (p.lat - self.lat0) * self.m_per_deg_lat,
            });
        }
        out
    }
}

/// The result of [`simplify_track`]: which points to keep and the tolerance that kept them.
#[derive(Debug, Clone, PartialEq)]
pub struct Simplified {
    /// Indices into the input, increasing, the first and the last always among them.
    pub indices: Vec<usize>,
    /// The tolerance in metres the result satisfies: the one asked for, or the raised one
    /// that brought the points within the bound.
    pub tolerance_m: f64,
}

/// Indices of the points of `points` (sorted by time) kept by Ramer-Douglas-Peucker at
/// `tolerance_m` metres, at most `max_points` of them (at least 2: the endpoints are always
/// kept). A tolerance of 0 or less keeps every point unless the bound needs fewer.
pub fn simplify(points: &[TrackPoint], tolerance_m: f64, max_points: usize) -> Vec<usize> {
    simplify_track(points, tolerance_m, max_points).indices
}

/// [`simplify`] that also says which tolerance the result satisfies: every dropped point is
/// within `tolerance_m` metres (in the [`LocalFrame`]) of the segment between the kept
/// points around it. When more than `max_points` would remain, the tolerance is raised to the
/// smallest value that leaves at most `max_points`.
pub fn simplify_track(points: &[TrackPoint], tolerance_m: f64, max_points: usize) -> Simplified {
    let coords = LocalFrame::around(points).project(points);
    simplify_coords(&coords, tolerance_m, max_points)
}

/// [`simplify_track`] on points already in a metric frame.
pub fn simplify_coords(coords: &[Coord<f64>], tolerance_m: f64, max_points: usize) -> Simplified {
    let n = coords.len();
    let max_points = max_points.max(2);
    // NaN asks for nothing; an infinite tolerance is as good as any larger than the track.
    let tolerance = if tolerance_m.is_nan() {
        0.0
    } else {
        tolerance_m.max(0.0)
    };
    if n <= 2 || (tolerance == 0.0 && n <= max_points) {
        return Simplified {
            indices: (0..n).collect(),
            tolerance_m: tolerance,
        };
    }
    let significance = significances(coords);
    let mut threshold = tolerance;
    let kept_at = |t: f64| significance.iter().filter(|&&s| s > t).count() + 2;
    if kept_at(threshold) > max_points {
        // The (max_points - 1)-th largest significance: strictly above it are at most
        // max_points - 2 interior points, and no smaller threshold achieves that.
        let mut interior: Vec<f64> = significance[1..n - 1].to_vec();
        let k = max_points - 2;
        let (_, nth, _) = interior.select_nth_unstable_by(k, |a, b| b.total_cmp(a));
        threshold = threshold.max(*nth);
    }
    let indices = (0..n)
        .filter(|&i| i == 0 || i == n - 1 || significance[i] > threshold)
        .collect();
    Simplified {
        indices,
        tolerance_m: threshold,
    }
}

/// For each point, the largest tolerance at which RDP still keeps it: infinity for the
/// endpoints; for an interior point, the smallest split distance on its path from the root of
/// the split tree (every interior point is the farthest point of exactly one range).
fn significances(coords: &[Coord<f64>]) -> Vec<f64> {
    let n = coords.len();
    let mut sig = vec![0.0; n];
    sig[0] = f64::INFINITY;
    sig[n - 1] = f64::INFINITY;
    // (first, last, significance of the split that made this range)
    let mut stack = vec![(0usize, n - 1, f64::INFINITY)];
    while let Some((first, last, parent)) = stack.pop() {
        if last - first < 2 {
            continue;
        }
        let line = Line::new(coords[first], coords[last]);
        let (mut farthest, mut farthest_d) = (first + 1, 0.0f64);
        for (i, c) in coords.iter().enumerate().take(last).skip(first + 1) {
            let d = Euclidean.distance(*c, &line);
            // `>=` like geo: the last of equally far points is the split.
            if d >= farthest_d {
                farthest = i;
                farthest_d = d;
            }
        }
        let s = farthest_d.min(parent);
        sig[farthest] = s;
        stack.push((first, farthest, s));
        stack.push((farthest, last, s));
    }
    sig
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use geo::{LineString, SimplifyIdx};
    use proptest::prelude::*;

    fn track(coords: &[(f64, f64)]) -> Vec<TrackPoint> {
        coords
            .iter()
            .enumerate()
            .map(|(i, &(lat, lon))| {
                TrackPoint::new(
                    DateTime::from_timestamp(1_790_000_000 + i as i64, 0).unwrap(),
                    lat,
                    lon,
                )
            })
            .collect()
    }

    fn coords() -> impl Strategy<Value = Vec<Coord<f64>>> {
        prop::collection::vec((-5000.0..5000.0f64, -5000.0..5000.0f64), 0..200)
            .prop_map(|v| v.into_iter().map(|(x, y)| Coord { x, y }).collect())
    }

    fn random_walk() -> impl Strategy<Value = Vec<TrackPoint>> {
        (
            -70.0..70.0f64,
            -180.0..180.0f64,
            prop::collection::vec((-0.001..0.001f64, -0.001..0.001f64), 0..300),
        )
            .prop_map(|(lat0, lon0, steps)| {
                let (mut lat, mut lon) = (lat0, lon0);
                let mut pts = vec![(lat, lon)];
                for (dlat, dlon) in steps {
                    lat += dlat;
                    lon += dlon;
                    if lon > 180.0 {
                        lon -= 360.0;
                    }
                    if lon < -180.0 {
                        lon += 360.0;
                    }
                    pts.push((lat, lon));
                }
                track(&pts)
            })
    }

    /// Every dropped point is within `tol` of the segment between the kept points around it.
    fn check_within(coords: &[Coord<f64>], kept: &[usize], tol: f64) -> Result<(), TestCaseError> {
        for w in kept.windows(2) {
            let line = Line::new(coords[w[0]], coords[w[1]]);
            for (i, c) in coords.iter().enumerate().take(w[1]).skip(w[0] + 1) {
                let d = Euclidean.distance(*c, &line);
                prop_assert!(
                    d <= tol + 1e-6,
                    "point {i} is {d} m from the line, tolerance {tol}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_straight_line_keeps_only_its_endpoints() {
        let t = track(&[(0.0, 0.0), (0.0, 0.001), (0.0, 0.002), (0.0, 0.003)]);
        assert_eq!(simplify(&t, 1.0, 100), vec![0, 3]);
    }

    #[test]
    fn a_corner_farther_than_the_tolerance_is_kept() {
        // ~111 m north then ~111 m east.
        let t = track(&[
            (0.0, 0.0),
            (0.0005, 0.0),
            (0.001, 0.0),
            (0.001, 0.0005),
            (0.001, 0.001),
        ]);
        assert_eq!(simplify(&t, 10.0, 100), vec![0, 2, 4]);
        assert_eq!(simplify(&t, 100.0, 100), vec![0, 4]);
        // The bound wins over the tolerance.
        assert_eq!(simplify(&t, 0.0, 2), vec![0, 4]);
        assert_eq!(simplify(&t, 0.0, 100), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn short_tracks_come_back_whole() {
        assert_eq!(simplify(&[], 10.0, 5), Vec::<usize>::new());
        assert_eq!(simplify(&track(&[(1.0, 1.0)]), 10.0, 5), vec![0]);
        assert_eq!(
            simplify(&track(&[(1.0, 1.0), (2.0, 2.0)]), 10.0, 0),
            vec![0, 1]
        );
    }

    #[test]
    fn a_track_across_the_antimeridian_is_simplified_as_one_line() {
        let t = track(&[
            (0.0, 179.999),
            (0.0, 179.9995),
            (0.0, -179.9995),
            (0.0, -179.999),
        ]);
        assert_eq!(simplify(&t, 1.0, 100), vec![0, 3]);
    }

    #[test]
    fn a_spiral_of_many_turns_does_not_exhaust_the_stack() {
        // Each turn is the farthest from the chord of the rest: a recursion per point.
        let n = 30_000;
        let coords: Vec<Coord<f64>> = (0..n)
            .map(|i| {
                let r = (n - i) as f64;
                let a = i as f64 * 0.5;
                Coord {
                    x: r * a.cos(),
                    y: r * a.sin(),
                }
            })
            .collect();
        let s = simplify_coords(&coords, 0.5, 1000);
        assert!(s.indices.len() <= 1000);
        assert_eq!(s.indices.first(), Some(&0));
        assert_eq!(s.indices.last(), Some(&(n - 1)));
    }

    proptest! {
        #[test]
        fn the_result_is_the_one_of_geo_simplify_idx(c in coords(), tol in 0.01..3000.0f64) {
            let ours = simplify_coords(&c, tol, usize::MAX).indices;
            let geo = LineString::from(c.clone()).simplify_idx(tol);
            prop_assert_eq!(ours, geo);
        }

        #[test]
        fn simplification_keeps_the_endpoints_in_order_within_tolerance_and_bound(
            t in random_walk(), tol in 0.0..200.0f64, max in 0usize..400
        ) {
            let s = simplify_track(&t, tol, max);
            let idx = &s.indices;
            prop_assert!(idx.len() <= max.max(2));
            prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            if !t.is_empty() {
                prop_assert_eq!(idx[0], 0);
                prop_assert_eq!(*idx.last().unwrap(), t.len() - 1);
            }
            prop_assert!(s.tolerance_m >= tol);
            let coords = LocalFrame::around(&t).project(&t);
            check_within(&coords, idx, s.tolerance_m)?;
            if s.tolerance_m == tol {
                check_within(&coords, idx, tol)?;
            }
        }

        #[test]
        fn the_raised_tolerance_is_the_smallest_within_the_bound(c in coords(), max in 2usize..50) {
            let s = simplify_coords(&c, 0.0, max);
            if s.tolerance_m > 0.0 && c.len() > 2 {
                // A little below it, RDP keeps more than the bound.
                let below = simplify_coords(&c, s.tolerance_m * (1.0 - 1e-9), usize::MAX);
                prop_assert!(below.indices.len() > max);
            }
        }
    }
}
