//! The per-fix cost of the geo work on the whole path of a native batch, in fixes per second
//! on one core: decode (`LocationBatch::decode_bounded`, as ingest's `body::batch`), validate
//! (`Fix::parse`, i.e. `Fix::validate` per fix), statistics (`Stats::push`: the segment from
//! the previous fix, jump flag, distance, bounding box, speeds) and the geofence check
//! (`FenceIndex::containing`) against a tenant with 1,000 fences (half polygons of 20 to 50
//! vertices, half circles) spread over a city of about 40 by 33 km. The target is 1.5 M
//! fixes/s per core for the whole path; the parts are measured alone to say where time goes.
//!
//! Run: `cargo bench -p locus-bench --bench geo`.

use chrono::{Duration, Utc};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use locus_bench::track::Track;
use locus_geo::{Fence, FenceIndex, Shape, Stats, TrackPoint};
use locus_wire::api::{Fix, FixLimits, LocationBatch};
use locus_wire::decode::BatchBounds;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const BATCH: usize = 100;
/// Batches from different devices, so the fixes cover the whole city and not one street.
const BODIES: usize = 64;
const FENCES: usize = 1_000;
/// The city: southwest and northeast corners (lat, lon), about Berlin.
const CITY: ((f64, f64), (f64, f64)) = ((52.35, 13.1), (52.65, 13.7));
const MAX_MPS: f64 = 100.0;

fn city_point(rng: &mut StdRng) -> (f64, f64) {
    let ((lat0, lon0), (lat1, lon1)) = CITY;
    (rng.gen_range(lat0..lat1), rng.gen_range(lon0..lon1))
}

/// 1,000 fences: circles of 50 m to 1 km and star-shaped polygons of 20 to 50 vertices and
/// 100 m to 1 km across, centred anywhere in the city.
fn fences() -> FenceIndex {
    let mut rng = StdRng::seed_from_u64(11);
    let fences = (0..FENCES)
        .map(|i| {
            let (lat, lon) = city_point(&mut rng);
            let shape = if i % 2 == 0 {
                Shape::circle(lat, lon, rng.gen_range(50.0..1_000.0)).expect("a valid circle")
            } else {
                let n = rng.gen_range(20..=50);
                let r_deg = rng.gen_range(100.0..1_000.0) / 111_320.0;
                let mut ring: Vec<[f64; 2]> = (0..n)
                    .map(|k| {
                        let a = k as f64 / n as f64 * std::f64::consts::TAU;
                        let r = r_deg * rng.gen_range(0.5..1.0);
                        [
                            lon + r * a.cos() / lat.to_radians().cos(),
                            lat + r * a.sin(),
                        ]
                    })
                    .collect();
                ring.push(ring[0]);
                Shape::from_geojson(&json!({"type": "Polygon", "coordinates": [ring]}))
                    .expect("a valid polygon")
            };
            Fence {
                id: format!("fence-{i}"),
                shape,
            }
        })
        .collect();
    FenceIndex::new(fences)
}

fn bodies() -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..BODIES)
        .map(|i| {
            let (lat, lon) = city_point(&mut rng);
            let fixes = Track::starting_at(i as u64, lat, lon, Duration::seconds(1))
                .next_batch(BATCH, Utc::now());
            serde_json::to_string(&json!({ "batch_id": format!("b-{i}"), "fixes": fixes }))
                .expect("serialises")
        })
        .collect()
}

fn bounds() -> BatchBounds {
    // ingest's defaults (LOCUS_MAX_FIXES_PER_BATCH, LOCUS_MAX_JSON_DEPTH, LOCUS_MAX_STRING_BYTES).
    BatchBounds {
        max_fixes: 1_000,
        max_depth: 32,
        max_string_bytes: 1_024,
    }
}

/// The whole path for one batch; returns a checksum so nothing is optimised away.
fn whole_path(body: &str, bounds: &BatchBounds, index: &FenceIndex) -> usize {
    let batch = LocationBatch::decode_bounded(body, bounds).expect("a batch");
    let now = Utc::now();
    let limits = FixLimits::default();
    let mut stats = Stats::new(MAX_MPS);
    let mut inside = 0;
    for (i, slot) in batch.fixes.iter().enumerate() {
        let Ok(fix) = Fix::parse(i as u32, slot, now, &limits) else {
            continue;
        };
        let point = TrackPoint::new(fix.recorded_at, fix.lat, fix.lon);
        if stats.push(&point).is_some_and(|s| s.jump) {
            inside += 1_000_000;
        }
        inside += index.containing(fix.lat, fix.lon).count();
    }
    inside + stats.fix_count as usize
}

fn benches(c: &mut Criterion) {
    let index = fences();
    let bodies = bodies();
    let bounds = bounds();
    let points: Vec<Vec<TrackPoint>> = bodies
        .iter()
        .map(|b| {
            LocationBatch::decode_bounded(b, &bounds)
                .expect("a batch")
                .fixes
                .iter()
                .map(|s| {
                    let f = s.0.as_ref().expect("a fix");
                    TrackPoint::new(f.recorded_at, f.lat, f.lon)
                })
                .collect()
        })
        .collect();
    let hits: usize = points
        .iter()
        .flatten()
        .map(|p| index.containing(p.lat, p.lon).count())
        .sum();
    eprintln!(
        "geo bench: {FENCES} fences, {} fixes in {BODIES} batches, {:.2} fences per fix on average",
        BODIES * BATCH,
        hits as f64 / (BODIES * BATCH) as f64
    );

    let mut g = c.benchmark_group("geo");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0;
    g.bench_function("whole_path_batch_100_fences_1000", |b| {
        b.iter(|| {
            next = (next + 1) % BODIES;
            whole_path(black_box(&bodies[next]), &bounds, &index)
        });
    });
    g.bench_function("decode_validate_batch_100", |b| {
        b.iter(|| {
            next = (next + 1) % BODIES;
            let batch =
                LocationBatch::decode_bounded(black_box(&bodies[next]), &bounds).expect("a batch");
            let now = Utc::now();
            let limits = FixLimits::default();
            batch
                .fixes
                .iter()
                .enumerate()
                .filter(|(i, s)| Fix::parse(*i as u32, s, now, &limits).is_ok())
                .count()
        });
    });
    g.bench_function("stats_batch_100", |b| {
        b.iter(|| {
            next = (next + 1) % BODIES;
            let mut stats = Stats::new(MAX_MPS);
            for p in black_box(&points[next]) {
                stats.push(p);
            }
            stats.distance_m
        });
    });
    g.bench_function("fences_1000_batch_100", |b| {
        b.iter(|| {
            next = (next + 1) % BODIES;
            black_box(&points[next])
                .iter()
                .map(|p| index.containing(p.lat, p.lon).count())
                .sum::<usize>()
        });
    });
    // The R-tree alone (boxes holding the point), to split the fence cost.
    g.bench_function("fence_boxes_only_1000_batch_100", |b| {
        b.iter(|| {
            next = (next + 1) % BODIES;
            black_box(&points[next])
                .iter()
                .map(|p| index.candidates_in([p.lon, p.lat], [p.lon, p.lat]).count())
                .sum::<usize>()
        });
    });
    g.finish();
}

criterion_group!(geo, benches);
criterion_main!(geo);
