//! Micro-benchmarks of ingest's CPU work per fix, in fixes per second on one core:
//! - decoding and validating a native JSON batch exactly as
//!   `ingest/src/routes/locations_post.rs` does (`LocationBatch`, then `Fix::parse` per fix);
//! - encoding one Kafka record as the forwarder does (`LocationRecord::from_fix` and
//!   `serde_json::to_vec`);
//! - the Redis entry of a batch (`BufferEntry` to JSON) and its decoding by the forwarder.
//!
//! Run: `cargo bench -p locus-bench --bench decode`.

use chrono::Utc;
use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use locus_bench::track::Track;
use locus_wire::api::{Fix, FixLimits, LocationBatch};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
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

criterion_group!(decode, benches);
criterion_main!(decode);
