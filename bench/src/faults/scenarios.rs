//! The faults of issue 8, one function each. Every one sets up its processes, drives the
//! load, waits until work is in flight (and notes what was), injects the fault, lets the
//! load run on, drains, and hands the comparison to [`Stage::finish`].

use std::time::{Duration, Instant};

use locus_testkit::broker::Stop;

use super::load::{self, Outcome};
use super::webhook::Mode;
use super::{FaultReport, Harness, Stage};

/// Every fault, in the numbering, with what it does.
pub const FAULTS: [(&str, &str); 7] = [
    (
        "forwarder-kill",
        "1: kill -9 a forwarder ten times, two replicas, shards change hands",
    ),
    (
        "broker-stop",
        "2: the broker stopped 60 s during load, then started",
    ),
    (
        "redis-restart",
        "3: Redis SIGTERM restart, then SIGKILL restart (AOF everysec)",
    ),
    (
        "bridge-kill",
        "4: kill -9 stream-bridge mid-delivery; a replica joins and leaves",
    ),
    (
        "webhook-trouble",
        "5: a webhook answers 500, hangs, 401, recovers; another tenant healthy",
    ),
    ("postgres-stop", "6: PostgreSQL stopped 30 s during load"),
    (
        "batch-retry",
        "7: each batch posted twice at once, again after a gap, same id other body",
    ),
];

/// Runs fault `name`.
pub async fn run(h: &Harness, name: &str) -> anyhow::Result<FaultReport> {
    match name {
        "forwarder-kill" => forwarder_kill(h).await,
        "broker-stop" => broker_stop(h).await,
        "redis-restart" => redis_restart(h).await,
        "bridge-kill" => bridge_kill(h).await,
        "webhook-trouble" => webhook_trouble(h).await,
        "postgres-stop" => postgres_stop(h).await,
        "batch-retry" => batch_retry(h).await,
        other => anyhow::bail!("unknown fault {other:?}"),
    }
}

fn sleep(d: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(d)
}

/// Fault 1. Two forwarders (at most 3 of the 4 shards each, so a dead one's shards go
/// partly to the survivor and partly to its replacement, which runs under a new consumer
/// name so the cross-consumer claim runs). Each kill waits for entries pending under the
/// victim, so it always cuts a produce in flight.
async fn forwarder_kill(h: &Harness) -> anyhow::Result<FaultReport> {
    let mut st = Stage::new(h, "forwarder-kill", Duration::ZERO).await?;
    st.start_ingest("api", "api", &[]).await?;
    let max = [("LOCUS_FORWARDER_MAX_SHARDS", "3".to_owned())];
    st.start_ingest("fwd-a", "forwarder", &max).await?;
    st.start_ingest("fwd-b", "forwarder", &max).await?;
    st.start_bridge("b1", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let load = st.load(&devices, st.shape());
    sleep(Duration::from_secs(2)).await;
    let kills = if h.opts.quick { 4 } else { 10 };
    // (process name, consumer name) of the two live forwarders.
    let mut live = [
        ("fwd-a".to_owned(), "fwd-a".to_owned()),
        ("fwd-b".to_owned(), "fwd-b".to_owned()),
    ];
    let mut hit = 0;
    for i in 1..=kills {
        let consumers: Vec<String> = live.iter().map(|(_, c)| c.clone()).collect();
        let (state, who) = st.wait_pending(&consumers, Duration::from_secs(10)).await;
        let slot = match &who {
            Some(c) => live.iter().position(|(_, lc)| lc == c).unwrap_or(0),
            None => i % 2,
        };
        let (proc_name, consumer) = live[slot].clone();
        let pending = state.pending.get(&consumer).copied().unwrap_or(0);
        let pid = st.ingest_app(&proc_name).kill9().await?;
        if pending > 0 {
            hit += 1;
        }
        st.note(format!(
            "kill -9 #{i}: {consumer} (pid {pid}) with {pending} entries pending under it \
             ({} pending in all, {} in the buffer)",
            state.pending_total(),
            state.entries
        ));
        let next = format!("{}-{i}", &consumer[..5]);
        let full = st.proc_name(&next);
        st.ingest_app(&proc_name)
            .restart_as(
                &full,
                &[("LOCUS_FORWARDER_CONSUMER", next.clone())],
                &h.http,
            )
            .await?;
        // restart_as renamed the process: keep finding it by its new short name.
        live[slot] = (next.clone(), next);
        // The victim's leases lapse: the survivor and the replacement take its shards.
        sleep(Duration::from_millis(h.opts.lease_ms + 500)).await;
    }
    st.check(
        format!("every kill hit entries in flight ({hit} of {kills})"),
        hit == kills,
    );
    sleep(Duration::from_secs(2)).await;
    finish(st, &devices, load).await
}

/// Fault 2. A small buffer bound, so that the outage fills it: 202s, then 503s, then the
/// backlog drains once the broker is back.
async fn broker_stop(h: &Harness) -> anyhow::Result<FaultReport> {
    let down = h.secs(60, 15);
    let bound = if h.opts.quick { 60 } else { 200 };
    let mut st = Stage::new(h, "broker-stop", Duration::ZERO).await?;
    st.start_ingest(
        "ingest",
        "api,forwarder",
        &[("LOCUS_BUFFER_MAX_ENTRIES", bound.to_string())],
    )
    .await?;
    st.start_bridge("b1", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let load = st.load(&devices, st.shape());
    sleep(Duration::from_secs(3)).await;
    let (state, _) = st
        .wait_pending(&["ingest".to_owned()], Duration::from_secs(10))
        .await;
    st.check(
        "entries pending under the forwarder when the broker stopped",
        state.pending_total() > 0,
    );
    let pid = h.stop_kafka(Stop::Term).await?;
    st.note(format!(
        "broker (pid {pid:?}) stopped with SIGTERM for {} s: {} entries pending, {} in the \
         buffer, {} posts in flight; buffer bound {bound} per shard",
        down.as_secs(),
        state.pending_total(),
        state.entries,
        load.in_flight()
    ));
    let until = Instant::now() + down;
    let mut peak = 0;
    while Instant::now() < until {
        if let Some(b) = st.buffer().await {
            peak = peak.max(b.entries);
        }
        sleep(Duration::from_millis(500)).await;
    }
    let acked_before = load.acked();
    h.start_kafka().await?;
    st.note(format!(
        "broker back; the buffer peaked at {peak} entries (bound {} in all); {acked_before} \
         batches acknowledged so far",
        bound * super::SHARDS
    ));
    sleep(Duration::from_secs(5)).await;
    let report = finish(st, &devices, load).await?;
    Ok(with_check(
        report,
        "503 answered once the buffer was full",
        |r| r.statuses.get(&503).copied().unwrap_or(0) > 0,
    ))
}

/// Fault 3. Redis stopped with `redis-cli shutdown` (as SIGTERM does), then with SIGKILL,
/// each while the forwarder has entries in flight, and started again with the same
/// arguments (AOF everysec): the contract is that neither loses an acknowledged batch.
async fn redis_restart(h: &Harness) -> anyhow::Result<FaultReport> {
    let down = h.secs(5, 1);
    let mut st = Stage::new(h, "redis-restart", Duration::ZERO).await?;
    st.start_ingest("ingest", "api,forwarder", &[]).await?;
    st.start_bridge("b1", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let load = st.load(&devices, st.shape());
    sleep(Duration::from_secs(3)).await;
    for how in ["shutdown (SIGTERM)", "SIGKILL"] {
        let (state, _) = st
            .wait_pending(&["ingest".to_owned()], Duration::from_secs(10))
            .await;
        st.check(
            format!("entries pending under the forwarder at the {how}"),
            state.pending_total() > 0,
        );
        let mut redis = h.redis.lock().await;
        let pid = redis.pid();
        if how == "SIGKILL" {
            redis.kill().await?;
        } else {
            redis.shutdown().await?;
        }
        st.note(format!(
            "redis (pid {pid:?}) {how} with {} entries pending, {} in the buffer, {} posts in \
             flight; down {} s",
            state.pending_total(),
            state.entries,
            load.in_flight(),
            down.as_secs()
        ));
        sleep(down).await;
        redis.restart().await?;
        drop(redis);
        let after = st.buffer().await.map(|b| b.entries);
        st.note(format!(
            "redis back after replaying its AOF: {after:?} entries in the buffer"
        ));
        sleep(Duration::from_secs(5)).await;
    }
    finish(st, &devices, load).await
}

/// Fault 4. Two bridge replicas; each is killed with SIGKILL while a delivery of its own is
/// at the webhook (the webhook takes 30 ms per delivery), then started again; between the
/// kills a third replica joins the group and leaves it.
async fn bridge_kill(h: &Harness) -> anyhow::Result<FaultReport> {
    let mut st = Stage::new(h, "bridge-kill", Duration::from_millis(30)).await?;
    st.start_ingest("ingest", "api,forwarder", &[]).await?;
    st.start_bridge("b1", &[]).await?;
    st.start_bridge("b2", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let load = st.load(&devices, st.shape());
    sleep(Duration::from_secs(4)).await;
    let mut hit = 0;
    let mut last = "";
    for kill in 1..=2 {
        // The replica that has a delivery at the webhook, the other one first: after a
        // rebalance one replica can be idle for a while.
        let order = if last == "b1" {
            ["b2", "b1"]
        } else {
            ["b1", "b2"]
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (victim, in_flight) = loop {
            let found = order
                .iter()
                .map(|r| (*r, st.webhook.in_flight(r)))
                .find(|(_, n)| *n > 0);
            if let Some(f) = found {
                break f;
            }
            if Instant::now() >= deadline {
                break (order[0], 0);
            }
            sleep(Duration::from_millis(2)).await;
        };
        last = victim;
        let pid = st.bridge(victim).kill9().await?;
        hit += u32::from(in_flight > 0);
        st.note(format!(
            "kill -9 #{kill}: bridge {victim} (pid {pid}) with {in_flight} of its deliveries at the webhook"
        ));
        sleep(Duration::from_secs(1)).await;
        let name = st.proc_name(victim);
        st.bridge(victim).restart_as(&name, &[], &h.http).await?;
        st.note(format!("bridge {victim} started again"));
        if kill == 1 {
            st.start_bridge("b3", &[]).await?;
            st.note("bridge b3 joined the group");
            sleep(Duration::from_secs(6)).await;
            st.bridge("b3").stop().await?;
            st.note("bridge b3 left the group (SIGTERM)");
        }
        sleep(Duration::from_secs(8)).await;
    }
    st.check(
        format!("every kill cut a delivery in flight ({hit} of 2)"),
        hit == 2,
    );
    finish(st, &devices, load).await
}

/// Fault 5. Tenant `acme`'s webhook answers 500, then hangs (past the bridge's 2 s request
/// timeout), then 401, then recovers; tenant `globex`'s stays healthy throughout.
async fn webhook_trouble(h: &Harness) -> anyhow::Result<FaultReport> {
    let phase = h.secs(40, 6);
    let mut st = Stage::new(h, "webhook-trouble", Duration::ZERO).await?;
    st.tenants = vec!["acme", "globex"];
    st.start_ingest("ingest", "api,forwarder", &[]).await?;
    st.start_bridge("b1", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let load = st.load(&devices, st.shape());
    sleep(Duration::from_secs(3)).await;
    let trouble_started = st.webhook.arrivals().len();
    for (mode, what) in [
        (Mode::Fail, "500"),
        (Mode::Hang, "hang"),
        (Mode::Unauthorized, "401"),
    ] {
        st.webhook.set_mode("acme", mode);
        st.note(format!(
            "acme's webhook answers {what} for {} s",
            phase.as_secs()
        ));
        sleep(phase).await;
    }
    st.webhook.set_mode("acme", Mode::Accept);
    let trouble: Vec<f64> = st.webhook.arrivals()[trouble_started..]
        .iter()
        .filter(|a| a.tenant == "globex")
        .map(|a| a.e2e_ms)
        .collect();
    st.note(format!(
        "acme's webhook recovered; globex during the trouble: {} records, 202 -> webhook p50 {:.0} ms, p99 {:.0} ms",
        trouble.len(),
        percentile(&trouble, 0.50),
        percentile(&trouble, 0.99)
    ));
    sleep(Duration::from_secs(5)).await;
    let answers = st.webhook.answers();
    st.note(format!("webhook answers by status (0 = hung): {answers:?}"));
    let report = finish(st, &devices, load).await?;
    Ok(with_check(report, "nothing dead-lettered", |r| {
        r.dead_letters == 0
    }))
}

/// Fault 6. PostgreSQL stopped (`pg_ctl stop -m fast`) while posts are in flight, then
/// started again.
async fn postgres_stop(h: &Harness) -> anyhow::Result<FaultReport> {
    let down = h.secs(30, 8);
    let mut st = Stage::new(h, "postgres-stop", Duration::ZERO).await?;
    st.start_ingest("ingest", "api,forwarder", &[]).await?;
    st.start_bridge("b1", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let load = st.load(&devices, st.shape());
    sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.in_flight() == 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(1)).await;
    }
    let in_flight = load.in_flight();
    let buffer = st.buffer().await.unwrap_or_default();
    st.check("posts in flight when PostgreSQL stopped", in_flight > 0);
    h.pg.lock().await.stop().await?;
    st.note(format!(
        "PostgreSQL stopped for {} s with {in_flight} posts in flight, {} entries in the buffer",
        down.as_secs(),
        buffer.entries
    ));
    let acked = load.acked();
    sleep(down).await;
    let during = load.acked() - acked;
    h.pg.lock().await.start_again().await?;
    st.note(format!(
        "PostgreSQL back; {during} batches acknowledged while it was down"
    ));
    sleep(Duration::from_secs(5)).await;
    finish(st, &devices, load).await
}

/// Fault 7. Every batch is posted twice at once; after the load and a gap, every fourth
/// acknowledged batch is posted again (expect 202 `duplicate: true`), and one batch per
/// device again with the same id and another body (expect 409). Nothing may be stored twice.
async fn batch_retry(h: &Harness) -> anyhow::Result<FaultReport> {
    let gap = h.secs(30, 5);
    let mut st = Stage::new(h, "batch-retry", Duration::ZERO).await?;
    st.start_ingest("ingest", "api,forwarder", &[]).await?;
    st.start_bridge("b1", &[]).await?;
    let devices = st.devices(h.opts.devices).await?;
    let mut shape = st.shape();
    shape.double_post = true;
    let load = st.load(&devices, shape);
    sleep(h.secs(20, 6)).await;
    let tally = load.finish().await;
    st.note(format!(
        "every batch posted twice at once: {} batches acknowledged, answers {:?}",
        tally.acked.len(),
        tally.statuses
    ));
    sleep(gap).await;
    let side = std::sync::Mutex::new(load::LoadTally::default());
    let (mut again, mut again_dup) = (0, 0);
    for a in tally.acked.iter().filter(|a| a.seq % 4 == 0) {
        let d = &devices[a.device];
        again += 1;
        let body = load::body(d, a.seq, h.opts.batch_size, false);
        if matches!(
            load::post_once(&st.client, d, body, &side).await,
            Outcome::Accepted(true)
        ) {
            again_dup += 1;
        }
    }
    st.note(format!(
        "after a {} s gap, {again} batches posted again: {again_dup} answered 202 duplicate:true",
        gap.as_secs()
    ));
    let (mut other, mut other_409) = (0, 0);
    for d in &devices {
        other += 1;
        let body = load::body(d, 1, h.opts.batch_size, true);
        if matches!(
            load::post_once(&st.client, d, body, &side).await,
            Outcome::Refused(409)
        ) {
            other_409 += 1;
        }
    }
    st.note(format!(
        "{other} batch ids posted with another body: {other_409} answered 409"
    ));
    st.check(
        format!("re-posts answered 202 duplicate:true ({again_dup} of {again})"),
        again_dup == again,
    );
    st.check(
        format!("same id, other body answered 409 ({other_409} of {other})"),
        other_409 == other,
    );
    let drain = st.drain().await;
    let report = st.finish(&devices, tally, drain).await;
    Ok(with_check(
        report,
        "no batch stored twice (no copy on Kafka)",
        |r| r.kafka.duplicates == 0,
    ))
}

/// Ends the load, drains and judges.
async fn finish(
    mut st: Stage<'_>,
    devices: &[load::Device],
    load: load::Load,
) -> anyhow::Result<FaultReport> {
    let tally = load.finish().await;
    st.note(format!(
        "load stopped: {} batches acknowledged, {} abandoned; answers {:?}, {} without an answer",
        tally.acked.len(),
        tally.abandoned,
        tally.statuses,
        tally.transport_errors
    ));
    let drain = st.drain().await;
    Ok(st.finish(devices, tally, drain).await)
}

fn with_check(mut r: FaultReport, what: &str, ok: impl Fn(&FaultReport) -> bool) -> FaultReport {
    let ok = ok(&r);
    println!(
        "[faults] {}: check {what}: {}",
        r.name,
        if ok { "ok" } else { "FAILED" }
    );
    r.checks.push((what.to_owned(), ok));
    r.pass &= ok;
    r
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}
