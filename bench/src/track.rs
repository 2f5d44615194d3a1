//! Simulated device tracks: plausible moving positions with increasing, now-ish timestamps.
//!
//! A track behaves like a phone that records a fix every `interval` and posts them in
//! batches: each batch ends at the current time, so every fix passes the server's clock-skew
//! checks however long a run lasts.

use chrono::{DateTime, Duration, Utc};
use locus_wire::api::FixInput;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;

/// Tracks stay below this latitude: near the poles a metre is many degrees of longitude,
/// which makes no plausible track and is not what the bench is about.
const MAX_ABS_LAT: f64 = 85.0;

/// The smallest gap between two fixes of a track. When a load run posts faster than real
/// time, fixes are squeezed to this spacing instead of running ahead of the clock.
const MIN_STEP: Duration = Duration::milliseconds(1);

/// One simulated device's path.
#[derive(Debug)]
pub struct Track {
    rng: StdRng,
    lat: f64,
    lon: f64,
    /// Degrees clockwise from north, in `0..360`.
    heading: f64,
    /// Metres per second.
    speed: f64,
    /// Percent; drains slowly as the track goes on.
    battery: f64,
    /// Time of the last fix handed out; every later fix is strictly after it.
    last_at: Option<DateTime<Utc>>,
    /// Nominal time between two fixes.
    interval: Duration,
}

impl Track {
    /// A track from a random start point, recording a fix every `interval`.
    pub fn random(seed: u64, interval: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // Populated latitudes: keeps longitude steps sane and the map readable.
        let lat = rng.gen_range(-60.0..60.0);
        let lon = rng.gen_range(-180.0..180.0);
        Self::starting_at(seed, lat, lon, interval)
    }

    /// A track from a given start point (clamped onto the globe).
    pub fn starting_at(seed: u64, lat: f64, lon: f64, interval: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            lat: lat.clamp(-MAX_ABS_LAT, MAX_ABS_LAT),
            lon: wrap_lon(lon),
            heading: rng.gen_range(0.0..360.0),
            // Walking to driving speeds.
            speed: rng.gen_range(1.0..20.0),
            battery: rng.gen_range(40.0..100.0),
            last_at: None,
            interval: interval.max(MIN_STEP),
            rng,
        }
    }

    /// The next `n` fixes, oldest first, the newest at about `now`.
    pub fn next_batch(&mut self, n: usize, now: DateTime<Utc>) -> Vec<FixInput> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let back = i32::try_from(n - 1 - i).unwrap_or(i32::MAX);
            let nominal = now - self.interval * back;
            let at = match self.last_at {
                Some(last) => nominal.max(last + MIN_STEP),
                None => nominal,
            };
            let dt = self.last_at.map_or(0.0, |last| seconds(at - last));
            self.step(dt);
            self.last_at = Some(at);
            out.push(self.fix(at));
        }
        out
    }

    /// Moves the device by `dt` seconds at its current speed and heading, then lets speed
    /// and heading drift a little so the path curves like a real one.
    fn step(&mut self, dt: f64) {
        let distance = self.speed * dt;
        let rad = self.heading.to_radians();
        self.lat += distance * rad.cos() / METRES_PER_DEGREE;
        self.lon += distance * rad.sin() / (METRES_PER_DEGREE * self.lat.to_radians().cos());
        if self.lat.abs() > MAX_ABS_LAT {
            // Bounce off the polar limit: mirror the position and turn back.
            self.lat = MAX_ABS_LAT.copysign(self.lat) * 2.0 - self.lat;
            self.heading = (180.0 - self.heading).rem_euclid(360.0);
        }
        self.lon = wrap_lon(self.lon);
        self.heading = (self.heading + self.rng.gen_range(-15.0..15.0)).rem_euclid(360.0);
        self.speed = (self.speed + self.rng.gen_range(-1.0..1.0)).clamp(0.5, 35.0);
        self.battery = (self.battery - dt * 0.001).max(1.0);
    }

    fn fix(&mut self, at: DateTime<Utc>) -> FixInput {
        FixInput {
            lat: self.lat,
            lon: self.lon,
            recorded_at: at,
            accuracy: Some(self.rng.gen_range(3.0..25.0)),
            altitude: Some(self.rng.gen_range(0.0..300.0)),
            speed: Some(self.speed),
            heading: Some(self.heading),
            battery: Some(self.battery.round()),
        }
    }
}

fn seconds(d: Duration) -> f64 {
    d.num_microseconds().map_or(0.0, |us| us as f64 / 1e6)
}

/// Longitude folded into `-180..=180`.
fn wrap_lon(lon: f64) -> f64 {
    (lon + 180.0).rem_euclid(360.0) - 180.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_wire::api::{Fix, FixLimits};

    fn assert_valid_and_increasing(track: &mut Track, batches: usize, size: usize) {
        let limits = FixLimits::default();
        let mut last: Option<DateTime<Utc>> = None;
        for b in 0..batches {
            // Ten batches per second of wall time: faster than the nominal interval.
            let now = Utc::now() + Duration::milliseconds(100 * b as i64);
            for (i, fix) in track.next_batch(size, now).into_iter().enumerate() {
                assert!((-90.0..=90.0).contains(&fix.lat), "lat {}", fix.lat);
                assert!((-180.0..=180.0).contains(&fix.lon), "lon {}", fix.lon);
                if let Some(last) = last {
                    assert!(
                        fix.recorded_at > last,
                        "batch {b} fix {i} goes back in time"
                    );
                }
                last = Some(fix.recorded_at);
                let index = u32::try_from(i).expect("small batch");
                Fix::validate(index, fix, now, &limits).expect("the server accepts the fix");
            }
        }
    }

    #[test]
    fn random_tracks_stay_on_the_globe_and_their_timestamps_strictly_increase() {
        for seed in 0..50 {
            let mut track = Track::random(seed, Duration::seconds(1));
            assert_valid_and_increasing(&mut track, 20, 50);
        }
    }

    #[test]
    fn a_fast_track_near_the_pole_and_the_antimeridian_stays_in_range() {
        for seed in 0..20 {
            let mut track = Track::starting_at(seed, 84.99, 179.999, Duration::seconds(30));
            track.speed = 35.0;
            assert_valid_and_increasing(&mut track, 20, 100);
        }
    }

    #[test]
    fn consecutive_fixes_are_a_plausible_distance_apart() {
        let mut track = Track::random(7, Duration::seconds(1));
        let fixes = track.next_batch(200, Utc::now());
        for pair in fixes.windows(2) {
            let dlat = (pair[1].lat - pair[0].lat) * METRES_PER_DEGREE;
            let dlon =
                (pair[1].lon - pair[0].lon) * METRES_PER_DEGREE * pair[0].lat.to_radians().cos();
            let metres = dlat.hypot(dlon);
            // At most 35 m/s for one second, with slack for the flat-earth estimate.
            assert!(metres < 40.0, "jumped {metres} m in a second");
        }
    }

    #[test]
    fn the_newest_fix_of_a_batch_is_at_the_given_time() {
        let mut track = Track::random(1, Duration::seconds(1));
        let now = Utc::now();
        let fixes = track.next_batch(10, now);
        assert_eq!(fixes.last().map(|f| f.recorded_at), Some(now));
        assert_eq!(fixes[0].recorded_at, now - Duration::seconds(9));
    }
}
