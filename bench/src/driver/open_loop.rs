//! The open loop: requests start on a fixed schedule whatever the answers do. Latency runs
//! from the *intended* start, so a late send counts as the server's delay too (coordinated
//! omission corrected).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Leg;

/// Most open-loop requests in flight; past it a request is counted as dropped (the server
/// is far behind, and the run would only measure the client's memory).
pub const MAX_OPEN_IN_FLIGHT: usize = 4096;

/// Starts `requests_per_sec` requests a second until the leg's deadline, cycling over its
/// targets; returns the offered fixes per second.
pub(super) async fn drive(leg: Leg, requests_per_sec: f64) -> f64 {
    let leg = Arc::new(leg);
    let mut tasks = JoinSet::new();
    let targets = leg.targets.len().max(1) as f64;
    let fixes_per_req = leg.targets.iter().map(|t| t.fixes).sum::<u64>() as f64 / targets;
    let offered = requests_per_sec * fixes_per_req;
    let interval = Duration::from_secs_f64(1.0 / requests_per_sec.max(0.001));
    let permits = Arc::new(Semaphore::new(MAX_OPEN_IN_FLIGHT));
    let start = tokio::time::Instant::now();
    for k in 0u64.. {
        let intended = start + interval.mul_f64(k as f64);
        if intended.into_std() >= leg.deadline {
            break;
        }
        tokio::time::sleep_until(intended).await;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            leg.tally.drop_one();
            continue;
        };
        let leg = Arc::clone(&leg);
        let key = format!("{}-{k}", leg.run_id);
        tasks.spawn(async move {
            let t = &leg.targets[(k % leg.targets.len() as u64) as usize];
            let r = leg.client.post(&t.post(&key), |_| {}).await;
            // From the intended start: a late send is the server's delay too.
            leg.tally.record(&r, t.fixes, intended.elapsed());
            // The slot is free once the answer is counted.
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    offered
}
