//! Micro-benchmarks of admission, the checks a batch passes before ingest does its work,
//! per batch of 100 fixes, in process, far under every limit (nothing is refused):
//! - `before`: the check of commit 59509f6 (issue 10 not yet in): two keyed `governor`
//!   limiters, the device's then the tenant's, charged with the batch's fixes. Its
//!   `Admission::admit` is rebuilt here from the same calls, since that type is gone;
//! - `after`: `locus_ingest::admission::Admission::admit_fixes` with the local tier alone
//!   (`LOCUS_RATE_SHARED=false`) and with the shared Redis budget behind it (the default:
//!   one GCRA script call per batch), the request-rate check of the `/v1` route layer
//!   (`admit_request`, once per request) and the RateLimit headers of the 202;
//! - a bare Redis `PING` on the same connection, the floor of any Redis round trip.
//!
//! 64 devices over 2 tenants, taken in turn, as `locus-bench run` sends them. The Redis
//! benchmarks use the local Redis of `./locus services` (`LOCUS_REDIS_URL`, default
//! `redis://127.0.0.1:6379`) under a prefix of their own, and fail when it is not there.
//!
//! Run: `cargo bench -p locus-bench --bench admission`.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::HeaderMap;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use governor::{DefaultKeyedRateLimiter, Quota};
use locus_ingest::admission::Admission;
use locus_ingest::limits::LimitsTable;
use locus_wire::{DeviceId, TenantId};

const BATCH: usize = 100;
const DEVICES: usize = 64;

/// Rates and bursts far above what a benchmark reaches, so every batch is admitted: the
/// check runs at millions of batches per second here, more than any configured rate (and
/// issue 10's GCRA counts a rate above a million per second as a million), so the burst
/// must hold every fix a benchmark sends.
const HIGH: u32 = u32::MAX;

/// (tenant, device) of each simulated device: device `i` of tenant `i % 2`.
fn devices() -> Vec<(TenantId, DeviceId)> {
    let tenants = [
        TenantId::parse("acme").expect("a tenant id"),
        TenantId::parse("globex").expect("a tenant id"),
    ];
    (0..DEVICES)
        .map(|i| {
            (
                tenants[i % 2].clone(),
                DeviceId::parse(format!("phone-{i}")).expect("a device id"),
            )
        })
        .collect()
}

/// 59509f6's `Admission`: per-device and per-tenant keyed GCRA limiters of `governor`.
struct Before {
    device: DefaultKeyedRateLimiter<(TenantId, DeviceId)>,
    tenant: DefaultKeyedRateLimiter<TenantId>,
}

impl Before {
    fn new() -> Self {
        let high = NonZeroU32::new(HIGH).expect("not 0");
        let quota = Quota::per_second(high).allow_burst(high);
        Self {
            device: DefaultKeyedRateLimiter::keyed(quota),
            tenant: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// As 59509f6's `Admission::admit`: the device's bucket, then the tenant's.
    fn admit(&self, tenant: &TenantId, device: &DeviceId, fixes: usize) -> bool {
        let Some(n) = NonZeroU32::new(u32::try_from(fixes).unwrap_or(u32::MAX)) else {
            return true;
        };
        matches!(
            self.device
                .check_key_n(&(tenant.clone(), device.clone()), n),
            Ok(Ok(()))
        ) && matches!(self.tenant.check_key_n(tenant, n), Ok(Ok(())))
    }
}

fn config() -> locus_ingest::Config {
    locus_ingest::Config::for_tests("bench-secret").with(|c| {
        c.redis.url = std::env::var("LOCUS_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        c.redis.prefix = format!("locus-bench-admission-{}", std::process::id());
        c.rates.device_fixes_per_sec = HIGH;
        c.rates.device_burst = HIGH;
        c.rates.tenant_fixes_per_sec = HIGH;
        c.rates.tenant_burst = HIGH;
        c.rates.device_requests_per_sec = HIGH;
        c.rates.device_requests_burst = HIGH;
        c.rates.tenant_requests_per_sec = HIGH;
        c.rates.tenant_requests_burst = HIGH;
    })
}

fn redis(rt: &tokio::runtime::Runtime, url: &str) -> redis::aio::ConnectionManager {
    rt.block_on(async {
        let client = redis::Client::open(url).expect("a Redis URL");
        redis::aio::ConnectionManager::new(client)
            .await
            .unwrap_or_else(|e| panic!("no Redis at {url} ({e}): start it with `./locus services`"))
    })
}

fn admission(c: &mut Criterion) {
    let devices = devices();
    let config = config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let conn = redis(&rt, &config.redis.url);

    let mut g = c.benchmark_group("admission per batch of 100");
    g.throughput(Throughput::Elements(BATCH as u64));

    let before = Before::new();
    let mut i = 0;
    g.bench_function("before (59509f6): governor, device + tenant", |b| {
        b.iter(|| {
            let (t, d) = &devices[i % DEVICES];
            i += 1;
            assert!(before.admit(black_box(t), black_box(d), BATCH));
        });
    });

    let local = Admission::new(&config, Arc::new(LimitsTable::new(&config)), None);
    let mut i = 0;
    g.bench_function("after: admit_fixes, local tier only", |b| {
        b.iter(|| {
            let (t, d) = &devices[i % DEVICES];
            i += 1;
            rt.block_on(local.admit_fixes(black_box(t), black_box(d), BATCH))
                .expect("far under the limits")
        });
    });

    let shared = Admission::new(
        &config,
        Arc::new(LimitsTable::new(&config)),
        Some(conn.clone()),
    );
    let mut i = 0;
    g.bench_function("after: admit_fixes, local + shared Redis GCRA", |b| {
        b.iter(|| {
            let (t, d) = &devices[i % DEVICES];
            i += 1;
            rt.block_on(shared.admit_fixes(black_box(t), black_box(d), BATCH))
                .expect("far under the limits")
        });
    });

    let mut i = 0;
    g.bench_function(
        "after: admit_request (route layer, once per request)",
        |b| {
            b.iter(|| {
                let (t, d) = &devices[i % DEVICES];
                i += 1;
                local
                    .admit_request(Some(black_box(t)), black_box(d.as_str()))
                    .expect("far under the limits");
            });
        },
    );

    let (t, d) = &devices[0];
    let admitted = rt
        .block_on(local.admit_fixes(t, d, BATCH))
        .expect("far under the limits");
    g.bench_function("after: RateLimit headers of the 202", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            black_box(&admitted).insert_headers(&mut headers);
            headers
        });
    });

    let mut ping = conn.clone();
    g.bench_function("Redis PING (the floor of a round trip)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let pong: String = redis::cmd("PING")
                    .query_async(&mut ping)
                    .await
                    .expect("PONG");
                pong
            })
        });
    });
    g.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
