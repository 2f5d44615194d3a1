//! The pure part of applying new fixes to a session's track: which segments the new fixes
//! get, which stored segments change because a fix landed between two stored ones, and how
//! the session's statistics move. No I/O: [`crate::store`] reads the window and writes what
//! this computes.
//!
//! A track is ordered by `(recorded_at, record_id)`; each point's segment is the step from
//! the point before it ([`Segment::between`]). New fixes can only change the segments of
//! the new points themselves and of the stored point right after each of them, so the
//! window read around a batch is: the stored point just before the first new one (its
//! segment does not change), every stored point between the first and the last new one,
//! and the stored point just after the last new one. Applying the same fixes in any
//! order, in any batches, gives the segments and statistics of the whole track computed
//! from scratch (the property test below checks that against [`locus_geo::Stats`]).

use chrono::{DateTime, Utc};
use locus_geo::{BBox, Segment, TrackPoint};
use uuid::Uuid;

/// Where a point sits in a track: by time, then by record id.
pub type PointKey = (DateTime<Utc>, Uuid);

/// A segment as stored on a track point (`segment_m`, `segment_mps`, `jump`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredSegment {
    /// Metres counted toward the distance (0 for the first point and for a jump).
    pub metres: f64,
    /// Implied speed from the previous point, when there is a previous point and time
    /// between the two.
    pub mps: Option<f64>,
    /// The step from the previous point is implausible.
    pub jump: bool,
}

impl StoredSegment {
    /// The segment of the first point of a track: nothing before it.
    pub const FIRST: Self = Self {
        metres: 0.0,
        mps: None,
        jump: false,
    };

    /// The stored form of a computed segment.
    pub fn of(segment: &Segment) -> Self {
        Self {
            metres: segment.metres,
            mps: segment.mps,
            jump: segment.jump,
        }
    }

    /// The speed this segment offers to the session's maximum: none for a jump.
    fn plausible_mps(&self) -> Option<f64> {
        if self.jump { None } else { self.mps }
    }
}

/// A stored point of the track, read around new fixes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredPoint {
    /// Its place in the track.
    pub key: PointKey,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Its segment as stored.
    pub segment: StoredSegment,
}

/// The stored points around a session's new fixes (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Sorted by key.
    pub points: Vec<StoredPoint>,
    /// `points[0]` is the stored point just before the first new fix (its segment stays).
    /// False: no stored point comes before the first new fix, which is the track's first.
    pub has_before: bool,
    /// The last of `points` comes after the last new fix. False: the last new fix is the
    /// track's last.
    pub has_after: bool,
}

/// A fix new to the track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewPoint {
    /// Its place in the track.
    pub key: PointKey,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// A stored point whose segment changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentChange {
    /// The point.
    pub key: PointKey,
    /// Its segment before.
    pub old: StoredSegment,
    /// Its segment now.
    pub new: StoredSegment,
}

/// The statistics of a session as stored in `session_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SessionStats {
    /// Fixes in the track.
    pub fix_count: i64,
    /// Sum of the segments (jumps count 0).
    pub distance_m: f64,
    /// Segments flagged as jumps.
    pub jumps: i64,
    /// The first fix by time.
    pub first: Option<TrackPoint>,
    /// The last fix by time.
    pub last: Option<TrackPoint>,
    /// The box around every fix.
    pub bbox: Option<BBox>,
    /// The fastest segment that is not a jump.
    pub max_speed_mps: Option<f64>,
}

/// What applying new fixes to one session does.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The segment of each new fix, in the order of the `new` slice given.
    pub segments: Vec<StoredSegment>,
    /// Stored points whose segment changes.
    pub changes: Vec<SegmentChange>,
    /// The statistics after the fixes.
    pub stats: SessionStats,
    /// The maximum speed must be read again from the track: a change lowered the segment
    /// that held it, and the next fastest is not in the window. `stats.max_speed_mps` is
    /// then only what the window knows.
    pub reaggregate_max_speed: bool,
    /// New fixes that landed before the track's last stored fix (late ones).
    pub late: usize,
}

enum Item<'a> {
    Stored(&'a StoredPoint),
    New(usize, &'a NewPoint),
}

impl Item<'_> {
    fn key(&self) -> PointKey {
        match self {
            Item::Stored(p) => p.key,
            Item::New(_, p) => p.key,
        }
    }

    fn track_point(&self) -> TrackPoint {
        match self {
            Item::Stored(p) => TrackPoint::new(p.key.0, p.lat, p.lon),
            Item::New(_, p) => TrackPoint::new(p.key.0, p.lat, p.lon),
        }
    }
}

/// Applies `new` (fixes not yet in the track, any order, distinct keys) to a session whose
/// statistics are `stats` and whose stored points around the new ones are `window`.
pub fn apply(stats: &SessionStats, window: &Window, new: &[NewPoint], max_mps: f64) -> Applied {
    let mut items: Vec<Item<'_>> = window
        .points
        .iter()
        .map(Item::Stored)
        .chain(new.iter().enumerate().map(|(i, p)| Item::New(i, p)))
        .collect();
    items.sort_by_key(Item::key);

    let mut segments = vec![StoredSegment::FIRST; new.len()];
    let mut changes = Vec::new();
    let mut next = *stats;
    next.fix_count += new.len() as i64;
    let mut reaggregate = false;
    let mut prev: Option<TrackPoint> = None;
    for (at, item) in items.iter().enumerate() {
        let here = item.track_point();
        // The point before the first new fix keeps its segment: it only serves as `prev`.
        if at == 0 && window.has_before {
            prev = Some(here);
            continue;
        }
        let segment = prev.map_or(StoredSegment::FIRST, |p| {
            StoredSegment::of(&Segment::between(&p, &here, max_mps))
        });
        let old = match item {
            Item::New(i, _) => {
                segments[*i] = segment;
                StoredSegment::FIRST
            }
            Item::Stored(p) => {
                if p.segment == segment {
                    prev = Some(here);
                    continue;
                }
                changes.push(SegmentChange {
                    key: p.key,
                    old: p.segment,
                    new: segment,
                });
                p.segment
            }
        };
        next.distance_m += segment.metres - old.metres;
        next.jumps += i64::from(segment.jump) - i64::from(old.jump);
        if let (Some(max), Some(lost)) = (stats.max_speed_mps, old.plausible_mps())
            && lost >= max
            && segment.plausible_mps() != Some(lost)
        {
            reaggregate = true;
        }
        if let Some(mps) = segment.plausible_mps() {
            next.max_speed_mps = Some(next.max_speed_mps.map_or(mps, |m| m.max(mps)));
        }
        prev = Some(here);
    }
    if reaggregate {
        // The window's own segments are all this knows; the store reads the rest.
        next.max_speed_mps = None;
    }

    // The ends of the track: the window's ends when nothing lies beyond them.
    if !window.has_before
        && let Some(first) = items.first()
    {
        next.first = Some(first.track_point());
    }
    if !window.has_after
        && let Some(last) = items.last()
    {
        next.last = Some(last.track_point());
    }
    for p in new {
        let point = TrackPoint::new(p.key.0, p.lat, p.lon);
        next.bbox = Some(match next.bbox {
            None => BBox {
                min_lat: p.lat,
                min_lon: p.lon,
                max_lat: p.lat,
                max_lon: p.lon,
            },
            Some(b) => BBox {
                min_lat: b.min_lat.min(point.lat),
                min_lon: b.min_lon.min(point.lon),
                max_lat: b.max_lat.max(point.lat),
                max_lon: b.max_lon.max(point.lon),
            },
        });
    }
    let last_stored = window.points.iter().map(|p| p.key).max();
    let late = match last_stored {
        Some(last) => new.iter().filter(|p| p.key < last).count(),
        None => 0,
    };
    Applied {
        segments,
        changes,
        stats: next,
        reaggregate_max_speed: reaggregate,
        late,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use locus_geo::Stats;
    use proptest::prelude::*;

    use super::*;

    const MAX_MPS: f64 = 30.0;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A track kept in memory the way PostgreSQL keeps it: what the store does, without
    /// the SQL.
    #[derive(Default)]
    struct MemoryTrack {
        points: BTreeMap<PointKey, StoredPoint>,
        stats: SessionStats,
    }

    impl MemoryTrack {
        fn window(&self, new: &[NewPoint]) -> Window {
            let lo = new.iter().map(|p| p.key).min().unwrap();
            let hi = new.iter().map(|p| p.key).max().unwrap();
            let before = self.points.range(..lo).next_back().map(|(_, p)| *p);
            let after = self
                .points
                .range((std::ops::Bound::Excluded(hi), std::ops::Bound::Unbounded))
                .next()
                .map(|(_, p)| *p);
            let mut points: Vec<StoredPoint> = before.into_iter().collect();
            points.extend(self.points.range(lo..=hi).map(|(_, p)| *p));
            points.extend(after);
            Window {
                points,
                has_before: before.is_some(),
                has_after: after.is_some(),
            }
        }

        fn apply(&mut self, batch: &[NewPoint]) {
            let new: Vec<NewPoint> = batch
                .iter()
                .filter(|p| !self.points.contains_key(&p.key))
                .copied()
                .collect();
            if new.is_empty() {
                return;
            }
            let applied = apply(&self.stats, &self.window(&new), &new, MAX_MPS);
            for (p, segment) in new.iter().zip(&applied.segments) {
                self.points.insert(
                    p.key,
                    StoredPoint {
                        key: p.key,
                        lat: p.lat,
                        lon: p.lon,
                        segment: *segment,
                    },
                );
            }
            for change in &applied.changes {
                self.points.get_mut(&change.key).unwrap().segment = change.new;
            }
            self.stats = applied.stats;
            if applied.reaggregate_max_speed {
                self.stats.max_speed_mps = self
                    .points
                    .values()
                    .filter_map(|p| p.segment.plausible_mps())
                    .reduce(f64::max);
            }
        }
    }

    fn from_scratch(points: &[NewPoint]) -> (Stats, Vec<StoredSegment>) {
        let mut sorted = points.to_vec();
        sorted.sort_by_key(|p| p.key);
        sorted.dedup_by_key(|p| p.key);
        let track: Vec<TrackPoint> = sorted
            .iter()
            .map(|p| TrackPoint::new(p.key.0, p.lat, p.lon))
            .collect();
        let mut stats = Stats::new(MAX_MPS);
        let segments = track
            .iter()
            .map(|p| {
                stats
                    .push(p)
                    .map_or(StoredSegment::FIRST, |s| StoredSegment::of(&s))
            })
            .collect();
        (stats, segments)
    }

    fn assert_same(track: &MemoryTrack, points: &[NewPoint]) {
        let (expected, segments) = from_scratch(points);
        let s = &track.stats;
        assert_eq!(s.fix_count as u64, expected.fix_count);
        assert!(
            (s.distance_m - expected.distance_m).abs() <= 1e-6 * expected.distance_m.max(1.0),
            "{} vs {}",
            s.distance_m,
            expected.distance_m
        );
        assert_eq!(s.jumps as u64, expected.jumps);
        assert_eq!(s.first, expected.first);
        assert_eq!(s.last, expected.last);
        assert_eq!(s.bbox, expected.bbox);
        assert_eq!(s.max_speed_mps, expected.max_speed_mps);
        let stored: Vec<StoredSegment> = track.points.values().map(|p| p.segment).collect();
        assert_eq!(stored, segments);
    }

    fn walk(n: usize) -> Vec<NewPoint> {
        (0..n)
            .map(|i| NewPoint {
                key: (at(i as i64 * 10), id(i as u128)),
                lat: 52.0 + i as f64 * 0.0001,
                lon: 13.0,
            })
            .collect()
    }

    #[test]
    fn fixes_in_order_extend_the_track_one_segment_each() {
        let points = walk(5);
        let mut track = MemoryTrack::default();
        track.apply(&points[..3]);
        track.apply(&points[3..]);
        assert_same(&track, &points);
        assert!((track.stats.distance_m - 4.0 * 11.12).abs() < 0.1);
    }

    #[test]
    fn a_late_fix_between_two_splits_their_segment() {
        let points = walk(5);
        let mut track = MemoryTrack::default();
        track.apply(&[points[0], points[1], points[3], points[4]]);
        let window = track.window(&[points[2]]);
        let applied = apply(&track.stats, &window, &[points[2]], MAX_MPS);
        // x's segment from b, and c's from x: one stored segment changes.
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.changes[0].key, points[3].key);
        assert_eq!(applied.late, 1);
        track.apply(&[points[2]]);
        assert_same(&track, &points);
    }

    #[test]
    fn a_fix_before_the_first_becomes_the_first_and_gives_the_old_first_a_segment() {
        let points = walk(4);
        let mut track = MemoryTrack::default();
        track.apply(&points[1..]);
        track.apply(&points[..1]);
        assert_same(&track, &points);
        assert_eq!(track.stats.first.unwrap().recorded_at, at(0));
    }

    #[test]
    fn a_late_fix_that_splits_the_fastest_segment_makes_the_maximum_read_again() {
        // a -> c is fast; x in between halves the speed of both parts.
        let a = NewPoint {
            key: (at(0), id(1)),
            lat: 52.0,
            lon: 13.0,
        };
        let c = NewPoint {
            key: (at(20), id(2)),
            lat: 52.004,
            lon: 13.0,
        };
        let slow = NewPoint {
            key: (at(100), id(3)),
            lat: 52.0041,
            lon: 13.0,
        };
        let x = NewPoint {
            key: (at(10), id(4)),
            lat: 52.002,
            lon: 13.0,
        };
        let mut track = MemoryTrack::default();
        track.apply(&[a, c, slow]);
        let window = track.window(&[x]);
        assert!(apply(&track.stats, &window, &[x], MAX_MPS).reaggregate_max_speed);
        track.apply(&[x]);
        assert_same(&track, &[a, c, slow, x]);
    }

    #[test]
    fn a_late_fix_can_turn_a_segment_into_a_jump_and_back() {
        let a = NewPoint {
            key: (at(0), id(1)),
            lat: 52.0,
            lon: 13.0,
        };
        let b = NewPoint {
            key: (at(100), id(2)),
            lat: 52.001,
            lon: 13.0,
        };
        // Far away in between: a -> far and far -> b are both jumps.
        let far = NewPoint {
            key: (at(50), id(3)),
            lat: 53.0,
            lon: 13.0,
        };
        let mut track = MemoryTrack::default();
        track.apply(&[a, b]);
        track.apply(&[far]);
        assert_eq!(track.stats.jumps, 2);
        assert_eq!(track.stats.distance_m, 0.0);
        assert_same(&track, &[a, b, far]);
    }

    fn batches() -> impl Strategy<Value = (Vec<NewPoint>, Vec<Vec<usize>>)> {
        // A wandering track of up to 40 fixes, some at the same second, with the odd glitch.
        let step = (
            0i64..30,
            -0.002..0.002f64,
            -0.002..0.002f64,
            prop::bool::weighted(0.05),
        );
        prop::collection::vec(step, 1..40).prop_flat_map(|steps| {
            let mut t = 0;
            let (mut lat, mut lon) = (48.0, 2.0);
            let points: Vec<NewPoint> = steps
                .iter()
                .enumerate()
                .map(|(i, &(dt, dlat, dlon, glitch))| {
                    t += dt;
                    lat += dlat;
                    lon += dlon;
                    let (la, lo) = if glitch { (lat + 1.0, lon) } else { (lat, lon) };
                    NewPoint {
                        key: (at(t), id(1000 - i as u128)),
                        lat: la,
                        lon: lo,
                    }
                })
                .collect();
            let n = points.len();
            // Deliveries: the points in any order, cut into batches, some sent twice.
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let extra = prop::collection::vec(0..n, 0..n);
            let cuts = prop::collection::vec(1usize..6, 1..20);
            (Just(points), order, extra, cuts).prop_map(|(points, order, extra, cuts)| {
                let mut all: Vec<usize> = order;
                all.extend(extra);
                let mut batches = Vec::new();
                let mut rest = &all[..];
                for cut in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (head, tail) = rest.split_at((*cut).min(rest.len()));
                    batches.push(head.to_vec());
                    rest = tail;
                }
                (points, batches)
            })
        })
    }

    proptest! {
        #[test]
        fn any_order_any_batches_and_repeats_give_the_statistics_from_scratch(
            (points, batches) in batches()
        ) {
            let mut track = MemoryTrack::default();
            for batch in &batches {
                let mut seen = std::collections::HashSet::new();
                let fixes: Vec<NewPoint> = batch
                    .iter()
                    .map(|&i| points[i])
                    .filter(|p| seen.insert(p.key))
                    .collect();
                track.apply(&fixes);
            }
            assert_same(&track, &points);
        }
    }
}
