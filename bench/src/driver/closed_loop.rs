//! The closed loop: `concurrency` workers, each posting its devices' batches back to back
//! until the time is up. The offered load is whatever the server lets through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::task::JoinSet;

use super::{Leg, Target};

/// Keeps `concurrency` requests in flight until the leg's deadline.
pub(super) async fn drive(leg: Leg, concurrency: usize) {
    let leg = Arc::new(leg);
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..concurrency {
        let (leg, seq) = (Arc::clone(&leg), Arc::clone(&seq));
        tasks.spawn(async move {
            // Worker w owns devices w, w+concurrency, ...: a device never has two requests
            // in flight.
            let mine: Vec<&Target> = leg.targets.iter().skip(w).step_by(concurrency).collect();
            if mine.is_empty() {
                return;
            }
            let mut i = 0;
            while Instant::now() < leg.deadline {
                let t = mine[i % mine.len()];
                let key = format!("{}-{}", leg.run_id, seq.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let r = leg.client.post(&t.post(&key), |_| {}).await;
                leg.tally.record(&r, t.fixes, sent.elapsed());
                i += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
