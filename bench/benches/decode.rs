//! Micro-benchmarks of ingest's CPU work per fix, in fixes per second on one core:
//! - decoding and validating a native JSON batch exactly as
//!   `ingest/src/routes/locations_post.rs` does (`LocationBatch`, then `Fix::parse` per fix);
//! - encoding one Kafka record as the forwarder does (`LocationRecord::from_fix` and
//!   `serde_json::to_vec`);
//! - the Redis entry of a batch (`BufferEntry` to JSON) and its decoding by the forwarder;
//! - every client format (`locus_wire::clients`: background-geolocation SDK, OsmAnd,
//!   OwnTracks, Overland, seed updates) decoded and validated, as a batch of 100 where the
//!   format batches and as the one-point request its apps send most, beside the native
//!   decoder with its bounds (`decode_bounded`, as the route calls it) on the same fixes.
//!
//! Run: `cargo bench -p locus-bench --bench decode`.

use chrono::Utc;
use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use locus_bench::track::Track;
use locus_wire::api::{Fix, FixLimits, LocationBatch};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
use locus_wire::clients::{ClientBatch, osmand, overland, owntracks, seed, transistor};
use locus_wire::decode::BatchBounds;
use locus_wire::record::LocationRecord;
use locus_wire::{BatchId, DeviceId, SessionId, TenantId};

const BATCH: usize = 100;

fn batch_json(n: usize) -> Vec<u8> {
    let fixes = Track::random(7, chrono::Duration::seconds(1)).next_batch(n, Utc::now());
    serde_json::to_vec(&serde_json::json!({ "batch_id": "b-1", "fixes": fixes }))
        .expect("serialises")
}

fn decode_validate(body: &[u8]) -> usize {
    // As ingest's `body::parse`: one UTF-8 check of the whole body, then a `str` parse.
    let text = std::str::from_utf8(body).expect("UTF-8");
    let batch: LocationBatch = serde_json::from_str(text).expect("a batch");
    let now = Utc::now();
    let limits = FixLimits::default();
    let mut accepted = Vec::with_capacity(batch.fixes.len());
    for (index, raw) in batch.fixes.iter().enumerate() {
        if let Ok(fix) = Fix::parse(index as u32, raw, now, &limits) {
            accepted.push(fix);
        }
    }
    accepted.len()
}

fn buffered(n: usize) -> BufferedBatch {
    let body = batch_json(n);
    let batch: LocationBatch = serde_json::from_slice(&body).expect("a batch");
    let now = Utc::now();
    let fixes = batch
        .fixes
        .iter()
        .enumerate()
        .map(|(i, raw)| Fix::parse(i as u32, raw, now, &FixLimits::default()).expect("valid"))
        .collect();
    BufferedBatch {
        tenant_id: TenantId::parse("acme").expect("tenant"),
        session_id: SessionId(uuid::Uuid::now_v7()),
        device_id: DeviceId::parse("bench-device-1").expect("device"),
        batch_id: BatchId::parse("b-1").expect("batch id"),
        received_at: now,
        fixes,
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("native_json");
    g.throughput(Throughput::Elements(BATCH as u64));
    let body = batch_json(BATCH);
    g.bench_function("decode_validate_batch_100", |b| {
        b.iter(|| decode_validate(black_box(&body)));
    });
    // Parsing only the envelope, to split the cost between it and the per-fix parse.
    g.bench_function("envelope_only_batch_100", |b| {
        b.iter(|| {
            let batch: LocationBatch = serde_json::from_slice(black_box(&body)).expect("batch");
            batch.fixes.len()
        });
    });
    let batch = buffered(BATCH);
    g.bench_function("record_encode_100", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for fix in &batch.fixes {
                let v = serde_json::to_vec(&LocationRecord::from_fix(black_box(&batch), fix))
                    .expect("encodes");
                bytes += v.len();
            }
            bytes
        });
    });
    let entry = BufferEntry::Fixes(batch.clone());
    g.bench_function("buffer_entry_encode_100", |b| {
        b.iter(|| {
            serde_json::to_string(black_box(&entry))
                .expect("encodes")
                .len()
        });
    });
    let encoded = serde_json::to_vec(&entry).expect("encodes");
    g.bench_function("buffer_entry_decode_100", |b| {
        b.iter_batched(
            || encoded.clone(),
            |bytes| serde_json::from_slice::<BufferEntry>(&bytes).expect("decodes"),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// Ingest's default bounds (LOCUS_MAX_FIXES_PER_BATCH, _JSON_DEPTH, _STRING_BYTES).
const BOUNDS: BatchBounds = BatchBounds {
    max_fixes: 1000,
    max_depth: 32,
    max_string_bytes: 1024,
};

/// The bodies each format's apps send for `fixes`, built from the same random track.
struct ClientBodies {
    transistor: String,
    overland: String,
    seed: String,
    native: String,
    osmand: Vec<String>,
    owntracks: Vec<String>,
}

fn client_bodies(n: usize) -> ClientBodies {
    let fixes = Track::random(11, chrono::Duration::seconds(1)).next_batch(n, Utc::now());
    let sdk: Vec<_> = fixes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::json!({
                "timestamp": f.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "uuid": format!("0b5c3a8e-2f58-4e2f-a9a7-{i:012}"),
                "is_moving": true,
                "odometer": 1612.4 + i as f64,
                "activity": {"type": "walking", "confidence": 100},
                "battery": {"level": 0.83, "is_charging": false},
                "coords": {"latitude": f.lat, "longitude": f.lon, "accuracy": f.accuracy,
                           "speed": f.speed, "heading": f.heading, "altitude": f.altitude},
                "extras": {}
            })
        })
        .collect();
    let features: Vec<_> = fixes
        .iter()
        .map(|f| {
            serde_json::json!({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [f.lon, f.lat]},
                "properties": {
                    "timestamp": f.recorded_at.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
                    "altitude": f.altitude, "speed": f.speed, "horizontal_accuracy": f.accuracy,
                    "motion": ["walking"], "battery_state": "unplugged", "battery_level": 0.83,
                    "device_id": "iphone-a"
                }
            })
        })
        .collect();
    let session = "0193a4d2-7c1e-7b3a-9a5e-3f2b1c0d9e8f";
    ClientBodies {
        transistor: serde_json::json!({"location": sdk, "device_id": "phone-7"}).to_string(),
        overland: serde_json::json!({ "locations": features }).to_string(),
        seed: serde_json::json!({"session_id": session, "batch_id": "b-1", "fixes": fixes})
            .to_string(),
        native: serde_json::json!({"batch_id": "b-1", "fixes": fixes}).to_string(),
        osmand: fixes
            .iter()
            .map(|f| {
                format!(
                    "id=123456&timestamp={}&lat={}&lon={}&speed={}&bearing={}&altitude={}&accuracy={}&batt=83&charge=false",
                    f.recorded_at.timestamp(),
                    f.lat,
                    f.lon,
                    f.speed.unwrap_or(0.0) / 0.514444,
                    f.heading.unwrap_or(0.0),
                    f.altitude.unwrap_or(0.0),
                    f.accuracy.unwrap_or(5.0)
                )
            })
            .collect(),
        owntracks: fixes
            .iter()
            .map(|f| {
                serde_json::json!({
                    "_type": "location", "lat": f.lat, "lon": f.lon,
                    "tst": f.recorded_at.timestamp(), "acc": f.accuracy, "alt": f.altitude,
                    "vel": f.speed.map(|s| (s * 3.6).round()), "cog": f.heading, "batt": 83,
                    "tid": "jj", "conn": "w", "t": "u"
                })
                .to_string()
            })
            .collect(),
    }
}

/// Validates client fixes as the client routes do: `Fix::validate`, then the key and the
/// attributes. Answers the fixes accepted.
fn validate_client(batch: ClientBatch) -> usize {
    let now = Utc::now();
    let limits = FixLimits::default();
    let mut accepted = Vec::with_capacity(batch.fixes.len());
    for (index, f) in batch.fixes.into_iter().enumerate() {
        if let Ok(input) = f.input
            && let Ok(mut fix) = Fix::validate(index as u32, input, now, &limits)
        {
            fix.key = f.key;
            fix.attributes = f.attributes;
            accepted.push(fix);
        }
    }
    accepted.len()
}

fn validate_native(batch: &LocationBatch) -> usize {
    let now = Utc::now();
    let limits = FixLimits::default();
    batch
        .fixes
        .iter()
        .enumerate()
        .filter(|(i, raw)| Fix::parse(*i as u32, raw, now, &limits).is_ok())
        .count()
}

fn client_benches(c: &mut Criterion) {
    let bodies = client_bodies(BATCH);
    // Every body must decode to fixes that all pass, or the figures would time rejections.
    let now = Utc::now();
    for (format, accepted) in [
        (
            "transistor",
            validate_client(transistor::decode(&bodies.transistor, &BOUNDS).expect("decodes")),
        ),
        (
            "overland",
            validate_client(overland::decode(&bodies.overland, &BOUNDS).expect("decodes")),
        ),
        (
            "seed",
            validate_native(
                &seed::decode_update(&bodies.seed, &BOUNDS)
                    .expect("decodes")
                    .batch,
            ),
        ),
        (
            "osmand",
            bodies
                .osmand
                .iter()
                .map(|q| validate_client(osmand::decode(q, None, now, &BOUNDS).expect("decodes")))
                .sum(),
        ),
        (
            "owntracks",
            bodies
                .owntracks
                .iter()
                .map(|m| validate_client(owntracks::decode(m, &BOUNDS).expect("decodes").batch))
                .sum(),
        ),
    ] {
        assert_eq!(
            accepted, BATCH,
            "{format}: every fix of the bench body is valid"
        );
    }
    let mut g = c.benchmark_group("client_formats");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("native_bounded_batch_100", |b| {
        b.iter(|| {
            let batch = LocationBatch::decode_bounded(black_box(&bodies.native), &BOUNDS);
            validate_native(&batch.expect("a batch"))
        });
    });
    g.bench_function("transistor_batch_100", |b| {
        b.iter(|| {
            validate_client(
                transistor::decode(black_box(&bodies.transistor), &BOUNDS).expect("decodes"),
            )
        });
    });
    g.bench_function("overland_batch_100", |b| {
        b.iter(|| {
            validate_client(
                overland::decode(black_box(&bodies.overland), &BOUNDS).expect("decodes"),
            )
        });
    });
    g.bench_function("seed_batch_100", |b| {
        b.iter(|| {
            let u = seed::decode_update(black_box(&bodies.seed), &BOUNDS).expect("decodes");
            validate_native(&u.batch)
        });
    });
    // One-point requests: 100 of them per iteration, so the figure is fixes (= requests)/s.
    g.bench_function("osmand_one_point_x100", |b| {
        b.iter(|| {
            let now = Utc::now();
            bodies
                .osmand
                .iter()
                .map(|q| {
                    validate_client(
                        osmand::decode(black_box(q), None, now, &BOUNDS).expect("decodes"),
                    )
                })
                .sum::<usize>()
        });
    });
    g.bench_function("owntracks_one_point_x100", |b| {
        b.iter(|| {
            bodies
                .owntracks
                .iter()
                .map(|m| {
                    validate_client(
                        owntracks::decode(black_box(m), &BOUNDS)
                            .expect("decodes")
                            .batch,
                    )
                })
                .sum::<usize>()
        });
    });
    let one_sdk = client_bodies(1).transistor;
    let one_native = client_bodies(1).native;
    g.throughput(Throughput::Elements(1));
    g.bench_function("transistor_one_point", |b| {
        b.iter(|| {
            validate_client(transistor::decode(black_box(&one_sdk), &BOUNDS).expect("decodes"))
        });
    });
    g.bench_function("native_bounded_one_point", |b| {
        b.iter(|| {
            let batch = LocationBatch::decode_bounded(black_box(&one_native), &BOUNDS);
            validate_native(&batch.expect("a batch"))
        });
    });
    g.finish();
}

criterion_group!(decode, benches, client_benches);
criterion_main!(decode);
