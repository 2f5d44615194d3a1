//! The Redis ceiling: XADD of the same buffer entries ingest writes, with as many commands
//! in flight as ingest has requests, on one multiplexed connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::task::JoinSet;

use super::Ceiling;

/// XADDs `entries` (JSON buffer entries, one per batch, each worth `fixes_per_entry`) to a
/// scratch stream with `in_flight` commands outstanding on one multiplexed connection (as
/// ingest's connection manager does), cycling through them for `duration`, then deletes it.
pub async fn xadd(
    redis_url: &str,
    scratch_key: &str,
    entries: Arc<Vec<(Bytes, u64)>>,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    anyhow::ensure!(!entries.is_empty(), "no entries to write");
    let client = redis::Client::open(redis_url).context("bad Redis URL")?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to Redis at {redis_url}"))?;
    let fixes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for w in 0..in_flight.max(1) {
        let mut conn = conn.clone();
        let entries = Arc::clone(&entries);
        let fixes = Arc::clone(&fixes);
        let key = scratch_key.to_owned();
        tasks.spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let (entry, n) = &entries[i % entries.len()];
                let _: String = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg(locus_wire::buffer::ENTRY_FIELD)
                    .arg(entry.as_ref())
                    .query_async(&mut conn)
                    .await?;
                fixes.fetch_add(*n, Ordering::Relaxed);
                i += in_flight;
            }
            Ok::<(), redis::RedisError>(())
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            first_error.get_or_insert(e);
        }
    }
    let elapsed = started.elapsed();
    let mut conn = conn;
    // UNLINK frees the scratch stream in the background: a DEL of millions of entries
    // would block Redis for seconds and show up as ingest latency in the next leg.
    let _: Result<i64, _> = redis::cmd("UNLINK")
        .arg(scratch_key)
        .query_async(&mut conn)
        .await;
    if let Some(e) = first_error {
        return Err(e).context("XADD failed");
    }
    Ok(Ceiling::new(fixes.load(Ordering::Relaxed), elapsed))
}
